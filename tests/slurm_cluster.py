"""A real one-node Slurm cluster on this machine, for tests (a helper module, not a test file).

munged, slurmctld and slurmd (Debian's ``munge`` and ``slurm-wlm``), each in the foreground
and each with everything of its own in a temporary folder: munged its key, socket, pid and seed
files; Slurm a ``slurm.conf`` with free ports, its state and spool folders, logs and pid files.
Root is needed (slurmd starts jobs as their user). The Slurm commands find this cluster through
``SLURM_CONF``: give every process that calls sbatch, squeue or scancel (a driver subprocess,
submitit) ``cluster.env()``.

    from slurm_cluster import SlurmCluster, slurm_missing    # tests/ is on sys.path under pytest

    with SlurmCluster(tmp_path) as cluster:
        subprocess.run(["sbatch", ...], env=cluster.env())
        ...  # cluster.squeue(), cluster.node, cluster.kill_slurmd()

Only this instance's own daemons are stopped, by the PIDs it started (never ``pkill slurmd``,
never the system's munged). If the test process dies without tearing down, the daemons die with
it (parent-death signals, tied to the thread that entered the context manager).
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

DAEMONS = ("munged", "slurmctld", "slurmd")
COMMANDS = ("sbatch", "squeue", "scancel", "sinfo", "scontrol")


def slurm_missing() -> str | None:
    """Why no test cluster can start here, or None."""
    if os.geteuid() != 0:
        return "a test Slurm cluster needs root (slurmd starts jobs as their user)"
    lacking = [name for name in (*DAEMONS, *COMMANDS)
               if not shutil.which(name) and not os.path.exists(f"/usr/sbin/{name}")]
    if lacking:
        return f"{', '.join(lacking)} not installed (apt-get install slurm-wlm munge)"
    return None


def _which(name: str) -> str:
    return shutil.which(name) or f"/usr/sbin/{name}"


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("", 0))
        return s.getsockname()[1]


def _die_with_parent():
    """In the child, before exec: SIGKILL when the thread that started it ends."""
    import ctypes

    PR_SET_PDEATHSIG = 1
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)


class SlurmClusterError(RuntimeError):
    pass


def _memory_mb() -> int:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemTotal:"):
            return int(line.split()[1]) // 1024
    return 1024


class SlurmCluster:
    """Context manager: munged + slurmctld + slurmd, one node, one partition (``debug``).

    After ``__enter__``: ``node`` (the node's name, this hostname), ``partition``, ``conf``
    (the slurm.conf path), ``temp_dir`` and ``start_seconds``; after exit, ``stop_seconds``.
    ``cpus`` and ``memory_mb`` default to this machine's.
    """

    def __init__(self, base_dir=None, *, cpus=None, memory_mb=None, start_timeout=30.0):
        # a short folder: munge's socket path and Slurm's must fit in a sockaddr_un (108 bytes)
        self.temp_dir = Path(tempfile.mkdtemp(prefix="tls", dir="/tmp"))
        self.node = socket.gethostname().split(".")[0]
        self.partition = "debug"
        self.cpus = cpus or os.cpu_count() or 1
        # slurmd refuses a node configured with more memory than it finds: leave some out
        self.memory_mb = memory_mb or max(256, _memory_mb() - 512)
        self.start_timeout = start_timeout
        self.conf = self.temp_dir / "slurm.conf"
        self.munge_socket = self.temp_dir / "munge.sock"
        self.start_seconds = self.stop_seconds = None
        self._procs: dict[str, subprocess.Popen] = {}
        self._logs = []

    # -- environment -----------------------------------------------------------------------------

    def env(self, extra=None) -> dict:
        """This process's environment with SLURM_CONF pointing at this cluster, less anything
        that would make a Slurm command think it runs inside another job."""
        env = {k: v for k, v in os.environ.items() if not k.startswith(("SLURM_", "SBATCH_", "SALLOC_"))}
        env["SLURM_CONF"] = str(self.conf)
        env.update(extra or {})
        return env

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

    def _write_conf(self) -> None:
        t = self.temp_dir
        for folder in ("state", "spool"):
            (t / folder).mkdir()
        self.conf.write_text("\n".join([
            "ClusterName=tlbenchtest",
            # by address too: this hostname need not resolve (a container's often does not)
            f"SlurmctldHost={self.node}(127.0.0.1)",
            f"SlurmctldPort={free_port()}",
            f"SlurmdPort={free_port()}",
            "SlurmUser=root",
            "SlurmdUser=root",
            "AuthType=auth/munge",
            "CredType=cred/munge",
            f"AuthInfo=socket={self.munge_socket}",
            f"StateSaveLocation={t / 'state'}",
            f"SlurmdSpoolDir={t / 'spool'}",
            f"SlurmctldPidFile={t / 'slurmctld.pid'}",
            f"SlurmdPidFile={t / 'slurmd.pid'}",
            f"SlurmctldLogFile={t / 'slurmctld.log'}",
            f"SlurmdLogFile={t / 'slurmd.log'}",
            "SlurmctldDebug=info",
            "SlurmdDebug=info",
            # no cgroups here: processes are tracked by parent pid, and tasks are not bound
            "ProctrackType=proctrack/linuxproc",
            "TaskPlugin=task/none",
            "JobAcctGatherType=jobacct_gather/none",
            "AccountingStorageType=accounting_storage/none",
            "JobCompType=jobcomp/none",
            "SelectType=select/cons_tres",
            "SelectTypeParameters=CR_CPU_Memory",
            # without it a job asks for the whole node's memory, and jobs run one at a time
            "DefMemPerCPU=1024",
            "SchedulerType=sched/backfill",
            "MpiDefault=none",
            "ReturnToService=2",
            # faults show fast: a silent slurmd is DOWN after 10 s, a job's processes get 2 s
            # between SIGTERM and SIGKILL, a time limit is enforced within a few seconds
            "SlurmdTimeout=10",
            "SlurmctldTimeout=10",
            "InactiveLimit=0",
            "KillWait=2",
            # slurmctld looks for jobs past their time limit every 30 s (a constant of Slurm's):
            # tests shorten a job's limit with `scontrol update JobId=J EndTime=now+N` instead
            "OverTimeLimit=0",
            "MinJobAge=600",  # finished jobs stay in scontrol's answers (no accounting here)
            "MessageTimeout=5",
            "SchedulerParameters=sched_interval=1,bf_interval=1",
            "HealthCheckInterval=0",
            # a node may say it has more CPUs than it does (tests whose cells mostly wait)
            "SlurmdParameters=config_overrides",
            f"NodeName={self.node} NodeAddr=127.0.0.1 CPUs={self.cpus} RealMemory={self.memory_mb} State=UNKNOWN",
            f"PartitionName={self.partition} Nodes={self.node} Default=YES MaxTime=INFINITE State=UP",
            "",
        ]))

    def _launch(self, name: str, argv: list[str]) -> None:
        log = open(self.temp_dir / f"{name}.out", "wb")
        self._logs.append(log)
        # a session of its own: a Ctrl-C in the test run's terminal reaches pytest only
        self._procs[name] = subprocess.Popen(argv, env=self.env(), stdout=log, stderr=subprocess.STDOUT,
                                             stdin=subprocess.DEVNULL, start_new_session=True,
                                             preexec_fn=_die_with_parent)

    def _start(self) -> None:
        t = self.temp_dir
        key = t / "munge.key"
        key.write_bytes(os.urandom(1024))
        key.chmod(0o400)
        self._launch("munged", [_which("munged"), "-F", "--force", f"--key-file={key}",
                                f"--socket={self.munge_socket}", f"--pid-file={t / 'munged.pid'}",
                                f"--log-file={t / 'munged.log'}", f"--seed-file={t / 'munged.seed'}"])
        self._wait(lambda: self.munge_socket.exists(), "munged's socket")
        self._write_conf()
        self._launch("slurmctld", [_which("slurmctld"), "-D", "-i", "-f", str(self.conf)])
        self._wait(lambda: self._run(["scontrol", "ping"]).stdout.count("UP") > 0, "slurmctld to answer")
        self._launch("slurmd", [_which("slurmd"), "-D", "-f", str(self.conf), "-N", self.node])
        self._wait(lambda: self.node_state() == "idle", "the node to be idle")

    def _run(self, argv, **kwargs) -> subprocess.CompletedProcess:
        return subprocess.run(argv, env=self.env(), capture_output=True, text=True, timeout=20, **kwargs)

    def _wait(self, ready, what: str, timeout=None) -> None:
        deadline = time.monotonic() + (timeout or self.start_timeout)
        while True:
            for name, proc in self._procs.items():
                if proc.poll() is not None:
                    raise SlurmClusterError(f"{name} exited with {proc.returncode} while waiting for "
                                            f"{what}\n" + self.logs())
            try:
                if ready():
                    return
            except (OSError, subprocess.TimeoutExpired):
                pass
            if time.monotonic() > deadline:
                raise SlurmClusterError(f"no {what} within {timeout or self.start_timeout:g} s\n" + self.logs())
            time.sleep(0.1)

    # -- inspection ------------------------------------------------------------------------------

    def node_state(self) -> str:
        """The node's state as sinfo says it (idle, mixed, alloc, down*, ...)."""
        return self._run(["sinfo", "-h", "-N", "-o", "%t", "-n", self.node]).stdout.strip()

    def squeue(self) -> list[dict]:
        """The jobs (array tasks one a line) Slurm has queued or running now."""
        out = self._run(["squeue", "-h", "-r", "-o", "%i|%T|%N"]).stdout
        return [dict(zip(("job", "state", "node"), line.split("|"))) for line in out.splitlines() if line]

    def job_states(self, job_id: str) -> dict:
        """{array task id: JobState} of a job, finished tasks included (MinJobAge keeps them)."""
        out = self._run(["scontrol", "-o", "show", "job", str(job_id)]).stdout
        states = {}
        for line in out.splitlines():
            fields = dict(part.split("=", 1) for part in line.split() if "=" in part)
            states[fields.get("ArrayTaskId", "")] = fields.get("JobState")
        return states

    def logs(self, tail: int = 3000) -> str:
        parts = []
        for f in sorted(self.temp_dir.glob("*.log")) + sorted(self.temp_dir.glob("*.out")):
            text = f.read_text(errors="replace")
            if text:
                parts.append(f"==== {f.name}\n{text[-tail:]}")
        return "\n".join(parts)

    def pids(self) -> dict:
        return {name: proc.pid for name, proc in self._procs.items() if proc.poll() is None}

    # -- stopping --------------------------------------------------------------------------------

    def _cancel_jobs(self, timeout: float = 15.0) -> None:
        """scancel this cluster's jobs (SLURM_CONF names it alone), until its queue is empty."""
        if "slurmctld" not in self.pids():
            return
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            jobs = sorted({job["job"].split("_")[0] for job in self.squeue()})
            if not jobs:
                return
            self._run(["scancel", *jobs])
            time.sleep(0.2)

    def _job_processes(self) -> list[int]:
        """This cluster's job processes (slurmstepd, batch shells, tasks): their environment
        names this cluster's slurm.conf. slurmstepd detaches from slurmd, so it and its job
        outlive the daemons unless stopped."""
        ours, me = f"SLURM_CONF={self.conf}".encode(), os.getpid()
        pids = []
        for entry in os.listdir("/proc"):
            if not entry.isdigit() or int(entry) == me or int(entry) in self.pids().values():
                continue
            try:
                environ = Path(f"/proc/{entry}/environ").read_bytes().split(b"\0")
            except OSError:
                continue
            if ours in environ and any(v.startswith(b"SLURM_JOB_ID=") for v in environ) or \
                    (ours in environ and Path(f"/proc/{entry}/comm").read_text().strip() == "slurmstepd"):
                pids.append(int(entry))
        return pids

    def _stop(self) -> None:
        self._cancel_jobs()
        # slurmd first (its jobs' steps end with it), then slurmctld, then munged; each by the
        # pid this instance started, SIGTERM and then SIGKILL after a moment
        for name in ("slurmd", "slurmctld", "munged"):
            proc = self._procs.get(name)
            if proc is None or proc.poll() is not None:
                continue
            proc.terminate()
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        for pid in self._job_processes():  # what scancel could not reach (a job of a dead slurmd)
            try:
                os.kill(pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
        for log in self._logs:
            log.close()
        self._logs = []

    def stop(self) -> None:
        t0 = time.monotonic()
        self._stop()
        self.stop_seconds = time.monotonic() - t0
        shutil.rmtree(self.temp_dir, ignore_errors=True)
