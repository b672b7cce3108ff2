"""The values a grid file holds, checked one shape at a time: lists of names, seeds, the
control(s), the lists in [settings] that make curves, and numbers TOML allows but no option means (nan, inf). Each
mistake is one ConfigError naming the key and the fix."""

from __future__ import annotations

import itertools
import math
from typing import Any

from tlbench.errors import ConfigError, closest
from tlbench.options import build_options
from tlbench.settings import MAX_SEED, Settings



def string_list(data: dict, key: str, source: str) -> list[str]:
    value = data.get(key)
    if value is None:
        raise ConfigError(f"Grid file {source!r} needs a {key!r} list, e.g. {key} = [\"...\"].")
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        raise ConfigError(f"{key!r} in {source!r} must be a list of names, got {value!r}.")
    if not value:
        raise ConfigError(f"{key!r} in {source!r} is empty; name at least one.")
    if len(set(value)) != len(value):
        raise ConfigError(f"{key!r} in {source!r} names {value!r}: remove the duplicate.")
    return value


def seeds_of(data: dict, source: str) -> list[int]:
    seeds = data.get("seeds", [0])
    if isinstance(seeds, int) and not isinstance(seeds, bool):
        seeds = [seeds]
    if (not isinstance(seeds, list) or not seeds
            or not all(isinstance(s, int) and not isinstance(s, bool) and 0 <= s <= MAX_SEED for s in seeds)):
        raise ConfigError(f"'seeds' in {source!r} must be a non-empty list of integers from 0 to {MAX_SEED}, "
                          f"got {seeds!r}.")
    if len(set(seeds)) != len(seeds):
        raise ConfigError(f"'seeds' in {source!r} repeats a seed: {seeds!r}.")
    return seeds


def controls_of(data: dict, strategies: list[str], source: str) -> list[str]:
    """The grid's ``control``: one strategy name or a list of them, each one of the grid's
    strategies ([] when the key is absent: the leaderboard then finds one from the records)."""
    value = data.get("control")
    if value is None:
        return []
    controls = [value] if isinstance(value, str) else value
    if (not isinstance(controls, list) or not controls
            or not all(isinstance(c, str) and c for c in controls)):
        raise ConfigError(f"'control' in {source!r} must be a strategy name or a list of them, e.g. "
                          f"control = \"{strategies[0]}\"; got {value!r}.")
    if len(set(controls)) != len(controls):
        raise ConfigError(f"'control' in {source!r} names {controls!r}: remove the duplicate.")
    for name in controls:
        if name not in strategies:
            hint = closest(name, strategies)
            fix = f" Did you mean {hint[0]!r}?" if hint else ""
            raise ConfigError(f"control {name!r} in {source!r} is not one of the grid's strategies.{fix} "
                              f"Strategies: {', '.join(strategies)}")
    return controls


# Settings a grid may list several values of: one cell per value, for curves such as accuracy
# against shots (a strategy option's list instead selects one value on validation).
SWEEPABLE_SETTINGS = ("train_per_class", "train_size", "image_size", "epochs")
#: curve settings whose 0 is not a size but "all" (or "native"): what it stands for differs by
#: dataset or backbone, so it has no place on a curve's axis (tlbench.report.plots)
ZERO_MEANS = {"train_per_class": "all training examples", "train_size": "all labelled examples",
              "image_size": "each backbone's own input size"}


def settings_variants(data: dict, source: str) -> list[tuple[tuple, Settings]]:
    """(sweep, Settings) for each combination of the values listed in [settings]."""
    swept = {k: v for k, v in data.items() if isinstance(v, list)}
    for key, values in swept.items():
        if key not in SWEEPABLE_SETTINGS:
            raise ConfigError(f"'{key}' in [settings] takes one value, got the list {values!r}; "
                              f"only {', '.join(SWEEPABLE_SETTINGS)} may list values (one cell per value).")
        if not values or len(set(map(repr, values))) != len(values):
            raise ConfigError(f"'{key}' in [settings] must list distinct values, got {values!r}.")
        if key in ZERO_MEANS and any(type(v) is int and v == 0 for v in values):
            sizes = [v for v in values if not (type(v) is int and v == 0)] or [100, 300, 1000]
            raise ConfigError(
                f"'{key}' in [settings] lists 0, which means {ZERO_MEANS[key]}, not a size: a curve draws its "
                f"values on a size axis, where 0 has no place (the size it stands for differs from one dataset "
                f"or backbone to another). List sizes only, e.g. {key} = {sizes!r}; for {ZERO_MEANS[key]}, "
                f"run a grid with {key} = 0 (one value, not a list).")
    fixed = {k: v for k, v in data.items() if k not in swept}
    variants = []
    for combo in itertools.product(*swept.values()):
        sweep = tuple(zip(swept, combo))
        variants.append((sweep, build_options(Settings, {**fixed, **dict(sweep)}, "[settings]")))
    return variants


def check_finite(data: Any, source: str, where: str = "") -> None:
    """TOML allows nan and inf; no option means anything by them, and range checks such as
    ``lr > 0`` let them through."""
    if isinstance(data, dict):
        for key, value in data.items():
            check_finite(value, source, f"{where}.{key}" if where else key)
    elif isinstance(data, list):
        for value in data:
            check_finite(value, source, where)
    elif isinstance(data, float) and not math.isfinite(data):
        raise ConfigError(f"{where} = {data} in {source!r}: use a finite number.")
