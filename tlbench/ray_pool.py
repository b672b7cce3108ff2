"""Cells as Ray tasks (``tlbench run --executor ray``). Ray is an optional extra: tlbench[ray].

Each cell is one task that asks Ray for the resources its strategy needs (a share of a GPU on a
cluster that has GPUs, CPUs otherwise), runs the cell in the worker and returns its record; the
driver writes the records, so workers need not share its disk.
"""

from __future__ import annotations

from typing import Optional

from tlbench.cpus import QUIET_THREADS_ENV
from tlbench.errors import ConfigError
from tlbench.executors import CellJob, IsolatedCell, Outcome, run_job

INSTALL_HINT = 'pip install "tlbench[ray]"'


def import_ray():
    try:
        import ray
    except ImportError:
        raise ConfigError(f"--executor ray needs Ray, which is not installed: {INSTALL_HINT}") from None
    return ray


def _task(job: CellJob, timeout_s: Optional[float]) -> dict:
    """In a Ray worker: the cell's record, or a failure the driver turns into one."""
    if timeout_s is None:
        try:
            return {"record": run_job(job)}
        except Exception as exc:  # e.g. a worker whose plugins differ from the driver's
            return {"failure": ("exception", f"{type(exc).__name__}: {exc}")}
    outcome = IsolatedCell(job, timeout_s).wait()  # a hard deadline needs a process of its own
    return {"record": outcome.record} if outcome.record is not None else {"failure": outcome.failure}


class RayPool:
    """Submits cells as Ray tasks, at most ``slots`` in flight (each holds its cell's claim)."""

    def __init__(self, registry, address: Optional[str], cpus_per_cell: float, gpu_shares: dict,
                 use_gpus: bool, max_retries: int, timeout_s: Optional[float] = None,
                 needs_gpu: bool = False):
        self.registry = registry
        ray = self.ray = import_ray()
        if not ray.is_initialized():
            try:
                # without an address: a local instance sized to this machine
                # workers on a node share its cores: their torch threads must not spin (tlbench.cpus)
                ray.init(address=address, include_dashboard=False, log_to_driver=False,
                         logging_level="ERROR", configure_logging=True,
                         runtime_env={"env_vars": dict(QUIET_THREADS_ENV)})
            except ConnectionError as exc:
                why = str(exc).rstrip(".")
                raise ConfigError(f"Cannot join the Ray cluster at {address!r}: {why}. Start one with "
                                  "`ray start --head`, or leave out --ray-address for a local instance.") from None
        resources = ray.cluster_resources()
        self.gpus = resources.get("GPU", 0.0) if use_gpus else 0.0
        if needs_gpu and not self.gpus:
            raise ConfigError("The grid asks for a CUDA device ([settings] device), but the Ray cluster "
                              "has no GPUs. Add GPU nodes, or use device = \"auto\" or \"cpu\".")
        self.cpus_per_cell = cpus_per_cell
        if cpus_per_cell > resources.get("CPU", 0.0):
            raise ConfigError(f"--cpus-per-cell {cpus_per_cell:g} is more than the Ray cluster has "
                              f"({resources.get('CPU', 0.0):g} CPUs)")
        self.gpu_shares = gpu_shares
        self.slots = max(1, int(resources.get("CPU", 1) // cpus_per_cell))
        self.max_retries = max_retries
        self.timeout_s = timeout_s
        self.cuda_requested = needs_gpu
        self._remote = ray.remote(_task)
        # a GPU task gets a worker of its own: a reused worker keeps its CUDA context on the GPU
        # it first had, ignores the next task's CUDA_VISIBLE_DEVICES and holds memory Ray cannot
        # see (max_calls is an option of the remote function, not of .options())
        self._remote_gpu = ray.remote(max_calls=1)(_task)
        self._refs: dict = {}  # ObjectRef -> handle

    def describe(self) -> str:
        resources = self.ray.cluster_resources()
        nodes = sum(1 for node in self.ray.nodes() if node.get("Alive"))
        return (f"Ray: {nodes} node(s), {resources.get('CPU', 0):g} CPUs, {resources.get('GPU', 0):g} GPUs; "
                f"up to {self.slots} cells at once")

    def resources_for(self, strategy) -> dict:
        """One GPU, or the strategy's share of one, on a cluster with GPUs; CPUs either way."""
        if self.gpus:
            share = self.gpu_shares.get(strategy.name, getattr(strategy, "gpu_share", 1.0))
            return {"num_cpus": self.cpus_per_cell, "num_gpus": min(share, self.gpus)}
        return {"num_cpus": self.cpus_per_cell, "num_gpus": 0}

    def submit(self, cell, job: CellJob) -> object:
        from dataclasses import replace

        resources = self.resources_for(self.registry.get("strategies", cell.strategy))
        threads = max(1, int(resources["num_cpus"]))
        on_gpu = bool(resources["num_gpus"])
        # a worker sees only the GPUs Ray gave it, as cuda:0..: "cuda:N" names one of the driver's
        device = "cuda" if on_gpu and self.cuda_requested else None
        remote = self._remote_gpu if on_gpu else self._remote
        ref = remote.options(**resources, max_retries=self.max_retries).remote(
            replace(job, threads=threads, device=device, resources=resources), self.timeout_s)
        handle = object()
        self._refs[ref] = handle
        return handle

    def finished(self) -> list[tuple[object, Outcome]]:
        ready, _ = self.ray.wait(list(self._refs), num_returns=1, timeout=1.0)
        if ready:  # everything else that is ready too, without waiting
            ready, _ = self.ray.wait(list(self._refs), num_returns=len(self._refs), timeout=0)
        return [(self._refs.pop(ref), self._outcome(ref)) for ref in ready]

    def _outcome(self, ref) -> Outcome:
        exceptions = self.ray.exceptions
        try:
            result = self.ray.get(ref)
        except exceptions.RayTaskError as exc:  # raised by tlbench in the worker
            return Outcome(failure=("exception", str(exc).strip().splitlines()[-1]))
        except exceptions.RayError as exc:  # the worker or its node died, after Ray's retries
            return Outcome(lost=f"{type(exc).__name__}: the worker running it was lost")
        if "record" in result:
            return Outcome(record=result["record"])
        return Outcome(failure=tuple(result["failure"]))

    def interrupt(self) -> list[tuple[object, Outcome]]:
        for ref in self._refs:
            self.ray.cancel(ref, force=True)
        outcomes = [(handle, Outcome(failure=("interrupted", "interrupted (Ctrl-C)")))
                    for handle in self._refs.values()]
        self._refs.clear()
        return outcomes

    def close(self) -> None:
        pass  # a local instance ends with the driver; a cluster keeps running
