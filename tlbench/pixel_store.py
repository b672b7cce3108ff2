"""A dataset too large to hold decoded in memory, decoded once into a file instead.

Each image is decoded and resized once, at one size, into ``CACHE/pixels/DIGEST.u8`` (N×3×S×S
uint8, memory-mapped), followed by one byte a row, set once the row is written. Every later
split, epoch, cell and process reads rows from the file (the page cache keeps the hot ones)
instead of decoding JPEGs again. Two processes decoding the same row write the same bytes, so
they need no lock; a row is marked done only after it is written.

The file has a row for every image of the dataset, but takes disk space only for the rows the
cells use: it is made sparse, at its full size, in a temporary file and linked into place
(which never replaces one another process made first), and the disk blocks of a cell's rows are
reserved before they are written (a full disk is an OSError then, not a SIGBUS when a mapped
page is first written). A cell that uses 7,000 of a dataset's 20,000 images takes the disk
space of 7,000.
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


def reserve(fd: int, offset: int, nbytes: int) -> None:
    """Give bytes ``offset`` to ``offset + nbytes`` of the file ``fd`` their disk blocks now (zeros
    where nothing was written; written bytes are kept), so that writing them through a map can
    never meet a full disk. Where the system or its file system cannot reserve (no
    posix_fallocate, EINVAL, EOPNOTSUPP), nothing: the file is already sized."""
    if hasattr(os, "posix_fallocate") and nbytes:
        try:
            os.posix_fallocate(fd, offset, nbytes)
        except OSError as exc:
            if exc.errno not in (errno.EINVAL, errno.EOPNOTSUPP):
                raise


def _create(path: Path, nbytes: int, marks: int) -> None:
    """``path`` made at ``nbytes`` (sparse), the last ``marks`` bytes reserved, unless another
    process made it first."""
    _remove_stale_temporaries(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        try:
            shared_mode(fd)  # a shared cache: readable and writable as the umask allows
            os.ftruncate(fd, nbytes)
            reserve(fd, nbytes - marks, marks)
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


def _open_or_create(path: Path, nbytes: int, marks: int) -> np.memmap:
    """The file as a writable map, made whole first if it does not exist yet; one of another
    size (truncated, or written over) is replaced."""
    if path.exists() and path.stat().st_size != nbytes:
        _discard(path, f"it has {path.stat().st_size} bytes, not {nbytes}")
    if not path.exists():
        _create(path, nbytes, marks)
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
    when the file cannot be made (no room on the disk, say): the caller decodes without it.

    Opening it decodes nothing: the rows it already holds are checked (a few decoded again)
    when rows are first asked for, so a cell whose features come from a cache decodes none."""

    def __init__(self, cache_dir: str, key: dict, samples, size: int, resample: Resample):
        self.samples, self.size, self.resample = samples, size, resample
        self.row_bytes = 3 * size * size
        digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:32]
        folder = Path(cache_dir) / "pixels"
        folder.mkdir(parents=True, exist_ok=True)
        self.path = folder / f"{digest}.u8"
        self._map()
        why = self._damaged_marks()
        if why:
            self._discard_and_remap(why)
        self._checked = False  # the spot check of done rows, made by the first rows()

    def _map(self) -> None:
        count = len(self.samples)
        mapped = _open_or_create(self.path, count * self.row_bytes + count, marks=count)
        self.pixels = mapped[:count * self.row_bytes].reshape(count, 3, self.size, self.size)
        self.done = mapped[count * self.row_bytes:]
        self._file = mapped

    def _discard_and_remap(self, why: str) -> None:
        """Written over since (another program, a bad disk): made again, not trusted."""
        del self.pixels, self.done, self._file
        _discard(self.path, why)
        self._map()

    def _damaged_marks(self) -> Optional[str]:
        return "its row marks are not 0 or 1" if self.done.max(initial=0) > 1 else None

    def _damaged_rows(self) -> Optional[str]:
        """Why the rows already in the file cannot be trusted, or None: one of a few done rows,
        spread over the file, that is not what decoding its image gives now (decoding is
        deterministic: the same bytes every time)."""
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
        """Whether the cache folder's disk has room for ``count`` rows (the cell's images) and
        1 GB to spare."""
        folder = Path(cache_dir)
        while not folder.exists():
            folder = folder.parent
        return shutil.disk_usage(folder).free >= count * 3 * size * size + 2**30

    def reserve(self, indices: np.ndarray) -> None:
        """Reserve the disk blocks of the rows ``indices`` not written yet (an OSError when the
        disk has no room for them); decodes nothing."""
        todo = np.unique(np.asarray(indices, dtype=np.int64))
        todo = todo[self.done[todo] == 0]
        if not len(todo):
            return
        breaks = np.flatnonzero(np.diff(todo) != 1) + 1  # runs of consecutive rows: one call each
        fd = os.open(self.path, os.O_RDWR)
        try:
            for run in np.split(todo, breaks):
                reserve(fd, int(run[0]) * self.row_bytes, len(run) * self.row_bytes)
        finally:
            os.close(fd)

    def rows(self, indices: np.ndarray) -> "StoredRows":
        """The rows ``indices`` (read from the file when a batch asks), decoding and writing
        first the ones not yet in the file."""
        if not self._checked:
            self._checked = True
            why = self._damaged_rows()
            if why:
                self._discard_and_remap(why)
        indices = np.asarray(indices, dtype=np.int64)
        todo = np.unique(indices[self.done[indices] == 0])
        self.reserve(todo)
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
