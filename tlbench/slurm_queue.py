"""The cells of a detached Slurm array (``tlbench run --executor slurm --detach``) that wait in
Slurm's queue, as `tlbench runs` shows them beside the running (claims) and done (records).

At submission the driver leaves ``RESULTS/GRID/slurm/JOB_ID.json``: the array's tasks, the cells
of each (their names, and the ``finished_at`` of the record each had then) and the outbox its
tasks write to. A cell of it is *queued* while its task is in Slurm's queue (pending, or running
the cells before it) and the cell has no claim, no outcome in the outbox and no record stored
since the submission. Whether the task is still in the queue, only Slurm knows (a cancelled
array leaves nothing on disk): `squeue` is asked once for every array with such cells. Display
only: what counts as a result is the records. Standard library only: `tlbench runs` imports it.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Optional

from tlbench.records import QUEUED
from tlbench.atomic_files import write_atomic
from tlbench.results import grid_dir, utc_now

ASK_S = 10.0  # how long `tlbench runs` waits for squeue
# a task in one of these has started its process: a cell with a `.started` note there is no
# longer queued (it runs, ran, or was left pending); in any other state Slurm still holds the
# task (pending, requeued, held), and when it runs it runs every cell without an outcome
RUNS = {"RUNNING", "CONFIGURING", "SUSPENDED", "STOPPED", "SIGNALING", "RESIZING"}
# a task in one of these is ending or ended: its cells not started will not start
ENDS = {"COMPLETING", "STAGE_OUT", "PREEMPTED", "COMPLETED", "CANCELLED", "FAILED", "TIMEOUT", "NODE_FAIL",
        "BOOT_FAIL", "DEADLINE", "OUT_OF_MEMORY"}
NAMES = ("backbone", "strategy", "dataset")


def task_name(job_id: str, array_task_id: str, node: str = "") -> str:
    """How messages name a task: ``Slurm task 12_3 on node7``, or ``Slurm job 12 on node7`` for
    an array of one task, which submitit submits as a plain job."""
    task = f"Slurm task {job_id}_{array_task_id}" if array_task_id else f"Slurm job {job_id}"
    return task + (f" on {node}" if node and node != "None" else "")


def submission_path(results_dir, grid_name: str, job_id: str) -> Path:
    return grid_dir(results_dir, grid_name) / "slurm" / f"{job_id}.json"


def write_submission(results_dir, grid_name: str, job_id: str, tasks: list, cells: dict, outbox) -> Path:
    """Leave what array ``job_id`` was submitted to run: ``tasks``, the run_ids of each task in
    order; ``cells``, run_id -> its names, seed, sweep and ``finished_at`` (its record's at
    submission, or None)."""
    path = submission_path(results_dir, grid_name, job_id)
    write_atomic(path, json.dumps({"job_id": job_id, "submitted_at": utc_now(), "outbox": str(outbox),
                                   "tasks": tasks, "cells": cells}, indent=1, sort_keys=True) + "\n")
    return path


def queued_rows(results_dir, grid_name: str, records: dict, running: set) -> list[dict]:
    """`tlbench runs` rows (status ``queued``) for the cells of the grid's detached arrays that
    wait in Slurm's queue; ``records``: run_id -> the grid's record, ``running``: claimed run_ids."""
    folder = grid_dir(results_dir, grid_name) / "slurm"
    submissions = [s for s in map(_read, sorted(folder.glob("*.json"))) if s is not None]
    waiting = []  # (submission, task index, run_id, started there) of cells that may wait, oldest first
    for sub in sorted(submissions, key=lambda s: s["submitted_at"]):
        outbox = _listing(sub["outbox"])
        for index, run_ids in enumerate(sub["tasks"]):
            waiting += [(sub, index, r, f"{r}.started" in outbox) for r in run_ids
                        if r not in running and f"{r}.json" not in outbox
                        and (records.get(r) or {}).get("finished_at") == sub["cells"][r]["finished_at"]]
    if not waiting:
        return []
    queue, why = _queue(sorted({sub["job_id"] for sub, *_ in waiting}))
    if queue is None:
        print(f"warning: Slurm does not answer here ({why}): cells shown queued were queued when their array "
              "was submitted, and may have left Slurm's queue since (squeue on the cluster says).",
              file=sys.stderr)
    rows = {}  # run_id -> its row: a newer array's task, when two hold the cell
    for sub, index, run_id, started in waiting:
        job, cell = sub["job_id"], sub["cells"][run_id]
        index = "" if len(sub["tasks"]) == 1 else str(index)  # one task: a plain job, "0" to squeue
        if queue is None:
            node, where = "-", f"{task_name(job, index)}, as submitted (Slurm did not answer)"
        else:
            state, node, reason = queue.get((job, index or "0"), ("", "", ""))
            if not state or state in ENDS or (state in RUNS and started):
                continue
            if state in RUNS:
                where = f"{task_name(job, index, node)} runs the cells before it"
            else:
                node, where = "-", f"{task_name(job, index)} {state.lower()}" + \
                    (f" ({reason})" if reason and reason != "None" else "")
        rows[run_id] = {"grid": grid_name, "run_id": run_id, "status": QUEUED, "error": where,
                        "node": {"hostname": node or "-"}, "sweep": cell.get("sweep") or {},
                        **{k: cell[k] for k in (*NAMES, "seed")}}
    return list(rows.values())


def _listing(folder: str) -> set:
    try:
        return set(os.listdir(folder))
    except OSError:
        return set()


def _queue(job_ids: list) -> tuple[Optional[dict], str]:
    """({(job id, task index): (state, node, reason)} of the tasks Slurm holds now, "") or
    (None, why) when Slurm does not answer. A job of one task is task "0"."""
    if not shutil.which("squeue"):
        return None, "no squeue on this machine"
    try:
        answer = subprocess.run(["squeue", "-h", "-r", "-j", ",".join(job_ids), "-o", "%i|%T|%N|%r"],
                                capture_output=True, text=True, timeout=ASK_S)
    except (OSError, subprocess.SubprocessError) as exc:
        return None, f"squeue: {exc}"
    if answer.returncode != 0:
        if "Invalid job id" in answer.stderr:  # none of them is in the queue any more
            return {}, ""
        return None, "squeue: " + (" ".join(answer.stderr.split())[-300:] or f"exit status {answer.returncode}")
    tasks = {}
    for line in answer.stdout.splitlines():
        parts = line.split("|")
        if len(parts) == 4:
            job, _, index = parts[0].partition("_")
            tasks[(job, index or "0")] = (parts[1], parts[2], parts[3])
    return tasks, ""


def _read(path: Path) -> Optional[dict]:
    """A submission file, checked (it is read back from a shared disk): None, said once, when
    it cannot be trusted."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:  # UnicodeDecodeError is a ValueError
        why = f"unreadable: {exc}"
    else:
        why = _problem(data, path.stem)
        if why is None:
            return data
    print(f"warning: Slurm submission file {path} is ignored ({why}): its cells are not shown queued.",
          file=sys.stderr)
    return None


def _problem(data, job_id: str) -> Optional[str]:
    if not isinstance(data, dict):
        return "not a JSON object"
    if data.get("job_id") != job_id or not job_id.isdigit():
        return f"job_id {data.get('job_id')!r} is not its file's name"
    for key in ("submitted_at", "outbox"):
        if not isinstance(data.get(key), str):
            return f"{key} must be a string"
    tasks, cells = data.get("tasks"), data.get("cells")
    if not isinstance(tasks, list) or not all(isinstance(t, list) and t and all(isinstance(r, str) for r in t)
                                              for t in tasks):
        return "tasks must be lists of run_ids"
    if not isinstance(cells, dict):
        return "cells must be an object"
    for run_id in (r for t in tasks for r in t):
        cell = cells.get(run_id)
        if not isinstance(cell, dict) or not all(isinstance(cell.get(k), str) for k in NAMES) \
                or not isinstance(cell.get("seed"), (int, str)) or isinstance(cell.get("seed"), bool) \
                or not isinstance(cell.get("finished_at"), (str, type(None))) \
                or not isinstance(cell.get("sweep", {}), dict):
            return f"cell {run_id!r} lacks its backbone, strategy, dataset, seed or finished_at"
    return None
