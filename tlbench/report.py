"""Leaderboards from stored records alone, so they can be rebuilt after a resume, a merge of
records from several machines, or a run on a cluster.

One grid's records become three tables (per dataset, overall, transfer gain over a control
strategy), two plots and a self-contained page, all written next to the records::

    RESULTS/GRID/leaderboard.md                       every table, GitHub markdown
    RESULTS/GRID/leaderboard.csv                      per dataset (one row per backbone/strategy)
    RESULTS/GRID/leaderboard_overall.csv              per backbone/strategy across datasets
    RESULTS/GRID/leaderboard_transfer_gain.csv        each strategy minus the control
    RESULTS/GRID/leaderboard.json                     all of the above and the environment
    RESULTS/GRID/leaderboard.html                     one page, nothing remote, sortable tables
    RESULTS/GRID/accuracy_vs_train_time.png           per dataset, Pareto front marked
    RESULTS/GRID/accuracy_vs_trainable_params.png

Output is byte-stable for the same records: rows are sorted, numbers formatted fixed, plots
rendered without timestamps, and the only dates shown are those in the records.
"""

from __future__ import annotations

import contextlib
import itertools
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Optional

from tlbench.report_stats import CONFIDENCE, average_ranks, mean_ci
from tlbench.grid import task_name
from tlbench.results import grid_dir, iter_records, write_set

# The strategy that measures transfer gain: the same recipe from random weights. The core
# knows no strategy by name except through this one parameter (`tlbench report --control`).
CONTROL_STRATEGY = "scratch"

KEYS = ("dataset", "backbone", "strategy")
STATUS_ORDER = ("ok", "failed", "interrupted", "missing")
# mean over a row's ok seeds; (record field, short header)
METRICS = (
    ("top5", "top-5"), ("mean_per_class_acc", "mean class acc"), ("train_s", "train s"),
    ("eval_s", "eval s"), ("train_samples_per_s", "samples/s"), ("trainable_params", "trainable params"),
    ("total_params", "total params"), ("peak_mem_mb", "peak mem MB"),
)
INTEGER_METRICS = {"trainable_params", "total_params"}
ENVIRONMENT_FIELDS = ("tlbench", "tlbench_git_commit", "tlbench_git_dirty", "torch", "torchvision",
                      "timm", "python", "cuda", "device", "device_name", "precision", "platform",
                      "hostname")
PLOTS = {
    "accuracy_vs_train_time.png": "Top-1 vs training time",
    "accuracy_vs_trainable_params.png": "Top-1 vs trainable parameters",
    "accuracy_curves.png": "Top-1 against the swept settings",
}


# -- which records ----------------------------------------------------------------------------


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
        for r in sorted(records, key=lambda r: (r.get("started_at") or "", r["run_id"])):
            newest[(r["dataset"], r["backbone"], r["strategy"])] = r.get("config_id")
        chosen = [r for r in records
                  if r.get("config_id") == newest[(r["dataset"], r["backbone"], r["strategy"])]]
    return sorted(chosen, key=lambda r: (r["dataset"], r["backbone"], r["strategy"], r["seed"], r["run_id"]))


def expected_cells(records: list[dict], cells: Optional[list] = None) -> set:
    """(dataset, backbone, strategy, seed) of every cell the grid should have.

    With the grid's cells, those. From records alone: every combination of the backbones,
    strategies, datasets and seeds they name (a grid is such a product), so a cell that never
    wrote a record - a runner lost with its node, a grid stopped early - shows as missing.
    """
    if cells is not None:
        return {(c.task, c.backbone, c.strategy, c.seed) for c in cells}
    axes = [sorted({r[k] for r in records}) for k in (*KEYS, "seed")]
    return set(itertools.product(*axes))


# -- tables -----------------------------------------------------------------------------------


@dataclass
class Leaderboard:
    """Every table of one grid, as plain rows (dicts) in display order."""

    grid: str
    control: str
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

    @property
    def has_control(self) -> bool:
        return self.control in self.strategies


def build(records: list[dict], grid: str, cells: Optional[list] = None,
          control: str = CONTROL_STRATEGY) -> Leaderboard:
    """All tables from the current records of one grid (see ``current_records``)."""
    expected = expected_cells(records, cells)
    by_key: dict = {}
    for r in records:
        by_key.setdefault((r["dataset"], r["backbone"], r["strategy"]), []).append(r)
    seen = {(r["dataset"], r["backbone"], r["strategy"], r["seed"]) for r in records}
    missing: dict = {}
    for d, b, s, seed in expected - seen:
        missing.setdefault((d, b, s), []).append(seed)
    keys = sorted(set(by_key) | set(missing))

    per_dataset = [_row(key, by_key.get(key, []), sorted(missing.get(key, []))) for key in keys]
    for dataset, rows in itertools.groupby(per_dataset, key=lambda row: row["dataset"]):
        rows = list(rows)
        best = max((row["top1"] for row in rows if row["top1"] is not None), default=None)
        for row in rows:
            row["best"] = best is not None and row["top1"] == best
    per_dataset.sort(key=lambda row: (row["dataset"], _desc(row["top1"]), row["backbone"], row["strategy"]))

    names = {k: sorted({key[i] for key in keys}) for i, k in enumerate(KEYS)}
    stamps = [r.get("started_at") for r in records if r.get("started_at")]
    ends = [r.get("finished_at") for r in records if r.get("finished_at")]
    return Leaderboard(
        grid=grid, control=control, per_dataset=per_dataset,
        overall=_overall(per_dataset, names["dataset"]),
        transfer_gain=_transfer_gain(per_dataset, by_key, control),
        environment=_environment(records), records=len(records), cells=len(expected | seen),
        first_started=min(stamps) if stamps else None, last_finished=max(ends) if ends else None,
        datasets=names["dataset"], backbones=names["backbone"], strategies=names["strategy"],
        seeds=sorted({r["seed"] for r in records} | {key[3] for key in expected}),
        curves=_curves(per_dataset),
    )


def as_task(record: dict) -> dict:
    """The record as a leaderboard sees it: a cell of a curve (a list in [settings]) is ranked
    among the cells with the same swept values, as its own task, e.g. ``digits (train_per_class=5)``."""
    sweep = record.get("sweep") or {}
    if not sweep:
        return record
    return {**record, "dataset": task_name(record["dataset"], sweep), "base_dataset": record["dataset"]}


def _curves(per_dataset: list[dict]) -> list[dict]:
    """Top-1 against each swept setting: one row per dataset (and other swept values), setting,
    backbone and strategy, with a point per value."""
    curves: dict = {}
    for row in per_dataset:
        sweep = row.get("sweep") or {}
        for setting, value in sweep.items():
            others = {k: v for k, v in sweep.items() if k != setting}
            key = (task_name(row["base_dataset"], others), setting, row["backbone"], row["strategy"])
            curves.setdefault(key, []).append({"value": value, "top1": row["top1"],
                                               "top1_ci95": row["top1_ci95"], "seeds": row["seeds"]})
    return [{"dataset": d, "setting": setting, "backbone": b, "strategy": st,
             "points": sorted(points, key=lambda p: p["value"])}
            for (d, setting, b, st), points in sorted(curves.items())]


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
    row.update(top1=top1.mean, top1_ci95=top1.half_width, top1_std=top1.std, seeds=top1.n,
               ok_seeds=[r["seed"] for r in ok])
    for metric, _ in METRICS:
        values = [r[metric] for r in ok if isinstance(r.get(metric), (int, float))]
        row[metric] = mean_ci(values).mean
    counts = {s: sum(r["status"] == s for r in records) for s in STATUS_ORDER}
    counts["missing"] = len(missing_seeds)
    row["status"] = ("ok" if counts["ok"] and sum(counts.values()) == counts["ok"]
                     else ", ".join(f"{counts[s]} {s}" for s in STATUS_ORDER if counts[s]))
    errors = sorted({f"seed {r['seed']}: {r.get('error') or r['status']}" for r in records if r["status"] != "ok"})
    errors += [f"seed {seed}: no record" for seed in missing_seeds]
    row["error"] = "; ".join(errors)
    return row


def _overall(per_dataset: list[dict], datasets: list[str]) -> list[dict]:
    """Mean top-1 and mean rank of each backbone/strategy pair over the datasets it ran on."""
    ranks: dict = {}
    for dataset in datasets:
        scores = {(row["backbone"], row["strategy"]): row["top1"] for row in per_dataset
                  if row["dataset"] == dataset and row["top1"] is not None}
        for pair, rank in average_ranks(scores).items():
            ranks.setdefault(pair, {})[dataset] = rank
    pairs = sorted({(row["backbone"], row["strategy"]) for row in per_dataset})
    rows = []
    for pair in pairs:
        mine = [row for row in per_dataset if (row["backbone"], row["strategy"]) == pair]
        scored = [row for row in mine if row["top1"] is not None]
        pair_ranks = ranks.get(pair, {})
        rows.append({
            "backbone": pair[0], "strategy": pair[1],
            "mean_top1": mean_ci([row["top1"] for row in scored]).mean,
            "mean_rank": mean_ci(list(pair_ranks.values())).mean,
            "datasets": len(scored), "of_datasets": len(datasets),
            "wins": sum(row["best"] for row in scored),
            "not_ok": ", ".join(f"{row['dataset']} ({row['status']})" for row in mine if row["status"] != "ok"),
        })
    rows.sort(key=lambda row: (_asc(row["mean_rank"]), _desc(row["mean_top1"]), row["backbone"], row["strategy"]))
    return rows


def _transfer_gain(per_dataset: list[dict], by_key: dict, control: str) -> list[dict]:
    """Each strategy's mean top-1 minus the control's on the same backbone and dataset.

    The interval comes from per-seed differences (seed k of both shares the split and the
    k-shot sample), so it needs the same two or more ok seeds on both sides.
    """
    if not any(row["strategy"] == control for row in per_dataset):
        return []
    controls = {(row["dataset"], row["backbone"]): row for row in per_dataset if row["strategy"] == control}
    rows = []
    for row in per_dataset:
        if row["strategy"] == control:
            continue
        base = controls.get((row["dataset"], row["backbone"]))
        gain = ci = None
        n = 0
        if base is None:
            note = f"no {control} cell"
        elif base["top1"] is None:
            note = f"{control}: {base['status']}"
        elif row["top1"] is None:
            note = row["status"]
        else:
            note = ""
            gain = row["top1"] - base["top1"]
            if sorted(row["ok_seeds"]) == sorted(base["ok_seeds"]) and len(row["ok_seeds"]) >= 2:
                mine = _top1_by_seed(by_key[(row["dataset"], row["backbone"], row["strategy"])])
                theirs = _top1_by_seed(by_key[(row["dataset"], row["backbone"], control)])
                paired = mean_ci([mine[s] - theirs[s] for s in sorted(mine)])
                ci, n = paired.half_width, paired.n
        rows.append({"dataset": row["dataset"], "backbone": row["backbone"], "strategy": row["strategy"],
                     "top1": row["top1"], "control_top1": None if base is None else base["top1"],
                     "gain": gain, "gain_ci95": ci, "paired_seeds": n, "note": note})
    rows.sort(key=lambda r: (r["dataset"], r["backbone"], _desc(r["gain"]), r["strategy"]))
    return rows


def _top1_by_seed(records: list[dict]) -> dict:
    return {r["seed"]: r["top1"] for r in records if r["status"] == "ok"}


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


# -- formatting (one set of rules for markdown, CSV-free views, the page and the terminal) -----


def fmt_fixed(value: Optional[float], digits: int = 3) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def fmt_ci(mean: Optional[float], half: Optional[float], digits: int = 3, signed: bool = False) -> str:
    if mean is None:
        return "-"
    text = f"{mean:+.{digits}f}" if signed else f"{mean:.{digits}f}"
    return text if half is None else f"{text} ± {half:.{digits}f}"


def fmt_seconds(value: Optional[float]) -> str:
    return "-" if value is None else f"{value:,.1f}"


def fmt_rate(value: Optional[float]) -> str:
    """Three significant figures without exponents: 1,320 · 132 · 13.2 · 1.32 · 0.13."""
    if value is None:
        return "-"
    if value >= 100:
        return f"{value:,.0f}"
    return f"{value:.1f}" if value >= 10 else f"{value:.2f}"


def fmt_count(value: Optional[float]) -> str:
    """Parameter counts as timm's tables give them: 3.38M, 12.8k, 842."""
    if value is None:
        return "-"
    for scale, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if value >= scale:
            scaled = value / scale
            return f"{scaled:.{2 if scaled < 10 else 1 if scaled < 100 else 0}f}{suffix}"
    return f"{value:.0f}"


def fmt_mb(value: Optional[float]) -> str:
    return "-" if value is None else f"{value:,.0f}"


@dataclass
class View:
    """A table as shown: headers, cell texts, sort values (None sorts last), row styles."""

    name: str
    headers: list[str]
    numeric: list[bool]
    rows: list[list[str]] = field(default_factory=list)
    sort_values: list[list] = field(default_factory=list)
    styles: list[str] = field(default_factory=list)  # "best", "problem" or ""
    titles: list[str] = field(default_factory=list)  # hover text for a row (why it failed)

    def add(self, cells: list[tuple[str, object]], style: str = "", title: str = "") -> None:
        self.rows.append([text for text, _ in cells])
        self.sort_values.append([value for _, value in cells])
        self.styles.append(style)
        self.titles.append(title)


def _style(row: dict) -> str:
    return "best" if row.get("best") else ("problem" if row["status"] != "ok" else "")


def dataset_view(board: Leaderboard, dataset: str) -> View:
    view = View(f"dataset-{dataset}", ["backbone", "strategy", "top-1", "n", "train s", "samples/s",
                          "trainable params", "peak mem MB", "status"],
                [False, False, True, True, True, True, True, True, False])
    for row in board.per_dataset:
        if row["dataset"] != dataset:
            continue
        view.add([(row["backbone"], row["backbone"]), (row["strategy"], row["strategy"]),
                  (fmt_ci(row["top1"], row["top1_ci95"]), row["top1"]), (str(row["seeds"]), row["seeds"]),
                  (fmt_seconds(row["train_s"]), row["train_s"]),
                  (fmt_rate(row["train_samples_per_s"]), row["train_samples_per_s"]),
                  (fmt_count(row["trainable_params"]), row["trainable_params"]),
                  (fmt_mb(row["peak_mem_mb"]), row["peak_mem_mb"]), (row["status"], row["status"])],
                 _style(row), row["error"])
    return view


def overall_view(board: Leaderboard) -> View:
    view = View("overall", ["backbone", "strategy", "mean top-1", "mean rank", "datasets", "best on",
                            "not ok"],
                [False, False, True, True, True, True, False])
    for row in board.overall:
        view.add([(row["backbone"], row["backbone"]), (row["strategy"], row["strategy"]),
                  (fmt_fixed(row["mean_top1"]), row["mean_top1"]), (fmt_fixed(row["mean_rank"], 2), row["mean_rank"]),
                  (f"{row['datasets']}/{row['of_datasets']}", row["datasets"]), (str(row["wins"]), row["wins"]),
                  (row["not_ok"] or "-", row["not_ok"])],
                 "problem" if row["not_ok"] else "")
    return view


def gain_view(board: Leaderboard) -> View:
    control = board.control
    view = View("transfer_gain", ["dataset", "backbone", "strategy", "top-1", control, "gain", "n", "note"],
                [False, False, False, True, True, True, True, False])
    for row in board.transfer_gain:
        view.add([(row["dataset"], row["dataset"]), (row["backbone"], row["backbone"]),
                  (row["strategy"], row["strategy"]), (fmt_fixed(row["top1"]), row["top1"]),
                  (fmt_fixed(row["control_top1"]), row["control_top1"]),
                  (fmt_ci(row["gain"], row["gain_ci95"], signed=True), row["gain"]),
                  (str(row["paired_seeds"]) if row["paired_seeds"] else "-", row["paired_seeds"]),
                  (row["note"] or "-", row["note"])],
                 "problem" if row["note"] else "")
    return view


def environment_view(board: Leaderboard) -> View:
    view = View("environment", ["field", "value"], [False, False])
    for name, value in board.environment:
        view.add([(name, name), (value, value)])
    return view


def describe(board: Leaderboard) -> str:
    """One line: what the grid is and when its records were made (dates from the records only)."""
    def plural(n, word, many=None):
        return f"{n} {word if n == 1 else (many or word + 's')}"

    done = sum(1 for row in board.per_dataset for _ in row["ok_seeds"])
    parts = [f"{plural(board.cells, 'cell')} ({done} ok)",
             " × ".join([plural(len(board.backbones), "backbone"),
                         plural(len(board.strategies), "strategy", "strategies"),
                         plural(len(board.datasets), "dataset"), plural(len(board.seeds), "seed")])]
    if board.first_started and board.last_finished:
        parts.append(f"records from {board.first_started} to {board.last_finished}")
    return "; ".join(parts)


CI_NOTE = (f"top-1 on each dataset's test split: mean over seeds ± half-width of the "
           f"{CONFIDENCE:.0%} confidence interval (Student t; none with one seed); n = seeds that ran ok")
OVERALL_NOTE = ("mean top-1 and mean rank (1 = best on a dataset, ties share the average rank) over "
                "the datasets where the pair ran ok; best on = datasets where it has the highest top-1")


CURVE_NOTE = ("top-1 for each value of a setting the grid lists several values of (mean over seeds ± "
              "half-width of the 95% confidence interval)")


def _curve_views(board: Leaderboard) -> list[tuple[tuple, View]]:
    """One table per dataset and swept setting: a row per backbone/strategy, a column per value."""
    out = []
    for key, rows in itertools.groupby(board.curves, key=lambda c: (c["dataset"], c["setting"])):
        rows = list(rows)
        values = sorted({p["value"] for c in rows for p in c["points"]})
        view = View(f"curve-{key[0]}-{key[1]}", ["backbone", "strategy", *map(str, values)],
                    [False, False, *[True] * len(values)])
        for curve in rows:
            by_value = {p["value"]: p for p in curve["points"]}
            cells = [(curve["backbone"], curve["backbone"]), (curve["strategy"], curve["strategy"])]
            for value in values:
                point = by_value.get(value)
                cells.append(("-", None) if point is None else
                             (fmt_ci(point["top1"], point["top1_ci95"]), point["top1"]))
            view.add(cells)
        out.append((key, view))
    return out


def gain_note(board: Leaderboard) -> str:
    return (f"each strategy's top-1 minus `{board.control}` (the same recipe from random weights) on "
            f"the same backbone and dataset; ± from per-seed differences, n = paired seeds")


# -- markdown ---------------------------------------------------------------------------------


def _markdown_table(view: View, bold_best: Optional[int] = None) -> str:
    from tabulate import tabulate

    rows = []
    for cells, style in zip(view.rows, view.styles):
        cells = [c.replace("|", "\\|") for c in cells]
        if bold_best is not None and style == "best":
            cells[bold_best] = f"**{cells[bold_best]}**"
        rows.append(cells)
    align = ["right" if n else "left" for n in view.numeric]
    return tabulate(rows, headers=view.headers, tablefmt="github", disable_numparse=True,
                    colalign=align) + "\n"


def _sentence(text: str) -> str:
    return text[:1].upper() + text[1:]


def to_markdown(board: Leaderboard, plots: Iterable[str] = ()) -> str:
    parts = [f"# {board.grid}\n", f"{describe(board)}.\n"]
    if not board.per_dataset:
        return "".join(p + "\n" for p in parts) + "No records yet.\n"
    parts.append(f"## Overall\n\n{_sentence(OVERALL_NOTE)}.\n\n{_markdown_table(overall_view(board))}")
    parts.append(f"## Per dataset\n\n{_sentence(CI_NOTE)}. Best top-1 on each dataset in bold.\n")
    for dataset in board.datasets:
        parts.append(f"### {dataset}\n\n{_markdown_table(dataset_view(board, dataset), bold_best=2)}")
        warnings = [f"- {row['strategy']} on {row['backbone']}, {w}" for row in board.per_dataset
                    if row["dataset"] == dataset for w in row["warnings"]]
        if warnings:
            parts[-1] += "\nWarnings (see the records):\n\n" + "\n".join(warnings) + "\n"
    if board.curves:
        parts.append(f"## Curves\n\n{_sentence(CURVE_NOTE)}.\n")
        for (dataset, setting), views in _curve_views(board):
            parts.append(f"### {dataset}: top-1 against {setting}\n\n{_markdown_table(views)}")
    parts.append(f"## Transfer gain over `{board.control}`\n")
    if board.transfer_gain:
        parts[-1] += f"\n{_sentence(gain_note(board))}.\n\n{_markdown_table(gain_view(board))}"
    else:
        parts[-1] += (f"\nNo `{board.control}` records: add `{board.control}` to the grid's strategies "
                      f"to measure what pretraining adds.\n")
    plots = list(plots)
    if plots:
        parts.append("## Plots\n\n" + "\n\n".join(f"![{PLOTS[name]}]({name})" for name in plots) + "\n")
    parts.append("## Environment\n\n" + _markdown_table(environment_view(board)))
    return "\n".join(parts)


# -- CSV and JSON ------------------------------------------------------------------------------

PER_DATASET_COLUMNS = ["dataset", "backbone", "strategy", "seeds", "top1", "top1_ci95", "top1_std",
                       *[m for m, _ in METRICS], "best", "status", "error"]
OVERALL_COLUMNS = ["backbone", "strategy", "mean_top1", "mean_rank", "datasets", "of_datasets", "wins", "not_ok"]
GAIN_COLUMNS = ["dataset", "backbone", "strategy", "top1", "control_top1", "gain", "gain_ci95",
                "paired_seeds", "note"]


def frames(board: Leaderboard) -> dict:
    """The three tables as pandas DataFrames (numbers unformatted), for notebooks and CSV:
    ``frames(build_report("results", "my-grid"))["per_dataset"]``."""
    import pandas as pd

    out = {}
    for name, rows, columns in (("per_dataset", board.per_dataset, PER_DATASET_COLUMNS),
                                ("overall", board.overall, OVERALL_COLUMNS),
                                ("transfer_gain", board.transfer_gain, GAIN_COLUMNS)):
        frame = pd.DataFrame([{c: row.get(c) for c in columns} for row in rows], columns=columns)
        for column in columns:
            if column in INTEGER_METRICS:  # a mean of identical counts; keep it an integer
                frame[column] = pd.array([None if pd.isna(v) else round(v) for v in frame[column]], dtype="Int64")
            elif column in ("top1", "top1_ci95", "top1_std", "mean_top1", "mean_rank", "control_top1",
                            "gain", "gain_ci95") or column in dict(METRICS):
                frame[column] = pd.to_numeric(frame[column], errors="coerce").astype("float64")
        out[name] = frame
    return out


def to_csv(frame) -> str:
    return frame.to_csv(index=False, float_format="%.6g", lineterminator="\n")


def to_json(board: Leaderboard) -> str:
    def clean(row: dict) -> dict:
        # warnings only where there are some: leaderboards of clean grids stay byte-identical
        return {k: (round(v, 9) if isinstance(v, float) else v) for k, v in row.items()
                if k != "ok_seeds" and not (k == "warnings" and not v)}

    document = {
        "grid": board.grid, "control": board.control, "confidence": CONFIDENCE,
        "records": board.records, "cells": board.cells,
        "first_started_at": board.first_started, "last_finished_at": board.last_finished,
        "datasets": board.datasets, "backbones": board.backbones, "strategies": board.strategies,
        "seeds": board.seeds,
        "per_dataset": [clean(r) for r in board.per_dataset],
        "overall": [clean(r) for r in board.overall],
        "transfer_gain": [clean(r) for r in board.transfer_gain],
        "environment": dict(board.environment),
    }
    if board.curves:  # only then: leaderboards of grids without curves stay byte-identical
        document["curves"] = board.curves
    return json.dumps(document, indent=2, sort_keys=True, ensure_ascii=False, allow_nan=False) + "\n"


# -- terminal ----------------------------------------------------------------------------------


def terminal_summary(board: Leaderboard, color: bool = False) -> str:
    """The compact table printed after a run: one row per cell group, best per dataset marked."""
    from tabulate import tabulate

    bold, reset = ("\033[1m", "\033[0m") if color else ("", "")
    rows = []
    for row in board.per_dataset:
        top1 = fmt_ci(row["top1"], row["top1_ci95"])
        cells = [row["dataset"], row["backbone"], row["strategy"], top1 + (" *" if row["best"] else ""),
                 str(row["seeds"]), fmt_seconds(row["train_s"]), row["status"]]
        rows.append([f"{bold}{c}{reset}" for c in cells] if row["best"] else cells)
    table = tabulate(rows, headers=["dataset", "backbone", "strategy", "top-1", "seeds", "train s", "status"],
                     tablefmt="github", disable_numparse=True)
    warnings = [f"WARNING {row['dataset']} / {row['backbone']} / {row['strategy']}, {w}"
                for row in board.per_dataset for w in row["warnings"]]
    return table + "\n* best top-1 on its dataset\n" + "".join(w + "\n" for w in warnings)


# -- writing ----------------------------------------------------------------------------------


def build_report(results_dir: str | Path, grid_name: str, cells: Optional[list] = None,
                 control: str = CONTROL_STRATEGY) -> Leaderboard:
    """The leaderboard of one grid from its stored records (with ``cells``: of exactly those)."""
    records = (as_task(r) for r in iter_records(results_dir, grid_name))
    return build(current_records(records, cells), grid_name, cells, control)


def write_report(results_dir: str | Path, grid_name: str, cells: Optional[list] = None,
                 control: str = CONTROL_STRATEGY) -> list[Path]:
    """Write every leaderboard file of one grid from its records; returns their paths
    (leaderboard.md first, then the page)."""
    return write_board(build_report(results_dir, grid_name, cells, control), grid_dir(results_dir, grid_name))


def write_board(board: Leaderboard, folder: Path) -> list[Path]:
    from tlbench.report_html import to_html
    from tlbench.report_plots import render_plots

    plots = render_plots(board) if board.per_dataset else {}
    files = {"leaderboard.md": to_markdown(board, plots), "leaderboard.html": to_html(board, plots)}
    tables = frames(board)
    files["leaderboard.csv"] = to_csv(tables["per_dataset"])
    files["leaderboard_overall.csv"] = to_csv(tables["overall"])
    files["leaderboard_transfer_gain.csv"] = to_csv(tables["transfer_gain"])
    files["leaderboard.json"] = to_json(board)
    folder.mkdir(parents=True, exist_ok=True)
    paths = write_set(folder, {**files, **{name: plots[name] for name in PLOTS if name in plots}})
    for name in PLOTS:
        path = folder / name
        if name not in plots and path.exists():
            with contextlib.suppress(OSError):
                path.unlink()  # no plot for these records: an old one would describe other records
    return paths
