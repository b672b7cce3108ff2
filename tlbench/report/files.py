"""Writing one grid's leaderboard files as one set, next to its records."""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Optional

from tlbench.report.board import Leaderboard, as_task, build, current_records
from tlbench.report.markdown import to_markdown
from tlbench.report.plots import PLOT_TITLES
from tlbench.report.tables import frames, to_csv, to_json

# -- writing ----------------------------------------------------------------------------------


def build_report(results_dir: str | Path, grid_name: str, cells: Optional[list] = None,
                 control: Optional[str] = None) -> Leaderboard:
    """The leaderboard of one grid from its stored records (with ``cells``: of exactly those)."""
    from tlbench.results import iter_records  # records bring numpy: not for `tlbench --help`

    records = (as_task(r) for r in iter_records(results_dir, grid_name))
    return build(current_records(records, cells), grid_name, cells, control)


def write_report(results_dir: str | Path, grid_name: str, cells: Optional[list] = None,
                 control: Optional[str] = None) -> list[Path]:
    """Write every leaderboard file of one grid from its records; returns their paths
    (leaderboard.md first, then the page)."""
    from tlbench.results import grid_dir

    return write_board(build_report(results_dir, grid_name, cells, control), grid_dir(results_dir, grid_name))


def write_board(board: Leaderboard, folder: Path) -> list[Path]:
    from tlbench.report.html import to_html
    from tlbench.report.plots import render_plots
    from tlbench.results import write_set

    plots = render_plots(board) if board.per_dataset else {}
    files = {"leaderboard.md": to_markdown(board, plots), "leaderboard.html": to_html(board, plots)}
    tables = frames(board)
    files["leaderboard.csv"] = to_csv(tables["per_dataset"])
    files["leaderboard_overall.csv"] = to_csv(tables["overall"])
    files["leaderboard_transfer_gain.csv"] = to_csv(tables["transfer_gain"])
    files["leaderboard.json"] = to_json(board)
    folder.mkdir(parents=True, exist_ok=True)
    paths = write_set(folder, {**files, **{name: plots[name] for name in PLOT_TITLES if name in plots}})
    for name in PLOT_TITLES:
        path = folder / name
        if name not in plots and path.exists():
            with contextlib.suppress(OSError):
                path.unlink()  # no plot for these records: an old one would describe other records
    return paths
