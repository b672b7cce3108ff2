"""The Ray executor (``tlbench run --executor ray``), on the driver: cells as Ray tasks, on a
local Ray instance or a cluster. Ray is an optional extra: tlbench[ray].

Each cell is one task that asks Ray for the resources its strategy needs (a share of a GPU on a
cluster that has GPUs, CPUs otherwise); the task (tlbench.ray_worker) runs the cell in a worker
and returns its record. The driver writes the records, so workers need not share its disk. A
node unfit for some cells (tlbench.node_check) gets none of them again.
"""

from __future__ import annotations

import contextlib
import os
import sys
import tempfile
from typing import Optional

from tlbench.cell_job import CellJob, Outcome
from tlbench.cpus import QUIET_THREADS_ENV
from tlbench.errors import ConfigError, RunStopped
from tlbench.node_check import NODE_WIDE, cells_of, describe_node, scopes_of
from tlbench.ray_worker import task

INSTALL_HINT = 'pip install "tlbench[ray]"'
NODE_ID_LABEL = "ray.io/node-id"  # every node carries it: a label selector can exclude nodes by id


def import_ray():
    try:
        import ray
    except ImportError:
        raise ConfigError(f"--executor ray needs Ray, which is not installed: {INSTALL_HINT}") from None
    return ray


def _runtime_env(plugins_dir: Optional[str]) -> dict:
    """What every worker of this run gets: quiet threads (workers on a node share its cores,
    see tlbench.cpus) and the loose plugin files, which Ray uploads from here and unpacks on
    each node, so no shared filesystem is needed (node_check.local_plugins_dir finds them)."""
    env = {"env_vars": dict(QUIET_THREADS_ENV)}
    if plugins_dir:
        env["py_modules"] = [plugins_dir]
    return env


def _check_answers(address: Optional[str], timeout_s: float = 5.0) -> None:
    """A HOST:PORT where nothing listens fails now: ray.init would retry it for many minutes,
    then end the process."""
    import socket

    host, _, port = (address or "").rpartition(":")
    if not host or not port.isdigit() or "://" in address:
        return  # a local instance, 'auto', or a ray:// client address: Ray's own checks
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=timeout_s).close()  # [::1]:6379
    except OSError as exc:
        raise ConfigError(f"Cannot join the Ray cluster at {address!r}: nothing answers there "
                          f"({exc.strerror or exc}). Start one with `ray start --head`, or leave out "
                          "--ray-address for a local instance.") from None


def _cannot_join(address: Optional[str], exc: Exception, log: str) -> str:
    """Why ray.init failed: "start one" only when nothing answered there, Ray's own words when
    the cluster refused this driver (its token), else what Ray said (a local instance that
    would not start, a plugins folder Ray would not upload)."""
    if address is None:
        said = " ".join(str(exc).split()).rstrip(".")
        return f"Cannot start a local Ray instance. Ray said: {said}. Ray's log of the attempt: {log}"
    refused = _refusal(exc)
    if refused:
        return (f"Cannot join the Ray cluster at {address!r}: it refused this driver ({refused}). Give tlbench "
                "the cluster's token: RAY_AUTH_MODE=token and RAY_AUTH_TOKEN (or RAY_AUTH_TOKEN_PATH).")
    said = " ".join(str(exc).split()).rstrip(".")
    if isinstance(exc, ConnectionError):
        return (f"Cannot join the Ray cluster at {address!r}: {said}. Start one with `ray start --head`, or "
                f"leave out --ray-address for a local instance. Ray's log of the attempt: {log}")
    return f"Cannot join the Ray cluster at {address!r}. Ray said: {said}. Ray's log of the attempt: {log}"


def _refusal(exc: Optional[BaseException]) -> Optional[str]:
    """Ray's words when the cluster refused the driver's token: in the exception, or in the
    connection error it caused (Ray reports a refused token as a failure to connect)."""
    while exc is not None:
        for line in reversed(str(exc).splitlines()):
            if "AuthenticationError" in line or "InvalidAuthToken" in line or "authentication token" in line.lower():
                return " ".join(line.split("AuthenticationError:", 1)[-1].split()).rstrip(".")
        exc = exc.__cause__ or exc.__context__
    return None


@contextlib.contextmanager
def _stderr_to(path: str):
    """Ray's C++ core writes retries and warnings straight to file descriptor 2 while it
    connects: they go to a log file, out of tlbench's output."""
    sys.stderr.flush()
    try:
        log = open(path, "ab")
    except OSError:  # no log file to be had: Ray's lines stay where they were
        yield
        return
    saved = os.dup(2)
    with log:
        os.dup2(log.fileno(), 2)
    try:
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def _quiet_ray_events() -> None:
    """Ray prints cluster events on the driver's stdout (a node marked dead, a task retried),
    into tlbench's progress and tables; they stay in Ray's log files on each node. Ray has no
    public switch for it (log_to_driver covers workers' prints only): the private flag its
    debugger toggles the same way, where it exists."""
    try:
        import ray._private.worker as ray_worker

        ray_worker._worker_logs_enabled = False
    except (ImportError, AttributeError):
        pass


class RayExecutor:
    """Submits cells as Ray tasks, at most ``slots`` in flight (each holds its cell's claim)."""

    def __init__(self, registry, address: Optional[str], cpus_per_cell: float, gpu_shares: dict,
                 use_gpus: bool, max_retries: int, timeout_s: Optional[float] = None,
                 needs_gpu: bool = False, plugins_dir: Optional[str] = None):
        self.registry = registry
        ray = self.ray = import_ray()
        if not ray.is_initialized():
            _check_answers(address)
            log = os.path.join(tempfile.gettempdir(), f"tlbench-ray-init-{os.getpid()}.log")
            try:
                with _stderr_to(log):
                    # without an address: a local instance sized to this machine
                    ray.init(address=address, include_dashboard=False, log_to_driver=False,
                             logging_level="ERROR", configure_logging=True,
                             runtime_env=_runtime_env(plugins_dir))
            except (ConnectionError, RuntimeError, ValueError, ray.exceptions.RayError) as exc:
                raise ConfigError(_cannot_join(address, exc, log)) from None
            with contextlib.suppress(OSError):
                os.remove(log)
        _quiet_ray_events()
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
        self._remote = ray.remote(task)
        # a GPU task gets a worker of its own: a reused worker keeps its CUDA context on the GPU
        # it first had, ignores the next task's CUDA_VISIBLE_DEVICES and holds memory Ray cannot
        # see (max_calls is an option of the remote function, not of .options())
        self._remote_gpu = ray.remote(max_calls=1)(task)
        self._refs: dict = {}  # ObjectRef -> handle
        self._unfit: dict = {}  # node id -> {scope: reason}: the cells each node cannot run (node_check)
        self._nodes_seen: tuple = (0.0, [])  # (when, ray.nodes()): asked at most once a second
        self._decided: list = []  # (handle, outcome) of cells no node can run, for finished()

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

        handle = object()
        resources = self.resources_for(self.registry.get("strategies", cell.plugin("strategy")))
        unfit_nodes = self._unfit_for(cell)
        if unfit_nodes and self._usable_nodes(resources) <= unfit_nodes:
            self._no_node_for(handle, cell, unfit_nodes)
            return handle
        threads = max(1, int(resources["num_cpus"]))
        on_gpu = bool(resources["num_gpus"])
        # a worker sees only the GPUs Ray gave it, as cuda:0..: "cuda:N" names one of the driver's
        device = "cuda" if on_gpu and self.cuda_requested else None
        options = {**resources, "max_retries": self.max_retries}
        if unfit_nodes:  # kept off the nodes that said they cannot run it
            options["label_selector"] = {NODE_ID_LABEL: f"!in({','.join(sorted(unfit_nodes))})"}
        remote = self._remote_gpu if on_gpu else self._remote
        ref = remote.options(**options).remote(
            replace(job, threads=threads, device=device, resources=resources), self.timeout_s)
        self._refs[ref] = handle
        return handle

    def finished(self) -> list[tuple[object, Outcome]]:
        if self._decided:
            decided, self._decided = self._decided, []
            return decided
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
        node = self._named(result.get("node") or {})
        if "record" in result:
            return Outcome(record={**result["record"], "node": node})
        if "unfit" in result:
            return self._left_out(node, *result["unfit"])
        environment = result.get("environment")
        where = {"node": node, **({"environment": environment} if environment else {})}
        return Outcome(failure=tuple(result["failure"]), where=where)

    # -- nodes that cannot run some cells --------------------------------------------------------

    def _left_out(self, node: dict, scope: str, reason: str) -> Outcome:
        """Keep the cells of ``scope`` off this node from now on; this cell is handed out again
        (said once per node and scope, and not at all for a node already left out entirely)."""
        if not node.get("id"):  # a node that cannot be named cannot be avoided: the cell fails
            return Outcome(failure=("node_config", f"{describe_node(node)} {reason}"), where={"node": node})
        scopes = self._unfit.setdefault(node["id"], {})
        said = scope in scopes or NODE_WIDE in scopes
        scopes.setdefault(scope, reason)
        if said:
            return Outcome(requeue="")
        return Outcome(requeue=f"{describe_node(node)} {reason}. It gets no more {cells_of(scope)} in this run")

    def _unfit_for(self, cell) -> set:
        if not self._unfit:
            return set()
        needs = scopes_of(cell)
        return {node for node, scopes in self._unfit.items() if needs & scopes.keys()}

    def _no_node_for(self, handle, cell, unfit_nodes: set) -> None:
        """Every live node that could take the cell said it cannot run it. When they said so of
        every cell, the run stops (each cell would fail the same way): one message, and the cells
        stay pending for a run after the nodes are fixed. Otherwise this cell fails, saying why."""
        needs = scopes_of(cell)
        reasons = [f"{describe_node(self._named({'id': node}))} {reason}" for node in sorted(unfit_nodes)
                   for scope, reason in self._unfit[node].items() if scope in needs]
        if all(NODE_WIDE in self._unfit[node] for node in unfit_nodes):
            raise RunStopped("No Ray node can run this grid's cells: " + "; ".join(reasons) + ". Fix the "
                             "nodes, then run the same command again; the cells not run are still pending.")
        self._decided.append((handle, Outcome(failure=("node_config", "no Ray node can run this cell: "
                                                                       + "; ".join(reasons)))))

    def _nodes(self) -> list:
        """ray.nodes(), asked of Ray's control service at most once a second."""
        import time

        when, nodes = self._nodes_seen
        if time.monotonic() - when > 1.0:
            nodes = self.ray.nodes()
            self._nodes_seen = (time.monotonic(), nodes)
        return nodes

    def _usable_nodes(self, resources: dict) -> set:
        """The live nodes that could take a cell needing ``resources`` (its CPUs and GPU share)."""
        return {n["NodeID"] for n in self._nodes() if n.get("Alive")
                and n.get("Resources", {}).get("CPU", 0) >= resources["num_cpus"]
                and n.get("Resources", {}).get("GPU", 0) >= resources["num_gpus"]}

    def _named(self, node: dict) -> dict:
        """The node with its address (ip:port, unique where hostnames are not) and hostname."""
        info = next((n for n in self._nodes() if n["NodeID"] == node.get("id")), None)
        if info is None:
            return node
        return {"hostname": info.get("NodeManagerHostname", "?"), **node,
                "address": f"{info['NodeManagerAddress']}:{info['NodeManagerPort']}"}

    def interrupt(self) -> list[tuple[object, Outcome]]:
        for ref in self._refs:
            self.ray.cancel(ref, force=True)
        outcomes = [(handle, Outcome(failure=("interrupted", "interrupted (Ctrl-C)")))
                    for handle in self._refs.values()]
        self._refs.clear()
        decided, self._decided = self._decided, []  # failed before Ctrl-C: stored as they are
        return decided + outcomes

    def close(self) -> None:
        pass  # a local instance ends with the driver; a cluster keeps running
