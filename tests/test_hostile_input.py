"""Hostile input: names, record texts and files made to attack whoever reads tlbench's output
(markdown and LaTeX readers, the terminal, the memory of `tlbench report`)."""

import re

from test_report import GRID, record, write_all

SCRIPT = "<script>alert(1)</script>"
IMAGE = "<img src=x onerror=alert(1)>"


def hostile_records():
    """Records whose names and texts carry HTML, a table break, a heading and a link."""
    dataset = f"digits{SCRIPT}\n\\input{{/etc/passwd}}"
    return [record(dataset, IMAGE, "probe\n\n# injected heading", 0, 0.9,
                   warnings=[f"seed 0 | {SCRIPT}\n\n## also injected"]),
            record(dataset, IMAGE, "probe\n\n# injected heading", 1, 0.8),
            record(dataset, "lite0", "scratch", 0, 0.5, pretrained=False),
            record(dataset, "lite0", "[click](javascript:alert(1))", 0, status="failed",
                   error=f"RuntimeError: {IMAGE}\n| a | b |")]


def test_hostile_names_reach_the_markdown_and_latex_as_text(tmp_path, cli):
    write_all(tmp_path, hostile_records())
    code, out, err = cli("report", "--results", tmp_path)
    assert code == 0, err
    md = (tmp_path / GRID / "leaderboard.md").read_text()
    assert "<script" not in md and "<img" not in md and "[click](" not in md
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in md and "&lt;img src=x onerror=alert(1)&gt;" in md
    assert not re.search(r"^#+ (injected|also)", md, re.M)  # no heading of its own
    for table in re.findall(r"(?:^\|.*\n)+", md, re.M):  # every row has its header's columns
        columns = {len(re.split(r"(?<!\\)\|", line)) for line in table.splitlines()}
        assert len(columns) == 1, table
    for name, tex in ((p.name, p.read_text()) for p in (tmp_path / GRID).glob("*.tex")):
        comment, *body = tex.splitlines()  # a name in the comment, on its line; escaped below it
        rules = {"\\toprule", "\\midrule", "\\bottomrule", "\\end{tabular}"}
        assert comment.startswith("% ") and body[0].startswith("\\begin{tabular}"), name
        assert all(line in rules or line.endswith(" \\\\") for line in body[1:]), name
        assert "<script" not in "".join(body) and "\n\n" not in tex, name


def test_hostile_names_reach_the_ranking_markdown_as_text():
    from tlbench.rank import PairScores, Ranking, to_markdown

    pair = PairScores(f"faces{SCRIPT}", f"vit|\n# heading", scores={"logme": 0.5, "broken": None},
                      errors={"broken": f"RuntimeError: {IMAGE}\n\n## more"})
    md = to_markdown(Ranking(f"zoo\n{IMAGE}", ["logme", "broken"], [], [pair], {}, {},
                             options={"logme": {"note": SCRIPT}}))
    assert "<script" not in md and "<img" not in md
    assert not re.search(r"^#+ (heading|more|&lt;img)", md, re.M)
    table = [line for line in md.splitlines() if line.startswith("|")]
    assert len({len(re.split(r"(?<!\\)\|", line)) for line in table}) == 1, table
