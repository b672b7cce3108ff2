"""Plugin discovery and the registry of backbones, strategies, datasets, scores and sinks.

Sources, all treated alike: the ``tlbench`` entry-point group (first-party plugins are
registered there too, exactly as a third-party package would be), and ``.py`` files in a plugins
folder (``--plugins-dir`` or ``TLBENCH_PLUGINS_DIR``). A plugin that fails to import or
implements a hook that does not exist is reported and skipped; two plugins registering one
name is an error naming both.
"""

from __future__ import annotations

import dataclasses
import fnmatch
import hashlib
import importlib
import importlib.metadata
import importlib.util
import os
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Optional

import pluggy

from tlbench import hookspecs
from tlbench.api import Backbone, Dataset, Score, Strategy
from tlbench.errors import ConfigError, plugin_hint, unknown_name_error
from tlbench.options import describe_options
from tlbench.sink import Sink

ENTRY_POINT_GROUP = "tlbench"
PLUGINS_DIR_ENV = "TLBENCH_PLUGINS_DIR"

KINDS = {
    "backbones": ("register_backbones", Backbone, "backbone"),
    "strategies": ("register_strategies", Strategy, "strategy"),
    "datasets": ("register_datasets", Dataset, "dataset"),
    "scores": ("register_scores", Score, "score"),
    "sinks": ("register_sinks", Sink, "sink"),
}


@dataclass
class Registration:
    component: type
    plugin: str  # the plugin that registered it, for error messages and `tlbench ls`
    #: where that plugin came from, as records keep it: {"package", "version"} for an installed
    #: distribution, {"file", "sha256"} for a loose .py file, {"module"} for one added in code
    origin: dict = field(default_factory=dict)

    def where(self) -> str:
        """The origin in a user's words: ``tlbench 0.1.0`` or the file's path."""
        if "package" in self.origin:
            return f"{self.origin['package']} {self.origin.get('version') or ''}".strip()
        return self.origin.get("file") or self.origin.get("module") or self.plugin

    def described(self) -> str:
        """``'strategies' (from tlbench 0.1.0)``, or the file's path alone for a loose file."""
        where = self.where()
        return repr(self.plugin) if where == self.plugin else f"{self.plugin!r} (from {where})"


@dataclass
class Registry:
    """Everything the loaded plugins registered, by kind and name."""

    entries: dict[str, dict[str, Registration]] = field(
        default_factory=lambda: {kind: {} for kind in KINDS}
    )
    broken: list[tuple[str, str]] = field(default_factory=list)  # (plugin, why)
    origins: dict[str, dict] = field(default_factory=dict)  # plugin -> where it came from
    default_grids: list[tuple[str, str]] = field(default_factory=list)  # (plugin, path of a TOML file)

    def add(self, kind: str, component: type, plugin: str) -> None:
        _, base, singular = KINDS[kind]
        if not (isinstance(component, type) and issubclass(component, base)):
            raise TypeError(
                f"plugin {plugin!r} registered {component!r} as a {singular}; "
                f"it must be a subclass of tlbench.{base.__name__}"
            )
        _check_declarations(component, plugin)
        existing = self.entries[kind].get(component.name)
        added = Registration(component, plugin, self.origins.get(plugin, {}))
        if existing is not None:
            # as `tlbench ls` names them: the first-party module 'strategies' says little alone
            raise ConfigError(
                f"Two plugins register the {singular} {component.name!r}: {existing.described()} and "
                f"{added.described()}. Uninstall or rename one of them."
            )
        self.entries[kind][component.name] = added

    def names(self, kind: str) -> list[str]:
        return sorted(self.entries[kind])

    def get(self, kind: str, name: str) -> type:
        """The class registered as ``name``; for backbones, also the family that claims it."""
        return self.registration(kind, name).component

    def registration(self, kind: str, name: str) -> Registration:
        entries = self.entries[kind]
        if name in entries:
            return entries[name]
        if kind == "backbones":
            families = [r for r in entries.values() if r.component.is_family()]
            claimed = [r for r in families if r.component().claims(name)]
            if len(claimed) > 1:
                owners = " and ".join(repr(r.plugin) for r in claimed)
                raise ConfigError(f"Backbone {name!r} is claimed by two plugins: {owners}.")
            if claimed:
                return claimed[0]
            known = [n for r in entries.values() for n in (r.component.featured or [r.component.name])]
            raise unknown_name_error("backbone", name, [n for n in known if "*" not in n],
                                     hint=self.missing_hint())
        raise unknown_name_error(KINDS[kind][2], name, entries, hint=self.missing_hint())

    def missing_hint(self) -> str:
        """What to do about a name no loaded plugin registers (errors.plugin_hint)."""
        return plugin_hint(plugin for plugin, _ in self.broken)

    def listing(self, kind: str, pattern: Optional[str] = None) -> Iterable[tuple[str, str, Registration]]:
        """(name, description, registration) in the order `tlbench ls` prints them; with an
        fnmatch ``pattern`` (as timm's ``list_models`` takes), only the names that match it,
        a family's among them (``Backbone.matching``). A family whose ``matching`` fails (or
        answers something other than a mapping) is listed by its own name alone, and the failure
        joins ``broken``."""
        for name in self.names(kind):
            reg = self.entries[kind][name]
            summary = reg.component.summary()
            if reg.component.is_family():
                yield from ((n, text, reg) for n, text in self._served(reg, pattern).items())
                summary = f"any name it resolves: {summary}"
            if pattern is None or fnmatch.fnmatchcase(name, pattern):
                yield name, summary, reg


    def _served(self, reg: Registration, pattern: Optional[str]) -> Mapping:
        """{name: description} of the names the family ``reg`` lists for ``pattern``."""
        if pattern is None:
            return reg.component.featured
        try:
            served = reg.component().matching(pattern)
            if not isinstance(served, Mapping):
                raise TypeError(f"it returned {type(served).__name__}, not a mapping of names to descriptions")
            return {str(n): str(text) for n, text in served.items()}
        except Exception as exc:  # plugin code: its failure is said, the rest still listed
            self.broken.append((reg.plugin, f"{reg.component.__name__}.matching({pattern!r}) failed: "
                                            f"{type(exc).__name__}: {exc}"))
            return {}


def _check_declarations(component: type, plugin: str) -> None:
    """The class attributes `tlbench ls` and grid files read, each of the type the core expects:
    a TypeError naming the attribute and the fix otherwise (the plugin is reported as broken), so
    that a mistake in one plugin never takes a listing down."""
    what = f"plugin {plugin!r} registered {component.__name__}"
    name = component.name
    if not isinstance(name, str) or not name:
        got = "without a name" if not name and isinstance(name, str) else f"with the name {name!r} ({type(name).__name__})"
        raise TypeError(f"{what} {got}: give it a name, a non-empty string, as the grid files will spell it")
    if not isinstance(component.description, str):
        raise TypeError(f"{what} with the description {component.description!r}: it must be a string (or "
                        "left out: the docstring's first line stands in)")
    options = component.Options
    if not (isinstance(options, type) and dataclasses.is_dataclass(options)):  # else `tlbench ls -v` fails on it
        raise TypeError(f"{what}, whose Options is not a dataclass: decorate it with @dataclass(frozen=True)")
    try:
        describe_options(options)
    except Exception as exc:  # an annotation that names nothing importable, say
        raise TypeError(f"{what}, whose Options cannot be read ({type(exc).__name__}: {exc}): give each field a "
                        "type the module can resolve and a tlbench.option()") from None
    featured = getattr(component, "featured", {})
    if not (isinstance(featured, Mapping) and all(isinstance(k, str) and isinstance(v, str)
                                                  for k, v in featured.items())):
        raise TypeError(f"{what} with featured = {featured!r:.60}: it must map names to one-line descriptions")


def _plugin_manager() -> pluggy.PluginManager:
    pm = pluggy.PluginManager("tlbench")
    pm.add_hookspecs(hookspecs)
    return pm


def _unknown_hooks(pm: pluggy.PluginManager, plugin: object) -> list[str]:
    """Hook implementations in ``plugin`` that match no spec (usually a misspelt hook name)."""
    unknown = []
    for attr in dir(plugin):
        if pm.parse_hookimpl_opts(plugin, attr) is not None and not hasattr(hookspecs, attr):
            unknown.append(attr)
    return unknown


def _register(pm: pluggy.PluginManager, registry: Registry, plugin: object, name: str, origin: dict) -> None:
    unknown = _unknown_hooks(pm, plugin)
    if unknown:
        registry.broken.append((name, f"unknown hook {unknown[0]!r} (valid: {', '.join(HOOKS)})"))
        return
    pm.register(plugin, name=name)
    registry.origins[name] = origin


HOOKS = [name for name, spec in vars(hookspecs).items() if hasattr(spec, "tlbench_spec")]  # as declared


def _file_sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _entry_point_plugins(pm, registry: Registry) -> None:
    for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
        if pm.has_plugin(ep.name):
            continue
        try:
            plugin = ep.load()
        except Exception as exc:  # a broken plugin must not take the others down
            registry.broken.append((ep.name, f"{type(exc).__name__}: {exc}"))
            continue
        dist = ep.dist
        origin = ({"package": dist.name, "version": dist.version} if dist is not None else {"module": ep.value})
        _register(pm, registry, plugin, ep.name, origin)


def _directory_plugins(pm, registry: Registry, directory: Path) -> None:
    if not directory.is_dir():
        raise ConfigError(f"Plugins folder {str(directory)!r} does not exist or is not a folder.")
    for path in sorted(directory.glob("*.py")):
        module_name = f"tlbench_dir_plugin_{path.stem}"
        try:
            spec = importlib.util.spec_from_file_location(module_name, path)
            module = importlib.util.module_from_spec(spec)
            sys.modules[module_name] = module
            spec.loader.exec_module(module)
        except Exception as exc:
            sys.modules.pop(module_name, None)
            registry.broken.append((str(path), f"{type(exc).__name__}: {exc}"))
            continue
        _register(pm, registry, module, str(path), {"file": str(path.resolve()), "sha256": _file_sha256(path)})


def _collect(pm: pluggy.PluginManager, registry: Registry) -> None:
    for kind, (hook_name, _, _) in KINDS.items():
        hook = getattr(pm.hook, hook_name)
        for impl in hook.get_hookimpls():
            plugin_name = pm.get_name(impl.plugin)

            def register(component, _kind=kind, _plugin=plugin_name):
                registry.add(_kind, component, _plugin)

            try:
                impl.function(**{arg: register for arg in impl.argnames})
            except ConfigError:
                raise
            except Exception as exc:
                registry.broken.append((plugin_name, f"{type(exc).__name__}: {exc}"))
    for impl in pm.hook.default_grid.get_hookimpls():
        plugin_name = pm.get_name(impl.plugin)
        try:
            path = impl.function()
        except Exception as exc:
            registry.broken.append((plugin_name, f"default_grid: {type(exc).__name__}: {exc}"))
            continue
        if path is not None:
            registry.default_grids.append((plugin_name, str(path)))


def load_registry(
    plugins_dir: Optional[str] = None,
    extra_plugins: Iterable[object] = (),
) -> Registry:
    """Discover every plugin and return what they registered.

    ``extra_plugins`` are objects (modules or classes with hook implementations) registered
    directly, which is how tests add a plugin for the length of one test.
    """
    pm = _plugin_manager()
    registry = Registry()
    _entry_point_plugins(pm, registry)
    folder = plugins_dir or os.environ.get(PLUGINS_DIR_ENV)
    if folder:
        _directory_plugins(pm, registry, Path(folder).expanduser())
    for i, plugin in enumerate(extra_plugins):
        name = getattr(plugin, "__name__", f"extra-{i}")
        _register(pm, registry, plugin, name, {"module": name})
    _collect(pm, registry)
    return registry

