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
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Optional

from tlbench.errors import ConfigError, RunStopped
from tlbench.grid import Cell, Grid, build_grid
from tlbench.node_check import (NODE_WIDE, NodeUnfit, check_data, check_dataset_options, check_files, check_plugins,
                                grid_for, local_plugins_dir)
from tlbench.results import active_claims, claim_cell, claim_holder, read_record, record_path, records_by_run_id, \
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
    threads: Optional[int] = None  # torch intra-op threads in the worker (None: its usable CPUs)
    progress: bool = False  # draw the cell's step bars (a worker that shares the driver's terminal)
    device: Optional[str] = None  # the device to use instead of [settings] device (a Ray GPU worker's own)
    resources: Optional[dict] = None  # what the executor reserved for the cell, for its record
    expected: Optional[dict] = None  # what the driver has, for a cluster node to check (node_check)


@dataclass
class Outcome:
    """What came back for a cell: its record, or why there is none.

    ``failure`` (error kind, message) means the cell failed without a record of its own (the
    driver writes one); ``lost`` means the worker vanished and the cell stays pending;
    ``requeue`` means the cell did not start where it was sent and is handed out again.
    """

    record: Optional[dict] = None
    failure: Optional[tuple[str, str]] = None
    lost: Optional[str] = None
    where: Optional[dict] = None  # with a failure: the worker's environment and node, when it said
    unfit: Optional[tuple[str, str]] = None  # (scope, reason): the worker's node cannot run it (node_check)
    requeue: Optional[str] = None  # the cell goes back to the queue, to run elsewhere ("" : said before)


# -- the worker side -----------------------------------------------------------------------------

_runners: dict = {}  # one Runner per worker process and configuration: datasets stay loaded
_usable_caches: set = set()  # cache folders this process found writable


def run_job(job: CellJob) -> dict:
    """Run one cell here (in a worker) and return its record.

    With ``job.expected`` (a cluster node), the node is first checked against what the driver
    has: plugins, cache, files, data (tlbench.node_check). A node that differs raises NodeUnfit
    before the cell starts."""
    from tlbench.cpus import size_threads

    size_threads(job.threads)
    runner, plugins_dir = _runner_for(job)
    grid_data = job.grid_data if job.expected is None else _checked_grid(job, runner)
    try:
        grid = build_grid(grid_data, job.grid_source, runner.registry)
    except ConfigError as exc:
        if job.expected is None:
            raise
        raise NodeUnfit(NODE_WIDE, f"cannot build the cell from the grid ({exc})") from None
    cell = next((c for c in grid.cells if c.run_id == job.run_id), None)
    if cell is None:
        why = (f"builds other cells from the grid than the driver (no cell has run_id {job.run_id}): "
               "install the driver's tlbench and plugin versions there")
        if job.expected is not None:
            raise NodeUnfit(NODE_WIDE, why)
        raise LookupError(f"this worker {why}")
    if job.expected is not None:
        check_data(runner, cell, job.expected["data"])
    runner.device = job.device
    record = runner.run_cell(cell)
    if job.resources is not None:
        record["resources"] = dict(job.resources)  # e.g. num_gpus 0.25: the GPU was shared
    return _as_driver_paths(record, plugins_dir, job.plugins_dir)


def _checked_grid(job: CellJob, runner) -> dict:
    """The grid as far as the job's cell goes, once this node is known to have the driver's
    plugins, a usable cache, the cell's files and its dataset's options."""
    from tlbench.runner import check_cache_dir

    expected = job.expected
    check_plugins(runner.registry, expected["plugins"])
    if runner.cache_dir not in _usable_caches:  # said before any cell runs on this node
        try:
            check_cache_dir(runner.cache_dir)
        except ConfigError as exc:
            raise NodeUnfit(NODE_WIDE, f"cannot run cells: {exc}") from None
        _usable_caches.add(runner.cache_dir)
    check_files(expected["files"])
    grid_data = grid_for(job.grid_data, expected["backbone"], expected["strategy"], expected["dataset"])
    check_dataset_options(runner.registry, grid_data, expected["dataset"])
    return grid_data


def _runner_for(job: CellJob):
    """This process's Runner for the job's plugins, cache and progress (made once), and the
    plugins folder it loaded (on a cluster node, the copy Ray shipped)."""
    from tlbench.plugins import load_registry
    from tlbench.progress import Progress
    from tlbench.runner import Runner

    plugins_dir = local_plugins_dir(job.plugins_dir) if job.expected is not None else job.plugins_dir
    key = (plugins_dir, job.cache_dir, job.progress)
    if key not in _runners:
        try:
            registry = load_registry(plugins_dir)
        except ConfigError as exc:
            if job.expected is None:
                raise
            raise NodeUnfit(NODE_WIDE, f"cannot load its plugins: {exc}") from None
        _runners[key] = Runner(registry, tempfile.gettempdir(), progress=Progress(enabled=job.progress),
                               cache_dir=job.cache_dir)
    return _runners[key], plugins_dir


def _as_driver_paths(record: dict, local_dir: Optional[str], driver_dir: Optional[str]) -> dict:
    """A loose plugin shipped to this node was loaded from Ray's copy: its record names the
    file the driver listed (its sha256, compared before the cell ran, is the same)."""
    if not local_dir or not driver_dir or local_dir == driver_dir:
        return record
    for part in (record.get("plugins") or {}).values():
        for key in ("plugin", "file"):
            value = part.get(key)
            if isinstance(value, str) and value.startswith(local_dir):
                part[key] = driver_dir + value[len(local_dir):]
    return record


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
            result = json.loads(self._result_path.read_text(encoding="utf-8"))
            if "unfit" in result:
                return Outcome(unfit=tuple(result["unfit"]))
            return Outcome(record=result)
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
    from tlbench.cpus import quiet_threads

    quiet_threads()  # before the cell imports torch (the driver's environment usually has it already)
    signal.signal(signal.SIGTERM, signal.default_int_handler)  # SIGTERM stores the cell as interrupted
    _exit_when_orphaned(os.getppid())
    job = CellJob(**json.loads(Path(job_path).read_text(encoding="utf-8")))
    try:
        result = run_job(job)
    except KeyboardInterrupt:
        return 130
    except NodeUnfit as exc:  # not the cell's failure: this node's (see IsolatedCell._read)
        result = {"unfit": [exc.scope, exc.reason]}
    write_atomic(Path(result_path), json.dumps(result))
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
    """Torch threads for a cell of this process: the usable CPUs shared with the other processes
    on this host running cells of the same grid now (concurrent runners on one results folder),
    so that three runners on two cores do not run six threads."""
    import socket

    from tlbench.cpus import usable_cpus

    host, me = socket.gethostname(), os.getpid()
    others = {c.get("pid") for c in active_claims(results_dir, grid) if c.get("host") == host and c.get("pid") != me}
    return max(1, usable_cpus() // (1 + len(others)))


def needs_run(record: Optional[dict], at_start: Optional[dict], retry_failed: bool, force: bool) -> bool:
    """Whether this runner should run a cell whose stored record is ``record``.

    ``at_start`` is the record as this runner first saw it: the flags apply to that one. A
    record written since came from another runner working on the same grid, and is final.
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


def run_grid_on(pool, runner, grid: Grid, job_for=None, retry_failed: bool = False,
                force: bool = False) -> GridOutcome:
    """Run a grid's pending cells on ``pool`` (up to ``pool.slots`` at once), each under its
    claim; this process writes every record. Several runners may share a results folder: a
    cell another process is running is left to it and looked at again later (its record then
    counts as done here). Raises GridInterrupted after storing the records of the cells Ctrl-C
    stopped."""
    return GridDriver(pool, runner, grid, job_for, {"retry_failed": retry_failed, "force": force}).run()


class GridDriver:
    """The driver's loop over one grid: which cells are pending, claiming each before it is
    handed to the pool, and storing what comes back."""

    def __init__(self, pool, runner, grid: Grid, job_for, flags: dict):
        self.pool, self.runner, self.grid, self.job_for, self.flags = pool, runner, grid, job_for, flags
        self.progress = runner.progress
        remove_leftovers(runner.results_dir, grid.name)
        self.at_start = records_by_run_id(runner.results_dir, grid.name)
        self.outcome = GridOutcome(grid=grid.name)
        self.todo: deque = deque()
        self.waiting: list = []  # cells another process holds
        self.in_flight: dict = {}  # handle -> (cell, claim, start time)

    def run(self) -> GridOutcome:
        self._sort_pending()
        self.progress.grid_start(len(self.grid.cells), len(self.outcome.skipped))
        try:
            while self.todo or self.waiting or self.in_flight:
                self._hand_out()
                self._collect()
        except KeyboardInterrupt as exc:
            raise GridInterrupted([*getattr(exc, "records", []), *self._store_interrupted()]) from None
        finally:
            for _, claim, _ in self.in_flight.values():
                claim.release()
            self.pool.close()
        self.progress.grid_done()
        return self.outcome

    def _sort_pending(self) -> None:
        for cell in self.grid.cells:
            previous = self.at_start.get(cell.run_id)
            if needs_run(previous, previous, **self.flags):
                self.todo.append(cell)
            else:
                self.outcome.skipped.append(previous)

    def _hand_out(self) -> None:
        """Claim and submit cells while the pool has free slots; when only cells held by other
        processes are left, wait a little and look at them again."""
        while self.todo and len(self.in_flight) < self.pool.slots:
            cell = self.todo.popleft()
            claim = self._claim(cell)
            if claim is not None:
                self.progress.cell_start(cell.label)
                try:
                    job = self.job_for(cell) if self.job_for else None
                    self.in_flight[self.pool.submit(cell, job)] = (cell, claim, utc_now())
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
        claim = claim_cell(results_dir, cell.grid, cell.run_id, about)
        if claim is None:
            self.progress.cell_elsewhere(cell.label, claim_holder(results_dir, cell.grid, cell.run_id))
            self.waiting.append(cell)
            return None
        # read again under the claim: another process may have finished it meanwhile
        current = read_record(record_path(results_dir, cell.grid, cell.run_id), claimed=True)
        if not needs_run(current, self.at_start.get(cell.run_id), **self.flags):
            claim.release()
            self.progress.cell_done_elsewhere(cell.label, current)
            self.outcome.skipped.append(current)
            return None
        return claim

    def _collect(self) -> None:
        for handle, result in (self.pool.finished() if self.in_flight else []):
            if result.requeue is not None:
                self._requeue(*self.in_flight.pop(handle), result.requeue)
                continue
            record = self._store(*self.in_flight.pop(handle), result)
            if record is not None:
                self.outcome.ran.append(record)
                if record["status"] == "interrupted":
                    raise GridInterrupted([record])
                if record.get("error_kind") == "device_fault" and getattr(self.pool, "shares_the_process", False):
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
            f"{record['backbone']} / {record['strategy']} / {record['dataset']} / seed {record['seed']} "
            f"failed with a GPU fault ({record['error']}), which leaves this process unable to use the "
            "GPU; the other cells were not run. Run the same command with --executor subprocess: each "
            "cell then has a process of its own, and a fault fails only its cell.")

    def _store_interrupted(self) -> list:
        records = [self._store(*self.in_flight.pop(handle), result) for handle, result in self.pool.interrupt()]
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
              threads: Optional[int] = None, progress: bool = False, driver_view=None):
    """cell -> CellJob for ``grid``; with ``driver_view`` (tlbench.node_check.DriverView), each
    job carries what the driver has, for a cluster node to check."""

    def job_for(cell: Cell) -> CellJob:
        expected = driver_view.expected(cell) if driver_view is not None else None
        return CellJob(grid.data, grid.source, cell.run_id, plugins_dir, cache_dir, threads, progress,
                       expected=expected)

    return job_for


if __name__ == "__main__":
    sys.exit(_child_main(*sys.argv[1:3]))
