"""The fifth kind of component a plugin can register: a sink, where records and leaderboards go
besides the results folder (an experiment tracker), and the leaderboard as a sink receives it.

Nothing here imports torch or a tracker's library: a sink imports its library in its methods.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

from tlbench.api import Component


@dataclass(frozen=True)
class Report:
    """A grid's leaderboard just written to its folder, as :meth:`Sink.report` receives it.

    ``tables`` holds the leaderboard's tables by name (``per_dataset``, ``overall``,
    ``transfer_gain``, ``pairwise``): each a list of rows, a row a dict whose keys are the
    table's columns in order (the CSV files' columns), numbers unformatted, None where empty.
    """

    grid: str
    folder: Path
    #: every file written, in the order `tlbench report` lists them (leaderboard.md first)
    files: tuple[Path, ...]
    tables: Mapping[str, list[dict[str, Any]]]


class Sink(Component):
    """Where records and leaderboards go besides the results folder: an experiment tracker.

    A grid turns sinks on with ``sinks = [...]`` (options in ``[sink.NAME]``), a command with
    ``--sink NAME``. The driver calls :meth:`start` once before the first cell, :meth:`record`
    with each record it has just stored (whatever executor ran the cell), :meth:`report` with each
    leaderboard written (after `tlbench run` and `tlbench report`), and :meth:`close` once at the
    end, also after a failure or Ctrl-C. The records stay the source of truth: a method that
    raises is reported once and the sink is not called again in that command; no cell fails
    because of it, and the exit status stays what the cells make it. ``unavailable``
    (Component's) is asked before the first cell: a sink whose library is missing says so there.
    """

    def start(self) -> None:
        """Before the first record or report: connect, check credentials."""

    def record(self, record: dict) -> None:
        """A cell's record, as its JSON file holds it, just stored: ``status`` is ok or failed
        (an interrupted cell is not done, and its rerun's record comes later)."""

    def report(self, report: Report) -> None:
        """A grid's leaderboard, just written."""

    def close(self) -> None:
        """At the end of the command: flush and release what :meth:`start` opened."""
