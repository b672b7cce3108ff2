"""Features of a frozen network, computed once and kept on disk.

An entry is keyed by everything that changes the features: the weights (their identity and the
architecture), the exact images (dataset, indices, size, normalisation, via the split's key),
where the features are taken (pooling) and the numeric precision. An entry that cannot be read,
or whose content does not match its key, is rebuilt.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import torch


FORMAT = 1  # bump when what is stored changes
FEATURE_PRECISION = "fp32"  # frozen features are extracted in fp32 whatever the cell's precision (extraction.py)


def cache_key(model: torch.nn.Module, split, ctx, pooling: str) -> dict:
    """Everything that changes a split's features: the weights' identity and the architecture,
    the exact images (the split's ``key``), where they are taken and their precision."""
    return {
        "format": FORMAT,
        "weights": ctx.weights,
        "architecture": type(model).__name__,
        "parameters": sum(p.numel() for p in model.parameters()),
        "images": split.key,
        "pooling": pooling,
        "precision": FEATURE_PRECISION,
    }


def _path(cache_dir: str, key: dict) -> Path:
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:32]
    return Path(cache_dir) / "features" / f"{digest}.pt"


def load(cache_dir: str, key: dict, labels: torch.Tensor):
    """(cached features for ``key``, the seconds their extraction took), or None when absent,
    unreadable or inconsistent."""
    path = _path(cache_dir, key)
    if not path.exists():
        return None
    try:
        entry = torch.load(path, map_location="cpu", weights_only=True)
        features = entry["features"]
        valid = (entry["key"] == key and features.ndim == 2 and len(features) == len(labels)
                 and torch.equal(entry["labels"], labels.cpu()) and torch.isfinite(features).all())
    except Exception:  # a truncated or foreign file
        valid = False
    if valid:
        return features, float(entry.get("seconds") or 0.0)
    _set_aside(path)
    return None


def _set_aside(path: Path) -> None:
    """Keep a bad entry for inspection (never delete data) and say so; the caller rebuilds it."""
    aside = path.parent / "corrupt" / f"{path.name}.{time.strftime('%Y%m%dT%H%M%S')}"
    aside.parent.mkdir(exist_ok=True)
    os.replace(path, aside)
    print(f"warning: feature cache entry {path} was unreadable or stale; moved to {aside} and rebuilt",
          file=sys.stderr)


def _umask() -> int:
    current = os.umask(0o022)  # the only portable way to read it; set straight back
    os.umask(current)
    return current


def store(cache_dir: str, key: dict, features: torch.Tensor, labels: torch.Tensor, seconds: float = 0.0) -> None:
    """Write an entry whole or not at all, so a killed run never leaves half a file behind.
    ``seconds``: what extracting them cost, so a later cell that reads them can say so.

    A cache that cannot take it (a full disk, a folder made read-only) keeps nothing and says so
    once per process and folder: the features were computed, and the cell goes on with them."""
    path = _path(cache_dir, key)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
    except OSError as exc:
        _warn_unwritable(cache_dir, exc)
        return
    try:
        os.fchmod(fd, 0o666 & ~_umask())  # mkstemp's 0600 would hide a shared cache from its other users
        with os.fdopen(fd, "wb") as handle:
            torch.save({"key": key, "features": features.cpu(), "labels": labels.cpu(), "seconds": seconds}, handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except OSError as exc:
        _warn_unwritable(cache_dir, exc)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


_WARNED: set = set()  # cache folders said to be unwritable in this process


def _warn_unwritable(cache_dir: str, exc: OSError) -> None:
    if cache_dir not in _WARNED:
        _WARNED.add(cache_dir)
        print(f"warning: the feature cache under {cache_dir!r} cannot keep features ({exc.strerror or exc}); "
              "cells compute them without it. Free space there or set TLBENCH_CACHE_DIR to another disk.",
              file=sys.stderr)
