"""A cell rebuilt from its record, through the grid's own validation: the record holds everything
that makes its cell (names, settings, every option, the curve settings, the candidates selected
among), so rebuilding it must give the record's ``run_id`` (its cell id) back; when it does not,
what differs (an option a plugin added or changed since, a file's content) is said."""

from __future__ import annotations

import dataclasses

from tlbench.errors import ConfigError
from tlbench.grid import Cell, build_grid
from tlbench.options import build_options, options_as_dict
from tlbench.records import plugin_of
from tlbench.variants import PLUGIN_KEY

# What a record holds beside its names: a setting, the strategy's options (``options``), the
# backbone's and the dataset's.
REBUILD_FIELDS = ("settings", "options", "backbone_options", "dataset_options")


def grid_data(record: dict) -> dict:
    """A one-cell grid, as a grid file's parsed data, that makes the record's cell."""
    for key in REBUILD_FIELDS:
        if not isinstance(record.get(key), dict):
            raise ConfigError(f"the record has no {key!r} table, which rebuilding its cell needs")
    settings = dict(record["settings"])
    sweep = record.get("sweep") or {}
    settings.update({key: [value] for key, value in sweep.items()})  # a list: the cell is a curve's point
    return {
        "name": record["grid"],
        "backbones": [record["backbone"]], "strategies": [record["strategy"]],
        "datasets": [record["dataset"]], "seeds": [record["seed"]],
        "settings": settings,
        **{axis: {record[axis]: {**_variant(record, axis), **record[key]}}
           for axis, key in (("backbone", "backbone_options"), ("strategy", "options"),
                             ("dataset", "dataset_options"))},
    }


def _variant(record: dict, axis: str) -> dict:
    """``{"plugin": ...}`` for an axis whose name is a variant of another plugin, else nothing."""
    plugin = plugin_of(record, axis)
    return {PLUGIN_KEY: plugin} if plugin != record[axis] else {}


def rebuild(record: dict, registry, source: str) -> Cell:
    """The record's cell through the grid's own validation; a ConfigError says why it cannot be
    rebuilt, or why what is rebuilt is not the published configuration."""
    (cell,) = build_grid(grid_data(record), source, registry).cells
    candidates = record.get("candidates")
    if candidates:  # options were lists: the run_id covers every candidate, in order
        if not (isinstance(candidates, list)
                and all(isinstance(c, dict) and isinstance(c.get("options"), dict) for c in candidates)):
            raise ConfigError("its 'candidates' are not a list of {'options': {...}}")
        options_cls = registry.get("strategies", plugin_of(record, "strategy")).Options
        cell = dataclasses.replace(cell, strategy_candidates=tuple(
            build_options(options_cls, c["options"], f"[strategy.{record['strategy']}] candidate {i + 1}")
            for i, c in enumerate(candidates)))
    if cell.run_id != record["run_id"]:
        raise ConfigError(f"rebuilt from its record it gets another cell id (run_id {cell.run_id}), so it "
                          f"is not the same configuration{_changes(record, cell)}")
    return cell


def _changes(record: dict, cell: Cell) -> str:
    """What differs between the record's options and the rebuilt cell's (defaults a plugin
    added or changed since), or which other part of the identity can."""
    from tlbench.grid import LATER_SETTINGS

    selected = record.get("selected", 0)  # `options` is the selected candidate's, when options were lists
    if not (isinstance(selected, int) and 0 <= selected < len(cell.strategy_candidates)):
        selected = 0
    rebuilt = {"settings": options_as_dict(cell.settings),
               "options": options_as_dict(cell.strategy_candidates[selected]),
               "backbone_options": options_as_dict(cell.backbone_options),
               "dataset_options": options_as_dict(cell.dataset_options)}
    names = {"settings": "setting", "options": "strategy option", "backbone_options": "backbone option",
             "dataset_options": "dataset option"}
    found = []
    for part, now in rebuilt.items():
        then, what = record[part], names[part]
        for key in sorted(then.keys() | now.keys()):
            if key not in then and part == "settings" and LATER_SETTINGS.get(key, object()) == now[key]:
                continue  # a setting added since, at the default that leaves run_ids as they were
            if key not in then:
                found.append(f"{what} {key!r} is new (default {now[key]!r})")
            elif key in now and then[key] != now[key]:
                found.append(f"{what} {key!r} is {now[key]!r}, was {then[key]!r}")
    if found:
        return ": " + "; ".join(found[:4]) + ("; ..." if len(found) > 4 else "")
    if cell.files:
        return " (a file an option names has other content, or is not at that path here)"
    return (" (what the record holds does not hash to its cell id, run_id: the record was edited, or this "
            "tlbench computes cell ids from other parts)")
