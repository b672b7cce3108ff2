"""leaderboard.html: one self-contained page (inline style and script, plots as data: URIs,
nothing fetched from anywhere), with tables sortable by clicking a column header."""

from __future__ import annotations

import base64
import re
from html import escape
from importlib import resources

from tlbench.report.board import Leaderboard
from tlbench.report.controls import per_control
from tlbench.report.markdown import _sentence
from tlbench.report.plots import CD_PLOT, PLOT_CAPTIONS, PLOT_TITLES
from tlbench.report.views import (CI_NOTE, CURVE_OVERALL_NOTE, OVERALL_NOTE, TIE_NOTE, View, best_of,
                                  critical_difference_note,
                                  dataset_view, describe, environment_view, gain_note, gain_view, improvement_note,
                                  no_gain_note, overall_view, pairwise_note, pairwise_view, seed_origin_note, unjudged,
                                  unjudged_note)


def _template(name: str) -> str:
    return resources.files("tlbench").joinpath("templates", name).read_text(encoding="utf-8")


def _sort_value(value) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return str(int(value))
    if isinstance(value, (int, float)):
        return repr(float(value))
    return str(value)


def _anchor(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_-]+", "-", name)


def _table(view: View, sortable: bool = True, key_columns: int = 2) -> str:
    head = []
    for header, numeric in zip(view.headers, view.numeric):
        kind = "number" if numeric else "text"
        css = ' class="num"' if numeric else ""
        if sortable:
            head.append(f'<th scope="col" data-type="{kind}"{css}><button type="button">{escape(header)}</button></th>')
        else:
            head.append(f'<th scope="col" class="static">{escape(header)}</th>')
    body = []
    for index, (cells, values, style, title) in enumerate(zip(view.rows, view.sort_values, view.styles,
                                                              view.titles)):
        attributes = f' data-index="{index}"'
        if style:
            attributes += f' class="{style}"'
        if title:
            attributes += f' title="{escape(title)}"'
        tds = []
        for column, (text, value, numeric) in enumerate(zip(cells, values, view.numeric)):
            classes = (["num"] if numeric else []) + (["key"] if column < key_columns else [])
            css = f' class="{" ".join(classes)}"' if classes else ""
            tds.append(f'<td{css} data-sort="{escape(_sort_value(value))}">{escape(text)}</td>')
        body.append(f"<tr{attributes}>{''.join(tds)}</tr>")
    return (f'<div class="scroll"><table class="{"sortable" if sortable else "plain"}" '
            f'id="table-{_anchor(view.name)}"><thead><tr>{"".join(head)}</tr></thead>'
            f'<tbody>\n{chr(10).join(body)}\n</tbody></table></div>')


def _note(text: str) -> str:
    # `name` in notes is code, as in the markdown
    return re.sub(r"`([^`]+)`", r"<code>\1</code>", escape(_sentence(text))) + "."


def _gain_section(board: Leaderboard, anchor: str) -> str:
    over = f" over <code>{escape(board.control)}</code>" if board.control else ""
    gain = f'<section id="{_anchor(anchor)}"><h2>Transfer gain{over}</h2>'
    if board.transfer_gain:
        view = gain_view(board)
        view.name = anchor.replace("-", "_")  # the table's id: one per control
        gain += f'<p class="note">{_note(gain_note(board))}</p>{_table(view, key_columns=3)}'
    else:
        gain += f"<p>{_note(no_gain_note(board))}</p>"
    return gain + "</section>"


def to_html(board: Leaderboard, plots: dict[str, bytes]) -> str:
    title = f"{board.grid}: tlbench leaderboard"
    sections = [f'<header><h1>{escape(board.grid)}</h1><p class="meta">{escape(describe(board))}.</p>']
    links = [("overall", "Overall"), ("per-dataset", "Per dataset"), ("transfer-gain", "Transfer gain"),
             ("plots", "Plots"), ("environment", "Environment")]
    sections.append("<nav>" + "".join(f'<a href="#{a}">{escape(t)}</a>' for a, t in links) + "</nav></header>")
    if not board.per_dataset:
        sections.append("<p>No records yet.</p>")
    else:
        improve = f" {_note(improvement_note(board))}" if board.has_control else ""
        improve += f" {_note(CURVE_OVERALL_NOTE)}" if board.curves else ""
        sections.append(f'<section id="overall"><h2>Overall</h2><p class="note">{_note(OVERALL_NOTE)}{improve}</p>'
                        f"{_table(overall_view(board))}"
                        f'<h3 id="critical-difference">Across datasets: critical difference</h3>'
                        f'<p class="note">{_note(critical_difference_note(board))}'
                        f'{" The diagram is under Plots." if CD_PLOT in plots else ""}</p></section>')
        parts = [f'<section id="per-dataset"><h2>Per dataset</h2><p class="note">{_note(CI_NOTE)} '
                 f"{_note(TIE_NOTE.replace('Bold:', 'Highlighted:'))} {_note(pairwise_note(board))} "
                 "Hover a row that is not ok to see why.</p>"]
        for dataset in board.datasets:
            parts.append(f'<h3 id="{_anchor("dataset-" + dataset)}">{escape(dataset)}</h3>{_table(dataset_view(board, dataset))}')
            cannot = unjudged(board, dataset)
            if cannot:
                parts.append(f'<p class="note">{_note(unjudged_note(cannot).replace("in bold", "highlighted"))}</p>')
            origins = seed_origin_note(board, dataset)
            if origins:
                parts.append(f'<p class="note">n: {_note(origins)}.</p>')
            best = best_of(board, dataset)
            if any(row["dataset"] == dataset for row in board.pairwise):
                parts.append(f'<p class="note">Against the best, {escape(best["backbone"])} / '
                             f'{escape(best["strategy"])}:</p>{_table(pairwise_view(board, dataset))}')
        sections.append("".join(parts) + "</section>")
        for n, view in enumerate(per_control(board)):  # a table for each control, the first first
            sections.append(_gain_section(view, "transfer-gain" + (f"-{view.control}" if n else "")))
        figures = []
        for name, png in plots.items():
            data = base64.b64encode(png).decode("ascii")
            figures.append(f'<figure><img alt="{escape(PLOT_TITLES[name])}" src="data:image/png;base64,{data}">'
                           f"<figcaption>{escape(PLOT_CAPTIONS[name])}</figcaption></figure>")
        sections.append('<section id="plots"><h2>Plots</h2>' + "".join(figures) + "</section>")
    sections.append('<section id="environment"><h2>Environment</h2><p class="note">What made the records '
                    "(every distinct value, with counts when records differ).</p>"
                    f"{_table(environment_view(board), sortable=False, key_columns=1)}</section>")
    sections.append(f"<footer>Written by <code>tlbench report</code> from {board.records} record(s) "
                    f"of grid <code>{escape(board.grid)}</code>.</footer>")
    return ("<!DOCTYPE html>\n"
            f'<html lang="en">\n<head>\n<meta charset="utf-8">\n'
            f'<meta name="viewport" content="width=device-width, initial-scale=1">\n'
            f"<title>{escape(title)}</title>\n<style>\n{_template('leaderboard.css')}</style>\n</head>\n"
            "<body>\n" + "\n".join(sections) + "\n"
            f"<script>\n{_template('leaderboard.js')}</script>\n</body>\n</html>\n")
