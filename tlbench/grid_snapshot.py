"""The grid snapshot, ``RESULTS/GRID/grid.json``: the cells and controls of a grid as the last
`tlbench run` read its file, kept next to the records so that `tlbench report` (which never
sees the grid file) knows them.

Records say what ran; the snapshot says what the grid holds: which cells have no record yet
(shown as missing rather than left out, however the run was cut: a slice, Ctrl-C, a lost
node) and which strategies the grid names as its controls. It is plain data (names, seeds,
ids), so a report on another machine needs neither the grid file nor its plugins. Without a
snapshot (a folder older than it, or records copied alone), the report infers the grid from
the records, as before.

The snapshot also keeps the order in which the grid's configurations stopped being current
(``earlier``: configuration ids, oldest first), so the report can tell which configuration of a
row the grid no longer lists came last. Only the order of `tlbench run`s on this folder decides
it, never a timestamp a record carries (a machine's clock may be wrong).
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from tlbench.grid import task_name
from tlbench.regular_files import read_regular_text

FILE_NAME = "grid.json"
FORMAT = 1


@dataclass(frozen=True)
class PlannedCell:
    """One cell of a grid as its snapshot keeps it: what a leaderboard needs to list it."""

    backbone: str
    strategy: str
    dataset: str
    seed: int
    sweep: tuple = ()  # (setting, value) pairs, as Cell.sweep
    run_id: str = ""
    config_id: str = ""

    @property
    def task(self) -> str:
        return task_name(self.dataset, dict(self.sweep))


@dataclass(frozen=True)
class GridSnapshot:
    grid: str
    controls: list
    cells: list  # PlannedCell
    #: configuration ids earlier snapshots held and this one does not, in the order they were
    #: replaced (oldest first): what a row the grid no longer lists last ran as
    earlier: list = field(default_factory=list)


def snapshot_path(results_dir, grid_name: str) -> Path:
    return Path(results_dir) / grid_name / FILE_NAME


def snapshot_of(grid, earlier: list = ()) -> str:
    """The snapshot of a loaded grid, as the file holds it (byte-stable for the same grid and
    ``earlier``: the configurations no longer current, oldest first; left out when none)."""
    cells = [{"backbone": c.backbone, "strategy": c.strategy, "dataset": c.dataset, "seed": c.seed,
              "sweep": dict(c.sweep), "run_id": c.run_id, "config_id": c.config_id} for c in grid.cells]
    cells.sort(key=lambda c: (c["dataset"], c["backbone"], c["strategy"], c["seed"], c["run_id"]))
    document = {"format": FORMAT, "grid": grid.name, "controls": list(grid.controls), "cells": cells}
    if earlier:
        document["earlier"] = list(earlier)
    return json.dumps(document, indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def write_snapshot(results_dir, grid) -> Path:
    """Keep the grid's snapshot next to its records (before any cell runs: an interrupted run
    leaves it too). Replaces the previous one: the grid file as last run is the current one."""
    from tlbench.atomic_files import write_atomic

    path = snapshot_path(results_dir, grid.name)
    text = snapshot_of(grid, _earlier(read_snapshot(results_dir, grid.name), grid))
    try:
        same = read_regular_text(path) == text
    except (OSError, ValueError):  # none yet, or no snapshot (a FIFO, a device): replaced
        same = False
    if not same:
        write_atomic(path, text)
    return path


def _earlier(previous: Optional[GridSnapshot], grid) -> list:
    """The previous snapshot's ``earlier``, then its configurations this grid no longer has
    (the run now replacing it is later than every one of them); a configuration current again
    leaves the list."""
    if previous is None:
        return []
    now = {cell.config_id for cell in grid.cells}
    replaced = sorted({cell.config_id for cell in previous.cells} - now)
    return [c for c in previous.earlier if c not in now and c not in replaced] + replaced


def read_snapshot(results_dir, grid_name: str) -> Optional[GridSnapshot]:
    """The grid's snapshot, or None when there is none. One that cannot be read is said once on
    stderr and ignored (the leaderboard then infers the grid from its records)."""
    path = snapshot_path(results_dir, grid_name)
    try:
        document = json.loads(read_regular_text(path))  # a FIFO or a device: unreadable, never a hang
        return _parse(document, grid_name)
    except FileNotFoundError:
        return None
    except (OSError, ValueError, TypeError, KeyError) as exc:
        print(f"warning: {path} is not a grid snapshot this tlbench reads ({exc}); the leaderboard "
              "infers the grid from its records. `tlbench run` of the grid writes a new one.", file=sys.stderr)
        return None


def _parse(document: dict, grid_name: str) -> GridSnapshot:
    if document.get("format") != FORMAT:
        raise ValueError(f"format {document.get('format')!r}, expected {FORMAT}")
    if document["grid"] != grid_name:
        raise ValueError(f"it describes grid {document['grid']!r}")
    controls = document["controls"]
    if not all(isinstance(c, str) for c in controls):
        raise ValueError("'controls' must be strategy names")
    cells = []
    for c in document["cells"]:
        if not (all(isinstance(c[k], str) for k in ("backbone", "strategy", "dataset", "run_id", "config_id"))
                and isinstance(c["seed"], int) and isinstance(c["sweep"], dict)):
            raise ValueError(f"a cell is malformed: {c!r}")
        cells.append(PlannedCell(c["backbone"], c["strategy"], c["dataset"], c["seed"],
                                 tuple(sorted(c["sweep"].items())), c["run_id"], c["config_id"]))
    earlier = document.get("earlier", [])
    if not (isinstance(earlier, list) and all(isinstance(c, str) for c in earlier)):
        raise ValueError("'earlier' must be configuration ids")
    return GridSnapshot(grid_name, list(controls), cells, earlier)
