"""Issue #6: a small grid on 2 Ray workers vs the local executor, and Ray's per-cell overhead.

    python -m pytest benchmarks/test_executors.py -s

Both contenders run the same cells in the same benchmark, one after the other (each on its own
results folder and a cold feature cache). The speed-up is local wall time / Ray wall time.
The overhead of a cell is the time from its submission to its record arriving at the driver,
minus the time the cell ran in the worker (the record's ``run_s``): scheduling, shipping the
job and the record, and for a worker's first cell its start-up (imports, registry).
"""

from __future__ import annotations

import statistics
import time

import pytest

from tlbench.cell_job import job_maker
from tlbench.driver import run_grid_on
from tlbench.executors import LocalExecutor, SubprocessExecutor
from tlbench.grid import load_grid
from tlbench.runner import Runner

GRID = """
name = "bench-executors"
backbones  = ["efficientnet_lite0"]
strategies = ["linear_probe", "partial_unfreeze", "full_finetune"]
datasets   = ["faces", "textures"]

[settings]
image_size = 64
epochs = 2
batch_size = 32
"""


class TimedExecutor:
    """Wraps an executor and notes when each cell was submitted and when its outcome arrived."""

    def __init__(self, executor):
        self.executor, self.slots, self.times = executor, executor.slots, {}

    def submit(self, cell, job):
        handle = self.executor.submit(cell, job)
        self.times[handle] = [cell.run_id, time.perf_counter(), None]
        return handle

    def finished(self):
        done = self.executor.finished()
        for handle, _ in done:
            self.times[handle][2] = time.perf_counter()
        return done

    def interrupt(self):
        return self.executor.interrupt()

    def close(self):
        self.executor.close()

    def overheads(self, records) -> list[float]:
        run_s = {r["run_id"]: r["run_s"] for r in records}
        ordered = sorted(self.times.values(), key=lambda t: t[1])
        return [end - start - run_s[run_id] for run_id, start, end in ordered]


def run_grid(runner, grid, executor=None):
    start = time.perf_counter()
    job_for = None if executor is None else job_maker(grid, None, None, threads=1)
    outcome = run_grid_on(executor or LocalExecutor(runner), runner, grid, job_for)
    assert not outcome.lost
    wall = time.perf_counter() - start
    assert all(r["status"] == "ok" for r in outcome.ran), [r.get("error") for r in outcome.ran]
    return outcome.ran, wall


def test_ray_two_workers_vs_local(benchmark, report, registry, tmp_path, monkeypatch):
    ray = pytest.importorskip("ray", reason='pip install "tlbench[ray]"')
    from tlbench.ray_executor import RayExecutor

    path = tmp_path / "grid.toml"
    path.write_text(GRID, encoding="utf-8")
    grid = load_grid(str(path), registry)

    def measure():
        monkeypatch.setenv("TLBENCH_CACHE_DIR", str(tmp_path / "cache-local"))
        local_records, local_s = run_grid(Runner(registry, tmp_path / "local"), grid)

        monkeypatch.setenv("TLBENCH_CACHE_DIR", str(tmp_path / "cache-ray"))
        start = time.perf_counter()
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level="ERROR")
        executor = TimedExecutor(RayExecutor(registry, None, cpus_per_cell=1, gpu_shares={}, use_gpus=False,
                                             max_retries=0))
        init_s = time.perf_counter() - start
        try:
            ray_records, ray_s = run_grid(Runner(registry, tmp_path / "ray"), grid, executor)
        finally:
            ray.shutdown()
        return local_records, local_s, ray_records, ray_s, init_s, executor.overheads(ray_records)

    local_records, local_s, ray_records, ray_s, init_s, overheads = benchmark.pedantic(
        measure, rounds=1, iterations=1)
    first, steady = overheads[:2], overheads[2:]  # the first cell on each of the 2 workers starts it
    report("6 Ray (2 workers x 1 CPU) vs local executor",
           cells=len(grid.cells), local_wall_s=local_s, ray_wall_s=ray_s, speedup=local_s / ray_s,
           ray_init_s=init_s, first_cell_overhead_s=statistics.mean(first),
           steady_overhead_median_s=statistics.median(steady), steady_overhead_max_s=max(steady),
           local_top1=[round(r["top1"], 4) for r in local_records],
           ray_top1=[round(r["top1"], 4) for r in ray_records])
    assert statistics.median(steady) < 1.0, f"Ray adds {statistics.median(steady):.2f} s per cell (target < 1 s)"


def test_subprocess_executor_overhead(benchmark, report, registry, tmp_path):
    """A fresh process per cell costs its start-up (Python, torch, plugins, dataset) every time."""
    path = tmp_path / "grid.toml"
    path.write_text(GRID.replace('["faces", "textures"]', '["faces"]'), encoding="utf-8")
    grid = load_grid(str(path), registry)

    def measure():
        executor = TimedExecutor(SubprocessExecutor())
        records, wall = run_grid(Runner(registry, tmp_path / "sub"), grid, executor)
        return records, wall, executor.overheads(records)

    records, wall, overheads = benchmark.pedantic(measure, rounds=1, iterations=1)
    report("6 subprocess executor, per-cell start-up", cells=len(records), wall_s=wall,
           overhead_mean_s=statistics.mean(overheads), overhead_max_s=max(overheads))
