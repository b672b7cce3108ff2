"""What a Ray worker does with one cell: check its node against what the driver has
(tlbench.node_check), run the cell as any worker does (tlbench.worker), and answer the driver
(tlbench.ray_executor) with the record, the reason its node is unfit, or a failure.

With ``--cell-timeout`` the cell runs in a process of its own (tlbench.executors.IsolatedCell
with ``outcome_on_node``), so that it can be killed at its deadline; the checks then run in that
process.
"""

from __future__ import annotations

from typing import Optional

from tlbench.cell_job import CellJob, Outcome
from tlbench.errors import ConfigError
from tlbench.executors import IsolatedCell
from tlbench.node_check import (NODE_WIDE, NodeUnfit, check_available, check_data, check_dataset_options, check_files,
                                check_plugins, local_plugins_dir, this_node)
from tlbench.worker import NoSuchCell, cell_of, grid_for, run_cell, runner_for

_usable_caches: set = set()  # cache folders this process found writable


def task(job: CellJob, timeout_s: Optional[float]) -> dict:
    """The Ray task: the cell's record, why this node cannot run it, or a failure the driver
    turns into a record; each with the node that answered."""
    node = this_node()
    try:
        if timeout_s is None:
            outcome = outcome_on_node(job)
        else:  # a hard deadline needs a process of its own
            outcome = IsolatedCell(job, timeout_s, entry="tlbench.ray_worker:outcome_on_node").wait()
    except Exception as exc:  # raised before the cell could make its own record
        outcome = Outcome(failure=("exception", f"{type(exc).__name__}: {exc}"))
    if outcome.record is not None:
        return {"record": outcome.record, "node": node}
    if outcome.unfit is not None:
        return {"unfit": list(outcome.unfit), "node": node}
    return {"failure": list(outcome.failure), "node": node, "environment": _environment()}


def outcome_on_node(job: CellJob) -> Outcome:
    """The cell's record, or why this node cannot run it (it then does not start)."""
    try:
        return Outcome(record=run_on_node(job))
    except NodeUnfit as exc:
        return Outcome(unfit=(exc.scope, exc.reason))


def run_on_node(job: CellJob) -> dict:
    """Run the job's cell on this node once the node has what the driver has: its plugins, a
    usable cache, the cell's files, dataset options and data. A node that differs raises
    NodeUnfit before the cell starts."""
    from tlbench.cpus import size_threads

    size_threads(job.threads)
    plugins_dir = local_plugins_dir(job.plugins_dir)
    try:
        runner = runner_for(plugins_dir, job.cache_dir, job.progress)
    except ConfigError as exc:
        raise NodeUnfit(NODE_WIDE, f"cannot load its plugins: {exc}") from None
    _check_node(job, runner)
    cell = _cell_on_node(job, runner.registry)
    check_available(runner.registry, cell)
    check_data(runner, cell, job.expected["data"])
    return _as_driver_paths(run_cell(runner, cell, job), plugins_dir, job.plugins_dir)


def _check_node(job: CellJob, runner) -> None:
    """The driver's plugins, a usable cache, the cell's files and its dataset's options, here."""
    from tlbench.runner import check_cache_dir

    check_plugins(runner.registry, job.expected["plugins"])
    if runner.cache_dir not in _usable_caches:  # said before any cell runs on this node
        try:
            check_cache_dir(runner.cache_dir)
        except ConfigError as exc:
            raise NodeUnfit(NODE_WIDE, f"cannot run cells: {exc}") from None
        _usable_caches.add(runner.cache_dir)
    check_files(job.expected["files"])
    check_dataset_options(runner.registry, grid_for(job), job.dataset)


def _cell_on_node(job: CellJob, registry):
    """The job's cell; a node whose plugins build another grid from the same file is unfit."""
    try:
        return cell_of(job, registry)
    except ConfigError as exc:
        raise NodeUnfit(NODE_WIDE, f"cannot build the cell from the grid ({exc})") from None
    except NoSuchCell as exc:
        raise NodeUnfit(NODE_WIDE, exc.reason) from None


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


def _environment() -> Optional[dict]:
    """This worker's environment, for the record of a cell that failed before it started."""
    try:
        import torch

        from tlbench.machine import environment

        return environment(torch.device("cpu"), precision=None)
    except Exception:
        return None

