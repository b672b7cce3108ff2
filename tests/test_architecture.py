"""The shape of the core, checked by parsing it: no import cycles, and no plugin known by name.

The core (tlbench/) measures; what is measured comes from plugins. A strategy, dataset, score
or backbone name in its code would make one plugin special, so the only places such names may
appear are docstrings, comments and command-line help.
"""

import ast
import io
import re
import tokenize
from pathlib import Path

import pytest

CORE = Path(__file__).resolve().parent.parent / "tlbench"


# -- import cycles -----------------------------------------------------------------------------


def module_name(path: Path, root: Path) -> str:
    parts = path.relative_to(root.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported_modules(source: str, known: set) -> set:
    """The modules of ``known`` that ``source`` imports anywhere (inside functions too: an import
    put off until a call is still a dependency). ``from pkg import sub`` names the submodule."""
    found = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            submodules = {f"{node.module}.{alias.name}" for alias in node.names} & known
            found |= submodules or {node.module}
    return found & known


def import_graph(root: Path) -> dict:
    paths = {module_name(p, root): p for p in root.rglob("*.py")}
    return {name: imported_modules(path.read_text(encoding="utf-8"), set(paths)) - {name}
            for name, path in paths.items()}


def cycles(graph: dict) -> list:
    """Every cycle found by depth-first search, each as the list of modules around it."""
    found, state = [], {}

    def visit(node, path):
        state[node] = "open"
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == "open":
                found.append(path[path.index(nxt):] + [nxt])
            elif nxt not in state:
                visit(nxt, path + [nxt])
        state[node] = "done"

    for node in sorted(graph):
        if node not in state:
            visit(node, [node])
    return found


def test_the_core_has_no_import_cycles():
    found = cycles(import_graph(CORE))
    assert not found, "import cycles: " + "; ".join(" -> ".join(c) for c in found)


def test_the_cycle_check_finds_a_cycle():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c", "a"]]
    known = {"pkg", "pkg.x", "pkg.y"}
    assert imported_modules("from pkg import x\ndef f():\n    import pkg.y\n", known) == {"pkg.x", "pkg.y"}
    assert imported_modules("from pkg import __version__\n", known) == {"pkg"}


# -- no plugin names in the core ---------------------------------------------------------------


def docstring_lines(tree: ast.AST) -> set:
    """Line numbers of docstrings and of `help=`/`description=` text (command-line help)."""
    lines = set()
    for node in ast.walk(tree):
        body = getattr(node, "body", None)
        if isinstance(body, list) and body and isinstance(body[0], ast.Expr) \
                and isinstance(body[0].value, ast.Constant) and isinstance(body[0].value.value, str):
            lines |= set(range(body[0].lineno, body[0].end_lineno + 1))
        if isinstance(node, ast.keyword) and node.arg in ("help", "description"):
            lines |= set(range(node.value.lineno, node.value.end_lineno + 1))
    return lines


def plugin_names_in_code(source: str, names: set) -> list:
    """(line, name) for each plugin name in code: an identifier or a string equal to it, or, for
    names that are not plain words (``linear_probe``, ``efficientnet_lite0``), inside a string."""
    skip = docstring_lines(ast.parse(source))
    distinctive = {n for n in names if not n.isalpha()}
    kinds = {tokenize.NAME, tokenize.STRING, getattr(tokenize, "FSTRING_MIDDLE", tokenize.STRING)}  # 3.12+
    found = []
    for token in tokenize.generate_tokens(io.StringIO(source).readline):
        line = token.start[0]
        if line in skip or token.type not in kinds:
            continue
        text = token.string.strip("\"'rbfRBF")
        if token.type == tokenize.NAME:  # `digits` as a variable is a word; `linear_probe` is a name
            found += [(line, text)] if text in distinctive else []
        elif text in names:
            found.append((line, text))
        else:
            found += [(line, n) for n in distinctive if re.search(rf"(?<![\w.-]){re.escape(n)}(?![\w-])", text)]
    return found


@pytest.fixture(scope="module")
def plugin_names():
    from tlbench.plugins import load_registry

    registry = load_registry()
    names = set()
    for kind in ("backbones", "strategies", "datasets", "scores", "sinks"):
        for name, _, _ in registry.listing(kind):
            names.add(name)
    return {n for n in names if "*" not in n}


def test_no_strategy_dataset_score_or_backbone_name_in_the_core(plugin_names):
    assert {"linear_probe", "scratch", "digits", "efficientnet_lite0", "logme"} <= plugin_names
    found = [f"{path.relative_to(CORE.parent)}:{line}: {name}"
             for path in sorted(CORE.rglob("*.py"))
             for line, name in plugin_names_in_code(path.read_text(encoding="utf-8"), plugin_names)]
    assert not found, "plugin names in the core's code:\n" + "\n".join(found)
    assert not list(CORE.rglob("*.toml")), "grid files belong to the plugins that provide them"


def test_the_name_check_finds_names_in_code_but_not_in_docs():
    source = ('"""Uses linear_probe."""\n'
              'CONTROL = "scratch"  # scratch\n'
              'def f(parser):\n'
              '    parser.add_argument("--x", help="e.g. linear_probe")\n'
              '    raise ValueError(f"add linear_probe, say {1}")\n'
              '    return "results folder" + "digits"\n'
              'def g(digits, linear_probe):\n'
              '    pass\n')
    names = {"scratch", "linear_probe", "digits", "folder"}
    assert plugin_names_in_code(source, names) == [(2, "scratch"), (5, "linear_probe"), (6, "digits"),
                                                     (7, "linear_probe")]


MAX_MODULE_LINES = 400


@pytest.mark.parametrize("path", sorted(CORE.rglob("*.py")), ids=lambda p: str(p.relative_to(CORE)))
def test_each_core_module_is_short_and_opens_by_naming_its_job(path):
    """One job per module: a module past 400 lines has grown a second one, and its opening
    docstring is where a newcomer learns which one it has."""
    source = path.read_text(encoding="utf-8")
    assert len(source.splitlines()) <= MAX_MODULE_LINES, f"{path.name}: split it by job"
    assert ast.get_docstring(ast.parse(source)), f"{path.name} has no opening docstring"


# -- packaging ---------------------------------------------------------------------------------


def test_the_wheel_lists_every_package_of_the_checkout():
    """pyproject.toml names its packages one by one (the plugins live in plugins/, installed as
    tlbench_plugins): a folder left out there is missing from the wheel, while an editable install,
    which the tests use, still finds it."""
    import tomllib

    root = CORE.parent
    setup = tomllib.loads((root / "pyproject.toml").read_text())["tool"]["setuptools"]
    renamed = {folder: package for package, folder in setup["package-dir"].items()}
    found = set()
    for init in [*root.glob("tlbench/**/__init__.py"), *root.glob("plugins/**/__init__.py")]:
        parts = init.parent.relative_to(root).parts
        found.add(".".join((renamed.get(parts[0], parts[0]), *parts[1:])))
    assert found == set(setup["packages"])
