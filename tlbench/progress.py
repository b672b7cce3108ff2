"""Progress on stderr: a bar for the grid (with ETA) and one for the steps of the running cell.

Bars are drawn only on a terminal; a line per finished cell is printed either way, so logs of
batch jobs show progress too. What a line or a bar shows is ``printable`` (a name or an error
cannot drive the terminal); the bars draw on the terminal itself.
"""

from __future__ import annotations

import sys
import time
from typing import Iterable, Optional

from tlbench.literal_text import printable, terminal_stream


class Progress:
    def __init__(self, enabled: bool = True, stream=None):
        self.enabled = enabled
        self.stream = stream or sys.stderr
        self.bars = enabled and self.stream.isatty()
        self._grid_bar = None
        self._done = 0
        self._started = 0
        self._total = 0
        self._elsewhere: set = set()  # cells announced as running in another process
        self._numbers: dict = {}  # label -> the number its start line showed, for its result line
        self._clock_start = time.monotonic()
        self._run_here = 0  # cells this run finished itself: the rate the estimate of the rest uses

    def _tqdm(self, **kwargs):
        from tqdm.auto import tqdm

        return tqdm(file=terminal_stream(self.stream), dynamic_ncols=True, **kwargs)

    def grid_start(self, total: int, already_done: int) -> None:
        self._total, self._done, self._started = total, already_done, already_done
        self._clock_start, self._run_here = time.monotonic(), 0
        if not self.enabled:
            return
        if already_done:
            self._print(f"{already_done} of {total} cells already have records; running the rest.")
        if self.bars:
            self._grid_bar = self._tqdm(total=total, initial=already_done, desc="grid", unit="cell",
                                        position=0)

    def _number(self, label: str) -> int:
        """Each cell's one number, given when it starts (or when another process's record of
        it is taken): its result line repeats it, whatever order cells finish in."""
        if label not in self._numbers:
            self._started += 1
            self._numbers[label] = self._started
        return self._numbers[label]

    def cell_start(self, label: str) -> None:
        number = self._number(label)
        if self._grid_bar is not None:
            self._grid_bar.set_postfix_str(printable(label), refresh=True)
        elif self.enabled:
            self._print(f"[{number}/{self._total}] {label} ...")

    def steps(self, iterable: Iterable, total: Optional[int] = None, desc: str = "") -> Iterable:
        if not self.bars:
            return iterable
        return self._tqdm(iterable=iterable, total=total, desc=printable(desc), leave=False, position=1)

    def cell_done(self, label: str, record: dict) -> None:
        self._done += 1
        self._run_here += 1
        if self._grid_bar is not None:
            self._grid_bar.update(1)
        if not self.enabled:
            return
        if record["status"] == "ok":
            summary = f"top1 {record['top1']:.3f}, fit {record['train_s']:.1f} s"
        elif record["status"] == "interrupted":
            summary = "INTERRUPTED"
        else:
            summary = f"FAILED ({record.get('error_kind', 'exception')}): {record['error']}"
            if record.get("node"):  # a cluster: which machine failed it
                from tlbench.node_check import describe_node

                summary += f" [on {describe_node(record['node'])}]"
        self._print(f"[{self._number(label)}/{self._total}] {label}: {summary}{self._time_line()}")
        for warning in record.get("warnings") or ():  # what makes the number mean less than it seems
            self._print(f"  WARNING: {warning}")

    def _time_line(self) -> str:
        """`` (elapsed 4m 10s, about 12m left)``: the time left at this run's rate so far (cells
        per second, so parallel workers count), said from the first cell on."""
        elapsed = time.monotonic() - self._clock_start
        left = self._total - self._done
        if left <= 0 or not self._run_here:
            return f" (elapsed {duration(elapsed)})"
        return f" (elapsed {duration(elapsed)}, about {duration(elapsed / self._run_here * left)} left)"

    def cell_elsewhere(self, label: str, holder: dict) -> None:
        """Another process holds the cell; said once per cell, however often it is looked at."""
        if label in self._elsewhere:
            return
        self._elsewhere.add(label)
        if self.enabled:
            who = f"pid {holder.get('pid', '?')} on {holder.get('host', '?')}"
            self._print(f"{label}: running elsewhere ({who}); will take its record when it finishes.")

    def cell_done_elsewhere(self, label: str, record: dict) -> None:
        self._done += 1
        if self._grid_bar is not None:
            self._grid_bar.update(1)
        if self.enabled:
            self._print(f"[{self._number(label)}/{self._total}] {label}: {record['status']} (run by another process)")

    def cell_lost(self, label: str, why: str) -> None:
        """A worker vanished with the cell: it has no record and stays pending."""
        if self.enabled:
            self._print(f"{label}: no record ({why}); it stays pending for the next run")

    def note(self, line: str) -> None:
        """Something the user should know about the run as a whole (a node left out, say)."""
        if self.enabled:
            self._print(line)

    def cell_requeued(self, label: str, why: str) -> None:
        """The cell could not run where it was sent and goes back to the queue."""
        if self.enabled:
            self._print(f"{label}: not run there: {why}; the cell is handed out again.")

    def grid_done(self) -> None:
        if self._grid_bar is not None:
            self._grid_bar.close()
            self._grid_bar = None

    def _print(self, line: str) -> None:
        line = printable(line)
        if self._grid_bar is not None:
            self._grid_bar.write(line, file=terminal_stream(self.stream))
        else:
            print(line, file=self.stream, flush=True)


def duration(seconds: float) -> str:
    """``7s``, ``4m 10s``, ``3h 05m``: a wait as a person reads it."""
    seconds = max(0, round(seconds))
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m {seconds % 60:02d}s"
    return f"{seconds // 3600}h {seconds // 60 % 60:02d}m"
