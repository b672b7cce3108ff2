"""--executor subprocess and --executor ray: same records as the local runner, resume, failure
isolation, hard time limits, and a worker killed mid-cell (real Ray, a local instance).

Every cell of an isolated executor starts a Python process that imports torch and timm (seconds
each), so these tests run as few cells as their claims need."""

import contextlib
import io
import json
import os
import sys
from datetime import datetime

import pytest

from tlbench.results import iter_records, records_dir

TIMEOUT_S = 2  # --cell-timeout for the `hangs` strategy, which never ends


@pytest.fixture(scope="module")
def grid_text(tiny_settings):
    """(strategies, seeds) -> the text of a grid of those cells on faces, on the CPU (the Ray
    instance below declares a GPU this machine may not have: a cell that asked for it would be
    given CUDA). Not pinned to one thread: these cells size their threads to their process's CPUs."""
    settings = tiny_settings.replace("threads = 1\n", "")

    def text(strategies, seeds=(0,)):
        return f"""
            name = "ex"
            backbones = ["test_efficientnet"]
            strategies = {json.dumps(list(strategies))}
            datasets = ["faces"]
            seeds = {list(seeds)}
            {settings}
            device = "cpu"
        """

    return text


@pytest.fixture
def grid_file(write_grid, grid_text):
    """*strategies -> a grid file of one cell per strategy (and seed) on faces."""

    def write(*strategies, seeds=(0,)):
        return write_grid(grid_text(strategies, seeds))

    return write


@pytest.fixture(scope="module")
def local_records(tmp_path_factory, grid_text):
    """{strategy: record} of linear_probe and full_finetune run by the local executor, once for
    the module: what every other executor must reproduce."""
    from tlbench.cli import main

    folder = tmp_path_factory.mktemp("local")
    grid = folder / "grid.toml"
    grid.write_text(grid_text(["linear_probe", "full_finetune"]), encoding="utf-8")
    err = io.StringIO()
    with (pytest.MonkeyPatch.context() as env, contextlib.redirect_stderr(err),
          contextlib.redirect_stdout(io.StringIO())):
        env.setenv("TLBENCH_CACHE_DIR", str(folder / "cache"))
        code = main(["run", "--grid", str(grid), "--results", str(folder / "results"), "-q"])
    assert code == 0, err.getvalue()
    return by_strategy(folder / "results")


def by_strategy(results):
    return {r["strategy"]: r for r in iter_records(results, "ex")}


def no_claims_left(results):
    from tlbench.results import active_claims

    return active_claims(results, "ex") == []


def traceback_free(text: str) -> bool:
    return "Traceback" not in text


# -- subprocess ---------------------------------------------------------------------------------


def test_subprocess_executor_gives_the_local_records(cli, grid_file, local_records, tmp_path):
    grid = grid_file("full_finetune")
    code, out, err = cli("run", "--grid", grid, "--results", tmp_path, "--executor", "subprocess", "-q")
    assert code == 0, err
    (isolated,) = iter_records(tmp_path, "ex")
    local = local_records["full_finetune"]
    assert isolated["status"] == "ok"
    assert isolated["run_id"] == local["run_id"]
    assert isolated["top1"] == local["top1"]  # same seed, same cell, trained in another process
    assert no_claims_left(tmp_path)
    # resume: a second run finds every record and runs nothing
    code, out, err = cli("run", "--grid", grid, "--results", tmp_path, "--executor", "subprocess")
    assert code == 0 and "1 of 1 cells already have records" in err
    # the processes are forked from a server started with the first cell (tlbench.cell_process):
    # pinned (taskset) after that, the driver still hands its CPUs on, and the cell sizes its
    # torch threads to them
    from tlbench.cpus import usable_cpus

    assert isolated["environment"]["threads"] == usable_cpus()
    cpus = sorted(os.sched_getaffinity(0))
    os.sched_setaffinity(0, cpus[:1])
    try:
        code, out, err = cli("run", "--grid", grid_file("linear_probe"), "--results", tmp_path,
                             "--executor", "subprocess", "-q")
    finally:
        os.sched_setaffinity(0, cpus)
    assert code == 0, err
    assert by_strategy(tmp_path)["linear_probe"]["environment"]["threads"] == 1


def test_cell_timeout_kills_the_cell_and_the_grid_goes_on(cli, grid_file, test_plugins_dir, tmp_path):
    grid = grid_file("hangs", seeds=(0, 1))  # two cells that never end: the second still runs
    code, out, err = cli("run", "--grid", grid, "--results", tmp_path, "--plugins-dir", test_plugins_dir,
                         "--executor", "subprocess", "--cell-timeout", TIMEOUT_S, "-q")
    assert code == 1
    records = sorted(iter_records(tmp_path, "ex"), key=lambda r: r["seed"])
    assert [(r["seed"], r["status"], r["error_kind"]) for r in records] == [
        (0, "failed", "timeout"), (1, "failed", "timeout")]
    for record in records:
        assert f"--cell-timeout {TIMEOUT_S} s" in record["error"]
        # the driver wrote the record after the kill; it started when the cell was handed out
        # (record times are whole seconds)
        started, finished = (datetime.fromisoformat(record[k]) for k in ("started_at", "finished_at"))
        assert TIMEOUT_S - 1 <= (finished - started).total_seconds() < 60
    assert err.count("[timeout]") == 2 and traceback_free(err)
    assert no_claims_left(tmp_path)


def test_a_cell_that_kills_its_process_is_a_failed_record(cli, grid_file, test_plugins_dir, private_cache_dir,
                                                          tmp_path):
    grid = grid_file("dies_once", "linear_probe")
    argv = ("run", "--grid", grid, "--results", tmp_path, "--plugins-dir", test_plugins_dir, "-q")
    code, out, err = cli(*argv, "--executor", "subprocess")
    assert code == 1
    assert (private_cache_dir / "dies_once.died").exists()  # it did kill its process
    records = by_strategy(tmp_path)
    assert (records["dies_once"]["status"], records["dies_once"]["error_kind"]) == ("failed", "crashed")
    assert "SIGKILL" in records["dies_once"]["error"]
    assert records["linear_probe"]["status"] == "ok"
    # the driver survived and every claim is free; --retry-failed runs it again (the record
    # is the same whoever wrote it, so this process can: dies_once only dies the first time)
    assert no_claims_left(tmp_path)
    code, out, err = cli(*argv, "--retry-failed")
    assert code == 0, err
    assert by_strategy(tmp_path)["dies_once"]["status"] == "ok"


@pytest.mark.parametrize("argv, message", [
    (["--cell-timeout", "10"], "--cell-timeout needs --executor subprocess or ray"),
    (["--executor", "subprocess", "--cell-timeout", "0"], "--cell-timeout must be a positive"),
    (["--executor", "subprocess", "--ray-address", "auto"], "--ray-address only apply to --executor ray"),
    (["--gpu-share", "linear_probe=0.5"], "--gpu-share only apply to --executor ray"),
    (["--executor", "ray", "--gpu-share", "linear_probe"], "expected STRATEGY=FRACTION"),
    (["--executor", "ray", "--gpu-share", "linear_prob=0.5"], "Did you mean: linear_probe"),
    (["--executor", "ray", "--cpus-per-cell", "0"], "--cpus-per-cell must be positive"),
])
def test_executor_usage_errors(cli, grid_file, tmp_path, argv, message):
    code, out, err = cli("run", "--grid", grid_file("linear_probe"), "--results", tmp_path, *argv)
    assert code == 2
    assert message in err and traceback_free(err)
    assert len(err.strip().splitlines()) == 1
    assert not records_dir(tmp_path, "ex").exists() or not list(records_dir(tmp_path, "ex").glob("*.json"))


def test_missing_ray_is_one_clear_message(cli, grid_file, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # as if it were not installed
    code, out, err = cli("run", "--grid", grid_file("linear_probe"), "--results", tmp_path, "--executor", "ray")
    assert code == 2
    assert 'pip install "tlbench[ray]"' in err and traceback_free(err)


# -- ray ----------------------------------------------------------------------------------------


def test_joining_a_ray_cluster_that_is_not_there(cli, grid_file, tmp_path):
    """Before this module starts its own Ray instance (tests run in file order). An address where
    nothing listens, not 'auto': 'auto' joins any Ray instance on this machine, such as the
    two-node clusters of test_ray_cluster.py running beside this file."""
    import socket

    ray = pytest.importorskip("ray", reason="the test extra installs Ray")
    assert not ray.is_initialized(), "run this test before the ones that start Ray"
    with socket.socket() as probe:  # a free port: nothing answers there
        probe.bind(("127.0.0.1", 0))
        address = f"127.0.0.1:{probe.getsockname()[1]}"
    try:
        code, out, err = cli("run", "--grid", grid_file("linear_probe"), "--results", tmp_path,
                             "--executor", "ray", "--ray-address", address)
    finally:
        joined = ray.is_initialized()
        if joined:
            ray.shutdown()
    assert not joined and code == 2
    assert f"Cannot join the Ray cluster at '{address}'" in err and "ray start --head" in err
    assert traceback_free(err)


@pytest.fixture(scope="module")
def ray_node_cache(tmp_path_factory):
    """The cache folder of the Ray instance's node: a node keeps its own (its environment's
    TLBENCH_CACHE_DIR), whatever the driver's is."""
    return tmp_path_factory.mktemp("node-cache")


@pytest.fixture(scope="module")
def ray_instance(ray_node_cache):
    """One local Ray instance (2 CPUs) for the module, as `tlbench run --executor ray` starts it;
    its workers stay up between tests, so torch is imported once per worker."""
    ray = pytest.importorskip("ray", reason="the test extra installs Ray")
    saved = os.environ.get("TLBENCH_CACHE_DIR")
    os.environ["TLBENCH_CACHE_DIR"] = str(ray_node_cache)  # the node's processes inherit it
    # one logical GPU: Ray schedules by declared resources, so GPU shares are computed on a CPU
    # machine too (the cells of these tests run with device = "cpu" and ask for none)
    try:
        ray.init(num_cpus=2, num_gpus=1, include_dashboard=False, log_to_driver=False, logging_level="ERROR")
    finally:
        if saved is None:
            del os.environ["TLBENCH_CACHE_DIR"]
        else:
            os.environ["TLBENCH_CACHE_DIR"] = saved
    yield ray
    ray.shutdown()


def test_ray_executor_gives_the_local_records(ray_instance, cli, grid_file, local_records, tmp_path):
    grid = grid_file("linear_probe", "full_finetune")  # two cells at once: one per CPU
    code, out, err = cli("run", "--grid", grid, "--results", tmp_path, "--executor", "ray")
    assert code == 0, err
    assert "Ray: 1 node(s), 2 CPUs, 1 GPUs" in err
    distributed = by_strategy(tmp_path)
    assert set(distributed) == set(local_records)
    for strategy, local in local_records.items():
        assert distributed[strategy]["status"] == "ok"
        assert distributed[strategy]["run_id"] == local["run_id"]
        assert distributed[strategy]["top1"] == local["top1"]
    assert "| faces" in out  # the summary table, as with the local executor
    assert no_claims_left(tmp_path)
    code, out, err = cli("run", "--grid", grid, "--results", tmp_path, "--executor", "ray")
    assert code == 0 and "2 of 2 cells already have records" in err


def test_ray_gpu_cells_get_a_worker_each_and_say_how_the_gpu_was_shared(ray_instance, cli, write_grid,
                                                                         grid_text, tmp_path):
    """With device = "auto" the cells ask Ray for the instance's (logical) GPU: shares by
    strategy, a fresh worker per GPU task, and each worker picks its own device (the CPU here)."""
    grid = write_grid(grid_text(["linear_probe"]).replace('device = "cpu"', 'device = "auto"'))
    code, out, err = cli("run", "--grid", grid, "--results", tmp_path, "--executor", "ray", "-q")
    assert code == 0, err
    record = by_strategy(tmp_path)["linear_probe"]
    assert record["status"] == "ok" and record["resources"] == {"num_cpus": 1.0, "num_gpus": 0.25}


def test_ray_resources_by_strategy(ray_instance, registry):
    from tlbench.ray_executor import RayExecutor

    def pool(**kwargs):
        return RayExecutor(registry, None, cpus_per_cell=kwargs.pop("cpus", 1.0), max_retries=0, **kwargs)

    strategies = {name: registry.get("strategies", name)
                  for name in ("linear_probe", "full_finetune", "partial_unfreeze")}
    with_gpus = pool(gpu_shares={"partial_unfreeze": 0.5}, use_gpus=True)
    assert with_gpus.resources_for(strategies["linear_probe"]) == {"num_cpus": 1.0, "num_gpus": 0.25}
    assert with_gpus.resources_for(strategies["full_finetune"]) == {"num_cpus": 1.0, "num_gpus": 1.0}
    assert with_gpus.resources_for(strategies["partial_unfreeze"]) == {"num_cpus": 1.0, "num_gpus": 0.5}
    cpu_only = pool(gpu_shares={}, use_gpus=False, cpus=2.0)  # e.g. a grid with device = "cpu"
    assert cpu_only.resources_for(strategies["full_finetune"]) == {"num_cpus": 2.0, "num_gpus": 0}
    assert cpu_only.slots == 1


def test_ray_worker_killed_mid_cell_is_retried(ray_instance, ray_node_cache, cli, grid_file, test_plugins_dir,
                                               tmp_path):
    grid = grid_file("dies_once", "linear_probe")
    (ray_node_cache / "dies_once.died").unlink(missing_ok=True)
    code, out, err = cli("run", "--grid", grid, "--results", tmp_path, "--plugins-dir", test_plugins_dir,
                         "--executor", "ray", "--ray-max-retries", "1", "-q")
    assert code == 0, err
    assert (ray_node_cache / "dies_once.died").exists()  # it did die once, in the node's own cache
    assert {r["status"] for r in by_strategy(tmp_path).values()} == {"ok"}


def test_ray_worker_lost_leaves_the_cell_pending(ray_instance, ray_node_cache, cli, grid_file, test_plugins_dir,
                                                 tmp_path):
    grid = grid_file("dies_once", "linear_probe")
    (ray_node_cache / "dies_once.died").unlink(missing_ok=True)
    argv = ("run", "--grid", grid, "--results", tmp_path, "--plugins-dir", test_plugins_dir,
            "--executor", "ray", "-q")
    code, out, err = cli(*argv, "--ray-max-retries", "0")
    assert code == 1
    assert "1 cell(s) have no record because their worker was lost" in err and traceback_free(err)
    records = by_strategy(tmp_path)
    assert set(records) == {"linear_probe"}  # no half record, no failed record for the lost cell
    assert no_claims_left(tmp_path)
    # the next run picks it up, without --retry-failed
    code, out, err = cli(*argv)
    assert code == 0, err
    assert by_strategy(tmp_path)["dies_once"]["status"] == "ok"


def test_ray_cell_timeout(ray_instance, cli, grid_file, test_plugins_dir, tmp_path):
    code, out, err = cli("run", "--grid", grid_file("hangs"), "--results", tmp_path, "--plugins-dir",
                         test_plugins_dir, "--executor", "ray", "--cell-timeout", TIMEOUT_S, "-q")
    assert code == 1
    record = by_strategy(tmp_path)["hangs"]
    assert (record["status"], record["error_kind"]) == ("failed", "timeout")
    assert f"--cell-timeout {TIMEOUT_S} s" in record["error"]
    # written by the driver, but it names the node and environment of the worker that ran it
    (node,) = [n for n in ray_instance.nodes() if n["Alive"]]
    assert record["node"]["id"] == node["NodeID"] and record["node"]["address"].endswith(f":{node['NodeManagerPort']}")
    assert record["environment"]["hostname"] == record["node"]["hostname"]
    assert no_claims_left(tmp_path)
