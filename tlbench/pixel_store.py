"""A dataset too large to hold decoded in memory, decoded once into a file instead.

Each image is decoded and resized once, at one size, into ``CACHE/pixels/DIGEST.u8`` (N×3×S×S
uint8, memory-mapped), followed by one byte a row, set once the row is written. Every later
split, epoch, cell and process reads rows from the file (the page cache keeps the hot ones)
instead of decoding JPEGs again. Two processes decoding the same row write the same bytes, so
they need no lock; a row is marked done only after it is written.

The file appears whole or not at all: it is made at its full size in a temporary file, its
disk space reserved there (a full disk is an OSError then, not a SIGBUS when a mapped page is
first written), and linked into place, which never replaces one another process made first.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Optional

import numpy as np
import torch

from tlbench.decoding import Resample, decode_all
from tlbench.atomic_files import shared_mode

FORMAT = 2  # 2: the done bytes at the end of the pixels' file, which is made whole
CHUNK_ROWS = 512  # decoded at once: bounds the memory the decoding takes
STALE_TEMPORARY_S = 3600.0
SPOT_CHECKS = 4  # done rows decoded again when a store is opened, to catch one written over


def store_key(dataset: str, count: int, size: int, resample: Resample) -> dict:
    """``dataset``: its name, options and content (tlbench.cell_data.dataset_key)."""
    return {"format": FORMAT, "dataset": dataset, "count": count, "size": size, "resample": repr(resample)}


def reserve(fd: int, nbytes: int) -> None:
    """Give the file ``fd`` ``nbytes`` of disk blocks now (zeros), so that writing through a map
    of it can never meet a full disk; where the system or its file system cannot reserve (no
    posix_fallocate, EINVAL, EOPNOTSUPP), only its size, as before."""
    if hasattr(os, "posix_fallocate") and nbytes:
        try:
            os.posix_fallocate(fd, 0, nbytes)
            return
        except OSError as exc:
            if exc.errno not in (errno.EINVAL, errno.EOPNOTSUPP):
                raise
    os.ftruncate(fd, nbytes)


def _create(path: Path, nbytes: int) -> None:
    """``path`` made at ``nbytes``, space reserved, unless another process made it first."""
    _remove_stale_temporaries(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        try:
            shared_mode(fd)  # a shared cache: readable and writable as the umask allows
            reserve(fd, nbytes)
        finally:
            os.close(fd)
        try:
            os.link(tmp, path)  # atomic, and never replaces a file another process made (and uses)
        except FileExistsError:
            pass
    finally:
        os.unlink(tmp)


def _remove_stale_temporaries(path: Path) -> None:
    """Temporaries of ``path`` that a process killed with -9 left, reserved space and all (a live
    creator's are seconds old)."""
    now = time.time()
    for tmp in path.parent.glob(f".{path.name}.*.tmp"):
        with contextlib.suppress(OSError):
            if now - tmp.stat().st_mtime > STALE_TEMPORARY_S:
                tmp.unlink()


def _open_or_create(path: Path, nbytes: int) -> np.memmap:
    """The file as a writable map, made whole first if it does not exist yet; one of another
    size (truncated, or written over) is replaced."""
    if path.exists() and path.stat().st_size != nbytes:
        _discard(path, f"it has {path.stat().st_size} bytes, not {nbytes}")
    if not path.exists():
        _create(path, nbytes)
    if path.stat().st_size != nbytes:
        raise OSError(f"{path} has {path.stat().st_size} bytes, expected {nbytes}")
    return np.memmap(path, dtype=np.uint8, mode="r+", shape=(nbytes,))


def _discard(path: Path, why: str) -> None:
    """Remove a damaged store, saying so; the caller makes it again. Its pixels are all derived
    from the dataset (and may be gigabytes): nothing is lost that decoding does not give back."""
    print(f"warning: the decoded-pixel store {path} is damaged ({why}); it is removed and decoded again.",
          file=sys.stderr)
    with contextlib.suppress(FileNotFoundError):
        path.unlink()


class PixelStore:
    """The decoded pixels of ``samples`` at ``size``, on disk under ``cache_dir``. An OSError
    when the file cannot be made (no room on the disk, say): the caller decodes without it."""

    def __init__(self, cache_dir: str, key: dict, samples, size: int, resample: Resample):
        self.samples, self.size, self.resample = samples, size, resample
        digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:32]
        folder = Path(cache_dir) / "pixels"
        folder.mkdir(parents=True, exist_ok=True)
        self.path = folder / f"{digest}.u8"
        self._map()
        why = self._damage()
        if why:  # written over since (another program, a bad disk): made again, not trusted
            del self.pixels, self.done, self._file
            _discard(self.path, why)
            self._map()

    def _map(self) -> None:
        count, size = len(self.samples), self.size
        mapped = _open_or_create(self.path, count * 3 * size * size + count)
        self.pixels = mapped[:count * 3 * size * size].reshape(count, 3, size, size)
        self.done = mapped[count * 3 * size * size:]
        self._file = mapped

    def _damage(self) -> Optional[str]:
        """Why the rows already in the file cannot be trusted, or None: a done byte that is
        neither 0 nor 1, or one of a few done rows, spread over the file, that is not what
        decoding its image gives now (decoding is deterministic: the same bytes every time)."""
        if self.done.max(initial=0) > 1:
            return "its row marks are not 0 or 1"
        done = np.flatnonzero(self.done)
        if not len(done):
            return None
        picks = done[np.linspace(0, len(done) - 1, num=min(SPOT_CHECKS, len(done))).astype(np.int64)]
        fresh = decode_all(self.samples, picks, self.size, self.resample).numpy()
        if not np.array_equal(fresh, self.pixels[picks]):
            return f"rows of it differ from their images decoded now ({len(picks)} checked)"
        return None

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
            self._file.flush()  # the rows on disk before they are marked done
            self.done[chunk] = 1
        if len(todo):
            self._file.flush()
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
