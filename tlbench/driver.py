"""The driver's loop over one grid: which cells are pending, claiming each before an executor
gets it, and storing every record that comes back.

Whatever the executor (tlbench.executors, tlbench.ray_executor), this process (the driver)
decides which cells need running, claims each one, writes every record and reports progress.
Only building, fitting and scoring a cell move to a worker (tlbench.worker), which receives the
grid as plain data and returns the record.
"""

from __future__ import annotations

import contextlib
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Optional

from tlbench.cell_job import Outcome
from tlbench.errors import RunStopped
from tlbench.grid import Cell, Grid, cell_label
from tlbench.results import claim_cell, claim_holder, newer_record, read_record, record_path, records_by_run_id, \
    remove_leftovers, utc_now, write_record

WAIT_S = 1.0  # how often the driver looks again at cells that another process is running


def needs_run(record: Optional[dict], at_start: Optional[dict], retry_failed: bool, force: bool) -> bool:
    """Whether this driver should run a cell whose stored record is ``record``.

    ``at_start`` is the record as this driver first saw it: the flags apply to that one. A
    record written since came from another driver working on the same grid, and is final.
    """
    if record is None or record["status"] == "interrupted":
        return True  # an interrupted cell is not done: the next run, without flags, finishes it
    if record != at_start:
        return False
    return force or (record["status"] == "failed" and retry_failed)


class GridInterrupted(KeyboardInterrupt):
    """Ctrl-C stopped the grid; ``records`` are the interrupted cells' records, already stored
    (several when an executor ran cells side by side, none when it stopped between cells)."""

    def __init__(self, records: list):
        super().__init__(records[0].get("error", "interrupted") if records else "interrupted")
        self.records = records


@dataclass
class GridOutcome:
    grid: str
    ran: list = field(default_factory=list)
    skipped: list = field(default_factory=list)
    lost: list = field(default_factory=list)  # cells left pending because their worker was lost

    @property
    def failed(self) -> list:
        return [r for r in self.ran + self.skipped if r["status"] != "ok"]


def run_grid_on(executor, runner, grid: Grid, job_for=None, retry_failed: bool = False,
                force: bool = False, cells: Optional[list] = None, sinks=None) -> GridOutcome:
    """Run a grid's pending cells on ``executor`` (up to ``executor.slots`` at once), each under
    its claim; this process writes every record, and tells ``sinks`` (tlbench.active_sinks) of
    each once stored. With ``cells`` (a slice, tlbench.slices), only those: the flags act on them
    alone. Several drivers may share a results folder: a cell another process is running is left
    to it and looked at again later (its record then counts as done here). Raises
    GridInterrupted after storing the records of the cells Ctrl-C stopped."""
    flags = {"retry_failed": retry_failed, "force": force}
    return GridDriver(executor, runner, grid, job_for, flags, cells, sinks).run()


class GridDriver:
    """The driver's loop over one grid: which cells are pending, claiming each before it is
    handed to the executor, and storing what comes back."""

    def __init__(self, executor, runner, grid: Grid, job_for, flags: dict, cells: Optional[list] = None,
                 sinks=None):
        self.executor, self.runner, self.grid, self.job_for, self.flags = executor, runner, grid, job_for, flags
        self.cells = grid.cells if cells is None else cells
        self.sinks = sinks
        self.progress = runner.progress
        remove_leftovers(runner.results_dir, grid.name)
        self.at_start = records_by_run_id(runner.results_dir, grid.name, set_aside=True)
        self.outcome = GridOutcome(grid=grid.name)
        self.todo: deque = deque()
        self.waiting: list = []  # cells another process holds
        self.in_flight: dict = {}  # handle -> (cell, claim, start time)

    def run(self) -> GridOutcome:
        self._sort_pending()
        self.progress.grid_start(len(self.cells), len(self.outcome.skipped))
        try:
            while self.todo or self.waiting or self.in_flight:
                self._hand_out()
                self._collect()
        except KeyboardInterrupt as exc:
            raise GridInterrupted([*getattr(exc, "records", []), *self._store_interrupted()]) from None
        finally:
            for _, claim, _ in self.in_flight.values():
                claim.release()
            self.executor.close()
        self.progress.grid_done()
        return self.outcome

    def _sort_pending(self) -> None:
        for cell in self.cells:
            if self._newer(cell):
                continue
            previous = self.at_start.get(cell.run_id)
            if needs_run(previous, previous, **self.flags):
                self.todo.append(cell)
            else:
                self.outcome.skipped.append(previous)

    def _hand_out(self) -> None:
        """Claim and submit cells while the executor has free slots; when only cells held by
        other processes are left, wait a little and look at them again."""
        while self.todo and len(self.in_flight) < self.executor.slots:
            cell = self.todo.popleft()
            claim = self._claim(cell)
            if claim is not None:
                self.progress.cell_start(cell.label)
                try:
                    job = self.job_for(cell) if self.job_for else None
                    self.in_flight[self.executor.submit(cell, job)] = (cell, claim, utc_now())
                except BaseException:  # the run stops (Ctrl-C, no node left): the cell stays pending
                    claim.release()
                    raise
        if not self.todo and self.waiting and not self.in_flight:
            time.sleep(WAIT_S)
            self.todo.extend(self.waiting)
            self.waiting.clear()

    def _claim(self, cell: Cell):
        """The cell's claim, or None when another process holds it or has finished it."""
        results_dir = self.runner.results_dir
        about = {"grid": cell.grid, "backbone": cell.backbone, "strategy": cell.strategy,
                 "dataset": cell.dataset, "seed": cell.seed}
        try:
            claim = claim_cell(results_dir, cell.grid, cell.run_id, about)
        except OSError as exc:  # a read-only folder, a FIFO under the claim's name
            raise RunStopped(f"Cannot claim {cell.label} in {results_dir} ({exc.strerror or exc}); the run "
                             "stopped, and the records stored before are intact. Fix the folder, then run "
                             "the same command again.") from None
        if claim is None:
            self.progress.cell_elsewhere(cell.label, claim_holder(results_dir, cell.grid, cell.run_id))
            self.waiting.append(cell)
            return None
        # read again under the claim: another process may have finished it meanwhile
        if self._newer(cell):
            claim.release()
            return None
        current = read_record(record_path(results_dir, cell.grid, cell.run_id), claimed=True)
        if not needs_run(current, self.at_start.get(cell.run_id), **self.flags):
            claim.release()
            self.progress.cell_done_elsewhere(cell.label, current)
            self.outcome.skipped.append(current)
            return None
        return claim

    def _newer(self, cell: Cell) -> bool:
        """A newer tlbench stored this cell's record: it is neither rerun nor replaced (a run
        never loses what is stored); reading the records at the start said so."""
        if cell.run_id in self.at_start:
            return False
        return newer_record(record_path(self.runner.results_dir, cell.grid, cell.run_id)) is not None

    def _collect(self) -> None:
        for handle, result in (self.executor.finished() if self.in_flight else []):
            if result.requeue is not None:
                self._requeue(*self.in_flight.pop(handle), result.requeue)
                continue
            record = self._store(*self.in_flight.pop(handle), result)
            if record is not None:
                self.outcome.ran.append(record)
                if record["status"] == "interrupted":
                    raise GridInterrupted([record])
                if record.get("error_kind") == "device_fault" and getattr(self.executor, "shares_the_process", False):
                    self._stop_after_device_fault(record)

    def _requeue(self, cell: Cell, claim, started_at: str, why: str) -> None:
        """The cell did not start where it was sent (a node unfit for it): hand it out again."""
        claim.release()
        if why:
            self.progress.cell_requeued(cell.label, why)
        self.todo.appendleft(cell)

    def _stop_after_device_fault(self, record: dict) -> None:
        """A device-side assert or illegal access leaves this process's CUDA context broken:
        every later cell here would fail the same way, so the run stops with its record stored."""
        raise RunStopped(
            f"{cell_label(record)} failed with a GPU fault ({record['error']}), which leaves this "
            "process unable to use the GPU; the other cells were not run. Run the same command with "
            "--executor subprocess: each cell then has a process of its own, and a fault fails only "
            "its cell.")

    def _store_interrupted(self) -> list:
        records = [self._store(*self.in_flight.pop(handle), result) for handle, result in self.executor.interrupt()]
        stored = [r for r in records if r is not None]
        self.outcome.ran.extend(stored)
        return stored

    def _store(self, cell: Cell, claim, started_at: str, result: Outcome) -> Optional[dict]:
        """Write the record of a finished cell and release its claim (a lost cell gets no record).
        A cell whose process was killed gets its record here, started when it was handed out."""
        runner = self.runner
        try:
            if result.lost is not None:
                self.outcome.lost.append(cell)
                runner.progress.cell_lost(cell.label, result.lost)
                return None
            record = result.record
            if record is None:
                kind, message = result.failure
                record = runner.failed_record(cell, kind, message, started_at, where=result.where)
            # the driver's facts (a worker rebuilds the cell from the grid without them): a seed
            # racing added says so; any other names the seeds its grid listed when it ran
            record = {**record, **({"race": dict(cell.race)} if cell.race else {"grid_seeds": list(self.grid.seeds)})}
            try:
                write_record(runner.results_dir, record)
            except OSError as exc:
                _store_failure_or_stop(runner, cell, started_at, exc)
        finally:
            claim.release()
        runner.progress.cell_done(cell.label, record)
        if self.sinks:  # the one place every stored record passes, whichever executor ran its cell
            self.sinks.record(record)
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
