"""What a tracker receives of a record: the cell's name, its configuration and its metrics.

Trackers sort and filter runs by their configuration and compare them by their metrics, so
both come from the record as it is, the names the leaderboard and ``tlbench runs`` use.
"""

from __future__ import annotations

import importlib.util
from typing import Optional

# a record's numbers, logged as metrics when the cell measured them
METRICS = ("top1", "top5", "mean_per_class_acc", "train_s", "eval_s", "run_s", "train_samples_per_s",
           "peak_mem_mb", "trainable_params", "total_params")
# what identifies the cell and how it went, as the record names it
NAMES = ("grid", "backbone", "strategy", "dataset", "seed", "run_id", "config_id", "status", "error_kind",
         "pretrained", "weights", "image_size")
# the record's tables of values: the strategy's options are its ``options``
TABLES = ("sweep", "settings", "options", "backbone_options", "dataset_options")


def cell_name(record: dict) -> str:
    """``test_efficientnet / linear_probe / digits (train_per_class=5) / seed 0``, as the
    leaderboard and tlbench's messages name a cell."""
    sweep = record.get("sweep") or {}
    task = record["dataset"] + (f" ({', '.join(f'{k}={v}' for k, v in sorted(sweep.items()))})" if sweep else "")
    return f"{record['backbone']} / {record['strategy']} / {task} / seed {record['seed']}"


def cell_config(record: dict) -> dict:
    """The cell's configuration, nested as in the record: names, seed, run_id, status, and the
    sweep, settings and options tables."""
    config = {key: record[key] for key in NAMES if key in record}
    config.update({key: dict(record[key]) for key in TABLES if isinstance(record.get(key), dict)})
    if record.get("error"):
        config["error"] = record["error"]
    return config


def cell_metrics(record: dict) -> dict:
    """The numbers the cell measured (none for a failed cell)."""
    return {key: record[key] for key in METRICS
            if isinstance(record.get(key), (int, float)) and not isinstance(record.get(key), bool)}


def flat(config: dict, prefix: str = "") -> dict:
    """``{"settings": {"epochs": 3}}`` -> ``{"settings.epochs": 3}``, for trackers whose
    parameters are flat."""
    out = {}
    for key, value in config.items():
        if isinstance(value, dict):
            out.update(flat(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def missing_package(module: str, extra: str) -> Optional[str]:
    """Why the sink cannot run when ``module`` is not installed (looked up, not imported)."""
    try:
        found = importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):  # None in sys.modules: its import is blocked
        found = False
    if found:
        return None
    return (f"the Python package {module!r} is not installed. Fix: pip install \"tlbench[{extra}]\" "
            f"(or pip install {module})")
