"""The rows of a grid's axes: each name a grid lists, as a plugin with its options, or as named
variants of one.

A name in ``backbones``, ``strategies`` or ``datasets`` is a registered plugin, or a variant: a
``[dataset.NAME]`` table with ``plugin = "hf"`` configures the ``hf`` plugin under the name
NAME, so one plugin can be several rows (two image folders, LoRA r=4 and r=16). An option
given as ``{ablate = [...]}`` makes one row per value (an ablation), where a plain list makes
one row whose value is tuned on validation. The row's name is what records, tables and plots
show; the plugin it ran is kept beside it (``Cell.variant_of``, a record's ``variant_of``).
"""

from __future__ import annotations

import itertools
import json
import re
from dataclasses import dataclass
from typing import Any

from tlbench.errors import ConfigError

PLURAL = {"backbone": "backbones", "strategy": "strategies", "dataset": "datasets"}
#: the key of a ``[KIND.NAME]`` table that makes NAME a variant of another plugin
PLUGIN_KEY = "plugin"
#: the one key of an option's inline table: ``rank = {ablate = [4, 16]}``, one row per value
ABLATE_KEY = "ablate"
#: a variant's own name: what a results folder, a CLI flag (--only) and a LaTeX file name take
#: without quoting; an ablation adds its values in brackets: ``lora[rank=4]``
NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]{0,99}(\[[^\[\]\n]{1,200}\])?$")


@dataclass(frozen=True)
class Row:
    """One row of an axis: its name, the plugin it runs, the name the grid lists it by (an
    ablation's rows share one), and its validated options (for a strategy: the candidates)."""

    name: str
    plugin: str
    listed: str
    options: Any


def axis_rows(data: dict, singular: str, names: list[str], registry, source: str, build) -> list[Row]:
    """The rows of one axis: each listed name with its ``[singular.NAME]`` table, validated by
    ``build(options_cls, values, where)``; a name configured as a variant runs its ``plugin``,
    an ablated option gives one row per value."""
    tables = option_tables(data, singular, names, source)
    rows = []
    for name in names:
        table = dict(tables.get(name, {}))
        plugin, component = _plugin_of(name, table.pop(PLUGIN_KEY, name), singular, registry, source,
                                       name in tables)
        where = f"[{singular}.{name}]"
        ablated = _ablated(table, where)
        fixed = {key: value for key, value in table.items() if key not in ablated}
        for values in itertools.product(*ablated.values()):
            chosen = dict(zip(ablated, values))
            rows.append(Row(ablation_name(name, chosen), plugin, name,
                            build(component.Options, {**fixed, **chosen}, where)))
    _check_unique(rows, singular, source)
    return rows


def option_tables(data: dict, singular: str, names: list[str], source: str) -> dict:
    """The ``[singular.NAME]`` tables, each for a listed name."""
    tables = data.get(singular, {})
    if not isinstance(tables, dict):
        raise ConfigError(f"{singular!r} in {source!r} must be a table of [{singular}.NAME] tables.")
    for name, table in tables.items():
        if name not in names:
            raise ConfigError(
                f"[{singular}.{name}] in {source!r} configures a {singular} the grid does not use; "
                f"add it to {PLURAL[singular]!r} or remove the table. In use: {', '.join(names)}"
            )
        if not isinstance(table, dict):
            raise ConfigError(f"[{singular}.{name}] in {source!r} must be a table of options.")
    return tables


def _plugin_of(name: str, plugin: Any, singular: str, registry, source: str, has_table: bool) -> tuple[str, type]:
    """(the registered plugin a listed name runs: itself, or the one its table's ``plugin``
    names; its registered class)."""
    where = f"[{singular}.{name}] of {source!r}"
    if not (isinstance(plugin, str) and plugin):
        raise ConfigError(f"'{PLUGIN_KEY}' in {where} must be the name of a {singular} plugin, e.g. "
                          f"{PLUGIN_KEY} = \"NAME\" (tlbench ls {PLURAL[singular]}); got {plugin!r}.")
    if plugin == name:
        try:
            return name, registry.get(PLURAL[singular], name)
        except ConfigError as exc:
            if not has_table:
                raise
            raise ConfigError(f"{exc} [{singular}.{name}] configures it: to make {name!r} a variant of a "
                              f"plugin, name the plugin in that table, {PLUGIN_KEY} = \"PLUGIN\".") from None
    if not NAME_PATTERN.fullmatch(name):
        raise ConfigError(f"Variant name {name!r} in {source!r} is not a usable name: use at most 100 "
                          "letters, digits, '.', '_', '+' and '-', starting with a letter or digit.")
    if _registered(registry, singular, name):
        raise ConfigError(f"[{singular}.{name}] of {source!r} names plugin {plugin!r}, but {name!r} is itself "
                          f"a {singular} plugin, which the name would hide: give the variant another name.")
    try:
        return plugin, registry.get(PLURAL[singular], plugin)
    except ConfigError as exc:
        raise ConfigError(f"{where}: {PLUGIN_KEY} = {plugin!r}: {exc}") from None


def _registered(registry, singular: str, name: str) -> bool:
    try:
        registry.get(PLURAL[singular], name)
    except ConfigError:
        return False
    return True


def _ablated(table: dict, where: str) -> dict:
    """{option: values} of the options given as ``{ablate = [...]}``, in the table's order."""
    ablated = {}
    for key, value in table.items():
        if not isinstance(value, dict):
            continue
        values = value.get(ABLATE_KEY)
        if set(value) != {ABLATE_KEY} or not isinstance(values, list) or not values:
            raise ConfigError(f"Option {key!r} in {where} is a table, {value!r}; the one table an option takes "
                              f"is {{{ABLATE_KEY} = [...]}}, a non-empty list: one row per value, e.g. "
                              f"{key} = {{{ABLATE_KEY} = [4, 16]}}.")
        if len({_shown(v) for v in values}) != len(values):
            raise ConfigError(f"Option {key!r} in {where} ablates a value twice: {values!r}.")
        ablated[key] = values
    return ablated


def ablation_name(name: str, chosen: dict) -> str:
    """``lora`` or, for a row of an ablation, ``lora[rank=4]`` (``lora[rank=4,alpha=8]``)."""
    if not chosen:
        return name
    return f"{name}[{','.join(f'{key}={_shown(value)}' for key, value in chosen.items())}]"


def _shown(value: Any) -> str:
    """A value as a row name shows it: strings bare, the rest as TOML writes them."""
    if isinstance(value, str):
        return value
    return json.dumps(value, separators=(",", ":"))


def _check_unique(rows: list[Row], singular: str, source: str) -> None:
    seen: dict[str, Row] = {}
    for row in rows:
        if row.name in seen:
            raise ConfigError(f"Two {PLURAL[singular]} of {source!r} have the name {row.name!r} (from "
                              f"{seen[row.name].listed!r} and {row.listed!r}): rename one.")
        seen[row.name] = row
