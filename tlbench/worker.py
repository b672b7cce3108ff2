"""A worker: runs one cell from its CellJob and returns the record, building only the part of
the grid that holds the cell.

It runs inside a Ray task (tlbench.ray_worker), or in a process of its own (``process_main``,
started by tlbench.executors.IsolatedCell through tlbench.cell_process).
"""

from __future__ import annotations

import json
import os
import signal
import tempfile
import time
from dataclasses import asdict
from pathlib import Path
from typing import Callable

from tlbench.cell_job import CellJob, Outcome
from tlbench.grid import Cell, build_grid
from tlbench.atomic_files import write_atomic

_runners: dict = {}  # one Runner per worker process and configuration: datasets stay loaded


class NoSuchCell(LookupError):
    """The worker's tlbench or plugins build other cells from the grid than the driver's."""

    def __init__(self, run_id: str):
        self.reason = (f"builds other cells from the grid than the driver (no cell has run_id {run_id}): "
                       "install the driver's tlbench and plugin versions there")
        super().__init__(f"this worker {self.reason}")


def run_job(job: CellJob) -> dict:
    """Run the job's cell in this process and return its record."""
    from tlbench.cpus import size_threads

    size_threads(job.threads)
    runner = runner_for(job.plugins_dir, job.cache_dir, job.progress)
    return run_cell(runner, cell_of(job, runner.registry), job)


def runner_for(plugins_dir, cache_dir, progress: bool):
    """This process's Runner for these plugins, cache and progress (made once)."""
    from tlbench.plugins import load_registry
    from tlbench.progress import Progress
    from tlbench.runner import Runner

    key = (plugins_dir, cache_dir, progress)
    if key not in _runners:
        _runners[key] = Runner(load_registry(plugins_dir), tempfile.gettempdir(),
                               progress=Progress(enabled=progress), cache_dir=cache_dir)
    return _runners[key]


def grid_for(job: CellJob) -> dict:
    """The grid as far as the job's cell goes (its run_id does not depend on the others): a
    worker need not hold every dataset or checkpoint of the grid to run one cell."""
    data = dict(job.grid_data)
    listed = dict(job.listed_as)
    for plural, singular, name in (("backbones", "backbone", job.backbone), ("strategies", "strategy", job.strategy),
                                   ("datasets", "dataset", job.dataset)):
        name = listed.get(singular, name)
        data[plural] = [name]
        if isinstance(job.grid_data.get(singular), dict):
            data[singular] = {key: table for key, table in job.grid_data[singular].items() if key == name}
    if isinstance(job.grid_data.get("budget"), dict):
        data["budget"] = {key: table for key, table in job.grid_data["budget"].items() if key == listed.get("strategy", job.strategy)}
    for key in ("sinks", "sink", "executor"):  # the driver's business: sinks, where cells run
        data.pop(key, None)
    return data


def cell_of(job: CellJob, registry) -> Cell:
    """The job's cell, built from its part of the grid; NoSuchCell when no cell there has its run_id."""
    grid = build_grid(grid_for(job), job.grid_source, registry)
    cell = next((c for c in grid.cells if c.run_id == job.run_id), None)
    if cell is None:
        raise NoSuchCell(job.run_id)
    return cell


def run_cell(runner, cell: Cell, job: CellJob) -> dict:
    """The cell's record, run on the job's device, with what the executor reserved for it."""
    runner.device = job.device
    record = runner.run_cell(cell)
    if job.resources is not None:
        record["resources"] = dict(job.resources)  # e.g. num_gpus 0.25: the GPU was shared
    return record


def outcome_of(job: CellJob) -> Outcome:
    return Outcome(record=run_job(job))


# -- a process of its own --------------------------------------------------------------------------


def process_main(run: Callable[[CellJob], Outcome], job_path: str, result_path: str, starter: int) -> int:
    """Entry point of a cell's own process: ``run`` the job in ``job_path``, write the outcome
    to ``result_path`` (read by tlbench.executors.IsolatedCell, in process ``starter``)."""
    from tlbench.streams import lenient_streams

    signal.signal(signal.SIGTERM, signal.default_int_handler)  # SIGTERM stores the cell as interrupted
    exit_when_orphaned(starter)
    job = CellJob(**json.loads(Path(job_path).read_text(encoding="utf-8")))
    try:
        with lenient_streams():  # the driver's stdout and stderr, inherited: full or closed as they may be
            outcome = run(job)
    except KeyboardInterrupt:
        return 130
    write_atomic(Path(result_path), json.dumps(asdict(outcome)))
    return 0


def exit_when_orphaned(starter: int) -> None:
    """The cell's process has a session of its own, so it would outlive the driver (or Ray
    worker, or a Slurm task's batch shell) that started it, killed with SIGKILL; it stops
    instead, leaving the cell pending. (Its parent is the fork server, which outlives the
    starter while its processes run.)"""
    import threading

    threading.Thread(target=_exit_when_gone, args=(starter,), daemon=True, name="orphan-watch").start()


def _exit_when_gone(pid: int) -> None:
    """``os._exit(3)`` once process ``pid`` has ended."""
    import select

    try:
        if hasattr(os, "pidfd_open"):  # Linux: readable once the process has ended
            select.select([os.pidfd_open(pid)], [], [])
        else:  # elsewhere, asked every second
            while True:
                os.kill(pid, 0)
                time.sleep(1.0)
    except ProcessLookupError:
        pass
    os._exit(3)
