"""leaderboard.md and the summary printed after a run."""

from __future__ import annotations

from dataclasses import fields, replace
from typing import Iterable, Optional

from tlbench.literal_text import one_line
from tlbench.report.board import Leaderboard
from tlbench.report.controls import per_control
from tlbench.report.plots import CD_PLOT, PLOT_TITLES
from tlbench.report.views import (CI_NOTE, CURVE_NOTE, CURVE_OVERALL_NOTE, OVERALL_NOTE, TIE_NOTE, View, best_of,
                                  curve_views,
                                  critical_difference_note, dataset_view, describe, environment_view, fmt_ci,
                                  fmt_seconds, gain_note, gain_view, improvement_note, no_gain_note, overall_view,
                                  pairwise_note, pairwise_view, seed_origin_note, unjudged,
                                  unjudged_note)

# -- markdown ---------------------------------------------------------------------------------

# what a renderer would read as HTML (a tag, an entity) or as a link or image; "|" is a table's
_MARKUP = {"&": "&amp;", "<": "&lt;", ">": "&gt;", "[": "\\[", "]": "\\]"}


def markdown_text(text) -> str:
    """A name or a record's text as markdown shows it literally, on one line: HTML-significant
    characters as entities, brackets escaped (no link or image), line breaks folded to a space
    (no heading or table row of its own), other control characters visibly escaped."""
    return "".join(_MARKUP.get(char, char) for char in one_line(str(text)))


def _literal(value):
    if isinstance(value, str):
        return markdown_text(value)
    if isinstance(value, (list, tuple)):
        return type(value)(_literal(v) for v in value)
    if isinstance(value, dict):
        return {_literal(k): _literal(v) for k, v in value.items()}
    return value


def literal_board(board: Leaderboard) -> Leaderboard:
    """``board`` with every text in it (names, errors, warnings, the environment) as
    ``markdown_text``: what records and plugins name reaches the markdown as text, never as
    markup, while the markdown's own sentences keep theirs."""
    return replace(board, **{f.name: _literal(getattr(board, f.name)) for f in fields(board)})


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


def _markdown_table(view: View, bold_best: Optional[int] = None) -> str:
    from tabulate import tabulate

    rows = []
    for cells, style in zip(view.rows, view.styles):
        cells = [_cell(c) for c in cells]
        if bold_best is not None and style == "best":
            cells[bold_best] = f"**{cells[bold_best]}**"
        rows.append(cells)
    align = ["right" if n else "left" for n in view.numeric]
    return tabulate(rows, headers=[_cell(h) for h in view.headers], tablefmt="github", disable_numparse=True,
                    colalign=align) + "\n"


def _sentence(text: str) -> str:
    return text[:1].upper() + text[1:]


def to_markdown(board: Leaderboard, plots: Iterable[str] = ()) -> str:
    board = literal_board(board)
    parts = [f"# {board.grid}\n", f"{describe(board)}.\n"]
    if not board.per_dataset:
        return "".join(p + "\n" for p in parts) + "No records yet.\n"
    overall = f"## Overall\n\n{_sentence(OVERALL_NOTE)}."
    if board.has_control:
        overall += f" {_sentence(improvement_note(board))}."
    if board.curves:
        overall += f" {_sentence(CURVE_OVERALL_NOTE)}."
    parts.append(f"{overall}\n\n{_markdown_table(overall_view(board))}")
    plots = list(plots)
    cd = f"### Across datasets: critical difference\n\n{critical_difference_note(board)}.\n"
    if CD_PLOT in plots:
        cd += f"\n![{PLOT_TITLES[CD_PLOT]}]({CD_PLOT})\n"
    parts.append(cd)
    parts.append(f"## Per dataset\n\n{_sentence(CI_NOTE)}. {TIE_NOTE}. {_sentence(pairwise_note(board))}.\n")
    for dataset in board.datasets:
        parts.append(f"### {dataset}\n\n{_markdown_table(dataset_view(board, dataset), bold_best=2)}")
        cannot = unjudged(board, dataset)
        if cannot:
            parts[-1] += f"\n{_sentence(unjudged_note(cannot))}.\n"
        origins = seed_origin_note(board, dataset)
        if origins:
            parts[-1] += f"\nn: {origins}.\n"
        best = best_of(board, dataset)
        if any(row["dataset"] == dataset for row in board.pairwise):
            parts[-1] += (f"\nAgainst the best, {best['backbone']} / {best['strategy']}:\n\n"
                          f"{_markdown_table(pairwise_view(board, dataset), bold_best=3)}")
        warnings = [f"- {row['strategy']} on {row['backbone']}, {w}" for row in board.per_dataset
                    if row["dataset"] == dataset for w in row["warnings"]]
        if warnings:
            parts[-1] += "\nWarnings (see the records):\n\n" + "\n".join(warnings) + "\n"
    if board.curves:
        parts.append(f"## Curves\n\n{_sentence(CURVE_NOTE)}.\n")
        for (dataset, setting), views in curve_views(board):
            parts.append(f"### {dataset}: top-1 against {setting}\n\n{_markdown_table(views)}")
    for view in per_control(board):  # a table for each control the grid names, its first first
        parts.append(f"## Transfer gain over `{view.control}`\n" if view.control else "## Transfer gain\n")
        if view.transfer_gain:
            parts[-1] += f"\n{_sentence(gain_note(view))}.\n\n{_markdown_table(gain_view(view))}"
        else:
            parts[-1] += f"\n{no_gain_note(view)}.\n"
    if plots:
        parts.append("## Plots\n\n" + "\n\n".join(f"![{PLOT_TITLES[name]}]({name})" for name in plots) + "\n")
    parts.append("## Environment\n\n" + _markdown_table(environment_view(board)))
    return "\n".join(parts)


# -- CSV and JSON ------------------------------------------------------------------------------


def terminal_summary(board: Leaderboard, color: bool = False) -> str:
    """The compact table printed after a run: one row per cell group, best per dataset marked."""
    from tabulate import tabulate

    bold, reset = ("\033[1m", "\033[0m") if color else ("", "")
    rows = []
    for row in board.per_dataset:
        top1 = fmt_ci(row["top1"], row["top1_ci95"])
        cells = [one_line(row["dataset"]), one_line(row["backbone"]), one_line(row["strategy"]),
                 top1 + (" *" if row["best"] else ""), str(row["seeds"]), fmt_seconds(row["train_s"]), row["status"]]
        rows.append([f"{bold}{c}{reset}" for c in cells] if row["best"] else cells)
    table = tabulate(rows, headers=["dataset", "backbone", "strategy", "top-1", "seeds", "train s", "status"],
                     tablefmt="github", disable_numparse=True)
    warnings = [one_line(f"WARNING {row['dataset']} / {row['backbone']} / {row['strategy']}, {w}")
                for row in board.per_dataset for w in row["warnings"]]
    return (table + "\n* best top-1 on its dataset, or tied with it (not separated at 95% by these records)\n"
            + "".join(w + "\n" for w in warnings))
