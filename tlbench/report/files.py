"""Writing a grid's leaderboard files as one set, next to its records (`tlbench report`)."""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Iterator

from tlbench.report.board import Leaderboard, build_leaderboard
from tlbench.report.controls import per_control
from tlbench.report.latex import PREFIX as LATEX_PREFIX
from tlbench.report.latex import SUFFIX as LATEX_SUFFIX
from tlbench.report.latex import latex_tables
from tlbench.report.markdown import to_markdown
from tlbench.report.plots import PLOT_TITLES
from tlbench.report.tables import frames, to_csv, to_json


def write_leaderboard(board: Leaderboard, folder: Path) -> list[Path]:
    """Write every leaderboard file of ``board`` into ``folder`` as one set; returns their paths
    (leaderboard.md first, then the page)."""
    from tlbench.report.html import to_html
    from tlbench.report.plots import render_plots
    from tlbench.atomic_files import write_set

    plots = render_plots(board) if board.per_dataset else {}
    files = {"leaderboard.md": to_markdown(board, plots), "leaderboard.html": to_html(board, plots)}
    tables = frames(board)
    files["leaderboard.csv"] = to_csv(tables["per_dataset"])
    files["leaderboard_overall.csv"] = to_csv(tables["overall"])
    files["leaderboard_transfer_gain.csv"] = to_csv(tables["transfer_gain"])
    for view in per_control(board)[1:]:
        files[gain_file(view.control)] = to_csv(frames(view)["transfer_gain"])
    files["leaderboard.json"] = to_json(board)
    tex = latex_tables(board)
    folder.mkdir(parents=True, exist_ok=True)
    paths = write_set(folder, {**files, **tex, **{name: plots[name] for name in PLOT_TITLES if name in plots}})
    # not in this set (a task gone from the grid, a control no longer named): an old file would
    # describe other records or controls
    stale = [folder / name for name in PLOT_TITLES if name not in plots]
    stale += [path for path in folder.glob(gain_file("*")) if path.name not in files]
    stale += [path for path in folder.glob(f"{LATEX_PREFIX}*{LATEX_SUFFIX}") if path.name not in tex]
    for path in stale:
        if path.exists():
            with contextlib.suppress(OSError):
                path.unlink()
    return paths


def gain_file(control: str) -> str:
    """The transfer-gain CSV of a control after the grid's first (the first's is
    leaderboard_transfer_gain.csv)."""
    return f"leaderboard_transfer_gain_vs_{control}.csv"


def rebuild_leaderboards(results_dir: str | Path, grid_names: list[str], control=None,
                         screenshot: bool = False) -> Iterator[list[Path]]:
    """`tlbench report`: rebuild each grid's leaderboard files from its records, yielding their
    paths grid by grid (with ``screenshot``, the page's PNG too). ``control``, a strategy or a list
    of them, replaces the grids' own controls; one no grid's records name is an error before
    anything is written."""
    from tlbench.results import grid_dir

    boards = [build_leaderboard(results_dir, name, control=control) for name in grid_names]
    for name in [control] if isinstance(control, str) else control or []:
        if not any(name in board.strategies for board in boards):
            from tlbench.errors import unknown_name_error

            raise unknown_name_error("control strategy", name,
                                     {s for board in boards for s in board.strategies}, " in the records")
    for board in boards:
        paths = write_leaderboard(board, grid_dir(results_dir, board.grid))
        if screenshot:
            from tlbench.report.browser import screenshot as take_screenshot

            page = next(p for p in paths if p.suffix == ".html")
            paths.append(take_screenshot(page, page.with_suffix(".png")))
        yield paths
