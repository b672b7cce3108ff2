"""The executors that run cells on this machine: ``--executor local`` runs each cell in the
driver's process, ``--executor subprocess`` each in a process of its own (``IsolatedCell``).

An executor is what the driver's loop (tlbench.driver) hands cells to: it has ``slots`` (cells
at once), ``submit(cell, job)``, ``finished()`` (the outcomes ready now), ``interrupt()`` and
``close()``. The Ray executor is tlbench.ray_executor.
"""

from __future__ import annotations

import json
import os
import signal
import tempfile
import time
from dataclasses import asdict
from pathlib import Path
from typing import Optional

from tlbench.cell_job import CellJob, Outcome
from tlbench.cell_process import start
from tlbench.grid import Cell
from tlbench.results import active_claims

POLL_S = 0.2  # how often the driver looks at cells in flight
GRACE_S = 10.0  # how long an interrupted worker process gets to store its cell as interrupted


class LocalExecutor:
    """Runs each cell in this process (``--executor local``), when the driver asks what finished.

    Ctrl-C inside a cell is caught by ``Runner.run_cell``, which returns the cell's record as
    interrupted, so there is nothing left to interrupt here."""

    slots = 1
    shares_the_process = True  # a device fault in one cell breaks every later one (see GridDriver)

    def __init__(self, runner):
        self.runner = runner
        self._cells: dict = {}

    def submit(self, cell: Cell, job: Optional[CellJob]) -> object:
        handle = object()
        self._cells[handle] = cell
        return handle

    def finished(self) -> list[tuple[object, Outcome]]:
        from tlbench.cpus import size_threads

        handle, cell = self._cells.popitem()
        size_threads(threads_beside(self.runner.results_dir, cell.grid))
        return [(handle, Outcome(record=self.runner.run_cell(cell)))]

    def interrupt(self) -> list[tuple[object, Outcome]]:
        self._cells.clear()
        return []

    def close(self) -> None:
        pass


def threads_beside(results_dir: Path, grid: str) -> int:
    """Torch threads for a cell of this process: the usable CPUs shared with the other drivers
    on this host running cells of the same grid now (on one results folder), so that three
    drivers on two cores do not run six threads."""
    import socket

    from tlbench.cpus import usable_cpus

    host, me = socket.gethostname(), os.getpid()
    others = {c.get("pid") for c in active_claims(results_dir, grid) if c.get("host") == host and c.get("pid") != me}
    return max(1, usable_cpus() // (1 + len(others)))


class SubprocessExecutor:
    """Runs cells one at a time, each in a process of its own, with an optional hard time limit."""

    slots = 1

    def __init__(self, timeout_s: Optional[float] = None):
        self.timeout_s = timeout_s
        self._running: dict = {}

    def submit(self, cell: Cell, job: CellJob) -> object:
        handle = object()
        self._running[handle] = IsolatedCell(job, self.timeout_s)
        return handle

    def finished(self) -> list[tuple[object, Outcome]]:
        done = []
        for handle, isolated in list(self._running.items()):
            outcome = isolated.poll()
            if outcome is not None:
                del self._running[handle]
                done.append((handle, outcome))
        if not done:
            time.sleep(POLL_S)
        return done

    def interrupt(self) -> list[tuple[object, Outcome]]:
        outcomes = [(handle, isolated.interrupt()) for handle, isolated in self._running.items()]
        self._running.clear()
        return outcomes

    def close(self) -> None:
        """The run stopped with cells in flight (their claims are released: they stay pending)."""
        for isolated in self._running.values():
            isolated.abandon()
        self._running.clear()


class IsolatedCell:
    """One cell in a process of its own (tlbench.cell_process; ``entry`` runs the job there,
    tlbench.worker's unless a Ray node runs it): all its memory is returned when it ends, and it
    can be killed at a deadline without harming anything else."""

    def __init__(self, job: CellJob, timeout_s: Optional[float] = None, entry: str = "tlbench.worker:outcome_of"):
        self.timeout_s = timeout_s
        self._folder = tempfile.TemporaryDirectory(prefix="tlbench-cell-")
        folder = Path(self._folder.name)
        self._job_path, self._result_path = folder / "job.json", folder / "record.json"
        self._job_path.write_text(json.dumps(asdict(job)), encoding="utf-8")
        self.started = time.monotonic()
        # a session of its own: Ctrl-C in the terminal reaches the driver, which decides
        self.process = start(entry, str(self._job_path), str(self._result_path))

    def poll(self) -> Optional[Outcome]:
        """The outcome once the process has ended (or was killed at its deadline), else None."""
        code = self.process.exitcode
        if code is None:
            if self.timeout_s is not None and time.monotonic() - self.started > self.timeout_s:
                self.kill()
                return self._done(Outcome(failure=(
                    "timeout", f"the cell ran longer than --cell-timeout {self.timeout_s:g} s and was killed")))
            return None
        return self._done(self._read(code))

    def wait(self) -> Outcome:
        while (outcome := self.poll()) is None:
            time.sleep(POLL_S)
        return outcome

    def interrupt(self) -> Outcome:
        """Ask the cell to stop (it stores itself as interrupted), killing it after a grace period."""
        if self.process.exitcode is None:
            os.kill(self.process.pid, signal.SIGINT)
            self.process.join(GRACE_S)
            if self.process.exitcode is None:
                self.kill()
        outcome = self._read(self.process.exitcode)
        if outcome.record is None:
            outcome = Outcome(failure=("interrupted", "interrupted (Ctrl-C)"))
        return self._done(outcome)

    def _read(self, code: int) -> Outcome:
        """The outcome the process wrote (tlbench.worker.process_main), or why it wrote none."""
        if code == 0 and self._result_path.exists():
            return Outcome.from_dict(json.loads(self._result_path.read_text(encoding="utf-8")))
        if code < 0:
            name = signal.Signals(-code).name
            why = " (the kernel's out-of-memory killer sends SIGKILL)" if name == "SIGKILL" else ""
            return Outcome(failure=("crashed", f"the cell's process was killed by {name}{why}"))
        return Outcome(failure=("crashed", f"the cell's process exited with status {code}; "
                                           "its error is printed above"))

    def abandon(self) -> None:
        """Kill the cell and keep no outcome: it stays pending."""
        self.kill()
        self._done(None)

    def kill(self) -> None:
        """SIGKILL to the cell and any DataLoader workers (to the cell alone when it has not made
        its session yet), then wait for it."""
        for kill in (os.killpg, os.kill):
            try:
                kill(self.process.pid, signal.SIGKILL)
                break
            except ProcessLookupError:
                pass
        self.process.join()

    def _done(self, outcome: Outcome) -> Outcome:
        self.process.close()
        self._folder.cleanup()
        return outcome
