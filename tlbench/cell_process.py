"""Where an isolated cell's process comes from: forked from a server that has already imported
torch and timm, not a fresh interpreter that spends seconds importing them for every cell.

The server is multiprocessing's fork server, started by the first isolated cell of a driver (or
of a Ray worker) with ``PRELOAD`` imported and nothing run: no torch thread pool has started in
it, which a forked process must not inherit. A cell's process forked from it is still a process
of its own, as a fresh interpreter was: a session of its own (Ctrl-C in the terminal reaches the
driver only; at a deadline its whole process group is killed), the environment, working folder
and CPUs (taskset) of its starter at the moment it starts, and its exit status (minus the number
of the signal that killed it) back to its starter. What libraries read from the environment at
import, the server read when it started, from the same process.
"""

from __future__ import annotations

import importlib
import multiprocessing
import os
import sys

# What every cell imports before it starts (seconds in a fresh interpreter, mostly torch and timm)
PRELOAD = ["torch", "timm", "tlbench.runner", "tlbench.worker"]


def start(entry: str, job_path: str, result_path: str) -> multiprocessing.Process:
    """A process running the job in ``job_path`` with ``entry`` ("module:function", a function of
    a CellJob that returns its Outcome), through tlbench.worker.process_main."""
    from tlbench.cpus import quiet_threads

    quiet_threads()  # before the server imports torch: the driver's environment usually has it already
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(PRELOAD)
    process = context.Process(target=_main, name="tlbench-cell",
                              args=(entry, job_path, result_path, os.getpid(), _surroundings()))
    process.start()
    return process


def _surroundings() -> dict:
    """What a process started now would inherit from this one, and the server may not have."""
    return {"environ": dict(os.environ), "cwd": os.getcwd(), "cpus": os.sched_getaffinity(0)}


def _main(entry: str, job_path: str, result_path: str, starter: int, surroundings: dict) -> None:
    """The cell's process, forked from the server."""
    os.setsid()
    os.environ.clear()
    os.environ.update(surroundings["environ"])
    os.chdir(surroundings["cwd"])
    os.sched_setaffinity(0, surroundings["cpus"])  # tlbench.cpus counts them for the cell's threads
    from tlbench.worker import process_main

    module, _, name = entry.partition(":")
    sys.exit(process_main(getattr(importlib.import_module(module), name), job_path, result_path, starter))
