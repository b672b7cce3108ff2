"""What the Ray executor asks Ray for, checked without a GPU: a GPU cell gets a worker of its
own and the worker's own device, a record says how the GPU was shared, and a cluster without
GPUs is told apart from a driver without one."""

from dataclasses import replace
from types import SimpleNamespace

import pytest

from tlbench import ray_executor
from tlbench.errors import ConfigError
from tlbench.cell_job import CellJob, job_maker
from tlbench.ray_executor import RayExecutor
from tlbench.worker import run_job


class FakeRay:
    """Ray as RayExecutor sees it: an initialised instance with these resources, and a remote
    function that remembers what it was asked to run and with which options."""

    def __init__(self, resources):
        self.resources, self.submitted = resources, []

    def is_initialized(self):
        return True

    def cluster_resources(self):
        return self.resources

    def remote(self, function=None, **decorator_options):
        """``ray.remote(f)`` or ``ray.remote(max_calls=1)(f)``, as Ray takes them."""
        if function is None:
            return lambda f: self.remote(f, **decorator_options)
        ray = self

        class Remote:
            def options(self, **options):  # Ray refuses max_calls here: it is the function's
                assert "max_calls" not in options
                merged = {**decorator_options, **options}
                return SimpleNamespace(remote=lambda job, timeout: ray.submitted.append((merged, job)))

        return Remote()


def pool_on(monkeypatch, registry, resources, **kwargs):
    fake = FakeRay(resources)
    monkeypatch.setattr(ray_executor, "import_ray", lambda: fake)
    options = dict(address=None, cpus_per_cell=1.0, gpu_shares={}, use_gpus=True, max_retries=2)
    options.update(kwargs)
    return RayExecutor(registry, **options), fake


def cell_of(registry, strategy: str, table: dict = None):
    """A grid's one cell of ``strategy`` (a name the grid lists, with its [strategy.NAME] table)."""
    from tlbench.grid import build_grid

    data = {"name": "g", "backbones": ["test_efficientnet"], "strategies": [strategy], "datasets": ["digits"],
            "strategy": {strategy: table} if table else {}}
    (cell,) = build_grid(data, "g.toml", registry).cells
    return cell


def test_a_gpu_cell_gets_a_fresh_worker_its_own_device_and_a_share_on_record(monkeypatch, registry):
    pool, fake = pool_on(monkeypatch, registry, {"CPU": 8.0, "GPU": 2.0}, gpu_shares={"linear_probe": 0.25},
                         needs_gpu=True)  # [settings] device = "cuda:1", say
    for cell in (cell_of(registry, "linear_probe"), cell_of(registry, "full_finetune"),
                 cell_of(registry, "probe_b", {"plugin": "linear_probe"})):  # a variant: its plugin's share
        pool.submit(cell, a_job())
    (probe_options, probe_job), (ft_options, ft_job), (variant_options, _) = fake.submitted
    assert probe_options["num_gpus"] == variant_options["num_gpus"] == 0.25 and ft_options["num_gpus"] == 1.0
    assert probe_options["max_calls"] == ft_options["max_calls"] == 1  # no reused CUDA context
    assert probe_job.device == ft_job.device == "cuda"  # the worker's GPU, whatever cuda:N the grid says
    assert probe_job.resources == {"num_cpus": 1.0, "num_gpus": 0.25}


def test_with_device_auto_a_gpu_worker_chooses_its_device_itself(monkeypatch, registry):
    pool, fake = pool_on(monkeypatch, registry, {"CPU": 8.0, "GPU": 1.0})
    pool.submit(cell_of(registry, "full_finetune"), a_job())
    ((options, job),) = fake.submitted
    assert options["max_calls"] == 1 and job.device is None


def test_cpu_cells_keep_reusable_workers_and_the_grids_device(monkeypatch, registry):
    pool, fake = pool_on(monkeypatch, registry, {"CPU": 4.0}, use_gpus=False)
    pool.submit(cell_of(registry, "full_finetune"), a_job())
    ((options, job),) = fake.submitted
    assert options["num_gpus"] == 0 and "max_calls" not in options
    assert job.device is None and job.threads == 1


def test_a_grid_asking_for_cuda_on_a_cluster_without_gpus_is_a_config_error(monkeypatch, registry):
    with pytest.raises(ConfigError, match="the Ray cluster has no GPUs"):
        pool_on(monkeypatch, registry, {"CPU": 4.0}, needs_gpu=True)
    pool_on(monkeypatch, registry, {"CPU": 4.0, "GPU": 1.0}, needs_gpu=True)  # fine with one


def a_job():
    return CellJob(grid_data={}, grid_source="grid.toml", run_id="0" * 16, backbone="b", strategy="s", dataset="d")


def test_a_workers_record_keeps_what_was_reserved_for_it(one_cell_grid):
    job = replace(job_maker(one_cell_grid, None, None)(one_cell_grid.cells[0]), device="cpu",
                  resources={"num_cpus": 1.0, "num_gpus": 0.5})
    record = run_job(job)
    assert record["status"] == "ok", record.get("error")
    assert record["resources"] == {"num_cpus": 1.0, "num_gpus": 0.5}
    assert record["environment"]["device"] == "cpu"
