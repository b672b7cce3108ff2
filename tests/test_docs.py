"""README.md and docs/ are the manual: they must match the code (datasette's habit).

The pages are parsed, not searched: a table's first column is compared, as a set of code spans,
with the names the code has, in both directions (nothing missing, nothing stale), so "`backbone"
no longer passes for "`backbones`". The examples of docs/plugins.md (and the README's plugin)
run in test_docs_example.py; docs/api.md, the reference, has a section for every public name.
"""

import argparse
import inspect
import json
import re
from pathlib import Path

import tlbench
from tlbench import hookspecs, variants
from tlbench.cli_parser import build_parser
from tlbench.error_kinds import ERROR_KINDS
from tlbench.grid import TOP_LEVEL_KEYS
from tlbench.options import describe_options
from tlbench.records import OPTIONAL, REQUIRED, STATUSES

ROOT = Path(__file__).parent.parent
README = ROOT / "README.md"
DOCS = ROOT / "docs"
API = DOCS / "api.md"
PAGES = [README, *sorted(DOCS.glob("*.md"))]
KINDS = {"backbone": "backbones", "strategy": "strategies", "dataset": "datasets", "score": "scores", "sink": "sinks"}

# Record fields written only by some cells: a failed one (traceback), one whose options were lists.
FIELDS_OF_SOME_RECORDS = {"traceback", "candidates", "selected", "selection_s", "error_kind"}


def read(path: Path) -> str:
    return path.read_text(encoding="utf-8")


# -- a small markdown parser -----------------------------------------------------------------


def prose_lines(text: str):
    """(line, inside a fenced code block) for every line; fence lines count as inside."""
    fence = None
    for line in text.splitlines():
        marker = re.match(r"^\s*(```+|~~~+)", line)
        if fence is None and marker:
            fence = marker.group(1)
            yield line, True
        elif fence is not None:
            if line.strip().startswith(fence):
                fence = None
            yield line, True
        else:
            yield line, False


def headings(text: str) -> list[tuple[int, str, int]]:
    """(level, title, line index) of every heading outside code blocks."""
    found = []
    for i, (line, fenced) in enumerate(prose_lines(text)):
        match = None if fenced else re.match(r"^(#{1,6})\s+(.*?)\s*#*\s*$", line)
        if match:
            found.append((len(match.group(1)), match.group(2), i))
    return found


def section(text: str, title: str) -> str:
    """The text under the heading ``title`` up to the next heading of the same or a higher level."""
    lines = text.splitlines()
    marks = headings(text)
    for n, (level, heading, start) in enumerate(marks):
        if heading == title:
            end = next((i for lvl, _, i in marks[n + 1:] if lvl <= level), len(lines))
            return "\n".join(lines[start + 1:end])
    raise AssertionError(f"no heading {title!r}")


def subsections(text: str, level: int) -> dict[str, str]:
    """{title: text} of every heading of ``level`` in ``text``."""
    return {title: section(text, title) for lvl, title, _ in headings(text) if lvl == level}


def code_blocks(text: str, lang: str = "python") -> list[str]:
    blocks, current, opened = [], None, None
    for line in text.splitlines():
        marker = re.match(r"^\s*(```+)\s*(\S*)", line)
        if current is None and marker:
            current, opened = [], marker
        elif current is not None and line.strip().startswith(opened.group(1)):
            if opened.group(2) == lang:
                blocks.append("\n".join(current) + "\n")
            current = None
        elif current is not None:
            current.append(line)
    return blocks


def split_row(line: str) -> list[str]:
    """The cells of a table row; a `|` inside a code span does not split."""
    cells, cell, in_code = [], "", False
    for char in line.strip().strip("|"):
        if char == "`":
            in_code = not in_code
        if char == "|" and not in_code:
            cells.append(cell.strip())
            cell = ""
        else:
            cell += char
    return cells + [cell.strip()]


def tables(text: str) -> list[list[list[str]]]:
    """Every table outside code blocks: its rows (header first, the --- row left out)."""
    found, rows = [], []
    for line, fenced in list(prose_lines(text)) + [("", False)]:
        if not fenced and line.lstrip().startswith("|"):
            if not re.fullmatch(r"\s*\|?[\s:|-]+\|?\s*", line):
                rows.append(split_row(line))
        elif rows:
            found.append(rows)
            rows = []
    return found


def spans(cell: str) -> list[str]:
    return re.findall(r"`([^`]+)`", cell)


def column(table: list[list[str]], header: str) -> list[str]:
    index = table[0].index(header)
    return [row[index] for row in table[1:]]


def names_in(cells) -> set[str]:
    return {name for cell in cells for name in spans(cell)}


def mismatch(documented, actual, what: str) -> list[str]:
    """What the docs lack and what they name that the code does not have."""
    documented, actual = set(documented), set(actual)
    problems = []
    if actual - documented:
        problems.append(f"{what}: not documented: {sorted(actual - documented)}")
    if documented - actual:
        problems.append(f"{what}: documented but not in the code: {sorted(documented - actual)}")
    return problems


def slug(title: str) -> str:
    """GitHub's anchor for a heading."""
    return re.sub(r"[^\w\- ]", "", title.strip().lower()).replace(" ", "-")


def anchors(text: str) -> set[str]:
    seen, result = {}, set()
    for _, title, _ in headings(text):
        base = slug(title)
        result.add(base if base not in seen else f"{base}-{seen[base]}")
        seen[base] = seen.get(base, 0) + 1
    return result


def link_problems(page: Path) -> list[str]:
    """Relative links (and images) in ``page`` whose file or heading does not exist."""
    problems = []
    prose = "\n".join(line for line, fenced in prose_lines(read(page)) if not fenced)
    prose = re.sub(r"`[^`]*`", "", prose)
    for target in re.findall(r"!?\[[^\]]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)", prose):
        if re.match(r"^[a-z][a-z0-9+.-]*:", target):  # https:, mailto:
            continue
        path, _, anchor = target.partition("#")
        file = (page.parent / path).resolve() if path else page
        if not file.exists():
            problems.append(f"{page.name}: link to {target}: no such file")
        elif anchor and (file.suffix != ".md" or anchor not in anchors(read(file))):
            problems.append(f"{page.name}: link to {target}: no such heading")
    return problems


# -- the public API's sections -----------------------------------------------------------------


def public_members(obj) -> set[str]:
    """What a class of the public API defines itself: methods, attributes, fields."""
    if not inspect.isclass(obj):
        return set()
    own = {name for name in vars(obj) if not name.startswith("_")}
    return own | set(inspect.get_annotations(obj))


def has_behaviour(obj) -> bool:
    """A function (or a decorator), or a class with methods of its own: what an example can show
    at work. Data (a dataclass of fields, an exception, a version string) is its signature."""
    if not inspect.isclass(obj):
        return callable(obj)
    return any(inspect.isfunction(value) or isinstance(value, (classmethod, staticmethod, property))
               for name, value in vars(obj).items() if not name.startswith("_"))


def api_problems(text: str, namespace) -> list[str]:
    """Every name of ``namespace.__all__`` needs a ``## `tlbench.NAME` `` section whose first
    python block is its signature (with every member the class defines); a name with behaviour
    (:func:`has_behaviour`) also needs a further python block, an example that uses it."""
    sections = subsections(text, 2)
    documented = {m.group(1) for title in sections if (m := re.fullmatch(r"`tlbench\.(\w+)`", title))}
    problems = [f"tlbench.{name}: documented but not in tlbench.__all__"
                for name in sorted(documented - set(namespace.__all__))]
    for name in namespace.__all__:
        title = f"`tlbench.{name}`"
        if title not in sections:
            problems.append(f"tlbench.{name}: no '## {title}' section")
            continue
        blocks = code_blocks(sections[title])
        if not blocks:
            problems.append(f"tlbench.{name}: needs a python block with its signature")
            continue
        signature, examples = blocks[0], blocks[1:]
        obj = getattr(namespace, name)
        if inspect.isclass(obj):
            declared = rf"^\s*class {name}\b"
        elif inspect.isfunction(obj):
            declared = rf"^\s*def {name}\("
        else:
            declared = rf"^\s*{re.escape(name)}\s*[:=]"
        if not re.search(declared, signature, re.M):
            problems.append(f"tlbench.{name}: its signature block does not declare it")
        for member in sorted(public_members(obj)):
            if not re.search(rf"\b{re.escape(member)}\b", signature):
                problems.append(f"tlbench.{name}.{member}: missing from its signature block")
        if has_behaviour(obj) and not any(re.search(rf"\b{re.escape(name)}\b", example) for example in examples):
            problems.append(f"tlbench.{name}: no example uses it")
    return problems


# -- README ------------------------------------------------------------------------------------


def test_readme_is_at_most_200_lines():
    assert len(read(README).splitlines()) <= 200


def test_readme_table_lists_every_registered_component(registry):
    (table,) = tables(section(read(README), "What is installed"))
    documented = {kind: set() for kind in KINDS.values()}
    for kind, name in zip(column(table, "kind"), column(table, "name")):
        documented[KINDS[kind]] |= set(spans(name))
    problems = []
    for kind in KINDS.values():
        registered = set()
        for reg in registry.entries[kind].values():
            component = reg.component
            registered |= set(component.featured) if component.is_family() else {component.name}
        problems += mismatch(documented[kind], registered, f"README's {kind}")
    assert problems == []


def test_readme_keeps_the_test_command_ci_runs():
    """.ci/run runs the README's test command: both must name the same one."""
    ci = read(ROOT / ".ci" / "run")
    commands = [line.strip() for block in code_blocks(section(read(README), "Tests"), "bash")
                for line in block.splitlines()]
    test_command = "python3 -m pytest -q -n auto --dist loadfile"
    assert f'pip install -e ".[test]" && {test_command}' in commands
    assert re.search(r'^python3 -m pip install -e "\.\[test\]"$', ci, re.M)
    assert re.search(rf"^{re.escape(test_command)}$", ci, re.M)


# -- grid files --------------------------------------------------------------------------------


def test_settings_table_matches_the_settings_dataclass():
    grids = read(DOCS / "grids.md")
    (table, *_) = tables(section(grids, "`[settings]`"))
    documented = {names[0]: spans(default)[0] for names, default
                  in zip(map(spans, column(table, "key")), column(table, "default"))}
    actual = {name: default for name, _, default, _ in describe_options(tlbench.Settings)}
    assert mismatch(documented, actual, "[settings] keys") == []
    assert documented == actual  # the defaults too


def test_top_level_keys_table_matches_the_grid_keys():
    (table,) = tables(section(read(DOCS / "grids.md"), "Top-level keys"))
    keys = {re.sub(r"^\[(\w+)(\.NAME)?\]$", r"\1", name) for name in names_in(column(table, "key"))}
    assert mismatch(keys, TOP_LEVEL_KEYS, "top-level grid keys") == []


def option_pairs(cell: str) -> dict[str, str]:
    """`lr` (0.001), `path` (required) -> {"lr": "0.001", "path": "required"}"""
    return dict(re.findall(r"`(\w+)` \(([^()]*)\)", cell))


def test_option_tables_match_every_plugins_options(registry):
    text = section(read(DOCS / "grids.md"), "Options per plugin")
    problems = []
    for kind in KINDS.values():
        (table,) = tables(section(text, kind.capitalize()))
        documented = {name: option_pairs(options) for names, options
                      in zip(map(spans, column(table, "name")), column(table, "options (default)"))
                      for name in names[:1]}
        problems += mismatch(documented, registry.names(kind), f"options table of {kind}")
        for name in set(documented) & set(registry.names(kind)):
            actual = {option: default.strip("()") for option, _, default, _
                      in describe_options(registry.entries[kind][name].component.Options)}
            if documented[name] != actual:
                problems.append(f"options of {kind} {name}: documented {documented[name]}, code {actual}")
    assert problems == []


# -- the command line --------------------------------------------------------------------------


def flags(parser: argparse.ArgumentParser) -> set[str]:
    return {flag for action in parser._actions for flag in action.option_strings
            if flag not in ("-h", "--help")}


def command_parsers() -> dict:
    """{"tlbench": parser, "tlbench run": its parser, ...}"""
    parser = build_parser()
    (commands,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    return {"tlbench": parser, **{f"tlbench {name}": sub for name, sub in commands.choices.items()}}


def test_cli_page_documents_every_command_and_flag():
    parsers = command_parsers()
    text = read(DOCS / "cli.md")
    sections = {title.strip("`"): body for title, body in subsections(text, 2).items()
                if title.startswith("`tlbench")}  # not "Exit codes"
    problems = mismatch(sections, parsers, "commands in docs/cli.md")
    for command in set(sections) & set(parsers):
        (table,) = tables(sections[command])
        problems += mismatch(names_in(column(table, "flag")), flags(parsers[command]), f"`{command}` flags")
    assert problems == []


# -- the glossary ------------------------------------------------------------------------------

# Flags that switch something on or off and name no thing: the glossary need not list them.
SWITCHES = {"--version", "-q", "--quiet", "-v", "--verbose", "--screenshot"}


def known_spellings(parsers: dict) -> set[str]:
    """What a user can type or read by name: commands, flags, record fields, grid-file keys,
    settings, hooks and environment variables."""
    core_source = "\n".join(path.read_text(encoding="utf-8") for path in (ROOT / "tlbench").rglob("*.py"))
    return ({"tlbench", *parsers} | {flag for parser in parsers.values() for flag in flags(parser)}
            | set(REQUIRED) | set(OPTIONAL) | published_record_fields() | FIELDS_OF_SOME_RECORDS
            | set(TOP_LEVEL_KEYS) | {variants.PLUGIN_KEY, variants.ABLATE_KEY}
            | {name for name, _, _, _ in describe_options(tlbench.Settings)}
            | {name for name, value in vars(hookspecs).items() if hasattr(value, "tlbench_spec")}
            | set(re.findall(r"\bTLBENCH_[A-Z_]+\b", core_source)))


def python_name_exists(dotted: str) -> bool:
    """``tlbench.grid.Cell``, ``tlbench.Strategy.fit``, ``tlbench.report.Leaderboard.transfer_gain``
    (a dataclass field): the longest importable module, then attributes."""
    import importlib

    parts = dotted.split(".")
    for cut in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:cut]))
        except ImportError:
            continue
        for name in parts[cut:]:
            fields = getattr(obj, "__dataclass_fields__", {})
            if not hasattr(obj, name) and name not in fields:
                return False
            obj = getattr(obj, name, None)
        return True
    return False


def spelling_of(span: str) -> str:
    """The name a span spells: `[strategy.NAME]` -> strategy, `--executor ray` -> --executor."""
    table = re.fullmatch(r"\[(\w+)(?:\.NAME)?\]", span)
    if table:
        return table.group(1)
    return span.split()[0] if span.startswith("-") else span


def glossary_problems(text: str, parsers: dict, known: set) -> list[str]:
    """Each term once; each spelling real and of one term only; every command and every flag
    that names a thing (not a SWITCHES one) spelled by some term."""
    (table,) = tables(section(text, "Terms"))
    terms = column(table, "term")
    problems = [f"term {t!r} is listed twice" for t in sorted({t for t in terms if terms.count(t) > 1})]
    owner: dict = {}
    for term, cell in zip(terms, column(table, "spelled")):
        for span in spans(cell):
            name = spelling_of(span)
            if not (name in known or (name.startswith("tlbench.") and python_name_exists(name))):
                problems.append(f"{term}: `{span}` is no command, flag, record field, grid key, setting, "
                                "hook, environment variable or tlbench name")
            if owner.setdefault(name, term) != term:
                problems.append(f"`{name}` spells two terms: {owner[name]} and {term}")
    commands = {name for name in parsers if name != "tlbench"}
    every_flag = {flag for parser in parsers.values() for flag in flags(parser)}
    unlisted = (commands | every_flag) - SWITCHES - set(owner)
    return problems + [f"{name}: in no term of the glossary" for name in sorted(unlisted)]


def test_the_glossary_spells_every_term_as_the_code_and_cli_do():
    parsers = command_parsers()
    assert SWITCHES <= {flag for parser in parsers.values() for flag in flags(parser)}
    assert glossary_problems(read(DOCS / "concepts.md"), parsers, known_spellings(parsers)) == []
    assert "(docs/concepts.md)" in read(README)


def test_a_glossary_with_a_stale_spelling_a_missing_flag_or_a_doubled_term_is_reported():
    parsers = command_parsers()
    text = read(DOCS / "concepts.md")
    stale = text.replace("`--grid-name`", "`--grid-nam`")
    assert glossary_problems(stale, parsers, known_spellings(parsers)) == [
        "grid name: `--grid-nam` is no command, flag, record field, grid key, setting, hook, environment "
        "variable or tlbench name",
        "--grid-name: in no term of the glossary"]
    doubled = text.replace("| grid name | `name`,", "| grid | `name`,").replace("`tlbench.grid.Cell`", "`run_id`")
    assert glossary_problems(doubled, parsers, known_spellings(parsers)) == [
        "term 'grid' is listed twice", "`run_id` spells two terms: cell and cell id"]
    assert not python_name_exists("tlbench.report.build_report")
    assert python_name_exists("tlbench.report.Leaderboard.transfer_gain")


# -- plugins -----------------------------------------------------------------------------------


def test_every_hook_has_a_section():
    hooks = {name for name, value in vars(hookspecs).items() if hasattr(value, "tlbench_spec")}
    documented = {title.strip("`").split("(")[0]
                  for title in subsections(section(read(DOCS / "plugins.md"), "Hooks"), 3)}
    assert mismatch(documented, hooks, "hooks") == []


def test_every_public_name_has_its_signature_and_an_example_where_it_has_behaviour():
    assert api_problems(read(API), tlbench) == []


# -- records -----------------------------------------------------------------------------------


def published_record_fields() -> set[str]:
    return {key for path in ROOT.glob("results/*/records/*.json") for key in json.loads(read(path))}


def documented_record_fields() -> set[str]:
    (table,) = tables(section(read(DOCS / "records.md"), "Fields"))
    return names_in(column(table, "field"))


def test_record_field_table_matches_the_schema_and_the_published_records():
    documented = documented_record_fields()
    written = set(REQUIRED) | set(OPTIONAL) | published_record_fields()
    problems = mismatch(documented, written | FIELDS_OF_SOME_RECORDS, "record fields")
    assert problems == []


def test_status_and_error_kind_tables_match_the_code():
    text = read(DOCS / "records.md")
    (statuses,) = tables(section(text, "Statuses"))
    (kinds,) = tables(section(text, "Error kinds"))
    problems = (mismatch(names_in(column(statuses, "status")), STATUSES, "statuses")
                + mismatch(names_in(column(kinds, "kind")), ERROR_KINDS, "error kinds"))
    assert problems == []


# -- links and published results ---------------------------------------------------------------


def test_every_relative_link_resolves():
    assert [problem for page in PAGES for problem in link_problems(page)] == []


def test_every_published_leaderboard_is_linked_from_the_results_page():
    page = DOCS / "results.md"
    prose = "\n".join(line for line, fenced in prose_lines(read(page)) if not fenced)
    linked = {(page.parent / target).resolve() for target in re.findall(r"\]\(([^)#\s]+)", prose)}
    published = {path.resolve() for path in ROOT.glob("results/*/leaderboard.md")}
    assert published and published <= linked
    commands = [line for block in code_blocks(read(page), "bash") for line in block.splitlines()]
    assert "tlbench report --results results/offline-default --screenshot" in commands


def markdown_names(text: str) -> set[str]:
    """The .md files a text names: `docs/cli.md`, DESIGN.md, ``leaderboard.md``."""
    return set(re.findall(r"\b([A-Za-z][\w-]*\.md)\b", text))


def test_every_markdown_file_the_docs_code_and_tests_name_exists():
    """A page, module or test that names a page the repository lacks (a design note kept
    elsewhere, say) sends its reader nowhere."""
    existing = {path.name for path in ROOT.rglob("*.md") if ".git" not in path.parts}
    sources = [*PAGES, ROOT / "benchmarks" / "README.md", *sorted((ROOT / "tlbench").rglob("*.py")),
               *sorted((ROOT / "plugins").rglob("*.py")), *sorted((ROOT / "benchmarks").glob("*.py")),
               *(path for path in sorted((ROOT / "tests").glob("*.py")) if path.name != "test_docs.py")]
    missing = [f"{path.relative_to(ROOT)}: {name}" for path in sources
               for name in sorted(markdown_names(read(path)) - existing)]
    assert missing == []
    assert markdown_names("as DESIGN.md says; see docs/cli.md") == {"DESIGN.md", "cli.md"}


def test_every_tlbench_import_in_the_docs_resolves():
    """`from tlbench.report import build_leaderboard, frames` and the like, in prose or code."""
    import importlib

    problems = []
    for page in PAGES:
        for module, names in re.findall(r"from (tlbench(?:\.\w+)*) import ([\w, ]+)", read(page)):
            try:
                imported = importlib.import_module(module)
            except ImportError:
                problems.append(f"{page.name}: no module {module}")
                continue
            problems += [f"{page.name}: {module} has no {name}" for name in re.findall(r"\w+", names)
                         if not hasattr(imported, name)]
    assert problems == []


def test_the_layout_names_every_module_of_the_core():
    (layout,) = code_blocks(section(read(DOCS / "development.md"), "Layout"), "")
    lines = layout.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("tlbench/"))
    documented = set()
    for line in lines[start + 1:]:
        if not line.startswith("  "):
            break
        documented.add(line.split()[0])
    core = ROOT / "tlbench"
    actual = {p.name for p in core.glob("*.py")} | {f"{p.name}/" for p in core.iterdir()
                                                    if p.is_dir() and not p.name.startswith(("_", "."))}
    assert mismatch(documented, actual, "modules of tlbench/ in docs/development.md") == []


# -- environment variables ---------------------------------------------------------------------


def environment_variables(text: str) -> set[str]:
    return set(re.findall(r"\bTLBENCH_[A-Z_]+\b", text))


def undocumented_variables(code: str, docs: str) -> list[str]:
    """The TLBENCH_ variables ``code`` names that ``docs`` does not."""
    return sorted(environment_variables(code) - environment_variables(docs))


def test_every_environment_variable_the_code_reads_is_documented():
    sources = [path for folder in ("tlbench", "plugins") for path in sorted((ROOT / folder).rglob("*.py"))]
    code = "".join(map(read, sources))
    docs = "".join(read(page) for page in sorted(DOCS.glob("*.md")))
    assert undocumented_variables(code, docs) == []


# -- the checks above can fail -----------------------------------------------------------------


def test_a_table_naming_backbone_for_backbones_is_reported_both_ways():
    wrong = "| key | meaning |\n|---|---|\n| `backbone` | the models |\n| `seeds` | seeds |\n"
    (table,) = tables(wrong)
    problems = mismatch(names_in(column(table, "key")), {"backbones", "seeds"}, "keys")
    assert problems == ["keys: not documented: ['backbones']",
                        "keys: documented but not in the code: ['backbone']"]


def without_examples(text: str, name: str) -> str:
    """``text`` with every python block of ``name``'s section after the first (its signature)
    removed."""
    title = f"## `tlbench.{name}`"
    start = text.index(title)
    end = text.find("\n## ", start + len(title))
    end = len(text) if end < 0 else end
    signature = re.search(r"```python\n.*?\n```", text[start:end], re.S).end() + start
    rest = re.sub(r"```python\n.*?\n```", "", text[signature:end], flags=re.S)
    return text[:signature] + rest + text[end:]


def test_a_public_name_without_docs_is_reported():
    text = read(API)
    without_split = re.sub(r"^## `tlbench\.Split`$.*?(?=^## )", "", text, flags=re.M | re.S)
    assert api_problems(without_split, tlbench) == ["tlbench.Split: no '## `tlbench.Split`' section"]
    without_memo = text.replace("    memo: dict ", "    scratchpad: dict ")
    assert api_problems(without_memo, tlbench) == ["tlbench.FitContext.memo: missing from its signature block"]
    without_shuffle_seed = text.replace("    def shuffle_seed(", "    def order_seed(")
    assert api_problems(without_shuffle_seed, tlbench) == [
        "tlbench.FitContext.shuffle_seed: missing from its signature block"]


def test_only_a_name_with_behaviour_needs_an_example():
    text = read(API)
    assert api_problems(without_examples(text, "Split"), tlbench) == ["tlbench.Split: no example uses it"]
    assert api_problems(without_examples(text, "option"), tlbench) == ["tlbench.option: no example uses it"]
    for data in ("Images", "Settings", "ConfigError", "NoOptions", "__version__"):
        assert api_problems(without_examples(text, data), tlbench) == [], data


def test_broken_links_are_reported(tmp_path):
    (tmp_path / "other.md").write_text("# Other page\n\n## A heading\n", encoding="utf-8")
    page = tmp_path / "page.md"
    page.write_text("[ok](other.md#a-heading) [gone](missing.md) [no anchor](other.md#nowhere)\n"
                    "`[in code](missing.md)`\n\n```\n[in a block](missing.md)\n```\n", encoding="utf-8")
    assert link_problems(page) == ["page.md: link to missing.md: no such file",
                                   "page.md: link to other.md#nowhere: no such heading"]


def test_an_environment_variable_missing_from_the_docs_is_reported():
    code = 'size = os.environ.get("TLBENCH_MATERIALIZE_MB", "2048")\ncache = os.environ["TLBENCH_CACHE_DIR"]\n'
    assert undocumented_variables(code, "Set `TLBENCH_CACHE_DIR` to move the cache.") == ["TLBENCH_MATERIALIZE_MB"]
