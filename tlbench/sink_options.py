"""A grid file's ``sinks`` list and ``[sink.NAME]`` tables, validated when the grid is read.

Where records are copied is no part of a cell's identity: nothing here changes a run_id.
"""

from __future__ import annotations

from tlbench.errors import ConfigError, unknown_name_error
from tlbench.options import build_options


def sink_tables(data: dict, registry, source: str) -> dict:
    """The grid's ``sinks`` list and ``[sink.NAME]`` tables, validated: {"on": the listed names,
    "options": {name: options} of each listed sink and of each table}. A table may configure a
    sink only ``--sink`` turns on, as ``[score.NAME]`` configures a score ``tlbench rank`` computes."""
    listed = data.get("sinks", [])
    if not (isinstance(listed, list) and all(isinstance(n, str) for n in listed)):
        raise ConfigError(f"'sinks' in {source!r} must be a list of sink names, e.g. sinks = [\"NAME\"] "
                          "(tlbench ls sinks lists them).")
    if len(set(listed)) != len(listed):
        raise ConfigError(f"'sinks' in {source!r} names a sink twice: {listed!r}.")
    tables = data.get("sink", {})
    if not isinstance(tables, dict):
        raise ConfigError(f"'sink' in {source!r} must be a table of [sink.NAME] tables.")
    options = {}
    for name in [*listed, *(n for n in tables if n not in listed)]:
        if name not in registry.names("sinks"):
            raise unknown_name_error("sink", name, registry.names("sinks"), f" in {source!r}")
        table = tables.get(name, {})
        if not isinstance(table, dict):
            raise ConfigError(f"[sink.{name}] in {source!r} must be a table of options.")
        options[name] = build_options(registry.get("sinks", name).Options, table, f"[sink.{name}]")
    return {"on": list(listed), "options": options}
