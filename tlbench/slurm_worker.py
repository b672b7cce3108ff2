"""What one task of a Slurm job array does (tlbench.slurm_executor submits it through submitit):
run its cells one after another in this process, each as a Ray worker would (the node checks of
tlbench.node_check, then tlbench.worker's path, building only the cell), and leave each outcome
in the run's outbox on the shared disk, where the driver picks it up and writes the record.

Several cells in one process pay the start-up (Python, torch, the plugins, a dataset) once. Each
cell first leaves a ``RUN_ID.started`` note, so that when Slurm kills the task (its time limit,
scancel, a node lost) the driver knows which cell was running and which never started. With
``--detach`` no driver waits: the task claims each cell and stores its record itself.
"""

from __future__ import annotations

import json
import os
import signal
import socket
from dataclasses import asdict
from pathlib import Path
from typing import Optional

from tlbench.cell_job import CellJob, Outcome
from tlbench.atomic_files import write_atomic


def slurm_ids() -> dict:
    """This task as Slurm names it: the array's job id, the task's index in it, the node."""
    env = os.environ
    return {"job_id": env.get("SLURM_ARRAY_JOB_ID") or env.get("SLURM_JOB_ID", ""),
            "array_task_id": env.get("SLURM_ARRAY_TASK_ID", ""),
            "node": env.get("SLURMD_NODENAME") or socket.gethostname()}


def run_task(jobs: list, outbox: str, detached: Optional[dict] = None) -> int:
    """Run ``jobs`` (CellJob fields, one dict a cell) in order; returns how many ran here.
    ``detached``: {"results": DIR, "grid": NAME, "grid_seeds": [...], "at_start": {run_id: finished_at},
    "seeds": {run_id: seed}}."""
    # submitit requeues a task on SIGUSR2 only to resume a checkpointable function; a cell is
    # not one: the note of the running cell tells the driver what the time limit cut short
    signal.signal(signal.SIGUSR2, signal.SIG_IGN)
    # submitit ignores SIGTERM, waiting for SIGKILL; a cell's outcome is in the outbox once it
    # has one, so the task ends at once when Slurm ends it (its time limit, scancel). Where
    # Slurm tracks processes by parentage (proctrack/linuxproc), a task that outlived its batch
    # shell would escape the SIGKILL: it ends when the shell does.
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    from tlbench.worker import exit_when_orphaned

    exit_when_orphaned(os.getppid())
    here = slurm_ids()
    node = {"hostname": here["node"]}
    ran = 0
    for fields in jobs:
        job = CellJob(**fields)
        out = Path(outbox) / f"{job.run_id}.json"
        if out.exists():  # a requeued task: this cell ran in its first try
            continue
        claim = _claim(job, here, detached) if detached else None
        if detached and claim is None:
            continue
        try:
            write_atomic(Path(outbox) / f"{job.run_id}.started", json.dumps(here))
            outcome = _outcome(job)
            if outcome.record is not None:
                outcome.record = {**outcome.record, "node": node, "slurm": here}
            if detached:
                _store(job, outcome, here, detached)
            write_atomic(out, json.dumps({**asdict(outcome), "where": {"node": node, "slurm": here}}))
            ran += 1
        finally:
            if claim is not None:
                claim.release()
    return ran


def _outcome(job: CellJob) -> Outcome:
    from tlbench.ray_worker import outcome_on_node

    try:
        return outcome_on_node(job)
    except Exception as exc:  # raised before the cell could make its own record
        return Outcome(failure=("exception", f"{type(exc).__name__}: {exc}"))


# -- with --detach: the task is the driver of its cells ----------------------------------------------


def _claim(job: CellJob, here: dict, detached: dict):
    """The cell's claim, held by this task, or None when another process holds it or a record
    has been stored since the run was submitted (``tlbench runs`` shows the claim's node)."""
    from tlbench.results import claim_cell, newer_record, read_record, record_path

    results = detached["results"]
    grid = detached["grid"]
    about = {"backbone": job.backbone, "strategy": job.strategy, "dataset": job.dataset,
             "seed": detached["seeds"].get(job.run_id, "?"),
             "slurm": f"job {here['job_id']}" + (f" task {here['array_task_id']}" if here["array_task_id"] else ""),
             "node": here["node"]}
    claim = claim_cell(results, grid, job.run_id, about)
    if claim is None:
        return None
    if newer_record(record_path(results, grid, job.run_id)):  # never replaced by an older version
        claim.release()
        return None
    current = read_record(record_path(results, grid, job.run_id), claimed=True)
    if current is not None and current["status"] != "interrupted" \
            and current.get("finished_at") != detached["at_start"].get(job.run_id):
        claim.release()
        return None
    return claim


def _store(job: CellJob, outcome: Outcome, here: dict, detached: dict) -> None:
    """Write the cell's record as the driver would (tlbench.driver), under this task's claim."""
    from tlbench.results import write_record
    from tlbench.worker import cell_of, runner_for

    record = outcome.record
    if record is None:
        if outcome.failure is None:  # the node cannot run it: it stays pending, said in the task's log
            print(f"tlbench: cell {job.run_id} left pending: {outcome.unfit or outcome.lost}", flush=True)
            return
        runner = runner_for(job.plugins_dir, job.cache_dir, False)
        kind, message = outcome.failure
        record = runner.failed_record(cell_of(job, runner.registry), kind, message,
                                      where={"node": {"hostname": here["node"]}, "slurm": here})
    write_record(detached["results"], {**record, "grid_seeds": list(detached["grid_seeds"])})
