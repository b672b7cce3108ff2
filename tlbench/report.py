"""Leaderboards from stored records alone, so they can be rebuilt after a resume or a merge.

Output is byte-stable for the same records: rows are sorted and numbers formatted fixed.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterable, Optional

from tlbench.results import grid_dir, iter_records, write_atomic

KEYS = ["dataset", "backbone", "strategy"]
COLUMNS = [
    ("top1", "top-1"), ("top5", "top-5"), ("mean_per_class_acc", "mean class acc"),
    ("train_s", "train s"), ("eval_s", "eval s"), ("train_samples_per_s", "samples/s"),
    ("trainable_params", "trainable params"), ("total_params", "total params"),
    ("peak_mem_mb", "peak mem MB"),
]


def current_records(records: Iterable[dict], cells: Optional[list] = None) -> list[dict]:
    """The records a leaderboard shows, sorted.

    With the grid's cells, exactly the records of those cells. Without them (``tlbench report``),
    for each dataset/backbone/strategy the configuration run most recently: records of an
    earlier version of the grid stay on disk but are not averaged with the current ones.
    """
    records = list(records)
    if cells is not None:
        wanted = {cell.run_id for cell in cells}
        chosen = [r for r in records if r["run_id"] in wanted]
    else:
        newest: dict = {}
        for r in sorted(records, key=lambda r: r.get("started_at") or ""):
            newest[(r["dataset"], r["backbone"], r["strategy"])] = r.get("config_id")
        chosen = [r for r in records
                  if r.get("config_id") == newest[(r["dataset"], r["backbone"], r["strategy"])]]
    return sorted(chosen, key=lambda r: (r["dataset"], r["backbone"], r["strategy"], r["seed"]))


def leaderboard(records: list[dict], expected_cells: Optional[list] = None):
    """One row per dataset/backbone/strategy: metric means over ok seeds, failures counted."""
    import pandas as pd

    rows = [{**{k: r[k] for k in KEYS}, "seed": r["seed"], "status": r["status"],
             **{c: r.get(c) for c, _ in COLUMNS}} for r in records]
    for cell in expected_cells or []:
        if not any(r["run_id"] == cell.run_id for r in records):
            rows.append({"dataset": cell.dataset, "backbone": cell.backbone, "strategy": cell.strategy,
                         "seed": cell.seed, "status": "missing"})
    frame = pd.DataFrame(rows, columns=KEYS + ["seed", "status"] + [c for c, _ in COLUMNS])
    table = []
    for key, group in frame.groupby(KEYS, sort=True):
        ok = group[group["status"] == "ok"]
        row = dict(zip(KEYS, key))
        row["seeds"] = len(ok)
        for column, _ in COLUMNS:
            values = pd.to_numeric(ok[column], errors="coerce").dropna()
            row[column] = values.mean() if len(values) else None
        row["top1_std"] = ok["top1"].std() if len(ok) > 1 else None
        problems = group[group["status"] != "ok"]["status"].value_counts().sort_index()
        row["status"] = "ok" if problems.empty else ", ".join(f"{n} {s}" for s, n in problems.items())
        table.append(row)
    result = pd.DataFrame(table)
    if result.empty:
        return result
    result["_order"] = -result["top1"].fillna(-1.0)
    result = result.sort_values(["dataset", "_order", "backbone", "strategy"], kind="mergesort")
    return result.drop(columns="_order").reset_index(drop=True)


def _fmt(value, digits: int) -> str:
    if value is None or value != value:  # None or NaN
        return "-"
    if digits == 0:
        return f"{int(round(value)):,}"
    return f"{value:.{digits}f}"


def to_markdown(table) -> str:
    from tabulate import tabulate

    digits = {"top1": 3, "top5": 3, "mean_per_class_acc": 3, "train_s": 1, "eval_s": 1,
              "train_samples_per_s": 0, "trainable_params": 0, "total_params": 0, "peak_mem_mb": 0}
    headers = ["dataset", "backbone", "strategy", "top-1"] + [h for c, h in COLUMNS[1:]] + ["seeds", "status"]
    rows = []
    for _, r in table.iterrows():
        top1 = _fmt(r["top1"], 3)
        if r.get("top1_std") is not None and r["top1_std"] == r["top1_std"]:
            top1 += f" ± {r['top1_std']:.3f}"
        rows.append([r["dataset"], r["backbone"], r["strategy"], top1]
                    + [_fmt(r[c], digits[c]) for c, _ in COLUMNS[1:]] + [int(r["seeds"]), r["status"]])
    return tabulate(rows, headers=headers, tablefmt="github", disable_numparse=True) + "\n"


def write_report(results_dir: str | Path, grid_name: str, cells: Optional[list] = None) -> list[Path]:
    """Write leaderboard.md and leaderboard.csv for one grid; returns their paths."""
    records = current_records(iter_records(results_dir, grid_name), cells)
    table = leaderboard(records, cells)
    folder = grid_dir(results_dir, grid_name)
    md, csv = folder / "leaderboard.md", folder / "leaderboard.csv"
    heading = f"# {grid_name}\n\nTop-1 on each dataset's test split (mean over seeds; ± = std).\n\n"
    write_atomic(md, heading + (to_markdown(table) if not table.empty else "No records yet.\n"))
    write_atomic(csv, table.to_csv(index=False, float_format="%.6g", lineterminator="\n"))
    return [md, csv]
