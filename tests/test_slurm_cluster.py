"""`tlbench run --executor slurm` on a real one-node Slurm cluster (tests/slurm_cluster.py):
real slurmctld, slurmd and munged, real sbatch/scontrol/scancel through submitit.

Cheap by design: one cluster for the module (it starts in under a second), tiny cells (16 px,
no pretrained weights, 5 digits a class), two cells a task so that a task imports torch once,
and drivers in this process (``here``; what happens to the run meanwhile, a thread does) but
for the one that runs beside the other tests. The time-limit test waits for slurmctld's own
check of time limits (every 30 s, a constant of Slurm's), so its runs (one with a driver, one
detached) start in the background first and are looked at last."""

import contextlib
import io
import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

from slurm_cluster import SlurmCluster, slurm_missing
from tlbench.results import iter_records


def _why_skip():
    why = slurm_missing()
    if why is None:
        try:
            import submitit  # noqa: F401
        except ImportError:
            why = 'submitit is not installed (pip install "tlbench[slurm]")'
    return why


pytestmark = pytest.mark.skipif(_why_skip() is not None, reason=str(_why_skip()))

SETTINGS = """
[settings]
image_size = 16
epochs = 1
batch_size = 32
pretrained = false
threads = 1
device = "cpu"
train_per_class = 5
"""


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    base = tmp_path_factory.mktemp("slurm")
    plugins = base / "plugins"
    plugins.mkdir()
    (plugins / "held.py").write_bytes((Path(__file__).parent / "plugins" / "held.py").read_bytes())
    return {"base": base, "plugins": plugins, "results": base / "results"}


@pytest.fixture(scope="module")
def cluster():
    # more CPUs than the machine has: held cells only wait, and the time-limited one must not
    # keep the other tests' tasks waiting for a CPU
    with SlurmCluster(cpus=8) as running:
        yield running


def grid(site, name, strategies, seeds=(0,)) -> Path:
    path = site["base"] / f"{name}.toml"
    path.write_text(textwrap.dedent(f"""
        name = "{name}"
        backbones = ["test_efficientnet"]
        strategies = {json.dumps(list(strategies))}
        datasets = ["digits"]
        seeds = {json.dumps(list(seeds))}
    """) + SETTINGS)
    return path


CLI = [sys.executable, "-m", "tlbench.cli"]


def run_args(site, path, *more) -> list:
    return ["run", "--grid", str(path), "--results", str(site["results"]), "--plugins-dir", str(site["plugins"]),
            "--executor", "slurm", "--cells-per-task", "2", "--slurm-time", "5", *map(str, more)]


@pytest.fixture
def here(cluster, monkeypatch, capsys):
    """`tlbench ARGV` in this process, as (exit code, stdout, stderr): no start-up of Python,
    torch and plugins (seconds a run). Slurm's commands and the tasks (sbatch passes them this
    environment) find the test cluster through SLURM_CONF."""
    monkeypatch.setenv("SLURM_CONF", str(cluster.conf))

    def run(argv, hold=None):
        from tlbench.cli import main

        if hold:
            monkeypatch.setenv("TLBENCH_TEST_HOLD", str(hold))
        capsys.readouterr()
        code = main([str(a) for a in argv])
        out = capsys.readouterr()
        return subprocess.CompletedProcess(argv, code, out.out, out.err)

    return run


def started(site, name, count=1, timeout=60.0) -> list:
    """The `.started` notes of grid ``name``'s cells (tlbench.slurm_worker), once ``count`` exist."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        notes = sorted((site["results"] / name / "slurm").glob("*/*/outbox/*.started"))
        if len(notes) >= count:
            return [json.loads(n.read_text()) | {"run_id": n.stem} for n in notes]
        time.sleep(0.1)
    raise AssertionError(f"no cell of {name} started within {timeout:g} s")


def task_id(note: dict) -> str:
    """``JOB_TASK`` of an array's task; a job of one task is submitted as a plain job."""
    return f"{note['job_id']}_{note['array_task_id']}" if note["array_task_id"] else note["job_id"]


class Meanwhile(threading.Thread):
    """``action()`` in a thread while this one runs a driver (``here``). Should it fail, the
    ``hold`` file goes, so that the held cells finish and the driver returns; ``result()`` then
    raises its error."""

    def __init__(self, hold: Path, action):
        super().__init__(daemon=True)
        self.hold, self.action, self.error = hold, action, None
        self.start()

    def run(self):
        try:
            self.action()
        except BaseException as exc:
            self.error = exc
            self.hold.unlink(missing_ok=True)

    def result(self):
        self.join(timeout=60)
        if self.error is not None:
            raise self.error


def records(site, name) -> list:
    return sorted(iter_records(site["results"], name), key=lambda r: (r["strategy"], r["seed"]))


@pytest.fixture(scope="module")
def time_limited(cluster, site):
    """Two runs, each of one cell held until its task's time limit: one waited for by its driver,
    one detached. Started now, looked at last. Each limit is brought forward to now once its cell
    runs (`scontrol update ... EndTime`: a limit under a minute cannot be asked of sbatch), both
    before slurmctld's next check, which ends both tasks."""
    hold = site["base"] / "hold-limited"
    hold.touch()
    env = cluster.env({"TLBENCH_TEST_HOLD": str(hold)})
    driver = subprocess.Popen([*CLI, *run_args(site, grid(site, "limited", ["held"]))], env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    said = {}
    # submitted in this process (no start-up of Python and the plugins beside the driver's)
    with pytest.MonkeyPatch.context() as here_env, contextlib.redirect_stdout(io.StringIO()) as out:
        here_env.setenv("SLURM_CONF", str(cluster.conf))
        here_env.setenv("TLBENCH_TEST_HOLD", str(hold))
        from tlbench.cli import main

        assert main([str(a) for a in run_args(site, grid(site, "limited-detached", ["held"]), "--detach", "-q")]) == 0
    said["job"] = out.getvalue().strip()

    def shorten():
        said["update"] = [subprocess.run(["scontrol", "update", f"JobId={task_id(note)}", "EndTime=now"],
                                         env=cluster.env(), capture_output=True, text=True)
                          for note in (started(site, "limited")[0], started(site, "limited-detached")[0])]

    thread = threading.Thread(target=shorten, daemon=True)
    thread.start()
    yield driver, thread, said
    if driver.poll() is None:
        driver.kill()
        driver.communicate()


def gone(cluster, job, timeout=60.0) -> None:
    """Wait until Slurm's queue has no task of ``job`` left."""
    deadline = time.monotonic() + timeout
    while any(j["job"].split("_")[0] == job for j in cluster.squeue()) and time.monotonic() < deadline:
        time.sleep(0.2)


def test_a_grid_on_slurm_gives_the_local_executors_results_and_names_job_task_and_node(cluster, site, here,
                                                                                      time_limited):
    path = grid(site, "same", ["linear_probe", "held"], seeds=(0, 1))  # held: not held, trains nothing
    done = here(run_args(site, path))
    assert done.returncode == 0, done.stderr + cluster.logs()
    assert "Submitted Slurm job array" in done.stderr
    on_slurm = records(site, "same")
    local = site["base"] / "local"
    on_here = here(["run", "--grid", path, "--results", local, "--plugins-dir", site["plugins"], "-q"])
    assert on_here.returncode == 0, on_here.stderr
    on_local = sorted(iter_records(local, "same"), key=lambda r: (r["strategy"], r["seed"]))
    assert len(on_slurm) == 4
    assert [(r["run_id"], r["top1"]) for r in on_slurm] == [(r["run_id"], r["top1"]) for r in on_local]
    # two cells a task: two tasks of one array, both on the cluster's one node
    assert {r["slurm"]["job_id"] for r in on_slurm} == {on_slurm[0]["slurm"]["job_id"]}
    assert sorted(r["slurm"]["array_task_id"] for r in on_slurm) == ["0", "0", "1", "1"]
    assert {r["slurm"]["node"] for r in on_slurm} == {cluster.node}
    assert {r["node"]["hostname"] for r in on_slurm} == {cluster.node}


def test_scancel_of_a_running_task_leaves_its_cell_pending_with_or_without_a_driver(cluster, site, here):
    path = grid(site, "cancelled", ["held"])
    hold = site["base"] / "hold-cancelled"
    hold.touch()
    # a detached task sees the SIGTERM alone, and asks Slurm why it ends
    detached = here(run_args(site, grid(site, "cancelled-detached", ["held"]), "--detach"), hold=hold)
    assert detached.returncode == 0, detached.stderr
    notes = []

    def cancel():
        notes.extend([started(site, "cancelled")[0], started(site, "cancelled-detached")[0]])
        subprocess.run(["scancel", *map(task_id, notes)], env=cluster.env(), check=True)

    scancel = Meanwhile(hold, cancel)
    driver = here(run_args(site, path), hold=hold)
    scancel.result()
    assert driver.returncode == 1, driver.stderr
    assert "ended CANCELLED before the cell finished" in driver.stderr
    assert records(site, "cancelled") == []  # pending: never recorded as a result
    gone(cluster, notes[1]["job_id"])
    assert records(site, "cancelled-detached") == []
    [log] = (site["results"] / "cancelled-detached" / "slurm").glob("*/*/*/*.err")
    assert "left pending: Slurm ends this task (JobState=COMPLETING Reason=None)" in log.read_text(), log.read_text()
    hold.unlink()
    rerun = here(run_args(site, path))
    assert rerun.returncode == 0, rerun.stderr
    assert [r["status"] for r in records(site, "cancelled")] == ["ok"]


def test_ctrl_c_cancels_the_array_exits_130_and_leaves_no_job_in_the_queue(cluster, site, here):
    path = grid(site, "stopped", ["held"], seeds=(0, 1))
    hold = site["base"] / "hold-stopped"
    hold.touch()
    notes = []

    def ctrl_c():  # at this process, as a terminal's Ctrl-C
        notes.extend(started(site, "stopped"))
        os.kill(os.getpid(), signal.SIGINT)

    # Python's Ctrl-C, even where SIGINT is ignored (a test run in the background, nohup)
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    pressed = Meanwhile(hold, ctrl_c)
    try:
        driver = here(run_args(site, path), hold=hold)
    finally:
        signal.signal(signal.SIGINT, previous)
    pressed.result()
    job = notes[0]["job_id"]
    assert driver.returncode == 130, driver.stderr
    assert f"Cancelled Slurm job array {job}" in driver.stderr
    assert [j for j in cluster.squeue() if j["job"].split("_")[0] == job] == []
    assert {r["status"] for r in records(site, "stopped")} == {"interrupted"}  # pending for the next run


def test_detach_returns_the_job_id_and_runs_shows_queued_running_then_done_cells(cluster, site, here):
    path = grid(site, "detached", ["held"], seeds=(0, 1, 2))
    hold = site["base"] / "hold-detached"
    hold.touch()
    # two tasks, one at a time: the first holds its first cell, then runs its second; the second
    # task waits in Slurm's queue meanwhile
    submitted = here(run_args(site, path, "--detach", "--slurm-array-parallelism", "1"), hold=hold)
    assert submitted.returncode == 0, submitted.stderr
    job = submitted.stdout.strip()
    assert job.isdigit(), submitted.stdout
    started(site, "detached")
    runs = ["runs", "--results", site["results"], "--grid-name", "detached"]
    listing = here(runs)
    assert "2 queued, 1 running" in listing.stdout, listing.stdout + listing.stderr
    assert f"Slurm job {job} task 0 on {cluster.node}" in listing.stdout  # the claim's holder
    assert f"Slurm task {job}_0 on {cluster.node} runs the cells before it" in listing.stdout
    assert f"Slurm task {job}_1 pending (JobArrayTaskLimit)" in listing.stdout
    # the same --detach again: every cell is running or queued, so nothing is submitted twice
    again = here(run_args(site, path, "--detach"))
    assert again.returncode == 0 and again.stdout == "", again.stdout + again.stderr
    assert "2 cell(s) already wait in Slurm's queue" in again.stderr and "Nothing to submit" in again.stderr
    # a task cancelled before it started: its cell is no longer queued, and has no record
    subprocess.run(["scancel", f"{job}_1"], env=cluster.env(), check=True)
    listing = here(runs)
    assert "1 queued, 1 running" in listing.stdout and f"{job}_1" not in listing.stdout, listing.stdout
    hold.unlink()
    gone(cluster, job)
    assert [(r["seed"], r["status"]) for r in records(site, "detached")] == [(0, "ok"), (1, "ok")]
    assert {r["slurm"]["job_id"] for r in records(site, "detached")} == {job}
    listing = here(runs)
    assert listing.stdout.splitlines()[-1] == "2 record(s): 2 ok", listing.stdout
    # after the array: nothing left of what it ran, nothing submitted
    again = here(run_args(site, path, "--only", "seed=0,seed=1"))
    assert again.returncode == 0 and "Submitted" not in again.stderr, again.stderr


def test_a_task_past_its_time_limit_records_its_running_cell_as_timeout_with_or_without_a_driver(
        cluster, site, here, time_limited):
    driver, thread, said = time_limited
    thread.join(timeout=60)
    assert [update.returncode for update in said["update"]] == [0, 0], [u.stderr for u in said["update"]]
    _, err = driver.communicate(timeout=90)
    assert driver.returncode == 1, err
    gone(cluster, said["job"])  # the detached task stored its record itself, under its claim
    for name, job in (("limited", None), ("limited-detached", said["job"])):
        [record] = records(site, name)
        assert (record["status"], record["error_kind"]) == ("failed", "timeout"), record
        assert "reached its time limit (--slurm-time 5) while running the cell" in record["error"]
        assert record["slurm"] == {"job_id": job or record["slurm"]["job_id"], "array_task_id": "", "node": cluster.node}
    listing = here(["runs", "--results", site["results"], "--grid-name", "limited-detached"])
    assert listing.stdout.splitlines()[-1] == "1 record(s): 1 failed", listing.stdout


def test_an_unknown_partition_is_one_line_naming_the_clusters_partitions(cluster, site, here):
    path = grid(site, "nowhere", ["held"])
    refused = here(run_args(site, path, "--slurm-partition", "debgu"))
    assert refused.returncode == 2, refused.stderr
    assert refused.stderr.splitlines() == ["error: Unknown Slurm partition 'debgu' (--slurm-partition). Did you mean: "
                                           "debug? Available: debug."]
    assert cluster.squeue() == []


def test_the_grids_executor_slurm_table_reaches_slurm(cluster, site, here):
    path = grid(site, "tabled", ["held"])
    path.write_text(path.read_text() + '\n[executor.slurm]\npartition = "debgu"\ncells_per_task = 2\n')
    refused = here(run_args(site, path))
    assert refused.returncode == 2 and "Unknown Slurm partition 'debgu'" in refused.stderr, refused.stderr


def test_a_failed_node_leaves_its_cell_pending_for_the_next_run(cluster, site, time_limited, here):
    # after the time-limited runs (this file's last but one test): a node marked down ends every
    # job on it, and this cluster has one node
    time_limited[0].wait(timeout=90)
    time_limited[1].join(timeout=60)
    gone(cluster, time_limited[2]["job"])
    path = grid(site, "nodefail", ["held"])
    hold = site["base"] / "hold-nodefail"
    hold.touch()
    down = ["scontrol", "update", f"NodeName={cluster.node}"]

    def node_fails():
        started(site, "nodefail")
        subprocess.run([*down, "State=DOWN", "Reason=tlbench-test"], env=cluster.env(), check=True)

    failure = Meanwhile(hold, node_fails)
    try:  # without requeueing: Slurm would requeue the task (JobRequeue), which then waits for a node
        driver = here(run_args(site, path, "--slurm-sbatch", "no-requeue"), hold=hold)
        failure.result()
    finally:  # the node's slurmd still answers: ReturnToService=2 may have brought it back already
        subprocess.run([*down, "State=RESUME"], env=cluster.env(), capture_output=True)
        deadline = time.monotonic() + 30
        while cluster.node_state() != "idle" and time.monotonic() < deadline:
            time.sleep(0.2)
    assert driver.returncode == 1, driver.stderr
    assert "ended NODE_FAIL before the cell finished" in driver.stderr
    assert records(site, "nodefail") == []
