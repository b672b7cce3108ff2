"""A dataset too large to hold decoded in memory, decoded once into a file instead.

Each image is decoded and resized once, at one size, into ``CACHE/pixels/DIGEST.u8`` (N×3×S×S
uint8, memory-mapped); ``DIGEST.done`` holds one byte a row, set once the row is written. Every
later split, epoch, cell and process reads rows from the file (the page cache keeps the hot
ones) instead of decoding JPEGs again. Two processes decoding the same row write the same bytes,
so they need no lock; a row is marked done only after it is written.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path

import numpy as np
import torch

from tlbench.decoding import Resample, decode_all

FORMAT = 1
CHUNK_ROWS = 512  # decoded at once: bounds the memory the decoding takes


def store_key(dataset: str, count: int, size: int, resample: Resample) -> dict:
    """``dataset``: its name, options and content (tlbench.cell_data.dataset_key)."""
    return {"format": FORMAT, "dataset": dataset, "count": count, "size": size, "resample": repr(resample)}


def _open_or_create(path: Path, nbytes: int) -> np.memmap:
    """The file as a writable map, created at its full size (sparse) if it does not exist yet;
    exclusive creation, so that a second process never truncates the first one's rows."""
    try:
        descriptor = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o666)
    except FileExistsError:
        pass
    else:
        try:
            os.ftruncate(descriptor, nbytes)
        finally:
            os.close(descriptor)
    if path.stat().st_size != nbytes:
        raise OSError(f"{path} has {path.stat().st_size} bytes, expected {nbytes}")
    return np.memmap(path, dtype=np.uint8, mode="r+", shape=(nbytes,))


class PixelStore:
    """The decoded pixels of ``samples`` at ``size``, on disk under ``cache_dir``."""

    def __init__(self, cache_dir: str, key: dict, samples, size: int, resample: Resample):
        self.samples, self.size, self.resample = samples, size, resample
        digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:32]
        folder = Path(cache_dir) / "pixels"
        folder.mkdir(parents=True, exist_ok=True)
        count, row = len(samples), 3 * size * size
        self.path = folder / f"{digest}.u8"
        self.pixels = _open_or_create(self.path, count * row).reshape(count, 3, size, size)
        self.done = _open_or_create(folder / f"{digest}.done", count)

    @staticmethod
    def room_for(cache_dir: str, count: int, size: int) -> bool:
        """Whether the cache folder's disk has room for the whole store and 1 GB to spare."""
        folder = Path(cache_dir)
        while not folder.exists():
            folder = folder.parent
        return shutil.disk_usage(folder).free >= count * 3 * size * size + 2**30

    def rows(self, indices: np.ndarray) -> "StoredRows":
        """The rows ``indices`` (read from the file when a batch asks), decoding and writing
        first the ones not yet in the file."""
        indices = np.asarray(indices, dtype=np.int64)
        todo = np.unique(indices[self.done[indices] == 0])
        for start in range(0, len(todo), CHUNK_ROWS):
            chunk = todo[start:start + CHUNK_ROWS]
            self.pixels[chunk] = decode_all(self.samples, chunk, self.size, self.resample).numpy()
            self.pixels.flush()
            self.done[chunk] = 1
        if len(todo):
            self.done.flush()
        return StoredRows(self, indices)


class StoredRows:
    """Some rows of a PixelStore, as a split holds its pixels: ``rows[positions]`` reads those
    positions' images from the file into a tensor."""

    device = torch.device("cpu")

    def __init__(self, store: PixelStore, indices: np.ndarray):
        self.store, self.indices = store, indices

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, positions: torch.Tensor) -> torch.Tensor:
        rows = self.indices[np.asarray(positions.cpu(), dtype=np.int64)]
        return torch.from_numpy(np.ascontiguousarray(self.store.pixels[rows]))
