"""What one task of a Slurm job array does (tlbench.slurm_executor submits it through submitit):
run its cells one after another in this process, each as a Ray worker would (the node checks of
tlbench.node_check, then tlbench.worker's path, building only the cell), and leave each outcome
in the run's outbox on the shared disk, where the driver picks it up and writes the record.

Several cells in one process pay the start-up (Python, torch, the plugins, a dataset) once. Each
cell first leaves a ``RUN_ID.started`` note, so that when Slurm kills the task (its time limit,
scancel, a node lost) the driver knows which cell was running and which never started. With
``--detach`` no driver waits: the task claims each cell and stores its record itself, and when
Slurm ends it, asks Slurm why, to record ``timeout`` for the cell its time limit cut short.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
from dataclasses import asdict
from pathlib import Path
from typing import Optional

from tlbench.cell_job import CellJob, Outcome
from tlbench.atomic_files import write_atomic
from tlbench.results import utc_now
from tlbench.slurm_queue import task_name

# how long a detached task asks slurmctld why it ends: Slurm's KillWait (30 s by default) is
# all it has before SIGKILL, and a cell whose end nobody could explain stays pending anyway
ASK_S = 10.0


def slurm_ids() -> dict:
    """This task as Slurm names it: the array's job id, the task's index in it, the node."""
    env = os.environ
    return {"job_id": env.get("SLURM_ARRAY_JOB_ID") or env.get("SLURM_JOB_ID", ""),
            "array_task_id": env.get("SLURM_ARRAY_TASK_ID", ""),
            "node": env.get("SLURMD_NODENAME") or socket.gethostname()}


def run_task(jobs: list, outbox: str, detached: Optional[dict] = None) -> int:
    """Run ``jobs`` (CellJob fields, one dict a cell) in order; returns how many ran here.
    ``detached``: {"results": DIR, "grid": NAME, "grid_seeds": [...], "at_start": {run_id: finished_at},
    "seeds": {run_id: seed}, "time": the --slurm-time asked}."""
    # submitit requeues a task on SIGUSR2 only to resume a checkpointable function; a cell is
    # not one: the note of the running cell tells the driver what the time limit cut short
    signal.signal(signal.SIGUSR2, signal.SIG_IGN)
    # submitit ignores SIGTERM, waiting for SIGKILL; a cell's outcome is in the outbox once it
    # has one, so the task ends at once when Slurm ends it (its time limit, scancel). Where
    # Slurm tracks processes by parentage (proctrack/linuxproc), a task that outlived its batch
    # shell would escape the SIGKILL: it ends when the shell does. A detached task asks Slurm
    # first whether it is its time limit (_Ending).
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    from tlbench.worker import exit_when_orphaned

    exit_when_orphaned(os.getppid())
    here = slurm_ids()
    node = {"hostname": here["node"]}
    ending = _Ending(here, detached, outbox) if detached else None
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
            if ending is not None:
                ending.running(job, claim)
            outcome = _outcome(job)
            if ending is not None:
                ending.storing()
            if outcome.record is not None:
                outcome.record = {**outcome.record, "node": node, "slurm": here}
            if detached:
                _store(job, outcome, here, detached)
            write_atomic(out, json.dumps({**asdict(outcome), "where": {"node": node, "slurm": here}}))
            ran += 1
        finally:
            if claim is not None:
                claim.release()
        if ending is not None:
            ending.between_cells()
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


def _store(job: CellJob, outcome: Outcome, here: dict, detached: dict, started_at: Optional[str] = None) -> None:
    """Write the cell's record as the driver would (tlbench.driver), under this task's claim."""
    from tlbench.results import write_record

    record = outcome.record
    if record is None:
        if outcome.failure is None:  # the node cannot run it: it stays pending, said in the task's log
            print(f"tlbench: cell {job.run_id} left pending: {outcome.unfit or outcome.lost}", flush=True)
            return
        record = _failed_record(job, *outcome.failure, here, started_at)
    write_record(detached["results"], {**record, "grid_seeds": list(detached["grid_seeds"])})


def _failed_record(job: CellJob, kind: str, message: str, here: dict, started_at: Optional[str] = None) -> dict:
    """The record of a cell that failed without one of its own, as the driver would make it."""
    from tlbench.worker import cell_of, runner_for

    runner = runner_for(job.plugins_dir, job.cache_dir, False)
    return runner.failed_record(cell_of(job, runner.registry), kind, message, started_at,
                                where={"node": {"hostname": here["node"]}, "slurm": here})


class _Ending:
    """A detached task's SIGTERM. Slurm sends it (and SIGKILL KillWait seconds later) at the
    time limit, on scancel, on preemption and on requeue alike, so the task asks Slurm which it
    is, as the attached driver does: slurmctld marks the job before it signals (``Reason=
    TimeLimit``, while its state shows COMPLETING). The cell the time limit cut short is recorded
    ``timeout`` under this task's claim; any other end, or no answer, leaves it pending.

    Not a ``--signal=USR2@N`` warning: slurmctld sends it at its own check of time limits (every
    30 s), so from N+30 to N s early, or with the SIGTERM itself when the limit is moved
    (``scontrol update``), and a scancel after it would pass for the time limit. Not elapsed time
    against the limit: the limit can change after the task starts, and only Slurm knows it then."""

    def __init__(self, here: dict, detached: dict, outbox: str):
        self.here, self.detached, self.outbox = here, detached, outbox
        self.job_id = os.environ.get("SLURM_JOB_ID", "")  # this task's own id, not the array's
        self.cell: Optional[tuple] = None  # (job, claim, started_at) while a cell runs
        self.store = False  # a cell has its outcome and it is being stored
        self.asked = False  # SIGTERM came while storing: leave once stored
        signal.signal(signal.SIGTERM, self._on_sigterm)

    def running(self, job: CellJob, claim) -> None:
        self.cell = (job, claim, utc_now())

    def storing(self) -> None:
        self.cell, self.store = None, True

    def between_cells(self) -> None:
        self.store = False
        if self.asked:
            self._leave()

    def _on_sigterm(self, signum, frame) -> None:
        # runs in the main thread, between two steps of the cell, which is abandoned
        if self.cell is None:
            if self.store:
                self.asked = True  # the finished cell's record first: it takes milliseconds
                return
            self._leave()
        job, claim, started_at = self.cell
        self.cell = None
        signal.signal(signal.SIGTERM, signal.SIG_IGN)  # a second scancel must not cut the record short
        try:
            why = self._why_slurm_ends()
            if why == "TIMEOUT":
                here = self.here
                task = task_name(here["job_id"], here["array_task_id"], here["node"])
                outcome = Outcome(failure=("timeout", f"the {task} reached its time limit (--slurm-time "
                                                      f"{self.detached.get('time', '?')}) while running the cell"))
                _store(job, outcome, here, self.detached, started_at)
                write_atomic(Path(self.outbox) / f"{job.run_id}.json", json.dumps(
                    {**asdict(outcome), "where": {"node": {"hostname": here["node"]}, "slurm": here}}))
                self._say(f"cell {job.run_id} recorded timeout: {outcome.failure[1]}")
            else:
                self._say(f"cell {job.run_id} left pending: Slurm ends this task ({why})")
        except Exception as exc:  # whatever it is, the cell stays pending
            self._say(f"cell {job.run_id} left pending: {type(exc).__name__}: {exc}")
        finally:
            claim.release()
            self._leave()

    def _why_slurm_ends(self) -> str:
        """TIMEOUT when this task's time limit ends it, else what Slurm says (or why it did not)."""
        if not self.job_id:
            return "no SLURM_JOB_ID to ask about"
        try:
            answer = subprocess.run(["scontrol", "-o", "show", "job", self.job_id], capture_output=True,
                                    text=True, timeout=ASK_S)
        except (OSError, subprocess.SubprocessError) as exc:
            return f"scontrol did not answer: {exc}"
        fields = dict(part.split("=", 1) for part in answer.stdout.split() if "=" in part)
        if fields.get("JobState") == "TIMEOUT" or fields.get("Reason") == "TimeLimit":
            return "TIMEOUT"
        return f"JobState={fields.get('JobState', '?')} Reason={fields.get('Reason', '?')}"

    @staticmethod
    def _say(line: str) -> None:
        os.write(2, f"tlbench: {line}\n".encode())  # not print: the handler may cut one short

    @staticmethod
    def _leave() -> None:
        os._exit(128 + signal.SIGTERM)
