"""Curve settings in a leaderboard (a list in [settings], one task per value): tasks in numeric
order of their values, rows grouped by curve point so nothing averages across values, each
curve's points, and the grid's size told in datasets and values rather than tasks."""

from __future__ import annotations

import itertools
from typing import Iterable, Optional

from tlbench.grid import task_name


def value_key(value) -> tuple:
    """Sort key of a curve value: numbers by size (1, 5, 10, 25, never 1, 10, 25, 5), then text."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return (0, float(value), "")
    return (1, 0.0, str(value))


def sweep_key(sweep: Optional[dict]) -> tuple:
    return tuple((setting, value_key(value)) for setting, value in sorted((sweep or {}).items()))


def task_key(row: dict) -> tuple:
    """Sort key of a task: its dataset's name, then its curve values by size."""
    return (row.get("base_dataset") or row["dataset"], sweep_key(row.get("sweep")))


def task_order(rows: Iterable[dict]) -> list[str]:
    """The task names of ``rows`` (per-dataset rows or records), each once, in ``task_key`` order."""
    first = {}
    for row in rows:
        first.setdefault(row["dataset"], task_key(row))
    return sorted(first, key=lambda task: (first[task], task))


def fill_sweeps(per_dataset: list[dict], records: list[dict], cells: Optional[list]) -> None:
    """Give a row that has no record (every seed missing) its dataset and curve values, from
    another record or the grid's cell of the same task, so it sorts and groups with its task."""
    known = {r["dataset"]: (r["base_dataset"], r["sweep"]) for r in records if r.get("sweep")}
    for cell in cells or ():
        if cell.sweep:
            known.setdefault(task_name(cell.dataset, dict(cell.sweep)), (cell.dataset, dict(cell.sweep)))
    for row in per_dataset:
        if not row.get("sweep") and row["dataset"] in known:
            row["base_dataset"], row["sweep"] = known[row["dataset"]]


def by_curve_point(per_dataset: list[dict]) -> list[tuple[dict, list[dict]]]:
    """(curve values, rows) for each curve point, by size ({} and every row without a curve)."""
    point = lambda row: sweep_key(row.get("sweep"))
    ordered = sorted(per_dataset, key=point)
    return [(dict(rows[0].get("sweep") or {}), rows)
            for rows in (list(group) for _, group in itertools.groupby(ordered, key=point))]


def curves_of(per_dataset: list[dict]) -> list[dict]:
    """Top-1 against each swept setting: one row per dataset (and other swept values), setting,
    backbone and strategy, with a point per value, by size."""
    curves: dict = {}
    for row in per_dataset:
        sweep = row.get("sweep") or {}
        for setting, value in sweep.items():
            others = {k: v for k, v in sweep.items() if k != setting}
            key = (task_name(row["base_dataset"], others), setting, row["backbone"], row["strategy"])
            curves.setdefault(key, {"order": (row["base_dataset"], sweep_key(others)), "points": []})
            curves[key]["points"].append({"value": value, "top1": row["top1"], "top1_ci95": row["top1_ci95"],
                                          "seeds": row["seeds"]})
    ordered = sorted(curves.items(), key=lambda item: (item[1]["order"], item[0]))
    return [{"dataset": d, "setting": setting, "backbone": b, "strategy": st,
             "points": sorted(curve["points"], key=lambda p: value_key(p["value"]))}
            for (d, setting, b, st), curve in ordered]


def grid_axes(per_dataset: list[dict]) -> tuple[list[str], dict]:
    """(datasets, {setting: its values by size}) of a leaderboard's rows: what a grid lists, not
    its tasks (2 datasets × 4 values of train_per_class are 2 datasets, not 8)."""
    datasets = sorted({row.get("base_dataset") or row["dataset"] for row in per_dataset})
    values: dict = {}
    for row in per_dataset:
        for setting, value in (row.get("sweep") or {}).items():
            values.setdefault(setting, set()).add(value)
    return datasets, {s: sorted(v, key=value_key) for s, v in sorted(values.items())}


def curve_settings(rows: Iterable[dict]) -> list[str]:
    """The swept settings rows carry (their ``sweep``), sorted: the columns that say a row's point."""
    return sorted({setting for row in rows for setting in (row.get("sweep") or {})})
