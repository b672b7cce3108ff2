"""The leaderboard's LaTeX tables: one booktabs tabular per markdown table, with the same rows and
bold cells, names escaped, the same bytes for the same records, and (where TeX is installed)
typeset by pdflatex."""

import json
import re
import shutil
import subprocess

import pytest

from test_report import GRID, md_table, record, write_all
from test_report_curves import first_table_after
from tlbench.cli import main
from tlbench.report import build_leaderboard
from tlbench.report.latex import latex_tables

ODD = "lite0_50%&#1"  # a backbone name with every character LaTeX treats specially


def tex_rows(text: str) -> list[list[str]]:
    """The body rows of a tabular: the lines between \\midrule and \\bottomrule, split into cells."""
    body = text.split("\\midrule\n", 1)[1].split("\\bottomrule", 1)[0]
    return [line[:-len(" \\\\")].split(" & ") for line in body.splitlines() if line != "\\midrule"]


@pytest.fixture(scope="module")
def two_datasets(tmp_path_factory):
    """digits and faces, three strategies, three seeds, reported once for the file (plots are most
    of a report's time); returns the grid's folder."""
    results = tmp_path_factory.mktemp("latex")
    write_all(results, [record(dataset, ODD, strategy, seed, top1 + 0.01 * seed, pretrained=strategy != "scratch")
                        for dataset in ("digits", "faces")
                        for strategy, top1 in (("linear_probe", 0.90), ("full_finetune", 0.92), ("scratch", 0.5))
                        for seed in (0, 1, 2)])
    assert main(["report", "--results", str(results)]) == 0
    return results / GRID


def test_each_markdown_table_has_a_tex_file_with_its_rows_and_bold_cells(two_datasets):
    folder = two_datasets
    md = (folder / "leaderboard.md").read_text()
    for heading, tex_file, bold_column in (("### digits", "leaderboard_dataset-digits.tex", "top-1"),
                                           ("### faces", "leaderboard_dataset-faces.tex", "top-1"),
                                           ("## Overall", "leaderboard_overall.tex", None)):
        md_rows = first_table_after(md, heading)
        text = (folder / tex_file).read_text()
        assert "\\toprule" in text and text.rstrip().endswith("\\end{tabular}"), tex_file
        rows = tex_rows(text)
        assert [r[1] for r in rows] == [r["strategy"].replace("_", "\\_") for r in md_rows], tex_file
        assert all(r[0] == "lite0\\_50\\%\\&\\#1" for r in rows)
        if bold_column:
            column = list(md_rows[0]).index(bold_column)
            assert [r[column].startswith("$\\mathbf{") for r in rows] == [
                r[bold_column].startswith("**") for r in md_rows]
            assert any(r[bold_column].startswith("**") for r in md_rows)
            assert any(not r[bold_column].startswith("**") for r in md_rows)
    gain = tex_rows((folder / "leaderboard_transfer_gain.tex").read_text())
    assert gain[0][5] == "$+0.420 \\pm 0.000$"  # the markdown's "+0.420 ± 0.000", in math
    assert md_table(md, "### digits")[0]["top-1"] == "**0.930 ± 0.025**"
    assert tex_rows((folder / "leaderboard_dataset-digits.tex").read_text())[0][2] == "$\\mathbf{0.930 \\pm 0.025}$"


def test_tex_files_are_byte_stable_and_a_gone_task_takes_its_file_with_it(two_datasets, tmp_path):
    written = {p.name: p.read_text() for p in two_datasets.glob("*.tex")}
    assert "leaderboard_pairwise-faces.tex" in written and "leaderboard_environment.tex" in written
    assert latex_tables(build_leaderboard(two_datasets.parent, GRID)) == written
    folder = tmp_path / GRID
    shutil.copytree(two_datasets, folder)
    for path in (folder / "records").rglob("*.json"):
        if json.loads(path.read_text())["dataset"] == "faces":
            path.unlink()
    assert main(["report", "--results", str(tmp_path)]) == 0
    assert not (folder / "leaderboard_dataset-faces.tex").exists()
    assert (folder / "leaderboard_dataset-digits.tex").read_text() == written["leaderboard_dataset-digits.tex"]


@pytest.mark.skipif(shutil.which("pdflatex") is None,
                    reason="pdflatex is not installed (apt-get install texlive-latex-base texlive-latex-recommended)")
def test_pdflatex_typesets_every_table(two_datasets, tmp_path):
    folder = tmp_path
    for table in two_datasets.glob("*.tex"):
        shutil.copy(table, folder)
    tables = sorted(p.name for p in folder.glob("*.tex"))
    document = ("\\documentclass{article}\n\\usepackage{booktabs}\n"
                "\\begin{document}\n" + "".join(f"\\input{{{name}}}\\par\n" for name in tables) + "\\end{document}\n")
    (folder / "paper.tex").write_text(document)
    done = subprocess.run(["pdflatex", "-interaction=nonstopmode", "-halt-on-error", "paper.tex"], cwd=folder,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stdout[-2000:]
    assert (folder / "paper.pdf").read_bytes().startswith(b"%PDF")
    assert not re.search(r"^! ", done.stdout, re.MULTILINE)
