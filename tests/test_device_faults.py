"""GPU errors, simulated on the CPU: what kind of failure a record says, and a fault that breaks
the process's CUDA context stopping an in-process run instead of failing every later cell."""

import json

import pytest

from tlbench.error_kinds import error_kind

GRID = """
    name = "faults"
    backbones = ["test_efficientnet"]
    strategies = ["gpu_fault", "head_only"]  # tests/plugins/
    datasets = ["digits"]
    [settings]
    image_size = 16
    batch_size = 64
    train_size = 40
    test_size = 20
    pretrained = false
    threads = 1
"""


@pytest.mark.parametrize("message, kind", [
    ("CUDA error: an illegal memory access was encountered", "device_fault"),
    ("CUDA error: device-side assert triggered", "device_fault"),
    ("CUDA error: CUBLAS_STATUS_ALLOC_FAILED when calling `cublasCreate(handle)`", "oom"),
    ("CUDA out of memory. Tried to allocate 2.00 GiB", "oom"),
    ("mat1 and mat2 shapes cannot be multiplied", "exception"),
])
def test_error_kinds_of_gpu_errors(message, kind):
    assert error_kind(RuntimeError(message)) == kind


def stored(results):
    return {r["strategy"]: r for r in (json.loads(p.read_text())
                                       for p in (results / "faults" / "records").glob("*.json"))}


def test_a_device_fault_stops_an_in_process_run_and_says_how_to_go_on(tmp_path, cli, write_grid, test_plugins_dir):
    results = tmp_path / "results"
    code, out, err = cli("run", "--grid", write_grid(GRID), "--results", results,
                         "--plugins-dir", test_plugins_dir, "-q")
    assert code == 1
    assert "--executor subprocess" in err and "Traceback" not in err
    records = stored(results)
    assert set(records) == {"gpu_fault"}  # the next cell was left pending, not failed
    assert records["gpu_fault"]["error_kind"] == "device_fault"


def test_with_a_process_per_cell_a_device_fault_fails_only_its_cell(tmp_path, write_grid, test_plugins_dir):
    """The driver stops only for an executor that runs cells in its own process. Checked with the
    driver's real loop over real cells, in this process, for speed: an executor that says each
    cell has a process of its own (as SubprocessExecutor and RayExecutor do) goes on after the
    fault."""
    from tlbench.driver import run_grid_on
    from tlbench.executors import LocalExecutor, SubprocessExecutor
    from tlbench.grid import load_grid
    from tlbench.plugins import load_registry
    from tlbench.runner import Runner

    class ProcessPerCell(LocalExecutor):
        shares_the_process = False

    registry = load_registry(str(test_plugins_dir))
    grid = load_grid(str(write_grid(GRID)), registry)
    runner = Runner(registry, tmp_path / "results")
    outcome = run_grid_on(ProcessPerCell(runner), runner, grid)
    assert {r["strategy"]: r.get("error_kind") for r in outcome.failed} == {"gpu_fault": "device_fault"}
    assert {r["strategy"]: r["status"] for r in outcome.ran} == {"gpu_fault": "failed", "head_only": "ok"}
    assert not getattr(SubprocessExecutor, "shares_the_process", False)
    from tlbench.ray_executor import RayExecutor

    assert not getattr(RayExecutor, "shares_the_process", False)
