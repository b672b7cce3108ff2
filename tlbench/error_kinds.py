"""What went wrong in a cell, in a record's words: the error kinds, and the kind of an exception."""

from __future__ import annotations

ERROR_KINDS = ("exception", "oom", "non_finite", "device_fault", "interrupted", "timeout", "crashed",
               "node_config")

OOM_MESSAGES = ("out of memory", "not enough memory", "can't allocate memory",
                "cublas_status_alloc_failed")  # cuBLAS cannot allocate its workspace: memory too
# Errors after which the process's CUDA context is unusable: every later CUDA call fails too
DEVICE_FAULT_MESSAGES = ("device-side assert", "illegal memory access", "illegal instruction",
                         "unspecified launch failure", "misaligned address", "cuda error: an illegal")


def error_kind(exc: BaseException) -> str:
    """The kind of an exception a cell raised: oom, non_finite, device_fault or exception."""
    import torch  # here: commands that only read records (and ERROR_KINDS) start without torch

    message = str(exc).lower()
    if isinstance(exc, (torch.cuda.OutOfMemoryError, MemoryError)):
        return "oom"
    if isinstance(exc, RuntimeError) and any(m in message for m in DEVICE_FAULT_MESSAGES):
        return "device_fault"
    if isinstance(exc, RuntimeError) and any(m in message for m in OOM_MESSAGES):
        return "oom"  # MPS, the CPU allocator and cuBLAS raise plain RuntimeErrors
    if isinstance(exc, FloatingPointError):  # strategies raise it for a non-finite loss
        return "non_finite"
    return "exception"
