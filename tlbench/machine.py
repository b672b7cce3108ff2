"""What this machine is and what it has done: the device a cell runs on, synchronising and
peak memory on it, and the environment a record keeps (versions, host, checkout).

Probes only: nothing here knows about cells, grids or plugins.
"""

from __future__ import annotations

import functools
import gc
import importlib.metadata
import os
import platform
import socket
import subprocess
from pathlib import Path
from typing import Optional

import torch

import tlbench
from tlbench import rss_peak
from tlbench.errors import ConfigError


def resolve_device(requested: str) -> torch.device:
    if requested != "auto":
        return torch.device(requested)
    if torch.cuda.is_available():
        return torch.device("cuda")
    if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def check_device(requested: str) -> None:
    """A device this machine lacks is a mistake in the grid, reported before any cell runs."""
    device = resolve_device(requested)
    if device.type == "cuda" and (not torch.cuda.is_available()
                                  or (device.index or 0) >= torch.cuda.device_count()):
        found = torch.cuda.device_count() if torch.cuda.is_available() else 0
        raise ConfigError(f"[settings] device = {requested!r}, but this machine has {found} usable "
                          "CUDA device(s). Use device = \"auto\" or \"cpu\".")
    if device.type == "mps" and not (getattr(torch.backends, "mps", None)
                                     and torch.backends.mps.is_available()):
        raise ConfigError(f"[settings] device = {requested!r}, but MPS is not available here. "
                          "Use device = \"auto\" or \"cpu\".")


def cpu_model() -> str:
    """The CPU's model name (``/proc/cpuinfo``; elsewhere what platform knows): two CPUs of one
    architecture can round differently (other vector units, other oneDNN kernels)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() in ("model name", "Model", "Hardware") and value.strip():
                return value.strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    if device.type == "cpu":
        return cpu_model()
    return device.type


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def package_version(name: str) -> Optional[str]:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


@functools.lru_cache(maxsize=1)
def tlbench_checkout() -> tuple[Optional[str], Optional[bool]]:
    """(commit, dirty) when tlbench runs from a git checkout, else (None, None).

    The version number alone does not say which code made a record during development.
    Dirty means uncommitted changes to the code (tlbench/, plugins/), not to results.
    Asked once per process; any failure (no git, not a checkout) just gives None.
    """
    root = Path(tlbench.__file__).resolve().parent.parent
    if not (root / ".git").exists():
        return None, None
    try:
        def git(*argv):
            return subprocess.run(["git", "-C", str(root), *argv], capture_output=True, text=True,
                                  timeout=10, check=True).stdout.strip()

        commit = git("rev-parse", "HEAD")
        dirty = bool(git("status", "--porcelain", "--untracked-files=no", "--",
                         "tlbench", "plugins", "pyproject.toml"))
    except (OSError, subprocess.SubprocessError):
        return None, None
    return commit or None, dirty


def environment(device: torch.device, precision: Optional[str]) -> dict:
    commit, dirty = tlbench_checkout()
    return {
        "tlbench": tlbench.__version__,
        "tlbench_git_commit": commit,
        "tlbench_git_dirty": dirty,
        "hostname": socket.gethostname(),
        "torch": torch.__version__,
        "torchvision": package_version("torchvision"),
        "timm": package_version("timm"),
        "python": platform.python_version(),
        "cuda": torch.version.cuda if device.type == "cuda" else None,
        "device": device.type,
        "device_name": device_name(device),
        "precision": precision,
        "platform": platform.platform(),
        # what else a trained number depends on: float sums split among threads round differently
        "cpu_model": cpu_model(),
        "threads": torch.get_num_threads(),
        "deterministic": torch.are_deterministic_algorithms_enabled(),
        **(cuda_settings(device) if device.type == "cuda" else {}),
    }


def reproducible_kernels(settings, device: torch.device) -> None:
    """The grid's pinned thread count (else the executor's share stays) and deterministic
    algorithms on or off, set for each cell so that one cell's choice never leaks into the next."""
    if settings.threads and torch.get_num_threads() != settings.threads:
        torch.set_num_threads(settings.threads)
    if settings.deterministic and device.type == "cuda":
        deterministic_cublas()  # in time only if nothing in this process used cuBLAS yet
    torch.use_deterministic_algorithms(settings.deterministic)


def deterministic_cublas() -> None:
    """The cuBLAS workspace deterministic matmuls need (without it they raise). cuBLAS reads it
    when it makes its first handle, so the CLI sets it before anything touches CUDA."""
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")


def gpu_index(device: torch.device) -> int:
    """Which GPU ``cuda`` or ``cuda:N`` is (plain ``cuda``: the current one)."""
    return device.index if device.index is not None else torch.cuda.current_device()


def cuda_settings(device: torch.device) -> dict:
    """What else changes a number on a GPU: which one, its compute capability, cuDNN's version
    and whether TF32 and cuDNN's autotuner were on."""
    index = gpu_index(device)
    major, minor = torch.cuda.get_device_capability(index)
    return {
        "device_index": index,
        "compute_capability": f"{major}.{minor}",
        "cudnn": torch.backends.cudnn.version(),
        "tf32_matmul": torch.backends.cuda.matmul.allow_tf32,
        "tf32_cudnn": torch.backends.cudnn.allow_tf32,
        "cudnn_benchmark": torch.backends.cudnn.benchmark,
        "cuda_driver": cuda_driver_version(),
    }


@functools.lru_cache(maxsize=1)
def cuda_driver_version() -> Optional[str]:
    """The NVIDIA driver's version through NVML (package nvidia-ml-py), None without it."""
    try:
        import pynvml

        pynvml.nvmlInit()
        try:
            version = pynvml.nvmlSystemGetDriverVersion()
        finally:
            pynvml.nvmlShutdown()
    except Exception:  # no NVML, no driver, an old library: the record just lacks it
        return None
    return version.decode() if isinstance(version, bytes) else str(version)


def precision_for(device: torch.device) -> str:
    """The autocast precision of a cell: bf16 on GPUs that compute it natively (compute
    capability 8.0 and up: A100, H100, RTX 30xx on), fp16 on older ones (T4, V100: there bf16 is
    emulated and slower than fp32; fp16 training needs loss scaling, see FitContext.precision),
    fp32 elsewhere."""
    if device.type != "cuda":
        return "fp32"
    return "bf16" if torch.cuda.get_device_capability(gpu_index(device)) >= (8, 0) else "fp16"


def available_memory(device: torch.device) -> int:
    """Bytes a new tensor can take on a CUDA device: free on the device plus what PyTorch's
    allocator holds unused (``mem_get_info`` alone counts that as taken, so the answer would
    depend on what earlier cells left cached)."""
    free, _ = torch.cuda.mem_get_info(device)
    return free + torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device)


_warmed_up: set = set()


def warm_up(device: torch.device, dtype: Optional[torch.dtype] = None) -> bool:
    """Once per process and device, untimed, before the first fit: a small convolution and
    matrix product, forward and backward (under autocast to ``dtype``), so that CUDA's lazy
    loading, cuBLAS and cuDNN set-up and the allocator's first blocks are not paid inside the
    first cell's ``train_s``. True when it ran."""
    if device in _warmed_up:
        return False
    _warmed_up.add(device)
    x = torch.randn(4, 3, 16, 16, device=device, requires_grad=True)
    weight = torch.randn(8, 3, 3, 3, device=device, requires_grad=True)
    with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
        y = torch.nn.functional.conv2d(x, weight).flatten(1)
        y = y @ torch.randn(y.shape[1], 4, device=device)
    y.float().sum().backward()
    synchronize(device)
    return True


def use_device(device: torch.device) -> None:
    """Make ``cuda:N`` the current device too, so that nothing (cuBLAS handles, a library's own
    allocation) creates a context on GPU 0 beside it."""
    if device.type == "cuda" and device.index is not None:
        torch.cuda.set_device(device)


def release_memory() -> None:
    """After an out-of-memory error: give cached accelerator memory back so later cells fit."""
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def reset_peak_memory(device: torch.device) -> None:
    """Start measuring a new peak: on CUDA, of allocated memory; on the CPU, of the process's
    resident memory (tlbench.rss_peak: the kernel's high-water mark is left alone, so outside
    tools still see the process's peak; off Linux, the peak since the process started)."""
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        return
    rss_peak.start()


def held_memory_mb(device: torch.device) -> float:
    """What this process holds on ``device`` now (on CUDA; 0 on the CPU, where a peak is the
    process's RSS): taken before a candidate is built, so that its peak leaves it out."""
    return torch.cuda.memory_allocated(device) / 2**20 if device.type == "cuda" else 0.0


def peak_memory_mb(device: torch.device, held_mb: float = 0.0) -> float:
    """Peak memory since ``reset_peak_memory``: allocated on CUDA less ``held_mb`` (what others,
    e.g. the best candidate so far, held before this one was built), the process's RSS on the
    CPU (which counts what the process held before, e.g. the libraries and earlier cells' data)."""
    if device.type == "cuda":
        return max(0.0, torch.cuda.max_memory_allocated(device) / 2**20 - held_mb)
    return rss_peak.peak_mb()
