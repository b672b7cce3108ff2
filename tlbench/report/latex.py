"""leaderboard_*.tex: every table of leaderboard.md as a LaTeX tabular for a paper to ``\\input``
(booktabs rules, the markdown's rows and bold cells, intervals as ``$0.735 \\pm 0.012$``, names
escaped), one file per table, the same bytes for the same records."""

from __future__ import annotations

import re
from dataclasses import replace

from tlbench.literal_text import one_line
from tlbench.report.board import Leaderboard
from tlbench.report.controls import per_control
from tlbench.report.views import (View, curve_views, dataset_view, environment_view, gain_view, overall_view,
                                  pairwise_view)

PREFIX = "leaderboard_"
SUFFIX = ".tex"
# the column the markdown bolds for a row tied with its task's best (top-1; minus best)
BOLD_COLUMN = {"dataset": 2, "pairwise": 3}

_TEXT = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_", "{": r"\{",
         "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}", "<": r"$<$", ">": r"$>$",
         "|": r"\textbar{}", "–": "--", "—": "---", "±": r"$\pm$", "×": r"$\times$", "·": r"$\cdot$"}
_NUMBER = r"[+-]?\d[\d,]*(?:\.\d+)?"


def escape(text: str) -> str:
    """Text as LaTeX typesets it literally (underscores in names, % in headers, & and # anywhere),
    on one line (a blank line would end the tabular's paragraph)."""
    return "".join(_TEXT.get(char, char) for char in one_line(text))


def _math(text: str) -> str:
    return text.replace(",", "{,}")  # a comma in math mode is punctuation: 1{,}048 keeps no space


def cell(text: str, bold: bool = False) -> str:
    """A table cell: ``0.735 ± 0.012`` as ``$0.735 \\pm 0.012$``, a signed number in math (a real
    minus sign), ``0.721–0.756`` as ``0.721--0.756``, a missing value ``-`` as ``--``, anything else
    escaped; bold as ``\\mathbf`` in math and ``\\textbf`` in text."""
    interval = re.fullmatch(rf"({_NUMBER}) ± ({_NUMBER})", text)
    if interval or re.fullmatch(r"[+-]\d[\d,]*(?:\.\d+)?", text):
        body = _math(rf"{interval[1]} \pm {interval[2]}" if interval else text)
        return f"$\\mathbf{{{body}}}$" if bold else f"${body}$"
    body = "--" if text == "-" else escape(text)
    return f"\\textbf{{{body}}}" if bold else body


def tabular(view: View, bold_column: int | None = None, block_columns: int = 0) -> str:
    """``view`` as a booktabs tabular: numbers right-aligned, the rows styled best bold in
    ``bold_column``, a rule between blocks of rows that differ in their first ``block_columns``."""
    lines = [f"\\begin{{tabular}}{{{''.join('r' if n else 'l' for n in view.numeric)}}}", r"\toprule",
             " & ".join(escape(h) for h in view.headers) + r" \\", r"\midrule"]
    previous = None
    for cells, style in zip(view.rows, view.styles):
        block = cells[:block_columns]
        if block_columns and previous is not None and block != previous:
            lines.append(r"\midrule")
        previous = block
        texts = [cell(text, bold=style == "best" and column == bold_column) for column, text in enumerate(cells)]
        lines.append(" & ".join(texts) + r" \\")
    lines += [r"\bottomrule", r"\end{tabular}"]
    return "\n".join(lines) + "\n"


def _slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_]+", "-", name).strip("-")


def latex_tables(board: Leaderboard) -> dict[str, str]:
    """{file name: LaTeX} for each table of leaderboard.md, in its order (none without records):
    ``leaderboard_overall.tex``, ``leaderboard_dataset-TASK.tex`` and ``leaderboard_pairwise-TASK.tex``
    per task, ``leaderboard_curve-DATASET-SETTING.tex``, ``leaderboard_transfer_gain.tex``
    (and ``leaderboard_transfer_gain_vs_CONTROL.tex`` for each further control of the grid),
    ``leaderboard_environment.tex``."""
    if not board.per_dataset:
        return {}
    overall = overall_view(board)
    # a curve's overall table: a block per curve point, its values in the columns before backbone
    tables = [(overall, tabular(overall, block_columns=overall.headers.index("backbone")))]
    for dataset in board.datasets:
        per_dataset = dataset_view(board, dataset)
        tables.append((per_dataset, tabular(per_dataset, BOLD_COLUMN["dataset"])))
        pairwise = pairwise_view(board, dataset)
        if pairwise.rows:
            tables.append((pairwise, tabular(pairwise, BOLD_COLUMN["pairwise"])))
    tables += [(view, tabular(view)) for _, view in curve_views(board)]
    if board.transfer_gain:
        gain = gain_view(board)
        tables.append((gain, tabular(gain)))
    for view in per_control(board)[1:]:  # a grid's further controls: a table each, by its name
        gain = replace(gain_view(view), name=f"transfer_gain_vs_{view.control}")
        tables.append((gain, tabular(gain)))
    environment = environment_view(board)
    tables.append((environment, tabular(environment)))
    files: dict[str, str] = {}
    for view, text in tables:
        name, n = PREFIX + _slug(view.name) + SUFFIX, 1
        while name in files:  # two task names with one slug ("a b", "a-b"): both kept
            n += 1
            name = f"{PREFIX}{_slug(view.name)}-{n}{SUFFIX}"
        # on one line: a line break in a name would end the comment and run the rest as LaTeX
        files[name] = (f"% {one_line(view.name)} table of grid {one_line(board.grid)}, written by `tlbench report` "
                       "(needs \\usepackage{booktabs})\n" + text)
    return files
