"""The sinks one command turned on (a grid's ``sinks``, ``--sink``): built with their options,
checked before any cell runs (a missing library), and each told of records and reports, a sink
that raises said once and not called again.

The records in the results folder are the source of truth; a sink is a copy elsewhere, so its
failure never fails a cell nor changes the command's exit status.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Callable, Iterable, Optional

from tlbench.errors import ConfigError, unknown_name_error
from tlbench.options import build_options
from tlbench.preflight import Unavailable, answer
from tlbench.sink import Report

FINAL_STATUSES = ("ok", "failed")  # an interrupted cell is not done: its rerun's record is told


def open_sinks(registry, names: Iterable[str], configured: Optional[dict] = None,
               log: Optional[Callable[[str], None]] = None) -> "ActiveSinks":
    """The sinks ``names`` built with their options (``configured``: {name: options} from a
    grid's tables; defaults otherwise). A name no plugin registers, or a sink that cannot run
    here (its library missing), is a ConfigError before anything runs."""
    configured = configured or {}
    sinks = []
    for name in dict.fromkeys(names):  # once each, in order
        if name not in registry.names("sinks"):
            raise unknown_name_error("sink", name, registry.names("sinks"), " (given to --sink)")
        component = registry.get("sinks", name)
        options = configured.get(name) or build_options(component.Options, {}, f"[sink.{name}]")
        sinks.append(component(options))
    problems = [Unavailable("sink", sink.name, why) for sink in sinks if (why := answer(sink.unavailable))]
    if problems:
        lines = "\n".join(f"  {problem.line()}" for problem in problems)
        raise ConfigError(f"{len(problems)} sink(s) cannot run on this machine, so nothing was started:\n{lines}")
    return ActiveSinks(sinks, log)


def _stderr(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


class ActiveSinks:
    """The sinks of one command, each called until it raises once."""

    def __init__(self, sinks: list, log: Optional[Callable[[str], None]] = None):
        self.sinks, self.log = list(sinks), log or _stderr
        self.failed: dict = {}  # name -> the error it was dropped for

    def __bool__(self) -> bool:
        return bool(self.sinks)

    def start(self) -> None:
        self._tell("start", lambda sink: sink.start())

    def record(self, record: dict) -> None:
        if record.get("status") in FINAL_STATUSES:
            self._tell(f"the record of cell {record.get('run_id')}", lambda sink: sink.record(record))

    def report(self, grid: str, paths: list[Path]) -> None:
        """Tell every sink of the leaderboard files ``paths`` just written for ``grid``."""
        if self._working():
            report = leaderboard_report(grid, paths)
            self._tell(f"the leaderboard of {grid!r}", lambda sink: sink.report(report))

    def close(self) -> None:
        self._tell("close", lambda sink: sink.close())

    def _working(self) -> list:
        return [sink for sink in self.sinks if sink.name not in self.failed]

    def _tell(self, what: str, call: Callable) -> None:
        for sink in self._working():
            try:
                call(sink)
            except Exception as exc:  # a copy elsewhere failed; the records are intact
                self.failed[sink.name] = exc
                self.log(f"warning: sink {sink.name!r} failed at {what} ({type(exc).__name__}: "
                         f"{_one_line(exc)}); it is not called again in this command, and the records "
                         "in the results folder are intact.")


def _one_line(exc: Exception) -> str:
    text = " ".join(str(exc).split())
    return text if len(text) <= 200 else text[:197] + "..."


def leaderboard_report(grid: str, paths: list[Path]) -> Report:
    """What a sink receives of a leaderboard: its files and its tables, read back from the
    leaderboard.json just written (the same columns as the CSV files)."""
    from tlbench.report.tables import GAIN_COLUMNS, OVERALL_COLUMNS, PAIRWISE_COLUMNS, PER_DATASET_COLUMNS

    columns = {"per_dataset": PER_DATASET_COLUMNS, "overall": OVERALL_COLUMNS,
               "transfer_gain": GAIN_COLUMNS, "pairwise": PAIRWISE_COLUMNS}
    document = next((p for p in paths if p.name == "leaderboard.json"), None)
    data = json.loads(document.read_text(encoding="utf-8")) if document else {}
    tables = {name: [{c: row.get(c) for c in cols} for row in data.get(name, [])]
              for name, cols in columns.items()}
    folder = paths[0].parent if paths else Path()
    return Report(grid=grid, folder=folder, files=tuple(paths), tables=tables)
