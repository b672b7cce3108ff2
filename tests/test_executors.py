"""--executor subprocess and --executor ray: same records as the local runner, resume, failure
isolation, hard time limits, and a worker killed mid-cell (real Ray, a local instance)."""

import json
import sys
import textwrap
import time
from datetime import datetime

import pytest

from tlbench.results import iter_records, records_dir

from conftest import TINY_SETTINGS

GRID = """
name = "ex"
backbones = ["test_efficientnet"]
strategies = {strategies}
datasets = ["faces"]
""" + TINY_SETTINGS

# Strategies that misbehave the way real cells do: hang, or take their process down with them.
MISBEHAVING = '''
import os
import signal
import time
from dataclasses import dataclass
from pathlib import Path

import tlbench


class Hangs(tlbench.Strategy):
    """Never finishes (a deadlocked data loader, a solver that does not converge)."""

    name = "hangs"

    def fit(self, model, train, val, ctx):
        time.sleep(3600)
        return model


class DiesOnce(tlbench.Strategy):
    """Kills its own process the first time it runs: a worker lost mid-cell (node failure, OOM
    killer); the next attempt succeeds."""

    name = "dies_once"

    def fit(self, model, train, val, ctx):
        marker = Path(__file__).with_suffix(".died")
        if not marker.exists():
            marker.touch()
            os.kill(os.getpid(), signal.SIGKILL)
        return model


@tlbench.hookimpl
def register_strategies(register):
    register(Hangs)
    register(DiesOnce)
'''


@pytest.fixture
def plugins_dir(tmp_path):
    folder = tmp_path / "plugins"
    folder.mkdir()
    (folder / "misbehaving.py").write_text(textwrap.dedent(MISBEHAVING), encoding="utf-8")
    return folder


def grid_file(write_grid, *strategies):
    return write_grid(GRID.format(strategies=json.dumps(list(strategies))))


def by_strategy(results):
    return {r["strategy"]: r for r in iter_records(results, "ex")}


def no_claims_left(results):
    from tlbench.results import active_claims

    return active_claims(results, "ex") == []


# -- subprocess ---------------------------------------------------------------------------------


def test_subprocess_executor_gives_the_local_records(cli, write_grid, tmp_path):
    grid = grid_file(write_grid, "linear_probe", "full_finetune")
    assert cli("run", "--grid", grid, "--results", tmp_path / "local", "-q")[0] == 0
    code, out, err = cli("run", "--grid", grid, "--results", tmp_path / "sub", "--executor", "subprocess", "-q")
    assert code == 0, err
    local, isolated = by_strategy(tmp_path / "local"), by_strategy(tmp_path / "sub")
    assert set(isolated) == {"linear_probe", "full_finetune"}
    for strategy in local:
        assert isolated[strategy]["status"] == "ok"
        assert isolated[strategy]["run_id"] == local[strategy]["run_id"]
        assert isolated[strategy]["top1"] == local[strategy]["top1"]  # same seed, same cell
    assert no_claims_left(tmp_path / "sub")
    # resume: a second run finds every record and runs nothing
    code, out, err = cli("run", "--grid", grid, "--results", tmp_path / "sub", "--executor", "subprocess")
    assert code == 0 and "2 of 2 cells already have records" in err


def test_cell_timeout_kills_the_cell_and_the_grid_goes_on(cli, write_grid, plugins_dir, tmp_path):
    grid = grid_file(write_grid, "hangs", "linear_probe")
    start = time.monotonic()
    code, out, err = cli("run", "--grid", grid, "--results", tmp_path, "--plugins-dir", plugins_dir,
                         "--executor", "subprocess", "--cell-timeout", "15", "-q")
    assert time.monotonic() - start < 120
    assert code == 1
    records = by_strategy(tmp_path)
    assert records["hangs"]["status"] == "failed"
    assert records["hangs"]["error_kind"] == "timeout"
    assert "--cell-timeout 15 s" in records["hangs"]["error"]
    # the driver wrote the record after the kill; it started when the cell was handed out
    started, finished = (datetime.fromisoformat(records["hangs"][k]) for k in ("started_at", "finished_at"))
    assert 14 <= (finished - started).total_seconds() < 60
    assert records["linear_probe"]["status"] == "ok"
    assert "[timeout]" in err and traceback_free(err)
    assert no_claims_left(tmp_path)


def test_a_cell_that_kills_its_process_is_a_failed_record(cli, write_grid, plugins_dir, tmp_path):
    grid = grid_file(write_grid, "dies_once", "linear_probe")
    code, out, err = cli("run", "--grid", grid, "--results", tmp_path, "--plugins-dir", plugins_dir,
                         "--executor", "subprocess", "-q")
    assert code == 1
    records = by_strategy(tmp_path)
    assert records["dies_once"]["error_kind"] == "crashed"
    assert "SIGKILL" in records["dies_once"]["error"]
    assert records["linear_probe"]["status"] == "ok"
    # the driver survived and every claim is free; --retry-failed runs it again
    code, out, err = cli("run", "--grid", grid, "--results", tmp_path, "--plugins-dir", plugins_dir,
                         "--executor", "subprocess", "--retry-failed", "-q")
    assert code == 0, err
    assert by_strategy(tmp_path)["dies_once"]["status"] == "ok"


def traceback_free(text: str) -> bool:
    return "Traceback" not in text


@pytest.mark.parametrize("argv, message", [
    (["--cell-timeout", "10"], "--cell-timeout needs --executor subprocess or ray"),
    (["--executor", "subprocess", "--cell-timeout", "0"], "--cell-timeout must be a positive"),
    (["--executor", "subprocess", "--ray-address", "auto"], "--ray-address only apply to --executor ray"),
    (["--gpu-share", "linear_probe=0.5"], "--gpu-share only apply to --executor ray"),
    (["--executor", "ray", "--gpu-share", "linear_probe"], "expected STRATEGY=FRACTION"),
    (["--executor", "ray", "--gpu-share", "linear_prob=0.5"], "Did you mean: linear_probe"),
    (["--executor", "ray", "--cpus-per-cell", "0"], "--cpus-per-cell must be positive"),
])
def test_executor_usage_errors(cli, write_grid, tmp_path, argv, message):
    grid = grid_file(write_grid, "linear_probe")
    code, out, err = cli("run", "--grid", grid, "--results", tmp_path, *argv)
    assert code == 2
    assert message in err and traceback_free(err)
    assert len(err.strip().splitlines()) == 1
    assert not records_dir(tmp_path, "ex").exists() or not list(records_dir(tmp_path, "ex").glob("*.json"))


def test_missing_ray_is_one_clear_message(cli, write_grid, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # as if it were not installed
    code, out, err = cli("run", "--grid", grid_file(write_grid, "linear_probe"), "--results", tmp_path,
                         "--executor", "ray")
    assert code == 2
    assert 'pip install "tlbench[ray]"' in err and traceback_free(err)


def test_joining_a_ray_cluster_that_is_not_there(write_grid, tmp_path):
    """In a fresh interpreter, before this module starts its own Ray instance."""
    pytest.importorskip("ray", reason="the test extra installs Ray")
    from conftest import run_tlbench

    done = run_tlbench("run", "--grid", grid_file(write_grid, "linear_probe"), "--results", tmp_path,
                       "--executor", "ray", "--ray-address", "auto")
    assert done.returncode == 2
    assert "Cannot join the Ray cluster at 'auto'" in done.stderr and "ray start --head" in done.stderr
    assert traceback_free(done.stderr)


# -- ray ----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def ray_instance():
    """One local Ray instance (2 CPUs) for the module, as `tlbench run --executor ray` starts it."""
    ray = pytest.importorskip("ray", reason="the test extra installs Ray")
    # one logical GPU: Ray schedules by declared resources, so GPU shares are exercised on a CPU
    # machine too (the cells still run on the CPU: torch sees no CUDA device)
    ray.init(num_cpus=2, num_gpus=1, include_dashboard=False, log_to_driver=False, logging_level="ERROR")
    yield ray
    ray.shutdown()


def test_ray_executor_gives_the_local_records(ray_instance, cli, write_grid, tmp_path):
    grid = grid_file(write_grid, "linear_probe", "full_finetune")
    assert cli("run", "--grid", grid, "--results", tmp_path / "local", "-q")[0] == 0
    code, out, err = cli("run", "--grid", grid, "--results", tmp_path / "ray", "--executor", "ray")
    assert code == 0, err
    assert "Ray: 1 node(s), 2 CPUs, 1 GPUs" in err
    local, distributed = by_strategy(tmp_path / "local"), by_strategy(tmp_path / "ray")
    for strategy in local:
        assert distributed[strategy]["status"] == "ok"
        assert distributed[strategy]["top1"] == local[strategy]["top1"]
    assert "| faces" in out  # the summary table, as with the local executor
    assert no_claims_left(tmp_path / "ray")
    code, out, err = cli("run", "--grid", grid, "--results", tmp_path / "ray", "--executor", "ray")
    assert code == 0 and "2 of 2 cells already have records" in err


def test_ray_resources_by_strategy(ray_instance, registry):
    from tlbench.ray_pool import RayPool

    def pool(**kwargs):
        return RayPool(registry, None, cpus_per_cell=kwargs.pop("cpus", 1.0), max_retries=0, **kwargs)

    strategies = {name: registry.get("strategies", name)
                  for name in ("linear_probe", "full_finetune", "partial_unfreeze")}
    with_gpus = pool(gpu_shares={"partial_unfreeze": 0.5}, use_gpus=True)
    assert with_gpus.resources_for(strategies["linear_probe"]) == {"num_cpus": 1.0, "num_gpus": 0.25}
    assert with_gpus.resources_for(strategies["full_finetune"]) == {"num_cpus": 1.0, "num_gpus": 1.0}
    assert with_gpus.resources_for(strategies["partial_unfreeze"]) == {"num_cpus": 1.0, "num_gpus": 0.5}
    cpu_only = pool(gpu_shares={}, use_gpus=False, cpus=2.0)  # e.g. a grid with device = "cpu"
    assert cpu_only.resources_for(strategies["full_finetune"]) == {"num_cpus": 2.0, "num_gpus": 0}
    assert cpu_only.slots == 1


def test_ray_worker_killed_mid_cell_is_retried(ray_instance, cli, write_grid, plugins_dir, tmp_path):
    grid = grid_file(write_grid, "dies_once", "linear_probe")
    code, out, err = cli("run", "--grid", grid, "--results", tmp_path, "--plugins-dir", plugins_dir,
                         "--executor", "ray", "--ray-max-retries", "1", "-q")
    assert code == 0, err
    assert (plugins_dir / "misbehaving.died").exists()  # it did die once
    assert {r["status"] for r in by_strategy(tmp_path).values()} == {"ok"}


def test_ray_worker_lost_leaves_the_cell_pending(ray_instance, cli, write_grid, plugins_dir, tmp_path):
    grid = grid_file(write_grid, "dies_once", "linear_probe")
    code, out, err = cli("run", "--grid", grid, "--results", tmp_path, "--plugins-dir", plugins_dir,
                         "--executor", "ray", "--ray-max-retries", "0", "-q")
    assert code == 1
    assert "1 cell(s) have no record because their worker was lost" in err and traceback_free(err)
    records = by_strategy(tmp_path)
    assert set(records) == {"linear_probe"}  # no half record, no failed record for the lost cell
    assert no_claims_left(tmp_path)
    # the next run picks it up, without --retry-failed
    code, out, err = cli("run", "--grid", grid, "--results", tmp_path, "--plugins-dir", plugins_dir,
                         "--executor", "ray", "-q")
    assert code == 0, err
    assert by_strategy(tmp_path)["dies_once"]["status"] == "ok"


def test_ray_cell_timeout(ray_instance, cli, write_grid, plugins_dir, tmp_path):
    grid = grid_file(write_grid, "hangs")
    code, out, err = cli("run", "--grid", grid, "--results", tmp_path, "--plugins-dir", plugins_dir,
                         "--executor", "ray", "--cell-timeout", "15", "-q")
    assert code == 1
    record = by_strategy(tmp_path)["hangs"]
    assert (record["status"], record["error_kind"]) == ("failed", "timeout")
