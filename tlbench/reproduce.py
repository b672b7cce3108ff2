"""`tlbench reproduce`: rerun some of a results folder's cells elsewhere and compare.

A published leaderboard carries its own check: each record holds everything that rebuilds its
cell (names, settings, every option, the curve settings, the candidates selected among), so
the cell is rebuilt through the grid's own validation (``tlbench.rebuild``), must get its
published cell id (``run_id``) back (else it is another configuration, and says so), and runs
again with the local executor into a scratch folder. The results folder is only read, never
written: no record, claim or leaderboard goes there, and a malformed record is reported, not
set aside.
"""

from __future__ import annotations

import math
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional

from tlbench.errors import ConfigError
from tlbench.grid import Cell, Grid, cell_label, task_name
from tlbench.rebuild import rebuild
from tlbench.results import RecordFile, check_record_file, one_per_cell, records_dir

DEFAULT_CELLS = 4
# The project's stability target for a cell rerun with another thread count (float sums split
# among threads round differently): 2 points, 10 of the offline grid's 500 test images.
DEFAULT_TOLERANCE = 0.02
EPSILON = 1e-6  # top-1 is a float32 share (0.744 is stored as 0.74400001...): 0.744 - 0.724 is not 0.02


@dataclass
class Check:
    """One published cell: how it was rebuilt, rerun and compared."""

    published: dict
    cell: Optional[Cell] = None
    problem: Optional[str] = None  # why it was not rerun, or why the rerun failed
    rerun: Optional[dict] = None
    tolerance: float = DEFAULT_TOLERANCE

    @property
    def label(self) -> str:
        return cell_label(self.published)

    @property
    def difference(self) -> Optional[float]:
        if self.rerun is None or self.rerun.get("status") != "ok":
            return None
        return self.rerun["top1"] - self.published["top1"]

    @property
    def within(self) -> bool:
        return self.difference is not None and abs(self.difference) <= self.tolerance + EPSILON

    @property
    def inconsistency(self) -> Optional[str]:
        """Why the published top-1 disagrees with the record's own per-image predictions (a
        record changed after it was written), or None; records without predictions say nothing."""
        from tlbench.predictions import of_record

        try:
            found = of_record(self.published)
        except ValueError:
            return None  # the validator already refused malformed predictions
        if found is None or not found[1].size:
            return None
        right = float(found[1].mean())
        if abs(right - self.published["top1"]) <= EPSILON:
            return None
        return (f"its top-1 {self.published['top1']:.3f} disagrees with its own per-image predictions "
                f"({right:.3f} of {found[1].size} test images right): the record was changed after it was written")

    @property
    def environment_differences(self) -> dict:
        """{key: (published, rerun)} for the environment keys whose values differ; a key one
        record lacks (a record older than the field, such as ``threads``) shows as ``-``."""
        before = self.published.get("environment") or {}
        after = (self.rerun or {}).get("environment") or {}
        if not after:
            return {}
        return {key: (before.get(key, "-"), after.get(key, "-")) for key in sorted(before.keys() | after.keys())
                if before.get(key, "-") != after.get(key, "-")}


@dataclass
class Published:
    """A grid folder's records as read (sound ones, and the malformed ones with why)."""

    grid: str
    folder: Path
    records: list = field(default_factory=list)
    malformed: dict = field(default_factory=dict)  # run_id (the file's stem) -> (path, why)
    snapshot: object = None  # the grid snapshot beside the records (tlbench.grid_snapshot), if any


def read_published(results_dir: str | Path, grid: str) -> Published:
    """Every record of a grid, validated as every reader validates them, without moving or
    locking anything (a published folder may be read-only, and is never changed)."""
    from tlbench.grid_snapshot import read_snapshot

    folder = records_dir(results_dir, grid)
    published = Published(grid, folder, snapshot=read_snapshot(results_dir, grid))
    sound = []
    for path in sorted(folder.glob("*.json")):
        try:
            record, why = check_record_file(path)
        except FileNotFoundError:
            continue
        if why is None:
            sound.append(RecordFile(path, record=record))
        else:
            published.malformed[path.stem] = (path, why)
    published.records = one_per_cell(sound)  # each cell once, as the leaderboard counts it
    return published


def current_ok(records: list[dict], snapshot=None) -> list[dict]:
    """The ok records of the grid's current configuration: those its leaderboard shows (the
    grid ``snapshot`` deciding which configuration is current, as it does for the leaderboard)."""
    from tlbench.report.board import as_task, current_records

    planned, earlier = (snapshot.cells, snapshot.earlier) if snapshot is not None else (None, ())
    shown = {r["run_id"] for r in current_records((as_task(r) for r in records), None, planned, earlier)}
    return [r for r in records if r["run_id"] in shown and r["status"] == "ok"]


def _round_robin(queues: list[list]) -> list:
    order, depth = [], max((len(q) for q in queues), default=0)
    for i in range(depth):
        order += [q[i] for q in queues if i < len(q)]
    return order


def _rotated(items: list, by: int) -> list:
    if not items:
        return items
    by %= len(items)
    return items[by:] + items[:by]


def sample(records: list[dict], count: int) -> list[dict]:
    """``count`` records spread over the grid, the same ones every time: every strategy once
    before any twice, and each strategy's cells taken in turn from its datasets (and backbones)
    and seeds, the n-th strategy (by name) starting n places further along both."""
    by_strategy: dict = {}
    for record in sorted(records, key=_order):
        by_strategy.setdefault(record["strategy"], []).append(record)
    queues = []
    for n, strategy in enumerate(sorted(by_strategy)):
        groups: dict = {}
        for record in by_strategy[strategy]:
            task = task_name(record["dataset"], record.get("sweep") or {})
            groups.setdefault((task, record["backbone"]), []).append(record)
        ordered = [_rotated(groups[key], n) for key in _rotated(sorted(groups), n)]
        queues.append(_round_robin(ordered))
    return _round_robin(queues)[:count]


def _order(record: dict) -> tuple:
    return (record["strategy"], record["dataset"], str(sorted((record.get("sweep") or {}).items())),
            record["backbone"], record["seed"], record["run_id"])


def choose(published: Published, cells: int, run_ids: list[str]) -> list[dict]:
    """The records to rerun: the named ones (a full cell id, run_id, or a start only one has), else a
    sample of ``cells`` of the current configuration's ok records."""
    if not run_ids:
        pool = current_ok(published.records, published.snapshot)
        if not pool:
            failed = sum(r["status"] != "ok" for r in published.records)
            raise ConfigError(f"Grid {published.grid!r} in {str(published.folder)!r} has no ok record to "
                              f"rerun ({len(published.records)} record(s), {failed} not ok). Run the grid first.")
        return sample(pool, cells)
    chosen = []
    for wanted in dict.fromkeys(run_ids):
        record = _named(published, wanted)
        if record not in chosen:
            chosen.append(record)
    return chosen


def _named(published: Published, wanted: str) -> dict:
    """The record ``--run-id`` names: its whole cell id (run_id), or a start of it no other record has."""
    exact = [r for r in published.records if r["run_id"] == wanted]
    if not exact and wanted not in published.malformed:
        exact = [r for r in published.records if wanted and r["run_id"].startswith(wanted)]
        malformed = [stem for stem in published.malformed if wanted and stem.startswith(wanted)]
        if len(exact) + len(malformed) > 1:
            raise ConfigError(f"--run-id {wanted!r} is the start of several cell ids (run_id) in "
                              f"{str(published.folder)!r}: "
                              f"{', '.join(sorted([r['run_id'] for r in exact] + malformed))}. Give more of it.")
        wanted = malformed[0] if malformed else wanted
    if not exact and wanted in published.malformed:
        path, why = published.malformed[wanted]
        raise ConfigError(f"Record {path} is malformed ({why}); it cannot be rerun. Fix or remove the file.")
    if not exact:
        raise ConfigError(f"--run-id {wanted!r}: no record with this cell id (run_id) in "
                          f"{str(published.folder)!r} ({len(published.records)} record(s) there; "
                          f"`tlbench runs --grid-name {published.grid}` lists them).")
    record = exact[0]
    if record["status"] != "ok":
        raise ConfigError(f"Record {record['run_id']} ({cell_label(record)}) is {record['status']}: it has no "
                          "published top-1 to compare with. Name an ok record (tlbench runs --status ok).")
    return record


# -- rerunning ---------------------------------------------------------------------------------


def prepare(checks: list[Check], registry, folder: Path) -> None:
    """Rebuild each check's cell, or say why it cannot be rerun here."""
    from tlbench.machine import check_device

    for check in checks:
        try:
            check.cell = rebuild(check.published, registry, str(folder / f"{check.published['run_id']}.json"))
            check_device(check.cell.settings.device)
        except ConfigError as exc:
            check.cell, check.problem = None, f"not rerun: {exc}"


def rerun(checks: list[Check], registry, scratch: Path, progress) -> None:
    """Run the rebuilt cells with the local executor in this process, records under ``scratch``,
    feature caches in a fresh folder there (nothing the published run computed stands in)."""
    from tlbench.driver import run_grid_on
    from tlbench.executors import LocalExecutor
    from tlbench.results import ensure_writable
    from tlbench.runner import Runner, check_cache_dir

    runnable = [c for c in checks if c.cell is not None]
    if not runnable:
        return
    runner = Runner(registry, scratch, progress=progress, cache_dir=str(scratch / "cache"))
    check_cache_dir(runner.cache_dir)
    for name in dict.fromkeys(c.cell.grid for c in runnable):
        cells = [c.cell for c in runnable if c.cell.grid == name]
        ensure_writable(scratch, name)
        grid = Grid(name, sorted({c.backbone for c in cells}), sorted({c.strategy for c in cells}),
                    sorted({c.dataset for c in cells}), sorted({c.seed for c in cells}), cells[0].settings,
                    cells=cells, source=str(scratch))
        outcome = run_grid_on(LocalExecutor(runner), runner, grid, force=True)
        by_id = {r["run_id"]: r for r in outcome.ran}
        for check in runnable:
            if check.cell.grid == name:
                check.rerun = by_id.get(check.cell.run_id)
                if check.rerun is None:
                    check.problem = "the rerun left no record"
                elif check.rerun["status"] != "ok":
                    check.problem = (f"the rerun failed ({check.rerun.get('error_kind', 'exception')}): "
                                     f"{check.rerun.get('error')}")


# -- the answer --------------------------------------------------------------------------------


def _number(value: Optional[float], signed: bool = False) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "-"
    return f"{value:+.3f}" if signed else f"{value:.3f}"


def table(checks: list[Check]) -> str:
    from tabulate import tabulate

    rows = []
    for check in checks:
        r = check.published
        rerun_top1 = (check.rerun or {}).get("top1") if check.difference is not None else None
        rows.append([r["backbone"], r["strategy"], task_name(r["dataset"], r.get("sweep") or {}), r["seed"],
                     r["run_id"], _number(r["top1"]),
                     _number(rerun_top1) if check.rerun is not None else "not rerun" if check.cell is None else "failed",
                     _number(check.difference, signed=True), "yes" if check.within else "no",
                     ", ".join(check.environment_differences) or "-"])
    headers = ["backbone", "strategy", "dataset", "seed", "cell id (run_id)", "published", "rerun", "diff",
               "within", "environment differences"]
    return tabulate(rows, headers=headers, tablefmt="simple", disable_numparse=True)


def environment_notes(checks: list[Check]) -> list[str]:
    """Each environment difference once, with the cells it applies to (all of them, usually)."""
    seen: dict = {}
    rerun = [c for c in checks if c.rerun is not None]
    for check in rerun:
        for key, pair in check.environment_differences.items():
            seen.setdefault((key, repr(pair)), (pair, []))[1].append(check.published["run_id"])
    lines = []
    for (key, _), ((before, after), run_ids) in sorted(seen.items()):
        where = "every rerun cell" if len(run_ids) == len(rerun) else ", ".join(run_ids)
        lines.append(f"  {key}: {before} -> {after} ({where})")
    return lines


def verdict(checks: list[Check], tolerance: float) -> tuple[list[str], int]:
    """(the verdict line and a line per cell that is not reproduced, exit status)."""
    beyond = [c for c in checks if c.difference is not None and not c.within]
    unrun = [c for c in checks if c.difference is None]
    changed = [c for c in checks if c.inconsistency]
    if not beyond and not unrun and not changed:
        largest = max(abs(c.difference) for c in checks)
        return [f"Reproduced: all {len(checks)} rerun cell(s) are within {tolerance:g} of their published "
                f"top-1 (largest difference {largest:.3f})."], 0
    parts = []
    if beyond:
        parts.append(f"{len(beyond)} of {len(checks)} cell(s) beyond {tolerance:g} of their published top-1")
    if unrun:
        parts.append(f"{len(unrun)} of {len(checks)} could not be rerun")
    if changed:
        parts.append(f"{len(changed)} of {len(checks)} published record(s) contradict themselves")
    lines = ["Not reproduced: " + ", and ".join(parts) + "."]
    for check in beyond:
        r = check.published
        lines.append(f"  {check.label} (cell id {r['run_id']}): top-1 {r['top1']:.3f} published, "
                     f"{check.rerun['top1']:.3f} rerun ({check.difference:+.3f})")
    for check in unrun:
        lines.append(f"  {check.label} (cell id {check.published['run_id']}): {check.problem}")
    for check in changed:
        lines.append(f"  {check.label} (cell id {check.published['run_id']}): {check.inconsistency}")
    return lines, 1


def reproduce(results_dir: str | Path, grid: str, registry, scratch: Optional[str | Path] = None,
              cells: int = DEFAULT_CELLS, run_ids: Optional[list[str]] = None, tolerance: float = DEFAULT_TOLERANCE,
              progress=None, log: Callable[[str], None] = lambda line: None, out=None) -> int:
    """Rerun a grid's chosen cells into ``scratch`` (None: a temporary folder, removed afterwards)
    and print the comparison to ``out``; returns the exit status (0 all within ``tolerance``, 1 otherwise)."""
    from tlbench.progress import Progress

    if scratch is None:
        with tempfile.TemporaryDirectory(prefix="tlbench-reproduce-", ignore_cleanup_errors=True) as folder:
            return reproduce(results_dir, grid, registry, folder, cells, run_ids, tolerance, progress, log, out)

    out = out or sys.stdout
    published = read_published(results_dir, grid)
    for path, why in published.malformed.values():
        log(f"warning: record {path} is malformed ({why}); it is left out (and left as it is).")
    checks = [Check(record, tolerance=tolerance) for record in choose(published, cells, run_ids or [])]
    prepare(checks, registry, published.folder)
    log(f"Rerunning {sum(c.cell is not None for c in checks)} cell(s) of grid {grid!r} from "
        f"{str(published.folder)!r} in {str(scratch)!r} (tolerance {tolerance:g} top-1).")
    rerun(checks, registry, Path(scratch), progress or Progress(enabled=False))
    print(table(checks), file=out)
    notes = environment_notes(checks)
    if notes:
        print("\nEnvironment differences (published -> rerun):", file=out)
        print("\n".join(notes), file=out)
    lines, code = verdict(checks, tolerance)
    print("\n" + "\n".join(lines), file=out, flush=True)
    return code
