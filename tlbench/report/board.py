"""Records -> a Leaderboard (``build_leaderboard``): which records count, rows per dataset, overall ranks, transfer gain
over a control, curves and the environment. Numbers only; formatting is in ``views``."""

from __future__ import annotations

import itertools
import sys
from dataclasses import dataclass, field
from typing import Iterable, Optional

from tlbench.grid import task_name
from tlbench.options import end_of_list
from tlbench.records import MISSING, STATUSES
from tlbench.report.controls import find_control, starts_from_random, transfer_gain_rows
from tlbench.report.curves import by_curve_point, curves_of, fill_sweeps, task_key, task_order
from tlbench.report.significance import across_tasks, critical_difference, group_by_task, judge_task
from tlbench.report.stats import mean_ci

KEYS = ("dataset", "backbone", "strategy")
STATUS_ORDER = (*STATUSES, MISSING)
# mean over a row's ok seeds; (record field, short header)
METRICS = (
    ("top5", "top-5"), ("mean_per_class_acc", "mean class acc"), ("train_s", "train s"),
    ("eval_s", "eval s"), ("train_samples_per_s", "samples/s"), ("trainable_params", "trainable params"),
    ("total_params", "total params"), ("peak_mem_mb", "peak mem MB"),
)
INTEGER_METRICS = {"trainable_params", "total_params"}
ENVIRONMENT_FIELDS = ("tlbench", "tlbench_git_commit", "tlbench_git_dirty", "torch", "torchvision",
                      "timm", "python", "cuda", "device", "device_name", "cpu_model", "threads", "deterministic",
                      "precision", "platform", "hostname")


# -- which records ----------------------------------------------------------------------------


def current_records(records: Iterable[dict], cells: Optional[list] = None,
                    planned: Optional[list] = None, earlier: Iterable[str] = ()) -> list[dict]:
    """The records a leaderboard shows, sorted.

    With the grid's cells, exactly the records of those cells. Without them (``tlbench report``),
    for each dataset/backbone/strategy one configuration (``current_configs``): records of an
    earlier version of the grid stay on disk but are not averaged with the current ones, nor
    shown for a row a slice of the new version has not run yet (its cells are missing until it
    does).
    """
    records = list(records)
    if cells is not None:
        wanted = {cell.run_id for cell in cells}
        configs = {cell.config_id for cell in cells}
        # seeds racing added belong to the grid's configuration though its seed list lacks them
        chosen = [r for r in records if r["run_id"] in wanted or (_raced(r) and r.get("config_id") in configs)]
    else:
        current = current_configs(records, planned, earlier)
        chosen = [r for r in records
                  if r.get("config_id") == current[(r["dataset"], r["backbone"], r["strategy"])]]
    return sorted(chosen, key=lambda r: (r["dataset"], r["backbone"], r["strategy"], r["seed"], r["run_id"]))


def current_configs(records: list[dict], planned: Optional[list] = None, earlier: Iterable[str] = ()) -> dict:
    """{(dataset, backbone, strategy): the configuration id a leaderboard shows}.

    The grid snapshot decides (``tlbench.grid_snapshot``): the configuration it gives a row
    (``planned``), else, for a row it no longer lists, the one it replaced last (``earlier``,
    oldest first). Only what the results folder keeps decides, never the timestamps in records,
    which machines with wrong clocks wrote. A row with one configuration has it. Where nothing
    decides (several configurations and no snapshot that knows them: records copied alone, a
    folder older than snapshots), the one whose records started last is shown, with a warning
    that the machines' clocks chose it.
    """
    current = {(c.task, c.backbone, c.strategy): c.config_id for c in planned or ()}
    order = {config: i for i, config in enumerate(earlier)}
    by_row: dict = {}
    for r in records:
        by_row.setdefault((r["dataset"], r["backbone"], r["strategy"]), []).append(r)
    for row, rows in sorted(by_row.items()):
        if row in current:
            continue
        configs = {r.get("config_id") for r in rows}
        known = [c for c in configs if c in order]
        if len(configs) == 1 or known:
            current[row] = max(known, key=order.__getitem__) if known else configs.pop()
            continue
        latest = max(rows, key=lambda r: (r.get("started_at") or "", r["run_id"]))
        current[row] = latest.get("config_id")
        print(f"warning: {' / '.join(row)} has records of {len(configs)} configurations and no grid snapshot "
              "(grid.json) says which is current; shown: the one whose records say they started last, by the "
              "clocks of the machines that ran them. Run the grid (`tlbench run --grid FILE`) to make the grid "
              "file's configuration the current one.", file=sys.stderr, flush=True)
    return current


def expected_cells(records: list[dict], cells: Optional[list] = None) -> set:
    """(dataset, backbone, strategy, seed) of every cell the grid should have.

    With the grid's cells (a Cell or a snapshot's PlannedCell: ``task``, ``backbone``,
    ``strategy``, ``seed``), those. From records alone: every combination of the backbones,
    strategies, datasets and seeds they name (a grid is such a product), so a cell that never
    wrote a record - a runner lost with its node, a grid stopped early - shows as missing.
    """
    raced = {(r["dataset"], r["backbone"], r["strategy"], r["seed"]) for r in records if _raced(r)}
    if cells is not None:
        return {(c.task, c.backbone, c.strategy, c.seed) for c in cells} | raced
    # a seed racing added is expected of its own row only, not of every row
    planned = [r for r in records if not _raced(r)] or records
    axes = [sorted({r[k] for r in planned}) for k in (*KEYS, "seed")]
    return set(itertools.product(*axes)) | raced


def _raced(record: dict) -> bool:
    return isinstance(record.get("race"), dict)


# -- tables -----------------------------------------------------------------------------------


@dataclass
class Leaderboard:
    """Every table of one grid, as plain rows (dicts) in display order."""

    grid: str
    control: Optional[str]  # the strategy transfer gain is measured against (None: no control)
    per_dataset: list[dict]
    overall: list[dict]
    transfer_gain: list[dict]
    environment: list[tuple[str, str]]
    records: int
    cells: int
    first_started: Optional[str] = None
    last_finished: Optional[str] = None
    datasets: list[str] = field(default_factory=list)
    backbones: list[str] = field(default_factory=list)
    strategies: list[str] = field(default_factory=list)
    seeds: list[int] = field(default_factory=list)
    curves: list[dict] = field(default_factory=list)
    #: True when the control's cells start from random weights (then gain is what pretraining adds)
    control_from_random: bool = False
    #: each task's leading rows against its best row (see ``significance.judge_task``)
    pairwise: list[dict] = field(default_factory=list)
    #: Friedman's test and Nemenyi's critical difference across tasks, or why there is none
    critical_difference: dict = field(default_factory=dict)
    #: who named the control: "records" (found by ``find_control``), "grid" (its ``control`` key)
    #: or "chosen" (``tlbench report --control``)
    control_from: str = "records"
    #: {control: transfer gain rows} of the controls after the first, when several are named
    more_gains: dict = field(default_factory=dict)
    #: {strategy: True when its records started from random weights} (``starts_from_random``)
    random_starts: dict = field(default_factory=dict)

    @property
    def has_control(self) -> bool:
        return self.control in self.strategies


def build_leaderboard(results_dir, grid_name: str, cells: Optional[list] = None,
                      control=None) -> Leaderboard:
    """The leaderboard of one grid from its stored records (with ``cells``: of exactly those).

    Without ``cells`` this is `tlbench report`'s leaderboard, which `tlbench run` writes too:
    every record of the current configuration (the grid snapshot's, ``tlbench.grid_snapshot``,
    where there is one), the snapshot's cells without one as missing, and the snapshot's
    controls unless ``control`` (a strategy, or a list of them) names others.
    """
    from tlbench.grid_snapshot import read_snapshot
    from tlbench.results import iter_records  # records bring numpy: not for `tlbench --help`

    snapshot = read_snapshot(results_dir, grid_name) if cells is None else None
    planned = snapshot.cells if snapshot is not None else None
    records = current_records((as_task(r) for r in iter_records(results_dir, grid_name)), cells, planned,
                              snapshot.earlier if snapshot is not None else ())
    controls, control_from = _as_list(control), "chosen"
    if snapshot is not None and not controls:
        controls, control_from = snapshot.controls, "grid"
    board = leaderboard_from_records(records, grid_name, planned if cells is None else cells,
                                     controls[0] if controls else None)
    if controls:
        board.control_from = control_from
    by_key = _records_by_row(records)
    board.more_gains = {c: transfer_gain_rows(board.per_dataset, by_key, c) for c in controls[1:]}
    return board


def _as_list(control) -> list:
    if control is None:
        return []
    return [control] if isinstance(control, str) else list(control)


def _records_by_row(records: list[dict]) -> dict:
    by_key: dict = {}
    for r in records:
        by_key.setdefault((r["dataset"], r["backbone"], r["strategy"]), []).append(r)
    return by_key


def leaderboard_from_records(records: list[dict], grid: str, cells: Optional[list] = None,
                             control: Optional[str] = None) -> Leaderboard:
    """All tables from the current records of one grid (see ``current_records``); the transfer
    gain is over ``control``, by default the one found by ``find_control``."""
    control = control or find_control(records)
    expected = expected_cells(records, cells)
    by_key = _records_by_row(records)
    seen = {(r["dataset"], r["backbone"], r["strategy"], r["seed"]) for r in records}
    missing: dict = {}
    for d, b, s, seed in expected - seen:
        missing.setdefault((d, b, s), []).append(seed)
    keys = sorted(set(by_key) | set(missing))

    per_dataset = [_row(key, by_key.get(key, []), sorted(missing.get(key, []))) for key in keys]
    fill_sweeps(per_dataset, records, cells)
    per_dataset.sort(key=lambda row: (task_key(row), row["dataset"], _desc(row["top1"]), row["backbone"],
                                      row["strategy"]))

    def records_of(row: dict) -> dict:
        """{seed: ok record} of a row."""
        return {r["seed"]: r for r in by_key.get((row["dataset"], row["backbone"], row["strategy"]), [])
                if r["status"] == "ok"}

    pairwise = [comparison for _, rows in group_by_task(per_dataset) for comparison in judge_task(rows, records_of)]
    names = {k: sorted({key[i] for key in keys}) for i, k in enumerate(KEYS)}
    names["dataset"] = task_order(per_dataset)
    overall = []
    for sweep, rows in by_curve_point(per_dataset):  # values of a curve are never averaged together
        tasks = task_order(rows)
        point = _overall(rows, tasks)
        across_tasks(point, rows, tasks, records_of, control)
        overall += [{"sweep": sweep, **row} if sweep else row for row in point]
    stamps = [r.get("started_at") for r in records if r.get("started_at")]
    ends = [r.get("finished_at") for r in records if r.get("finished_at")]
    return Leaderboard(
        grid=grid, control=control, per_dataset=per_dataset, overall=overall, pairwise=pairwise,
        critical_difference=critical_difference(per_dataset, names["dataset"]),
        transfer_gain=transfer_gain_rows(per_dataset, by_key, control),
        environment=_environment(records), records=len(records), cells=len(expected | seen),
        first_started=min(stamps) if stamps else None, last_finished=max(ends) if ends else None,
        datasets=names["dataset"], backbones=names["backbone"], strategies=names["strategy"],
        seeds=sorted({r["seed"] for r in records} | {key[3] for key in expected}),
        curves=curves_of(per_dataset),
        control_from_random=starts_from_random(records).get(control, False),
        random_starts=starts_from_random(records),
    )


def as_task(record: dict) -> dict:
    """The record as a leaderboard sees it: a cell of a curve (a list in [settings]) is ranked
    among the cells with the same swept values, as its own task, e.g. ``digits (train_per_class=5)``."""
    sweep = record.get("sweep") or {}
    if not sweep:
        return record
    return {**record, "dataset": task_name(record["dataset"], sweep), "base_dataset": record["dataset"]}


def _desc(value: Optional[float]) -> tuple:
    """Sort key: larger values first, missing values last."""
    return (value is None, -(value or 0.0))


def _asc(value: Optional[float]) -> tuple:
    return (value is None, value or 0.0)


def _row(key: tuple, records: list[dict], missing_seeds: list[int]) -> dict:
    ok = [r for r in records if r["status"] == "ok"]
    top1 = mean_ci([r["top1"] for r in ok])
    row = dict(zip(KEYS, key))
    if records and records[0].get("sweep"):
        row.update(sweep=records[0]["sweep"], base_dataset=records[0]["base_dataset"])
    row["warnings"] = sorted({f"seed {r['seed']}: {w}" for r in ok for w in r.get("warnings") or ()})
    row["warnings"] += _edge_picks(ok)
    row.update(top1=top1.mean, top1_ci95=top1.half_width, top1_std=top1.std, seeds=top1.n,
               ok_seeds=[r["seed"] for r in ok], **_seed_origins(ok))
    for metric, _ in METRICS:
        values = [r[metric] for r in ok if isinstance(r.get(metric), (int, float))]
        row[metric] = mean_ci(values).mean
    # the compute the row cost: every candidate's fit when options were tuned on validation
    # and the frozen pass an earlier cell paid, where features came from the cache
    row["fit_s"] = mean_ci([s for s in map(_fit_seconds, ok) if s is not None]).mean
    counts = {s: sum(r["status"] == s for r in records) for s in STATUS_ORDER}
    counts[MISSING] = len(missing_seeds)
    row["status"] = ("ok" if counts["ok"] and sum(counts.values()) == counts["ok"]
                     else ", ".join(f"{counts[s]} {s}" for s in STATUS_ORDER if counts[s]))
    errors = sorted({f"seed {r['seed']}: {r.get('error') or r['status']}" for r in records if r["status"] != "ok"})
    errors += [f"seed {seed}: no record" for seed in missing_seeds]
    row["error"] = "; ".join(errors)
    return row


EDGE_SHARE = 0.8  # "8 of 10 cells took the largest lr": a row, not a seed, says the list is misplaced


def _edge_picks(ok: list[dict]) -> list[str]:
    """A tuned option whose seeds chose the same end of its list (two values or more) in at least
    EDGE_SHARE of them: validation keeps pointing past the list, so the row may be under-tuned."""
    tuned = [r for r in ok if isinstance(r.get("candidates"), list) and isinstance(r.get("selected"), int)
             and 0 <= r["selected"] < len(r["candidates"])]
    if len(tuned) < 2:
        return []
    notes = []
    for key in sorted((tuned[0]["candidates"][0].get("options") or {})):
        ends = [end_of_list([(c.get("options") or {}).get(key) for c in r["candidates"]], r["selected"])
                for r in tuned]
        if None not in ends:
            for end in ("largest", "smallest"):
                if ends.count(end) >= max(2, EDGE_SHARE * len(tuned)):
                    notes.append(f"{key}: {ends.count(end)} of {len(tuned)} seeds chose the {end} value of its list "
                                 "on validation; the best may lie beyond it")
    return notes


def _fit_seconds(record: dict) -> Optional[float]:
    """Every candidate's fit, plus the feature extraction its probe read from the cache."""
    fit = record.get("selection_s") or record.get("train_s")
    if not isinstance(fit, (int, float)):
        return None
    # with candidates, only the first one's: later candidates read what the first extracted,
    # and that extraction is already in selection_s
    candidates = record.get("candidates")
    first = candidates[0] if isinstance(candidates, list) and candidates and isinstance(candidates[0], dict) else record
    cached = (first.get("strategy_info") or {}).get("cached_extraction_s")
    return fit + (cached if isinstance(cached, (int, float)) and cached > 0 else 0.0)


def _seed_origins(ok: list[dict]) -> dict:
    """How many of a row's seeds racing added (the rule in their records, fixed before looking),
    and how many joined the grid after its first run: seeds outside the first run's ``grid_seeds``
    (seeds added after reading a leaderboard are optional stopping). The first run's list is the
    shortest one the row's records hold (seeds are added to a list; the first of equally long
    lists in sorted order), not the one of the record with the earliest timestamp: timestamps
    come from machines' clocks, which can be wrong."""
    raced = [r for r in ok if _raced(r)]
    planned = [r for r in ok if isinstance(r.get("grid_seeds"), list) and r not in raced]
    first = min((r["grid_seeds"] for r in planned), key=lambda seeds: (len(seeds), sorted(seeds))) if planned else None
    later = [r for r in planned if first is not None and r["seed"] not in first]
    return {"raced_seeds": len(raced), "later_seeds": len(later)}


def _overall(per_dataset: list[dict], datasets: list[str]) -> list[dict]:
    """Mean top-1 and mean rank of each backbone/strategy pair over the datasets it ran on (the
    task ranks of ``significance.judge_task``: rows tied with a task's best share rank 1)."""
    pairs = sorted({(row["backbone"], row["strategy"]) for row in per_dataset})
    rows = []
    for pair in pairs:
        mine = [row for row in per_dataset if (row["backbone"], row["strategy"]) == pair]
        scored = [row for row in mine if row["top1"] is not None]
        rows.append({
            "backbone": pair[0], "strategy": pair[1],
            "mean_top1": mean_ci([row["top1"] for row in scored]).mean,
            "mean_rank": mean_ci([row["rank"] for row in scored]).mean,
            "datasets": len(scored), "of_datasets": len(datasets),
            "wins": sum(row["best"] for row in scored),
            "not_ok": ", ".join(f"{row['dataset']} ({row['status']})" for row in mine if row["status"] != "ok"),
        })
    rows.sort(key=lambda row: (_asc(row["mean_rank"]), _desc(row["mean_top1"]), row["backbone"], row["strategy"]))
    return rows


def _environment(records: list[dict]) -> list[tuple[str, str]]:
    """What ran the records: each field's distinct values (with counts when they differ)."""
    fields = [f for f in ENVIRONMENT_FIELDS if any(f in (r.get("environment") or {}) for r in records)]
    extra = sorted({f for r in records for f in (r.get("environment") or {})} - set(fields))
    rows = []
    for name in fields + extra:
        values: dict = {}
        for r in records:
            value = (r.get("environment") or {}).get(name)
            text = "-" if value is None else str(value)
            values[text] = values.get(text, 0) + 1
        if len(values) == 1:
            rows.append((name, next(iter(values))))
        else:
            rows.append((name, "; ".join(f"{v} ({n} records)" for v, n in sorted(values.items()))))
    return rows
