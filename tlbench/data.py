"""Splits and image tensors: the core, not the dataset plugin, decides who sees which image.

Splits are stratified and drawn from ``split_seed`` alone, so every cell of a grid (every
backbone, strategy and seed) is trained, selected and scored on the same images. k-shot
subsampling of the training split uses the cell's seed, so seeds also vary the k examples.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from dataclasses import dataclass
from typing import Iterator, Optional, Sequence

import numpy as np
import torch

from tlbench.api import Images, Split

# Datasets whose resized uint8 pixels fit in this many bytes are decoded once and held in
# memory; larger ones are decoded once into a file (tlbench.pixel_store), or per batch by
# DataLoader workers when the disk has no room for it.
MATERIALIZE_BYTES = int(os.environ.get("TLBENCH_MATERIALIZE_MB", "2048")) * 2**20
THREADED_DECODE_S = 0.0005  # below this per image, decoding on threads is slower than on one


@dataclass
class SplitIndices:
    train: np.ndarray
    val: np.ndarray
    test: np.ndarray

    def sizes(self) -> dict:
        return {"train": len(self.train), "val": len(self.val), "test": len(self.test)}

    def digest(self) -> str:
        h = hashlib.sha256()
        for part in (self.train, self.val, self.test):
            h.update(np.sort(part).astype(np.int64).tobytes())
            h.update(b"|")
        return h.hexdigest()[:16]


def images_fingerprint(images) -> dict:
    """What identifies a loaded dataset cheaply, without decoding an image: its size, its class
    names, every label and the official test split. Two machines with other copies of a
    dataset (a folder with 80 images on one, 90 on the other) differ here."""
    digest = hashlib.sha256(json.dumps([str(c) for c in images.classes]).encode())
    digest.update(np.asarray(images.labels, dtype=np.int64).tobytes())
    if images.test_indices is not None:
        digest.update(b"|test|" + np.asarray(images.test_indices, dtype=np.int64).tobytes())
    return {"images": len(images.samples), "classes": len(images.classes), "digest": digest.hexdigest()[:16]}


def _share(n: int, fraction: float) -> int:
    """At least one example of a class goes to a held-out split once the class has three."""
    return max(1, int(round(n * fraction))) if n >= 3 else 0


def stratified_split(
    labels: Sequence[int],
    val_fraction: float,
    test_fraction: float,
    seed: int,
    test_indices: Optional[Sequence[int]] = None,
) -> SplitIndices:
    labels = np.asarray(labels)
    rng = np.random.default_rng(seed)
    fixed_test = None if test_indices is None else np.asarray(test_indices, dtype=np.int64)
    pool = np.arange(len(labels))
    if fixed_test is not None:
        pool = np.setdiff1d(pool, fixed_test)
        # the remaining data is split into train and val in the same proportion as otherwise
        val_fraction = val_fraction / (1.0 - test_fraction)
    train, val, test = [], [], []
    for cls in np.unique(labels[pool]):
        members = pool[labels[pool] == cls]
        members = members[rng.permutation(len(members))]
        n_test = 0 if fixed_test is not None else _share(len(members), test_fraction)
        n_val = _share(len(members), val_fraction)
        test.append(members[:n_test])
        val.append(members[n_test:n_test + n_val])
        train.append(members[n_test + n_val:])
    join = lambda parts: np.sort(np.concatenate(parts)) if parts else np.zeros(0, np.int64)
    return SplitIndices(join(train), join(val), fixed_test if fixed_test is not None else join(test))


def per_class_subsample(indices: np.ndarray, labels: Sequence[int], k: int, seed: int) -> np.ndarray:
    """Keep at most ``k`` examples of each class (k-shot), chosen with ``seed``."""
    labels = np.asarray(labels)
    rng = np.random.default_rng(seed)
    kept = []
    for cls in np.unique(labels[indices]):
        members = indices[labels[indices] == cls]
        kept.append(rng.choice(members, size=min(k, len(members)), replace=False))
    return np.sort(np.concatenate(kept))


def _proportional_counts(class_sizes: np.ndarray, total: int) -> np.ndarray:
    """How many of each class a stratified draw of exactly ``total`` takes: shares proportional
    to the class sizes, rounded by largest remainder so that they add up to ``total``."""
    exact = class_sizes * (total / class_sizes.sum())
    counts = np.floor(exact).astype(np.int64)
    order = np.argsort(-(exact - counts), kind="stable")  # ties: the first class first
    counts[order[: total - counts.sum()]] += 1
    return counts


def stratified_sample(indices: np.ndarray, labels: Sequence[int], total: int, seed: int) -> np.ndarray:
    """Exactly ``total`` of ``indices``, each class in proportion to its share, chosen with ``seed``."""
    labels = np.asarray(labels)
    rng = np.random.default_rng(seed)
    classes, sizes = np.unique(labels[indices], return_counts=True)
    kept = []
    for cls, count in zip(classes, _proportional_counts(sizes, total)):
        members = indices[labels[indices] == cls]
        kept.append(rng.choice(members, size=int(count), replace=False))
    return np.sort(np.concatenate(kept)) if kept else np.zeros(0, np.int64)


def fixed_size_train_val(splits: SplitIndices, labels: Sequence[int], train_size: int,
                         val_fraction: float, seed: int) -> SplitIndices:
    """VTAB-1k's protocol: ``train_size`` labelled examples drawn (stratified) with the cell's
    seed from everything outside the test split, then split train/val by ``val_fraction``
    (1,000 at 0.2: 800/200, as Zhai et al. 2019 do)."""
    pool = np.sort(np.concatenate([splits.train, splits.val]))
    if train_size > len(pool):
        raise ValueError(f"train_size = {train_size}, but the dataset has only {len(pool)} examples "
                         "outside its test split; use a smaller train_size")
    drawn = stratified_sample(pool, labels, train_size, seed)
    val = stratified_sample(drawn, labels, int(round(train_size * val_fraction)), seed)
    return SplitIndices(np.setdiff1d(drawn, val), val, splits.test)


@dataclass(frozen=True)
class Resample:
    """Interpolation for shrinking and for enlarging images (PIL names: bilinear, bicubic)."""

    shrink: str = "bilinear"
    enlarge: str = "bilinear"

    def method(self, scale: float) -> str:
        return self.shrink if scale <= 1 else self.enlarge


def _grey_to_uint8(values: np.ndarray, mode: str) -> np.ndarray:
    """Integer or float grey levels to 0..255 by the range their format holds: PIL's own
    convert() clips 16-bit levels at 255, which turns a 16-bit PNG solid white."""
    values = values.astype(np.float64)
    if mode.startswith("I;16"):
        top = 65535.0
    elif mode == "F" and values.size and values.min() >= 0 and values.max() <= 1:
        top = 1.0  # floats as fractions
    elif values.size and values.min() >= 0 and values.max() <= 255:
        top = 255.0
    elif values.size and values.min() >= 0 and values.max() <= 65535:
        top = 65535.0  # 16-bit data in a 32-bit mode (how PIL opens many 16-bit PNGs)
    else:  # anything else: stretch the range it uses
        low, high = (values.min(), values.max()) if values.size else (0.0, 1.0)
        values, top = values - low, max(high - low, 1e-12)
    return np.clip(np.round(values * (255.0 / top)), 0, 255).astype(np.uint8)


def _rgb(image):
    """Any PIL mode a folder may hold (1, L, P, RGBA, CMYK, I;16, I, F, ...) as an RGB image."""
    from PIL import Image

    if image.mode.startswith("I") or image.mode == "F":
        return Image.fromarray(_grey_to_uint8(np.asarray(image), image.mode)).convert("RGB")
    return image.convert("RGB")


def _draft(image, size: int) -> None:
    """A JPEG not decoded yet is decoded at the smallest of 1/8, 1/4, 1/2 of its size that still
    covers ``size`` (libjpeg scales while it decodes: a 12 MP photo to 224 px decodes ~10×
    faster). A plugin gets this by returning images it has opened but not loaded."""
    if getattr(image, "format", None) != "JPEG" or not image.tile:
        return
    width, height = image.size
    scale = size / min(width, height)
    if scale <= 0.5:
        image.draft(None, (math.ceil(width * scale), math.ceil(height * scale)))


def to_rgb_uint8(sample, size: int, resample: Resample = Resample()) -> np.ndarray:
    """Any sample a dataset yields -> H×W×3 uint8: shorter side to ``size``, centre crop."""
    from PIL import Image

    if isinstance(sample, Image.Image):
        try:
            _draft(sample, size)
            image = _rgb(sample)  # decodes a lazily opened file: name it if that fails
        except OSError as exc:
            raise OSError(f"cannot decode image {getattr(sample, 'filename', '') or '(in memory)'}: {exc}. "
                          "Remove or replace it.") from exc
    else:
        array = np.asarray(sample)
        if array.dtype != np.uint8:
            raise TypeError(f"dataset samples must be uint8 arrays or PIL images, got {array.dtype}")
        if array.ndim == 3 and array.shape[2] == 1:
            array = array[:, :, 0]
        image = Image.fromarray(array)
    image = image.convert("RGB")
    width, height = image.size
    scale = size / min(width, height)
    resized = (max(size, round(width * scale)), max(size, round(height * scale)))
    method = Image.BICUBIC if resample.method(scale) == "bicubic" else Image.BILINEAR
    if resized != image.size:
        image = image.resize(resized, method)
    left, top = (resized[0] - size) // 2, (resized[1] - size) // 2
    image = image.crop((left, top, left + size, top + size))
    return np.array(image, dtype=np.uint8)  # a writable copy, as torch.from_numpy wants


class _DecodeDataset(torch.utils.data.Dataset):
    def __init__(self, samples, indices, size, resample):
        self.samples, self.indices = samples, indices
        self.size, self.resample = size, resample

    def __len__(self):
        return len(self.indices)

    def __getitem__(self, i):
        pixels = to_rgb_uint8(self.samples[int(self.indices[i])], self.size, self.resample)
        return torch.from_numpy(pixels).permute(2, 0, 1).contiguous(), i


class _NextOrder(torch.utils.data.Sampler):
    """The rows of the next pass, set before each: one DataLoader, and its worker processes,
    serves every epoch of a split (starting workers per epoch costs seconds each time)."""

    def __init__(self):
        self.rows: list = []

    def __iter__(self):
        return iter(self.rows)

    def __len__(self) -> int:
        return len(self.rows)


def decode_all(samples, indices, size: int, resample: Resample, threads: Optional[int] = None) -> torch.Tensor:
    """Decode and resize ``samples[indices]`` into one N×3×S×S uint8 tensor.

    Photos are decoded on ``threads`` threads (default: the usable CPUs), each a contiguous
    share of the rows: PIL decodes and resizes without holding the GIL (JPEG 500×375 to 224 px:
    1.8× on 2 cores). Tiny images (digits, 8×8) are mostly Python and threads only fight over
    the GIL (0.7×), so the first rows, decoded alone, decide: threads only when they took over
    ``THREADED_DECODE_S`` each."""
    import time
    from concurrent.futures import ThreadPoolExecutor

    from tlbench.cpus import usable_cpus

    out = torch.empty((len(indices), 3, size, size), dtype=torch.uint8)

    def decode(rows: range) -> None:
        for row in rows:
            image = to_rgb_uint8(samples[int(indices[row])], size, resample)
            out[row] = torch.from_numpy(image).permute(2, 0, 1)

    probe = min(len(indices), 8)
    start = time.perf_counter()
    decode(range(probe))
    per_image = (time.perf_counter() - start) / max(1, probe)
    threads = min(threads or usable_cpus(), (len(indices) - probe) // 8)
    if threads < 2 or per_image < THREADED_DECODE_S:
        decode(range(probe, len(indices)))
        return out
    bounds = np.linspace(probe, len(indices), threads + 1).astype(int)
    with ThreadPoolExecutor(threads, thread_name_prefix="tlbench-decode") as pool:
        list(pool.map(decode, [range(a, b) for a, b in zip(bounds[:-1], bounds[1:])]))
    return out


class DecodedPixels:
    """A dataset's images decoded at one size, each the first time a split asks for it.

    Grids that use a sample of a large dataset (VTAB-1k's 1,000 of Fashion-MNIST's 70,000)
    decode only that sample. The tensor for all images is allocated at once but untouched rows
    cost no memory: large allocations are mapped lazily by the operating system.
    """

    def __init__(self, samples, size: int, resample: Resample):
        self.samples, self.size, self.resample = samples, size, resample
        self.pixels = torch.empty((len(samples), 3, size, size), dtype=torch.uint8)
        self.decoded = np.zeros(len(samples), dtype=bool)

    def rows(self, indices: np.ndarray) -> torch.Tensor:
        """``pixels[indices]`` (a copy), decoding the rows not decoded yet."""
        indices = np.asarray(indices, dtype=np.int64)
        todo = np.unique(indices[~self.decoded[indices]])
        if len(todo):
            self.pixels[torch.from_numpy(todo)] = decode_all(self.samples, todo, self.size, self.resample)
            self.decoded[todo] = True
        return self.pixels[torch.from_numpy(indices)]


class ImageSplit(Split):
    """One split of a dataset, as strategies see it.

    ``batches()`` yields normalised float images and labels on a device. Small datasets are
    held as one uint8 tensor (decoded once); large ones are decoded by DataLoader workers.
    """

    def __init__(self, images: Images, indices: np.ndarray, size: int, mean, std,
                 resample: Resample = Resample(), pixels: Optional[torch.Tensor] = None, key: str = "",
                 device="cpu"):
        self.indices = np.asarray(indices, dtype=np.int64)
        self.device = torch.device(device)  # where batches() puts them unless told otherwise
        all_labels = np.asarray(images.labels, dtype=np.int64)
        self.labels = torch.from_numpy(all_labels[self.indices])
        self.num_classes = len(images.classes)
        self.size = size
        self.mean = torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1)
        self.std = torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1)
        self._images, self._resample = images, resample
        self._on_device: dict = {}
        self._persistent = None  # ((batch size, pinned), DataLoader, its sampler) for large datasets
        self._streaming = 0  # passes of the persistent loader in progress
        self.pixels = pixels  # N×3×S×S uint8 (on the CPU or the GPU), or None: decoded on the fly
        # identifies exactly these images as the model sees them (dataset, indices, size,
        # normalisation): a key for caches of anything computed from them
        self.key = f"{key}|{hashlib.sha256(self.indices.tobytes()).hexdigest()[:16]}"

    def __len__(self) -> int:
        return len(self.indices)

    def normalize(self, pixels: torch.Tensor, device) -> torch.Tensor:
        mean, std, _ = self._constants(device)
        x = pixels.to(device, non_blocking=True).float().div_(255.0)
        return x.sub_(mean).div_(std)

    def _constants(self, device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Mean, std and the labels on ``device``, copied there once: a copy per batch is a
        blocking host-to-device transfer on a GPU."""
        device = torch.device(device)
        if device not in self._on_device:
            self._on_device[device] = (self.mean.to(device), self.std.to(device), self.labels.to(device))
        return self._on_device[device]

    def batches(self, batch_size: int, shuffle: bool = False, seed: int = 0,
                device=None) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        device = self.device if device is None else device
        order = (torch.randperm(len(self), generator=torch.Generator().manual_seed(seed))
                 if shuffle else torch.arange(len(self)))
        if self.pixels is not None:
            # the order where the pixels are, the labels where the batches go: once a pass
            rows_here, labels = order.to(self.pixels.device), self._constants(device)[2]
            rows_there = rows_here.to(labels.device)
            for start in range(0, len(self), batch_size):
                pixels = self.pixels[rows_here[start:start + batch_size]]
                yield self.normalize(pixels, device), labels[rows_there[start:start + batch_size]]
            return
        persistent = not self._streaming  # a pass inside another pass gets a loader of its own
        loader, next_order = self._loader(batch_size, torch.device(device).type == "cuda", persistent)
        next_order.rows = order.tolist()
        self._streaming += 1
        try:
            for pixels, rows in loader:
                yield self.normalize(pixels, device), self.labels[rows].to(device)
        finally:
            self._streaming -= 1

    def _loader(self, batch_size: int, pin: bool, persistent: bool):
        """(DataLoader decoding this split's images, the sampler whose order it follows); the
        persistent one is kept for the next pass with the same batch size."""
        from tlbench.cpus import usable_cpus

        if persistent and self._persistent is not None and self._persistent[0] == (batch_size, pin):
            return self._persistent[1:]
        workers = min(8, usable_cpus())
        next_order = _NextOrder()
        loader = torch.utils.data.DataLoader(
            _DecodeDataset(self._images.samples, self.indices, self.size, self._resample),
            batch_size=batch_size, sampler=next_order, num_workers=workers, pin_memory=pin,
            persistent_workers=persistent and workers > 0)
        if persistent:
            self._persistent = ((batch_size, pin), loader, next_order)
        return loader, next_order

    def num_batches(self, batch_size: int) -> int:
        return (len(self) + batch_size - 1) // batch_size


def fits_in_memory(count: int, size: int) -> bool:
    return count * 3 * size * size <= MATERIALIZE_BYTES
