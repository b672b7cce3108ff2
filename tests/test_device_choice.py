"""Device and precision choices, with the GPU's capabilities faked so that the logic runs on
the CPU: which precision a GPU gets, which GPU becomes current, what the record says about it,
and where a split's batches go when a strategy names no device."""

from types import SimpleNamespace

import numpy as np
import pytest
import torch

import tlbench
from tlbench import machine
from tlbench.batches import ImageSplit
from tlbench.progress import Progress
from tlbench.runner import CellContext


@pytest.fixture
def fake_gpu(monkeypatch):
    """A CUDA device of the given compute capability, as far as tlbench asks."""
    calls = []

    def make(capability=(8, 0), current=0):
        monkeypatch.setattr(torch.cuda, "get_device_capability", lambda index=None: capability)
        monkeypatch.setattr(torch.cuda, "current_device", lambda: current)
        monkeypatch.setattr(torch.cuda, "set_device", lambda device: calls.append(device))
        monkeypatch.setattr(torch.backends.cudnn, "version", lambda: 91002)
        return calls

    return make


@pytest.mark.parametrize("capability, expected", [((7, 0), "fp16"), ((7, 5), "fp16"), ((8, 0), "bf16"),
                                                  ((9, 0), "bf16")])
def test_gpus_before_ampere_get_fp16_not_emulated_bf16(fake_gpu, capability, expected):
    fake_gpu(capability)
    assert machine.precision_for(torch.device("cuda")) == expected
    assert machine.precision_for(torch.device("cuda:1")) == expected


def test_the_cpu_computes_in_fp32():
    assert machine.precision_for(torch.device("cpu")) == "fp32"


def test_cuda_n_becomes_the_current_device(fake_gpu):
    calls = fake_gpu()
    machine.use_device(torch.device("cuda:1"))
    machine.use_device(torch.device("cuda"))  # the current one already
    machine.use_device(torch.device("cpu"))
    assert calls == [torch.device("cuda:1")]


def test_a_gpu_record_says_which_gpu_and_its_numeric_settings(fake_gpu):
    fake_gpu((9, 0), current=3)
    settings = machine.cuda_settings(torch.device("cuda"))
    assert settings["device_index"] == 3 and settings["compute_capability"] == "9.0"
    assert settings["cudnn"] == 91002
    assert settings["tf32_matmul"] is torch.backends.cuda.matmul.allow_tf32
    assert {"tf32_cudnn", "cudnn_benchmark"} <= set(settings)
    assert machine.cuda_settings(torch.device("cuda:1"))["device_index"] == 1


@pytest.mark.parametrize("precision, dtype", [("bf16", torch.bfloat16), ("fp16", torch.float16),
                                              ("fp32", torch.float32)])
def test_autocast_computes_in_the_contexts_precision(precision, dtype):
    cell = SimpleNamespace(settings=None, seed=0, strategy_candidates=(None,))
    ctx = CellContext(cell, torch.device("cpu"), 2, "/tmp", Progress(enabled=False))
    ctx.precision = precision  # as on a GPU of that kind; CPU autocast takes both half types
    a = torch.ones(4, 4)
    with ctx.autocast():
        assert (a @ a).dtype == dtype


def test_batches_go_to_the_cells_device_when_a_strategy_names_none():
    images = tlbench.Images(samples=[np.full((4, 4), i * 60, dtype=np.uint8) for i in range(4)],
                            labels=[0, 1, 0, 1], classes=["a", "b"])
    split = ImageSplit(images, np.arange(4), 4, (0.5,) * 3, (0.5,) * 3, device="meta")
    x, y = next(iter(split.batches(2)))
    assert x.device.type == y.device.type == "meta"
    x, y = next(iter(split.batches(2, device="cpu")))
    assert x.device.type == "cpu"


def test_a_candidates_peak_leaves_out_what_others_held(monkeypatch):
    monkeypatch.setattr(torch.cuda, "max_memory_allocated", lambda device=None: 3000 * 2**20)
    monkeypatch.setattr(torch.cuda, "memory_allocated", lambda device=None: 1000 * 2**20)
    gpu = torch.device("cuda")
    held = machine.held_memory_mb(gpu)  # the best candidate so far, before this one is built
    assert held == 1000
    assert machine.peak_memory_mb(gpu, held) == 2000
    assert machine.held_memory_mb(torch.device("cpu")) == 0.0


def test_memory_pytorch_keeps_cached_counts_as_available(monkeypatch):
    """Whether a split goes to the GPU must not depend on what earlier cells left in the cache."""
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device=None: (1 * 2**30, 80 * 2**30))
    monkeypatch.setattr(torch.cuda, "memory_reserved", lambda device=None: 6 * 2**30)
    monkeypatch.setattr(torch.cuda, "memory_allocated", lambda device=None: 2 * 2**30)
    assert machine.available_memory(torch.device("cuda")) == 5 * 2**30


def test_the_record_says_where_the_pixels_were(registry, one_cell_grid, tmp_path):
    from tlbench.runner import Runner

    record = Runner(registry, tmp_path).run_cell(one_cell_grid.cells[0])
    assert record["status"] == "ok", record.get("error")
    assert record["pixels"] == "held on cpu"
    assert record["peak_mem_mb"] > 0


def test_the_untimed_warm_up_runs_once_per_device(monkeypatch):
    monkeypatch.setattr(machine, "_warmed_up", set())
    cpu = torch.device("cpu")
    assert machine.warm_up(cpu, torch.bfloat16) is True  # forward and backward under autocast
    assert machine.warm_up(cpu) is False


def test_a_gpu_record_names_the_driver_when_nvml_can(monkeypatch, fake_gpu):
    import sys

    fake_gpu()
    nvml = SimpleNamespace(nvmlInit=lambda: None, nvmlShutdown=lambda: None,
                           nvmlSystemGetDriverVersion=lambda: b"580.159.04")
    monkeypatch.setitem(sys.modules, "pynvml", nvml)
    machine.cuda_driver_version.cache_clear()
    assert machine.cuda_settings(torch.device("cuda"))["cuda_driver"] == "580.159.04"
    monkeypatch.setitem(sys.modules, "pynvml", None)  # not installed
    machine.cuda_driver_version.cache_clear()
    assert machine.cuda_driver_version() is None
    machine.cuda_driver_version.cache_clear()
