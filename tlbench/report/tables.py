"""The leaderboard as data: pandas DataFrames (for notebooks and the CSV files) and JSON."""

from __future__ import annotations

import json

from tlbench.report.board import INTEGER_METRICS, METRICS, Leaderboard
from tlbench.report.curves import curve_settings
from tlbench.report.significance import BOOTSTRAP_RESAMPLES, BOOTSTRAP_SEED
from tlbench.report.stats import CONFIDENCE

PER_DATASET_COLUMNS = ["dataset", "backbone", "strategy", "seeds", "raced_seeds", "later_seeds", "top1", "top1_ci95", "top1_std",
                       *[m for m, _ in METRICS], "fit_s", "rank", "best", "tied_with_best", "tie_test", "status", "error"]
OVERALL_COLUMNS = ["backbone", "strategy", "mean_top1", "mean_top1_low", "mean_top1_high", "mean_rank", "datasets",
                   "of_datasets", "wins", "p_improvement", "p_improvement_tasks", "not_ok"]
PAIRWISE_COLUMNS = ["dataset", "backbone", "strategy", "best_backbone", "best_strategy", "top1", "best_top1",
                    "difference", "difference_ci95", "paired_seeds", "p_value", "p_holm", "images", "p_images",
                    "tied_with_best", "tie_test"]
FLOAT_COLUMNS = {"fit_s", "top1", "top1_ci95", "top1_std", "rank", "mean_top1", "mean_top1_low", "mean_top1_high", "mean_rank",
                 "p_improvement", "control_top1", "gain", "gain_ci95", "best_top1", "difference", "difference_ci95",
                 "p_value", "p_holm", "p_images"}
GAIN_COLUMNS = ["dataset", "backbone", "strategy", "top1", "control_top1", "gain", "gain_ci95",
                "paired_seeds", "note"]


def frames(board: Leaderboard) -> dict:
    """The tables as pandas DataFrames (numbers unformatted), for notebooks and CSV:
    ``frames(build_leaderboard("results", "my-grid"))["per_dataset"]`` (also ``overall``,
    ``transfer_gain`` and ``pairwise``, each task's leading rows against its best)."""
    import pandas as pd

    out = {}
    settings = curve_settings(board.overall)  # a curve's overall rows: one block per curve point
    overall = [{**(row.get("sweep") or {}), **row} for row in board.overall]
    for name, rows, columns in (("per_dataset", board.per_dataset, PER_DATASET_COLUMNS),
                                ("overall", overall, [*settings, *OVERALL_COLUMNS]),
                                ("transfer_gain", board.transfer_gain, GAIN_COLUMNS),
                                ("pairwise", board.pairwise, PAIRWISE_COLUMNS)):
        frame = pd.DataFrame([{c: row.get(c) for c in columns} for row in rows], columns=columns)
        for column in columns:
            if column in INTEGER_METRICS:  # a mean of identical counts; keep it an integer
                frame[column] = pd.array([None if pd.isna(v) else round(v) for v in frame[column]], dtype="Int64")
            elif column in FLOAT_COLUMNS or column in dict(METRICS):
                frame[column] = pd.to_numeric(frame[column], errors="coerce").astype("float64")
            elif column == "tied_with_best":  # True, False or empty (not judged)
                frame[column] = pd.array(list(frame[column]), dtype="boolean")
        out[name] = frame
    return out


def to_csv(frame) -> str:
    return frame.to_csv(index=False, float_format="%.6g", lineterminator="\n")


def to_json(board: Leaderboard) -> str:
    def rounded(value):
        if isinstance(value, float):
            return round(value, 9)
        if isinstance(value, list):
            return [rounded(v) for v in value]
        return clean(value) if isinstance(value, dict) else value

    def clean(row: dict) -> dict:
        # warnings only where there are some: leaderboards of clean grids stay byte-identical
        return {k: rounded(v) for k, v in row.items() if k != "ok_seeds" and not (k == "warnings" and not v)}

    document = {
        "grid": board.grid, "control": board.control, "confidence": CONFIDENCE,
        "records": board.records, "cells": board.cells,
        "first_started_at": board.first_started, "last_finished_at": board.last_finished,
        "datasets": board.datasets, "backbones": board.backbones, "strategies": board.strategies,
        "seeds": board.seeds,
        "per_dataset": [clean(r) for r in board.per_dataset],
        "overall": [clean(r) for r in board.overall],
        "transfer_gain": [clean(r) for r in board.transfer_gain],
        "pairwise": [clean(r) for r in board.pairwise],
        "critical_difference": clean(board.critical_difference),
        "bootstrap": {"resamples": BOOTSTRAP_RESAMPLES, "seed": BOOTSTRAP_SEED},
        "environment": dict(board.environment),
    }
    if board.curves:  # only then: leaderboards of grids without curves stay byte-identical
        document["curves"] = board.curves
    if board.more_gains:  # only with several controls: one-control leaderboards stay byte-identical
        document["controls"] = [board.control, *board.more_gains]
        document["more_transfer_gains"] = {c: [clean(r) for r in rows] for c, rows in board.more_gains.items()}
    return json.dumps(document, indent=2, sort_keys=True, ensure_ascii=False, allow_nan=False) + "\n"


# -- terminal ----------------------------------------------------------------------------------
