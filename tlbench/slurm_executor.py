"""The Slurm executor (``tlbench run --executor slurm``), on the driver: the pending cells as one
Slurm job array, submitted through submitit. Slurm and submitit are an optional extra:
tlbench[slurm].

Each array task runs a few cells (``--cells-per-task``) in one process (tlbench.slurm_worker)
and leaves each cell's outcome in the run's outbox, a folder under the grid's results on the
shared disk that Slurm clusters have; the driver reads the outbox, writes the records under its
claims, and asks Slurm (``scontrol``, which needs no accounting database) how each task ended:
a task past its time limit has its running cell recorded ``timeout``; cancelled, preempted,
failed or lost tasks leave their unfinished cells pending for the next run. Outcomes go by file,
not by submitit's pickled result: a task's finished cells count even when Slurm kills it later,
and they are seen one by one, as they finish. With ``--detach`` the driver submits, leaves what
it submitted for `tlbench runs` (tlbench.slurm_queue) and returns; the tasks then claim their
cells and store the records themselves, a time limit's ``timeout`` included.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from dataclasses import asdict, replace
from pathlib import Path
from typing import Optional

from tlbench.cell_job import Outcome
from tlbench.errors import ConfigError
from tlbench.slurm_options import SlurmOptions
from tlbench.slurm_queue import task_name

INSTALL_HINT = 'pip install "tlbench[slurm]"'
POLL_S = 1.0  # how often the driver asks Slurm about the tasks (scontrol is a call to slurmctld)
# a task in one of these has ended: its cells without an outcome are decided from the state
ENDED = {"COMPLETED", "FAILED", "TIMEOUT", "CANCELLED", "NODE_FAIL", "PREEMPTED", "BOOT_FAIL",
         "DEADLINE", "OUT_OF_MEMORY", "FORGOTTEN"}  # the last: no longer known to scontrol


def import_submitit():
    try:
        import submitit
    except ImportError:
        raise ConfigError(f"--executor slurm needs submitit, which is not installed: {INSTALL_HINT}") from None
    if not shutil.which("sbatch"):
        raise ConfigError("--executor slurm needs Slurm's commands (sbatch, scontrol, scancel) on this "
                          "machine's PATH: run tlbench on a login node of the cluster.")
    return submitit


def _check_answers(partition: Optional[str]) -> None:
    """Slurm answers here (before any cell is claimed), and knows the partition asked for."""
    try:
        answer = subprocess.run(["sinfo", "-h", "-o", "%R"], capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise ConfigError(f"Slurm does not answer on this machine ({exc}).") from None
    if answer.returncode != 0:
        raise ConfigError(f"Slurm does not answer on this machine: {_said(answer)}. Run tlbench on a login "
                          "node of the cluster (or set SLURM_CONF to its slurm.conf).")
    partitions = sorted(set(answer.stdout.split()))
    if partition is not None and partition not in partitions:
        from tlbench.errors import unknown_name_error

        raise unknown_name_error("Slurm partition", partition, partitions, " (--slurm-partition)")


def _said(exc) -> str:
    """sbatch's own words when it refused the job, on one line."""
    text = getattr(exc, "stderr", None) or getattr(exc, "output", None) or str(exc)
    if isinstance(text, bytes):
        text = text.decode(errors="replace")
    return " ".join(str(text).split())[-600:]


class SlurmExecutor:
    """Submits the cells handed to it as one job array, at the driver's first look at what
    finished; then reads outcomes and task states until every cell is decided."""

    shares_the_process = False
    slots = sys.maxsize  # every pending cell goes into the one array: Slurm queues them

    def __init__(self, options: SlurmOptions, folder: Path, log=None):
        self.submitit = import_submitit()
        self.options = options
        _check_answers(options.partition)
        # submitit's files (pickled calls, the tasks' stdout and stderr) and the outbox, one
        # folder a run: on the shared disk, since the tasks read and write them from their nodes
        self.folder = folder / time.strftime("%Y%m%dT%H%M%S") / str(os.getpid())
        self.outbox = self.folder / "outbox"
        self.log = log or (lambda line: None)
        self.job_ids: list = []
        self._buffer: list = []  # (handle, job) handed out and not submitted yet
        self._pending: dict = {}  # run_id -> handle, until its outcome is decided
        self._tasks: dict = {}  # (array job id, task index) -> run_ids of its cells
        self._logs: dict = {}  # (array job id, task index) -> the task's stderr file
        self._job_names: dict = {}  # (array job id, task index) -> submitit's job id: "12_3", or "12"
        self._asked = 0.0
        self._reasons: set = set()  # (array, Reason) said while tasks were pending

    def describe(self) -> str:
        o = self.options
        where = f"partition {o.partition}" if o.partition else "the default partition"
        limit = f"{o.time} min" if str(o.time).isdigit() else str(o.time)
        return (f"Slurm: {where}; a task has {o.cpus_per_task} CPU(s){f', {o.gpus} GPU(s)' if o.gpus else ''}, "
                f"{limit} and {o.cells_per_task} cell(s)")

    def submit(self, cell, job) -> object:
        handle = object()
        self._buffer.append((handle, replace(job, threads=self.options.cpus_per_task)))
        return handle

    # -- submitting ------------------------------------------------------------------------------

    def _flush(self, detached: Optional[dict] = None) -> str:
        """Submit the buffered cells as one array, ``cells_per_task`` to a task."""
        buffered, self._buffer = self._buffer, []
        n = self.options.cells_per_task
        chunks = [buffered[i:i + n] for i in range(0, len(buffered), n)]
        self.outbox.mkdir(parents=True, exist_ok=True)
        executor = self.submitit.SlurmExecutor(folder=str(self.folder / "%j"), max_num_timeout=0)
        executor.update_parameters(**self.options.submitit_parameters())
        if detached:
            # the batch shell outlives the task's process on SIGTERM: Slurm ends the job when its
            # shell ends (killing what is left at once, under proctrack/cgroup), and a detached
            # task needs its KillWait to ask why it ends and record a time limit (slurm_worker)
            executor.update_parameters(setup=["trap '' TERM"])
        from tlbench.slurm_worker import run_task

        try:
            jobs = executor.map_array(run_task, [[asdict(job) for _, job in chunk] for chunk in chunks],
                                      [str(self.outbox)] * len(chunks), [detached] * len(chunks))
        except Exception as exc:  # sbatch's refusal (a partition, account or flag it does not know)
            raise ConfigError(f"Slurm refused the job array: {_said(exc)}. Fix the --slurm-* flags.") from None
        array = jobs[0].job_id.split("_")[0]
        self.job_ids.append(array)
        for index, (chunk, job) in enumerate(zip(chunks, jobs)):
            self._tasks[(array, str(index))] = [job.run_id for _, job in chunk]
            self._logs[(array, str(index))] = job.paths.stderr
            self._job_names[(array, str(index))] = job.job_id
            for handle, job in chunk:
                self._pending[job.run_id] = handle
        self.log(f"Submitted Slurm job array {array} ({len(chunks)} task(s), {len(buffered)} cell(s)); "
                 f"its tasks' logs are in {self.folder}")
        return array

    def submit_detached(self, jobs: list, detached: dict) -> tuple[str, list]:
        """``--detach``: submit ``jobs`` as an array whose tasks store their own records; returns
        its job id and the run_ids of each of its tasks."""
        self._buffer = [(object(), replace(job, threads=self.options.cpus_per_task)) for job in jobs]
        array = self._flush({**detached, "time": self.options.time})
        return array, [run_ids for (job_id, _), run_ids in self._tasks.items() if job_id == array]

    # -- what came back --------------------------------------------------------------------------

    def finished(self) -> list[tuple[object, Outcome]]:
        if self._buffer:
            self._flush()
        if time.monotonic() - self._asked < POLL_S:
            time.sleep(POLL_S / 4)
            return self._from_outbox()
        self._asked = time.monotonic()
        states = self._states()  # before the outbox: whatever a task wrote before it ended is seen
        done = self._from_outbox()
        for key, run_ids in list(self._tasks.items()):
            state = states.get(key)
            if state is None or state[0] not in ENDED:
                continue
            del self._tasks[key]
            done += self._decide(key, state, [r for r in run_ids if r in self._pending])
        return done

    def _from_outbox(self) -> list:
        # a listing, not a stat a cell: opening the folder makes an NFS client look again,
        # where a cached "no such file" could outlive the task that wrote the file
        try:
            names = set(os.listdir(self.outbox))
        except OSError:
            return []
        done = []
        for run_id in list(self._pending):
            if f"{run_id}.json" in names:
                done.append((self._pending.pop(run_id), self._read(self.outbox / f"{run_id}.json")))
        return done

    def _read(self, path: Path) -> Outcome:
        import json

        data = json.loads(path.read_text(encoding="utf-8"))
        where = data.pop("where", None)
        outcome = Outcome.from_dict(data)
        if outcome.unfit is not None:  # this node lacks what the cell needs: pending, said why
            return Outcome(lost=f"Slurm node {where['node']['hostname']} {outcome.unfit[1]} (keep the "
                                "cells off it: --slurm-sbatch exclude=NODE)")
        if outcome.failure is not None:
            return Outcome(failure=outcome.failure, where=where)
        return outcome

    def _decide(self, key: tuple, state: tuple, run_ids: list) -> list:
        """The cells of a task that ended without their outcome: the one it was running when
        its time limit came is recorded ``timeout``, the others are left pending."""
        job_state, node = state
        plain = "_" not in self._job_names.get(key, "_")  # submitit submits one task as a plain job
        index = "" if plain else key[1]
        task = task_name(key[0], index, node)
        names = set(os.listdir(self.outbox))
        started = [r for r in run_ids if f"{r}.started" in names]
        log = self._logs.get(key, self.folder)
        decided = []
        where = {"slurm": {"job_id": key[0], "array_task_id": index, "node": node or ""}}
        for run_id in run_ids:
            handle = self._pending.pop(run_id)
            if job_state == "TIMEOUT" and run_id in started:
                decided.append((handle, Outcome(failure=(
                    "timeout", f"the {task} reached its time limit (--slurm-time {self.options.time}) "
                               "while running the cell"), where=where)))
            elif job_state in ("FAILED", "OUT_OF_MEMORY") and run_id in started:
                decided.append((handle, Outcome(failure=(
                    "oom" if job_state == "OUT_OF_MEMORY" else "crashed",
                    f"the {task} ended {job_state} while running the cell; its log: {log}"), where=where)))
            else:
                decided.append((handle, Outcome(lost=f"the {task} ended {job_state} before the cell "
                                                     f"finished; its log: {log}")))
        return decided

    def _states(self) -> dict:
        """(array job id, task index) -> (JobState, node) of every task Slurm still remembers."""
        states = {}
        for array in self.job_ids:
            try:
                answer = subprocess.run(["scontrol", "-o", "show", "job", array], capture_output=True,
                                        text=True, timeout=30)
            except (OSError, subprocess.TimeoutExpired):
                continue  # asked again in a second
            if answer.returncode != 0 and "Invalid job id" in answer.stderr:
                # ended longer ago than Slurm remembers (MinJobAge): how, nobody can say now
                states.update({key: ("FORGOTTEN", "") for key in self._tasks if key[0] == array})
                continue
            for line in answer.stdout.splitlines():
                fields = dict(part.split("=", 1) for part in line.split() if "=" in part)
                # submitit submits one task as a plain job, without ArrayTaskId; pending tasks of
                # an array share one line with a range, and have not ended anyway
                task = fields.get("ArrayTaskId", "0" if fields.get("JobId") == array else "")
                if task.isdigit():
                    states[(array, task)] = (fields.get("JobState", ""), fields.get("NodeList", ""))
                if fields.get("JobState") == "PENDING":
                    self._say_why_pending(array, fields.get("Reason", ""))
        return states

    def _say_why_pending(self, array: str, reason: str) -> None:
        """Once per reason: Slurm holds tasks for a reason only the request or an admin can
        change (a limit of the partition, account or QoS, a node that does not exist); the
        driver keeps waiting, as Slurm does."""
        if reason in ("None", "Priority", "Resources", "BeginTime", "Dependency", "JobArrayTaskLimit", "") \
                or (array, reason) in self._reasons:
            return
        self._reasons.add((array, reason))
        self.log(f"Slurm keeps tasks of job {array} pending: Reason={reason}. If that does not pass, Ctrl-C "
                 "(it cancels the array) and change what the --slurm-* flags ask for.")

    # -- stopping --------------------------------------------------------------------------------

    def interrupt(self) -> list[tuple[object, Outcome]]:
        """Ctrl-C: cancel the arrays, keep what finished, leave the rest pending (interrupted)."""
        self.cancel()
        done = self._from_outbox()
        done += [(handle, Outcome(failure=("interrupted", "interrupted (Ctrl-C); its Slurm task was cancelled")))
                 for handle in self._pending.values()]
        self._pending.clear()
        self._tasks.clear()
        return done

    def cancel(self, wait_s: float = 30.0) -> None:
        """scancel this run's arrays, then wait (a while) until Slurm has them out of its queue."""
        if not self.job_ids:
            return
        subprocess.run(["scancel", *self.job_ids], capture_output=True, timeout=60)
        deadline = time.monotonic() + wait_s
        while time.monotonic() < deadline:
            out = subprocess.run(["squeue", "-h", "-j", ",".join(self.job_ids), "-o", "%i"],
                                 capture_output=True, text=True, timeout=60)
            if not out.stdout.strip():  # none left, or a job id Slurm has already forgotten
                break
            time.sleep(0.2)
        print(f"Cancelled Slurm job array {', '.join(self.job_ids)}.", file=sys.stderr)

    def close(self) -> None:
        """The run stopped with tasks still queued or running (a record it could not store, say):
        they would run cells nobody collects, so they are cancelled; their cells stay pending."""
        if self._pending:
            self.cancel()


def submit_detached(args, registry, grid, runner, cells, make_executor) -> int:
    """`tlbench run --executor slurm --detach`: submit the pending cells (of ``cells``, a slice,
    when given) and return; prints the array's job id on stdout, for scripts."""
    from tlbench.driver import needs_run
    from tlbench.results import active_claims, newer_record, record_path, records_by_run_id, remove_leftovers
    from tlbench.slurm_queue import queued_rows, write_submission

    remove_leftovers(args.results, grid.name)
    records = records_by_run_id(args.results, grid.name, set_aside=True)
    running = {claim["run_id"] for claim in active_claims(args.results, grid.name)}
    todo = [cell for cell in (grid.cells if cells is None else cells) if cell.run_id not in running
            and needs_run(records.get(cell.run_id), records.get(cell.run_id), args.retry_failed, args.force)
            and (cell.run_id in records or not newer_record(record_path(args.results, grid.name, cell.run_id)))]
    log = (lambda line: None) if args.quiet else (lambda line: print(line, file=sys.stderr, flush=True))
    if not args.force:  # an earlier --detach's array holds them: submitted again, they would run twice
        queued = {row["run_id"]: row for row in queued_rows(args.results, grid.name, records, running)}
        waiting = [cell for cell in todo if cell.run_id in queued]
        if waiting:
            log(f"{len(waiting)} cell(s) already wait in Slurm's queue ({queued[waiting[0].run_id]['error']}"
                + (", ..." if len(waiting) > 1 else "") + "): not submitted again.")
            todo = [cell for cell in todo if cell.run_id not in queued]
    if not todo:
        log(f"Nothing to submit: every cell of grid {grid.name!r} is done, running or queued.")
        return 0
    executor, job_for = make_executor(args, registry, grid, runner)
    at_start = {cell.run_id: (records.get(cell.run_id) or {}).get("finished_at") for cell in todo}
    array, tasks = executor.submit_detached([job_for(cell) for cell in todo], {
        "results": str(Path(args.results).absolute()), "grid": grid.name, "grid_seeds": list(grid.seeds),
        "at_start": at_start, "seeds": {cell.run_id: cell.seed for cell in todo}})
    about = {cell.run_id: {"backbone": cell.backbone, "strategy": cell.strategy, "dataset": cell.dataset,
                           "seed": cell.seed, "sweep": dict(cell.sweep), "finished_at": at_start[cell.run_id]}
             for cell in todo}
    try:
        write_submission(args.results, grid.name, array, tasks, about, executor.outbox)
    except OSError as exc:  # the array runs all the same: only `tlbench runs` misses its queued cells
        print(f"warning: cannot keep what Slurm job {array} runs ({exc}): `tlbench runs` will not show its "
              "cells queued.", file=sys.stderr)
    print(array, flush=True)
    log(f"`tlbench runs --results {args.results} --grid-name {grid.name}` shows what is queued, running and "
        "done; `tlbench report` (or the same `tlbench run`) writes the leaderboard once the array has ended.")
    return 0
