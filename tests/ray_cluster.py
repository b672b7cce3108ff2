"""A real two-node Ray cluster on this one machine, for tests (a helper module, not a test file).

Each node is a `ray start ... --block` in namespaces of its own, made with `unshare` (so root is
needed): a PID namespace, so that killing the node kills every process of it at once, as a
machine that dies (the kernel SIGKILLs a PID namespace whole when its first process ends), and a
mount namespace with its own /proc. The second ("worker") node joins the head with
``--address``; in its mount namespace each path in ``hide`` is over-mounted before Ray starts: a
folder with an empty tmpfs (the folder itself still exists there, empty; nothing below it does),
a file with an empty read-only file. It is then like a machine that does not share those paths
with the driver, while everything else (this checkout, which tlbench is installed from in
editable mode, site-packages, /tmp) stays visible. To make paths not exist at all on the worker
node, keep them below one hidden folder: ``hide=[tmp_path / "driver_only"]``, results in
``tmp_path / "driver_only" / "results"``. A hidden path that does not exist yet is made (as a
folder) before the node starts, so that what the driver writes there later stays invisible.

    from ray_cluster import TwoNodeCluster           # tests/ is on sys.path under pytest

    with TwoNodeCluster(tmp_path, hide=[tmp_path / "driver_only"],
                        worker_env={"TLBENCH_CACHE_DIR": str(cache)}) as cluster:
        ray.init(address=cluster.address, ...)      # or: --ray-address cluster.address
        ...  # cluster.head_node_id, cluster.worker_node_id, cluster.kill_worker_node()

Each instance has its own GCS port (a free one), its own short ``--temp-dir``, no dashboard (the
API server's and the agents' ports are free ones too: the defaults are fixed numbers that every
node of the machine would take) and stops only its own two PID namespaces. Never ``ray stop``:
it stops every Ray instance on the machine, e.g. other xdist workers'. If the test process dies
without tearing down, the nodes die with it (parent-death signals: tied to the thread that
entered the context manager, so enter it from the thread that runs the tests). In a task,
os.getpid() is a pid inside the node's PID namespace, not one this process can signal.

The driver of this process is shut down (``ray.shutdown()``) on exit before the nodes go: a driver
whose GCS is gone blocks 60 s at exit and then aborts the whole process.

Beware: ``ray.init(address="auto")`` (and ``tlbench run --ray-address auto``) in any process of
this machine finds a running raylet by scanning the process table, so it joins this cluster while
it is up.

Token authentication is off (``RAY_AUTH_MODE=disabled``) unless ``auth_token`` is given; a driver
run as a subprocess should get ``cluster.driver_env()``.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

_BIN = Path(sys.executable).with_name("ray")
RAY = str(_BIN) if _BIN.exists() else (shutil.which("ray") or "ray")

# Ray's unix sockets live at <temp-dir>/session_<date>_<ms>_<pid>/sockets/plasma_store and such,
# and a socket path has at most 107 bytes; past this length the temp dir goes to /tmp/tlrXXXXXXXX.
_MAX_BASE_LEN = 40

# Lists the nodes as the GCS sees them, polling until `want` are alive, or `dead:<node id>` is
# dead (prints JSON, exits 0), or the deadline passes (prints the last list, exits 3). In a fresh
# interpreter: no driver, no job.
_WAIT_NODES = r"""
import json, sys, time
from ray._raylet import GcsClient
from ray.core.generated.gcs_pb2 import GcsNodeInfo
address, want, deadline = sys.argv[1], sys.argv[2], time.time() + float(sys.argv[3])
client, nodes, error = None, [], None
while True:
    try:
        client = client or GcsClient(address=address)
        infos = client.get_all_node_info(timeout=5).values()
        nodes = [{"node_id": i.node_id.hex(), "alive": i.state == GcsNodeInfo.GcsNodeState.ALIVE,
                  "is_head": bool(i.is_head_node), "address": i.node_manager_address,
                  "port": i.node_manager_port, "temp_dir": i.temp_dir} for i in infos]
        error = None
    except Exception as exc:  # the GCS is not up yet
        error = repr(exc)
    if want.startswith("dead:"):
        if any(n["node_id"] == want[5:] and not n["alive"] for n in nodes):
            print(json.dumps(nodes)); sys.exit(0)
    elif sum(n["alive"] for n in nodes) >= int(want):
        print(json.dumps(nodes)); sys.exit(0)
    if time.time() > deadline:
        print(json.dumps({"nodes": nodes, "error": error})); sys.exit(3)
    time.sleep(0.2)
"""


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("", 0))
        return s.getsockname()[1]


def _ns_pids(pid_ns: str) -> list[int]:
    """The live (not zombie) processes of PID namespace `pid_ns` ("pid:[inode]"), by host pid."""
    pids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            if os.readlink(f"/proc/{entry}/ns/pid") != pid_ns:
                continue
            if Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()[0] in ("Z", "X"):
                continue
        except OSError:
            continue
        pids.append(int(entry))
    return pids


def _die_with_parent():
    """In the child, before exec: SIGKILL when the thread that started it ends (a test process
    killed without teardown); `unshare --kill-child` then takes its namespace down."""
    import ctypes

    PR_SET_PDEATHSIG = 1
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)


class TwoNodeClusterError(RuntimeError):
    pass


class _Node:
    """One `ray start --block` in its own PID and mount namespaces."""

    def __init__(self, name, unshare: subprocess.Popen, init_pid: int, pid_ns: str):
        self.name, self.unshare, self.init_pid, self.pid_ns = name, unshare, init_pid, pid_ns

    def pids(self) -> list[int]:
        """The namespace's live processes; none once its first process is gone (the kernel kills
        the rest with it). Never a scan by the namespace's inode number alone after that: the
        kernel may give the number to a namespace of another cluster (another xdist worker's)."""
        return _ns_pids(self.pid_ns) if self.init_pid in _ns_pids(self.pid_ns) else []

    def kill(self, timeout: float = 10.0) -> None:
        """SIGKILL the namespace's first process: the kernel kills all the others at once. Only
        the processes seen in the namespace while it was alive are waited for (see ``pids``)."""
        deadline = time.monotonic() + timeout
        ours = set(self.pids())
        while True:
            pids = [pid for pid in _ns_pids(self.pid_ns) if pid in ours]  # its first process may be gone
            if not pids:
                break
            for pid in [self.init_pid] + pids:  # one signal suffices; the rest in case of a race
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            if time.monotonic() > deadline:
                raise TwoNodeClusterError(f"the {self.name} node's processes {pids} survived SIGKILL")
            time.sleep(0.02)
        try:
            self.unshare.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.unshare.kill()
            self.unshare.wait()


class TwoNodeCluster:
    """Context manager: a head node and a second node that cannot see the `hide` paths.

    After ``__enter__``: ``address`` ("ip:port" of the GCS, for ``ray.init(address=...)`` and
    ``--ray-address``), ``head_node_id``, ``worker_node_id`` (hex), ``nodes`` (both, as the GCS
    lists them), ``temp_dir`` (this cluster's folder: ``h/`` and ``w/`` are the nodes' Ray temp
    dirs, ``head.out`` and ``worker.out`` what their `ray start` printed) and ``start_seconds``;
    after exit, ``stop_seconds``.

    ``head_env`` / ``worker_env`` are added to the environment (this process's, less RAY_ADDRESS)
    of that node's `ray start`, which its raylet and so its task workers inherit. With
    ``fast_node_death`` the GCS declares a killed node dead within about 2 s instead of ~15 s.
    ``worker_labels`` are node labels of the second node (``{"zone": "b"}``). ``worker_binds``
    ({path: other folder}) show the second node another folder at a path, after the hiding (a
    node with another copy of the data at the same path).
    """

    def __init__(self, base_dir, hide=(), *, worker_env=None, head_env=None, head_cpus=1,
                 worker_cpus=1, worker_resources=None, head_resources=None, worker_labels=None,
                 auth_token=None, object_store_memory=100 * 1024 ** 2, fast_node_death=True,
                 start_timeout=90.0, keep_temp_dir=False, worker_binds=None):
        self.hide = [Path(p).absolute() for p in hide]
        self.worker_binds = {Path(k).absolute(): Path(v).absolute() for k, v in (worker_binds or {}).items()}
        self.worker_env = {k: str(v) for k, v in (worker_env or {}).items()}
        self.head_env = {k: str(v) for k, v in (head_env or {}).items()}
        self.head_cpus, self.worker_cpus = head_cpus, worker_cpus
        self.head_resources, self.worker_resources = head_resources, worker_resources
        self.worker_labels = worker_labels
        self.auth_token = auth_token
        self.object_store_memory = int(object_store_memory)
        self.fast_node_death = fast_node_death
        self.start_timeout = start_timeout
        self.keep_temp_dir = keep_temp_dir
        # a new folder each time: nothing an earlier cluster left there is read again
        base_dir = Path(base_dir).absolute()
        self._own_temp = len(str(base_dir)) + len("/rayXXXXXXXX") > _MAX_BASE_LEN
        base_dir.mkdir(parents=True, exist_ok=True)
        self.temp_dir = Path(tempfile.mkdtemp(prefix="tlr" if self._own_temp else "ray",
                                              dir="/tmp" if self._own_temp else base_dir))
        self.port = free_port()
        self.address = None
        self.head_node_id = self.worker_node_id = None
        self.nodes: list[dict] = []
        self.start_seconds = self.stop_seconds = None
        self.timings: dict = {}  # seconds until the head, then the worker node, was alive
        self._head = self._worker = None  # _Node
        self._logs = []

    # -- environment -----------------------------------------------------------------------------

    def _auth_env(self) -> dict:
        if self.auth_token is None:
            return {"RAY_AUTH_MODE": "disabled"}
        return {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": self.auth_token}

    def _base_env(self) -> dict:
        env = {k: v for k, v in os.environ.items()
               if k not in ("RAY_ADDRESS", "RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH")}
        env.update(self._auth_env())
        return env

    def driver_env(self, extra=None) -> dict:
        """The environment for a driver run as a subprocess (`tlbench run --ray-address ...`):
        this process's, less RAY_ADDRESS, with the cluster's auth mode (and token)."""
        return {**self._base_env(), **(extra or {})}

    # -- start -----------------------------------------------------------------------------------

    def __enter__(self):
        t0 = time.monotonic()
        try:
            self._start()
        except BaseException:
            self._stop()
            raise
        self.start_seconds = time.monotonic() - t0
        return self

    def __exit__(self, *exc):
        self.stop()
        return False

    def _common_args(self, cpus, resources, temp_dir):
        args = [f"--num-cpus={cpus}", f"--temp-dir={temp_dir}", "--disable-usage-stats",
                f"--object-store-memory={self.object_store_memory}",
                "--dashboard-agent-listen-port=0",  # default: 52365 for every node of the machine
                "--block", "--log-style=record", "--log-color=false"]
        if resources:
            args.append(f"--resources={json.dumps(resources)}")
        return args

    def _launch(self, name, mounts, ray_argv, env) -> _Node:
        """`ray start` as the first process of new PID and mount namespaces (with a /proc of
        their own), after `mounts` (shell commands) in the latter."""
        log = open(self.temp_dir / f"{name}.out", "wb")
        self._logs.append(log)
        script = " && ".join([*mounts, "exec " + shlex.join(ray_argv)])
        # --kill-child: the namespace goes when unshare does; --propagation private
        # (util-linux's default, said anyway): the mounts stay in there. A session of its own:
        # a Ctrl-C in the terminal of the test run reaches only pytest.
        unshare = subprocess.Popen(
            ["unshare", "--pid", "--fork", "--kill-child=SIGKILL", "--mount", "--mount-proc",
             "--propagation", "private", "--", "/bin/sh", "-c", script],
            env=env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            start_new_session=True, preexec_fn=_die_with_parent)
        own = os.readlink("/proc/self/ns/pid")
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and unshare.poll() is None:
            try:
                children = Path(f"/proc/{unshare.pid}/task/{unshare.pid}/children").read_text().split()
                if children and os.readlink(f"/proc/{children[0]}/ns/pid") != own:
                    return _Node(name, unshare, int(children[0]),
                                 os.readlink(f"/proc/{children[0]}/ns/pid"))
            except OSError:
                pass
            time.sleep(0.01)
        unshare.kill()
        unshare.wait()
        raise TwoNodeClusterError(f"`unshare` did not start the {name} node (root is needed)\n"
                                  + self.logs())

    def _start(self):
        head_tmp, worker_tmp = self.temp_dir / "h", self.temp_dir / "w"
        for hidden in self.hide:
            for own in (head_tmp, worker_tmp):
                if own == hidden or hidden in own.parents:
                    raise ValueError(f"cannot hide {hidden}: this cluster's temp dir {own} is in it")
            if not hidden.exists():
                hidden.mkdir(parents=True)
        env = {**self._base_env(), "RAY_USAGE_STATS_ENABLED": "0", "PYTHONUNBUFFERED": "1"}
        if self.fast_node_death:
            # The GCS health-checks each raylet: dead after `threshold` misses `period` apart
            # (defaults 5 x 3 s). Read by the head's GCS from its environment.
            env.update(RAY_health_check_initial_delay_ms="0", RAY_health_check_period_ms="500",
                       RAY_health_check_timeout_ms="1000", RAY_health_check_failure_threshold="3")

        # With the ray[client] extra, `ray start --head` takes port 10001 for the Ray Client
        # server, as every other head on the machine would: give it a free one.
        from ray._private.utils import get_ray_client_dependency_error

        client = [] if get_ray_client_dependency_error() else [f"--ray-client-server-port={free_port()}"]
        head_cmd = [RAY, "start", "--head", f"--port={self.port}", "--include-dashboard=false",
                    f"--dashboard-port={free_port()}",  # the API server runs without a dashboard too
                    *client, *self._common_args(self.head_cpus, self.head_resources, head_tmp)]
        t0 = time.monotonic()
        self._head = self._launch("head", [], head_cmd, {**env, **self.head_env})
        head = self._wait_nodes("1", f"127.0.0.1:{self.port}")
        self.timings["head"] = time.monotonic() - t0
        self.address = f"{head[0]['address']}:{self.port}"  # the IP that Ray chose for the node

        mounts = []
        if self.hide:
            empty = self.temp_dir / "empty-file"
            empty.write_bytes(b"")
            for hidden in self.hide:
                target = shlex.quote(str(hidden))
                if hidden.is_dir():
                    mounts.append(f"mount -t tmpfs -o size=1m,mode=0755 tlbench-hidden {target}")
                else:
                    mounts.append(f"mount --bind -o ro {shlex.quote(str(empty))} {target}")
        for target, source in self.worker_binds.items():
            mounts.append(f"mkdir -p {shlex.quote(str(target))}")
            mounts.append(f"mount --bind {shlex.quote(str(source))} {shlex.quote(str(target))}")
        worker_cmd = [RAY, "start", f"--address={self.address}",
                      *self._common_args(self.worker_cpus, self.worker_resources, worker_tmp)]
        if self.worker_labels:
            worker_cmd.append("--labels=" + ",".join(f"{k}={v}" for k, v in self.worker_labels.items()))
        self._worker = self._launch("worker", mounts, worker_cmd, {**env, **self.worker_env})
        alive = [n for n in self._wait_nodes("2", self.address) if n["alive"]]
        self.timings["worker"] = time.monotonic() - t0 - self.timings["head"]
        self.nodes = alive
        self.head_node_id = next(n["node_id"] for n in alive if n["is_head"])
        self.worker_node_id = next(n["node_id"] for n in alive if not n["is_head"])

    def _wait_nodes(self, want: str, address: str, timeout=None) -> list[dict]:
        timeout = self.start_timeout if timeout is None else timeout
        proc = subprocess.Popen([sys.executable, "-c", _WAIT_NODES, address, want, str(timeout)],
                                env=self._base_env(), stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + timeout + 30
        while proc.poll() is None:
            for node in (self._head, self._worker):
                if node is None or (node is self._worker and want.startswith("dead:")):
                    continue
                if node.unshare.poll() is not None:
                    proc.kill()
                    proc.communicate()
                    raise TwoNodeClusterError(f"the {node.name} node's `ray start` exited with "
                                              f"{node.unshare.returncode}\n" + self.logs())
            if time.monotonic() > deadline:
                proc.kill()
                break
            time.sleep(0.1)
        out, err = proc.communicate()
        if proc.returncode != 0:
            what = "the worker node dead" if want.startswith("dead:") else f"{want} alive node(s)"
            raise TwoNodeClusterError(f"{what} not seen within {timeout:g} s: {out.strip()} "
                                      f"{err.strip()[-2000:]}\n" + self.logs())
        return json.loads(out)

    # -- inspection ------------------------------------------------------------------------------

    def logs(self, tail: int = 4000) -> str:
        """What `ray start` printed on both nodes, and the tails of the nodes' main Ray logs."""
        parts = []
        for f in sorted(self.temp_dir.glob("*.out")):
            parts.append(f"==== {f.name}\n{f.read_text(errors='replace')[-tail:]}")
        for node in ("h", "w"):
            logs = self.temp_dir / node / "session_latest" / "logs"
            for name in ("gcs_server.out", "gcs_server.err", "raylet.out", "raylet.err",
                         "runtime_env_agent.log"):
                f = logs / name
                if f.exists() and f.stat().st_size:
                    parts.append(f"==== {node}/{name}\n{f.read_text(errors='replace')[-tail:]}")
        return "\n".join(parts)

    def head_pids(self) -> list[int]:
        return self._head.pids() if self._head else []

    def worker_pids(self) -> list[int]:
        """The second node's live processes (host pids): `ray start`, raylet, agents, task
        workers. A task's os.getpid() is its pid inside the node's PID namespace instead."""
        return self._worker.pids() if self._worker else []

    # -- stopping --------------------------------------------------------------------------------

    def kill_worker_node(self, wait_dead: bool = True, timeout: float = 30.0):
        """Kill every process of the second node at once, as a machine that dies: nothing on it
        says goodbye to the GCS. With ``wait_dead``, returns once the GCS has marked it dead
        (about 1.5 s with fast_node_death)."""
        self._worker.kill()
        if wait_dead:
            self._wait_nodes(f"dead:{self.worker_node_id}", self.address, timeout=timeout)

    def shutdown_driver(self):
        """``ray.shutdown()`` if this process is a driver of this cluster. A driver whose GCS is
        gone stays blocked for 60 s at exit, then aborts the process ("Failed to connect to GCS
        within 60 seconds ... The program will terminate"): a pytest worker would die with it."""
        ray = sys.modules.get("ray")
        if ray is None or not ray.is_initialized() or self.address is None:
            return
        try:
            connected_here = ray.get_runtime_context().gcs_address == self.address
        except Exception:
            connected_here = True
        if connected_here:
            ray.shutdown()

    def _stop(self):
        # SIGKILL straight away: `ray start`'s graceful SIGTERM drains for seconds, and nothing
        # that matters is left behind (object stores die with their raylets; the temp dir is ours)
        try:
            for node in (self._worker, self._head):
                if node is not None:
                    node.kill()
        finally:
            for log in self._logs:
                log.close()
            self._logs = []

    def stop(self):
        t0 = time.monotonic()
        self.shutdown_driver()
        self._stop()
        self.stop_seconds = time.monotonic() - t0
        if self._own_temp and not self.keep_temp_dir:
            shutil.rmtree(self.temp_dir, ignore_errors=True)
