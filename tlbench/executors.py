"""Where cells run: in this process (``local``), each in a fresh process (``subprocess``), or as
Ray tasks on a cluster (``ray``, see ``tlbench.ray_pool``).

Whatever the executor, this process (the driver) decides which cells need running, claims each
one, writes every record and reports progress, exactly as the local runner does. Only building,
fitting and scoring a cell move to a worker, which receives the grid as plain data and returns
the record: workers need tlbench and the plugins installed, not the driver's disk.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections import deque
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Optional

from tlbench.errors import RunStopped
from tlbench.grid import Cell, Grid, build_grid
from tlbench.results import claim_cell, claim_holder, read_record, record_path, records_by_run_id, \
    remove_leftovers, utc_now, write_atomic, write_record

POLL_S = 0.2  # how often the driver looks at cells in flight
WAIT_S = 1.0  # how often it looks again at cells that another process is running
GRACE_S = 10.0  # how long an interrupted worker process gets to store its cell as interrupted


@dataclass(frozen=True)
class CellJob:
    """What a worker needs to run one cell, as plain data: no plugin class is pickled, so a
    worker rebuilds the cell from the grid with its own installed plugins."""

    grid_data: dict
    grid_source: str
    run_id: str
    plugins_dir: Optional[str] = None
    cache_dir: Optional[str] = None
    threads: Optional[int] = None  # torch intra-op threads in the worker (None: torch's choice)
    progress: bool = False  # draw the cell's step bars (a worker that shares the driver's terminal)


@dataclass
class Outcome:
    """What came back for a cell: its record, or why there is none.

    ``failure`` (error kind, message) means the cell failed without a record of its own (the
    driver writes one); ``lost`` means the worker vanished and the cell stays pending.
    """

    record: Optional[dict] = None
    failure: Optional[tuple[str, str]] = None
    lost: Optional[str] = None


# -- the worker side -----------------------------------------------------------------------------

_runners: dict = {}  # one Runner per worker process and configuration: datasets stay loaded


def run_job(job: CellJob) -> dict:
    """Run one cell here (in a worker) and return its record."""
    import torch

    from tlbench.plugins import load_registry
    from tlbench.progress import Progress
    from tlbench.runner import Runner

    if job.threads:
        torch.set_num_threads(job.threads)
    key = (job.plugins_dir, job.cache_dir, job.progress)
    if key not in _runners:
        registry = load_registry(job.plugins_dir)
        _runners[key] = Runner(registry, tempfile.gettempdir(), progress=Progress(enabled=job.progress),
                               cache_dir=job.cache_dir)
    runner = _runners[key]
    grid = build_grid(job.grid_data, job.grid_source, runner.registry)
    cell = next((c for c in grid.cells if c.run_id == job.run_id), None)
    if cell is None:
        raise LookupError(f"this worker's tlbench or plugins build different cells from the grid "
                          f"(no cell has run_id {job.run_id}): install the driver's versions on every worker")
    return runner.run_cell(cell)


class IsolatedCell:
    """One cell in a fresh Python process (``python -m tlbench.executors``): all its memory is
    returned when it ends, and it can be killed at a deadline without harming anything else."""

    def __init__(self, job: CellJob, timeout_s: Optional[float] = None):
        self.timeout_s = timeout_s
        self._folder = tempfile.TemporaryDirectory(prefix="tlbench-cell-")
        folder = Path(self._folder.name)
        self._job_path, self._result_path = folder / "job.json", folder / "record.json"
        self._job_path.write_text(json.dumps(asdict(job)), encoding="utf-8")
        self.started = time.monotonic()
        # a session of its own: Ctrl-C in the terminal reaches the driver, which decides
        self.process = subprocess.Popen(
            [sys.executable, "-m", "tlbench.executors", str(self._job_path), str(self._result_path)],
            start_new_session=True)

    def poll(self) -> Optional[Outcome]:
        """The outcome once the process has ended (or was killed at its deadline), else None."""
        code = self.process.poll()
        if code is None:
            if self.timeout_s is not None and time.monotonic() - self.started > self.timeout_s:
                self._kill()
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
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(GRACE_S)
            except subprocess.TimeoutExpired:
                self._kill()
        outcome = self._read(self.process.returncode)
        if outcome.record is None:
            outcome = Outcome(failure=("interrupted", "interrupted (Ctrl-C)"))
        return self._done(outcome)

    def _read(self, code: int) -> Outcome:
        if code == 0 and self._result_path.exists():
            return Outcome(record=json.loads(self._result_path.read_text(encoding="utf-8")))
        if code < 0:
            name = signal.Signals(-code).name
            why = " (the kernel's out-of-memory killer sends SIGKILL)" if name == "SIGKILL" else ""
            return Outcome(failure=("crashed", f"the cell's process was killed by {name}{why}"))
        return Outcome(failure=("crashed", f"the cell's process exited with status {code}; "
                                           "its error is printed above"))

    def _kill(self) -> None:
        try:
            os.killpg(self.process.pid, signal.SIGKILL)  # the cell and any DataLoader workers
        except ProcessLookupError:
            pass
        self.process.wait()

    def _done(self, outcome: Outcome) -> Outcome:
        self._folder.cleanup()
        return outcome


def _exit_when_orphaned(parent: int) -> None:
    """The cell's process has a session of its own, so it would outlive a driver (or Ray
    worker) killed with SIGKILL; it stops instead, leaving the cell pending."""
    import threading

    def watch():
        while os.getppid() == parent:
            time.sleep(1.0)
        os._exit(3)

    threading.Thread(target=watch, daemon=True, name="orphan-watch").start()


def _child_main(job_path: str, result_path: str) -> int:
    """Entry point of an isolated cell's process."""
    signal.signal(signal.SIGTERM, signal.default_int_handler)  # SIGTERM stores the cell as interrupted
    _exit_when_orphaned(os.getppid())
    job = CellJob(**json.loads(Path(job_path).read_text(encoding="utf-8")))
    try:
        record = run_job(job)
    except KeyboardInterrupt:
        return 130
    write_atomic(Path(result_path), json.dumps(record))
    return 0


# -- the driver side -----------------------------------------------------------------------------


class SubprocessPool:
    """Runs cells one at a time, each in a fresh process, with an optional hard time limit."""

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
        pass


class LocalPool:
    """Runs each cell in this process (``--executor local``), when the driver asks what finished.

    Ctrl-C inside a cell is caught by ``Runner.run_cell``, which returns the cell's record as
    interrupted, so there is nothing left to interrupt here."""

    slots = 1

    def __init__(self, runner):
        self.runner = runner
        self._cells: dict = {}

    def submit(self, cell: Cell, job: Optional[CellJob]) -> object:
        handle = object()
        self._cells[handle] = cell
        return handle

    def finished(self) -> list[tuple[object, Outcome]]:
        handle, cell = self._cells.popitem()
        return [(handle, Outcome(record=self.runner.run_cell(cell)))]

    def interrupt(self) -> list[tuple[object, Outcome]]:
        self._cells.clear()
        return []

    def close(self) -> None:
        pass


def run_grid_on(pool, runner, grid: Grid, job_for=None, retry_failed: bool = False, force: bool = False):
    """Run a grid's pending cells on ``pool`` (up to ``pool.slots`` at once), each under its
    claim; this process writes every record. Several runners may share a results folder: a
    cell another process is running is left to it and looked at again later (its record then
    counts as done here). Returns (GridOutcome, cells left pending because their worker was
    lost); raises GridInterrupted after storing the records of the cells Ctrl-C stopped."""
    from tlbench.runner import GridInterrupted, GridOutcome, needs_run

    results_dir, progress = runner.results_dir, runner.progress
    remove_leftovers(results_dir, grid.name)
    at_start = records_by_run_id(results_dir, grid.name)
    flags = {"retry_failed": retry_failed, "force": force}
    outcome, lost = GridOutcome(grid=grid.name), []
    todo: deque = deque()
    for cell in grid.cells:
        previous = at_start.get(cell.run_id)
        (todo.append(cell) if needs_run(previous, previous, **flags) else outcome.skipped.append(previous))
    progress.grid_start(len(grid.cells), len(outcome.skipped))
    in_flight: dict = {}  # handle -> (cell, claim, start time)
    waiting: list = []  # cells another process holds
    try:
        while todo or waiting or in_flight:
            while todo and len(in_flight) < pool.slots:
                cell = todo.popleft()
                about = {"grid": cell.grid, "backbone": cell.backbone, "strategy": cell.strategy,
                         "dataset": cell.dataset, "seed": cell.seed}
                claim = claim_cell(results_dir, cell.grid, cell.run_id, about)
                if claim is None:
                    progress.cell_elsewhere(cell.label, claim_holder(results_dir, cell.grid, cell.run_id))
                    waiting.append(cell)
                    continue
                # read again under the claim: another process may have finished it meanwhile
                current = read_record(record_path(results_dir, cell.grid, cell.run_id), claimed=True)
                if not needs_run(current, at_start.get(cell.run_id), **flags):
                    claim.release()
                    progress.cell_done_elsewhere(cell.label, current)
                    outcome.skipped.append(current)
                    continue
                progress.cell_start(cell.label)
                in_flight[pool.submit(cell, job_for(cell) if job_for else None)] = (cell, claim, utc_now())
            if not todo and waiting and not in_flight:
                time.sleep(WAIT_S)
                todo.extend(waiting)
                waiting.clear()
            for handle, result in (pool.finished() if in_flight else []):
                record = _store(runner, *in_flight.pop(handle), result, lost)
                if record is not None:
                    outcome.ran.append(record)
                    if record["status"] == "interrupted":
                        raise GridInterrupted(record)
    except KeyboardInterrupt as exc:
        records = [_store(runner, *in_flight.pop(handle), result, lost) for handle, result in pool.interrupt()]
        stored = [r for r in records if r is not None]
        outcome.ran.extend(stored)
        first = getattr(exc, "record", None) or (stored[0] if stored else {"error": "interrupted"})
        raise GridInterrupted(first) from None
    finally:
        for _, claim, _ in in_flight.values():
            claim.release()
        pool.close()
    progress.grid_done()
    return outcome, lost


def _store(runner, cell: Cell, claim, started_at: str, result: Outcome, lost: list) -> Optional[dict]:
    """Write the record of a finished cell and release its claim (a lost cell gets no record).
    A cell whose process was killed gets its record here, started when it was handed out."""
    try:
        if result.lost is not None:
            lost.append(cell)
            runner.progress.cell_lost(cell.label, result.lost)
            return None
        record = result.record
        if record is None:
            kind, message = result.failure
            record = runner.failed_record(cell, kind, message, started_at)
        try:
            write_record(runner.results_dir, record)
        except OSError as exc:
            _store_failure_or_stop(runner, cell, started_at, exc)
    finally:
        claim.release()
    runner.progress.cell_done(cell.label, record)
    return record


def _store_failure_or_stop(runner, cell: Cell, started_at: str, exc: OSError) -> None:
    """The record could not be written (a full disk, a folder gone read-only): record the cell
    as failed if even that small write works, then stop the run; records already stored stay."""
    why = exc.strerror or str(exc)
    with contextlib.suppress(OSError):
        write_record(runner.results_dir, runner.failed_record(
            cell, "exception", f"its record could not be stored ({why})", started_at))
    raise RunStopped(f"Cannot store the record of {cell.label} in {runner.results_dir} ({why}); the run "
                     "stopped, and the records stored before are intact. Fix: free space or fix the "
                     "folder, then run the same command again (with --retry-failed for this cell).")


def job_maker(grid: Grid, plugins_dir: Optional[str], cache_dir: Optional[str],
              threads: Optional[int] = None, progress: bool = False):
    """cell -> CellJob for ``grid``."""

    def job_for(cell: Cell) -> CellJob:
        return CellJob(grid.data, grid.source, cell.run_id, plugins_dir, cache_dir, threads, progress)

    return job_for


if __name__ == "__main__":
    sys.exit(_child_main(*sys.argv[1:3]))
