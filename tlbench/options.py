"""Typed, documented options for plugins and settings, validated from plain TOML data.

A component declares its options as a dataclass; each field's type annotation is what a grid
value is checked against and its ``help`` metadata is what ``tlbench ls -v`` prints.
"""

from __future__ import annotations

import dataclasses
import itertools
import typing
from typing import Any, Optional

from tlbench.errors import ConfigError, closest

_MISSING = dataclasses.MISSING


def option(default: Any = _MISSING, help: str = "", tunable: bool = True, path: bool = False) -> Any:
    """A dataclass field with a help text: ``epochs: int = option(3, "passes over the data")``.

    Leave ``default`` out for a required option. ``tunable=False`` marks a numeric option that
    changes how a fit runs but not what it learns (a memory budget, say): a grid may not give
    it a list of values to select from on validation. ``path=True`` marks a string option that
    names a file or folder: only such options are files to tlbench (a file one names is hashed
    into the cell id, and on a cluster a relative one is refused); any other string is a
    string, even when a file of that name happens to exist.
    """
    metadata = {"help": help, "tunable": tunable, "path": path}
    if isinstance(default, (list, dict, set)):
        return dataclasses.field(default_factory=lambda: type(default)(default), metadata=metadata)
    return dataclasses.field(default=default, metadata=metadata)


@dataclasses.dataclass(frozen=True)
class NoOptions:
    """For components that take no options."""


def _type_ok(value: Any, annotation: Any) -> bool:
    origin = typing.get_origin(annotation)
    if origin is typing.Union or str(origin) == "<class 'types.UnionType'>":
        return any(_type_ok(value, arg) for arg in typing.get_args(annotation))
    if annotation is type(None):
        return value is None
    if annotation is Any:
        return True
    if annotation is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if annotation is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if origin in (list, tuple):
        (item,) = typing.get_args(annotation)[:1] or (Any,)
        return isinstance(value, (list, tuple)) and all(_type_ok(v, item) for v in value)
    if isinstance(annotation, type):
        return isinstance(value, annotation)
    return True


def _type_name(annotation: Any) -> str:
    if isinstance(annotation, type):
        return annotation.__name__
    return str(annotation).replace("typing.", "")


def build_options(options_cls: type, values: dict, where: str) -> Any:
    """Check ``values`` against the dataclass ``options_cls`` and return an instance.

    Unknown keys, wrong types and values the class's own ``__post_init__`` rejects all become
    one ConfigError naming ``where`` (e.g. ``[strategy.partial_unfreeze]``).
    """
    fields = {f.name: f for f in dataclasses.fields(options_cls)}
    hints = typing.get_type_hints(options_cls)
    for key, value in values.items():
        if key not in fields:
            hint = closest(key, fields)
            fix = f" Did you mean {hint[0]!r}?" if hint else ""
            valid = ", ".join(fields) or "none"
            raise ConfigError(f"Unknown option {key!r} in {where}.{fix} Valid options: {valid}")
        annotation = hints[key]
        if annotation is float and isinstance(value, int) and not isinstance(value, bool):
            values = {**values, key: float(value)}
        elif not _type_ok(value, annotation):
            one_value = (isinstance(value, list) and where.startswith(("[backbone.", "[dataset.", "[score."))
                         and _type_ok(value[:1] and value[0], annotation))
            raise ConfigError(
                f"Option {key!r} in {where} must be {_type_name(annotation)}, got {value!r}."
                + (" It takes one value: only a strategy's options take a list, to select on validation."
                   if one_value else "")
            )
    missing = [
        name for name, f in fields.items()
        if f.default is _MISSING and f.default_factory is _MISSING and name not in values
    ]
    if missing:
        raise ConfigError(f"Missing required option {missing[0]!r} in {where}.")
    try:
        return options_cls(**values)
    except (ValueError, ConfigError) as exc:
        raise ConfigError(f"{where}: {exc}") from None


def _is_numeric(annotation: Any) -> bool:
    return annotation in (int, float)


def build_candidates(options_cls: type, values: dict, where: str) -> tuple:
    """Like :func:`build_options`, but a list for a numeric option means "try each value".

    Returns one options instance per combination of listed values (a single one when nothing
    is listed); the core fits each and keeps the one that scores best on validation.
    """
    hints = typing.get_type_hints(options_cls)
    tunable = {f.name: f.metadata.get("tunable", True) for f in dataclasses.fields(options_cls)}
    swept = {}
    for key, value in values.items():
        if isinstance(value, list) and key in hints and _is_numeric(hints[key]):
            if not tunable[key]:
                raise ConfigError(
                    f"Option {key!r} in {where} takes one value, got the list {value!r}: it sets how "
                    f"the fit runs, not what it learns, so there is nothing to select on validation.")
            if not value:
                raise ConfigError(f"Option {key!r} in {where} is an empty list; give at least one value.")
            nested = next((item for item in value if isinstance(item, (list, dict))), None)
            if nested is not None:
                raise ConfigError(f"Option {key!r} in {where} lists {nested!r}; a list of values to "
                                  f"select from holds single values, e.g. [1e-3, 3e-4].")
            if len(set(value)) != len(value):
                raise ConfigError(f"Option {key!r} in {where} lists a value twice: {value!r}.")
            swept[key] = value
    fixed = {k: v for k, v in values.items() if k not in swept}
    combinations = itertools.product(*swept.values()) if swept else [()]
    return tuple(build_options(options_cls, {**fixed, **dict(zip(swept, combo))}, where)
                 for combo in combinations)


def end_of_list(values: list, chosen: int) -> Optional[str]:
    """Where the value validation chose (``values[chosen]``) lies in a tuned list: "smallest",
    "largest" or "inside"; None when the values are not all numbers or fewer than two differ."""
    if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values) or len(set(values)) < 2:
        return None
    value = values[chosen]
    return "largest" if value == max(values) else "smallest" if value == min(values) else "inside"


def describe_options(options_cls: type) -> list[tuple[str, str, str, str]]:
    """(name, type, default, help) for each option, for ``tlbench ls -v``."""
    hints = typing.get_type_hints(options_cls)
    rows = []
    for f in dataclasses.fields(options_cls):
        if f.default is not _MISSING:
            default = repr(f.default)
        elif f.default_factory is not _MISSING:
            default = repr(f.default_factory())
        else:
            default = "(required)"
        text = f.metadata.get("help", "")
        if f.metadata.get("path", False):
            text += " (a path)"
        if not f.metadata.get("tunable", True):
            text += " (one value: a list is refused)"
        rows.append((f.name, _type_name(hints[f.name]), default, text))
    return rows


def path_values(options: Any) -> dict:
    """{name: value} of the options declared ``path=True`` that are set (a non-empty string)."""
    return {f.name: getattr(options, f.name) for f in dataclasses.fields(options)
            if f.metadata.get("path", False) and isinstance(getattr(options, f.name), str) and getattr(options, f.name)}


def options_as_dict(options: Any) -> dict:
    return dataclasses.asdict(options)
