"""A slice of a grid: the cells `tlbench run --only AXIS=VALUE,...` names.

The axes are ``backbone``, ``strategy``, ``dataset``, ``seed`` and each curve setting of the
grid (a list in [settings], e.g. ``train_per_class``). Every ``AXIS=VALUE`` of every ``--only``
flag is pooled: values of one axis are alternatives (either), different axes must all match.
So ``--only strategy=a,strategy=b --only seed=1`` is seed 1 of strategies a and b. Each axis
and value is checked against the grid before anything runs.
"""

from __future__ import annotations

import re
from typing import Optional

from tlbench.errors import ConfigError, closest

NAMED_AXES = ("backbone", "strategy", "dataset", "seed")
#: the commas between AXIS=VALUE pairs: not those inside an ablation row's name, lora[rank=4,alpha=8]
PAIRS = re.compile(r",(?![^\[]*\])")


def parse_only(texts: Optional[list[str]]) -> dict[str, list[str]]:
    """{axis: [value, ...]} from the ``--only`` flags, in the order given (syntax only: the
    grid checks the names, see ``slice_cells``)."""
    wanted: dict[str, list[str]] = {}
    for text in texts or []:
        for pair in PAIRS.split(text):
            axis, equals, value = (part.strip() for part in pair.partition("="))
            if not equals or not axis or not value:
                raise ConfigError(f"--only {text!r}: expected AXIS=VALUE pairs separated by commas, "
                                  "e.g. --only strategy=NAME,seed=1.")
            if value not in wanted.setdefault(axis, []):
                wanted[axis].append(value)
    return wanted


def grid_axes(grid) -> dict[str, list]:
    """{axis: the values the grid has} for every axis ``--only`` may name."""
    axes = {"backbone": list(grid.backbones), "strategy": list(grid.strategies),
            "dataset": list(grid.datasets), "seed": list(grid.seeds)}
    for cell in grid.cells:
        for setting, value in cell.sweep:
            values = axes.setdefault(setting, [])
            if value not in values:
                values.append(value)
    return axes


def slice_cells(grid, wanted: dict[str, list[str]]) -> list:
    """The cells of ``grid`` the slice holds, in the grid's order. An axis or value the grid does
    not have, or a slice without cells, is a ConfigError naming what the grid has."""
    axes = grid_axes(grid)
    chosen = {axis: _values(axis, texts, axes) for axis, texts in wanted.items()}
    cells = [cell for cell in grid.cells if all(_value_of(cell, axis) in values for axis, values in chosen.items())]
    if not cells:  # none while a grid is the full product of its axes; a guard for grids that are not
        raise ConfigError(f"--only {describe(wanted)} holds no cell of grid {grid.name!r}: no cell has all "
                          "of these values. Name values that occur together in the grid.")
    return cells


def describe(wanted: dict[str, list[str]]) -> str:
    """The slice as one --only value: ``strategy=a,strategy=b,seed=1``."""
    return ",".join(f"{axis}={value}" for axis, values in wanted.items() for value in values)


def _values(axis: str, texts: list[str], axes: dict[str, list]) -> list:
    """The grid's values of ``axis`` that ``texts`` name."""
    if axis not in axes:
        hint = closest(axis, axes)
        fix = f" Did you mean {hint[0]!r}?" if hint else ""
        raise ConfigError(f"--only: this grid has no axis {axis!r}.{fix} Its axes: {', '.join(axes)}.")
    values = []
    for text in texts:
        value = next((v for v in axes[axis] if _same(v, text)), _missing)
        if value is _missing:
            shown = ", ".join(map(str, axes[axis]))
            raise ConfigError(f"--only {axis}={text}: the grid has no {axis} {text!r}. "
                              f"Its {axis} values: {shown}.")
        values.append(value)
    return values


_missing = object()


def _same(value, text: str) -> bool:
    """Whether the grid's ``value`` is the one ``text`` spells: a name as written, a number as
    its value (``5`` and ``5.0`` are one value)."""
    if isinstance(value, str):
        return value == text
    try:
        return float(text) == value
    except ValueError:
        return False


def _value_of(cell, axis: str):
    if axis in NAMED_AXES:
        return getattr(cell, axis)
    return dict(cell.sweep).get(axis, _missing)
