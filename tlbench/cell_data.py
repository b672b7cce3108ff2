"""The images a cell fits and is scored on: its dataset, loaded once per process, split by the
cell's settings, and decoded once into the place that has room for the cell's images, when a
split's first batch is asked for (a split whose features come from a cache decodes nothing)."""

from __future__ import annotations

import sys
from dataclasses import dataclass
from typing import Optional, Union

import numpy as np
import torch

from tlbench.api import Images
from tlbench.batches import ImageSplit
from tlbench.decoding import DecodedPixels, Resample, fits_in_memory
from tlbench.grid import Cell
from tlbench.machine import available_memory
from tlbench.options import options_as_dict
from tlbench.pixel_store import PixelStore, store_key
from tlbench.plugins import Registry
from tlbench.splits import (SplitIndices, fixed_size_train_val, images_fingerprint, per_class_subsample,
                            stratified_sample, stratified_split)


def cell_splits(cell: Cell, images: Images) -> SplitIndices:
    """Which images the cell trains, selects and is scored on."""
    s = cell.settings
    splits = stratified_split(images.labels, s.val_fraction, s.test_fraction, s.split_seed, images.test_indices)
    if s.train_size:
        splits = fixed_size_train_val(splits, images.labels, s.train_size, s.val_fraction, cell.seed)
    if s.train_per_class:
        # k-shot: k per class to train on and at most k to select with, or a strategy that
        # refits on train + val (linear_probe) would learn from many more than k
        splits.train = per_class_subsample(splits.train, images.labels, s.train_per_class, cell.seed)
        splits.val = per_class_subsample(splits.val, images.labels, s.train_per_class, cell.seed)
    if s.test_size and s.test_size < len(splits.test):
        splits.test = stratified_sample(splits.test, images.labels, s.test_size, s.split_seed)
    if len(splits.train) == 0 or len(splits.test) == 0:
        raise ValueError(f"dataset {cell.dataset!r} is too small to split: {splits.sizes()}")
    return splits


def capped_settings(cell: Cell, images: Images, splits: SplitIndices) -> dict:
    """{setting: {"set": the grid's value, "used": what the data allowed}} for each split size
    the dataset could not give in full: a ``test_size`` above its test split's size, a
    ``train_per_class`` above some class's training images (``used``: the fewest a class got).
    Empty when nothing was capped (``train_size`` too large is an error instead: it would change
    what every seed trains on)."""
    s, capped = cell.settings, {}
    if s.test_size and len(splits.test) < s.test_size:
        capped["test_size"] = {"set": s.test_size, "used": len(splits.test)}
    if s.train_per_class:
        _, per_class = np.unique(np.asarray(images.labels)[splits.train], return_counts=True)
        if per_class.min() < s.train_per_class:
            capped["train_per_class"] = {"set": s.train_per_class, "used": int(per_class.min())}
    return capped


def resampling(setting: str, weights_interpolation: str) -> Resample:
    """``auto``: the weights' own interpolation to shrink, bilinear to enlarge. Bicubic
    overshoots at sharp edges when it enlarges small images (8x8 digits to 64 px cost a linear
    probe 3 points of accuracy), while it is what the weights saw when photos were shrunk."""
    if setting == "auto":
        return Resample(shrink=weights_interpolation, enlarge="bilinear")
    return Resample(shrink=setting, enlarge=setting)


def check_images(name: str, images: Images) -> None:
    """What ``Dataset.load`` promises (api.md: ``tlbench.Images``), said in its words before a
    mistake surfaces deep in torch (a label past the classes: "Class values must be smaller ...")."""
    if len(images.samples) != len(images.labels):
        raise ValueError(f"dataset {name!r} returned {len(images.samples)} samples but {len(images.labels)} labels")
    if len(images.classes) < 2:
        raise ValueError(f"dataset {name!r} returned {len(images.classes)} class(es): a classifier needs at least 2")
    labels = np.asarray(images.labels)
    if labels.size and (labels.dtype.kind not in "iu" or labels.min() < 0 or labels.max() >= len(images.classes)):
        raise ValueError(f"dataset {name!r} returned labels from {labels.min()} to {labels.max()}; they must be "
                         f"integers 0 to {len(images.classes) - 1}, one per class name (classes lists "
                         f"{len(images.classes)})")


class CountingSplit(ImageSplit):
    """An ImageSplit that counts the images it serves, so throughput is measured by the core."""

    served = 0

    def batches(self, batch_size, shuffle=False, seed=0, device=None):
        for x, y in super().batches(batch_size, shuffle=shuffle, seed=seed, device=device):
            self.served += len(y)
            yield x, y


@dataclass
class CellImages:
    """The cell's three splits as strategies see them, at the network's size and normalisation."""

    train: CountingSplit
    val: CountingSplit
    test: ImageSplit
    pixels: str  # where their decoded pixels are, in the record's words


def deferred_pixels(source: Union[DecodedPixels, PixelStore, None], indices: np.ndarray, size: int,
                    device: torch.device) -> tuple[Optional["DeferredPixels"], str]:
    """(a function that decodes the split ``indices`` from ``source`` into where it is held,
    the record's words for where). On CUDA, a split that takes at most a quarter of the memory
    available is held decoded in GPU memory, so batches never wait on the host."""
    if source is None:
        return None, "decoded per batch"
    if isinstance(source, PixelStore):
        return DeferredPixels(source, indices, None), "stored decoded on disk"
    fits = device.type == "cuda" and len(indices) * 3 * size * size <= available_memory(device) // 4
    where = device if fits else torch.device("cpu")
    return DeferredPixels(source, indices, where), f"held on {where.type}"


class DeferredPixels:
    """A split's pixels, decoded from ``source`` when called (its first pass) and put on
    ``where`` (None: left where the source keeps them); ``first(n)`` decodes only its first
    ``n`` images (a check on a few images must not decode a whole split)."""

    def __init__(self, source: Union[DecodedPixels, PixelStore], indices: np.ndarray, where: Optional[torch.device]):
        self.source, self.indices, self.where = source, indices, where

    def __call__(self):
        rows = self.source.rows(self.indices)
        return rows if self.where is None else rows.to(self.where)

    def first(self, n: int) -> torch.Tensor:
        rows = self.source.rows(self.indices[:n])
        return rows[torch.arange(len(rows))]


def dataset_key(cell: Cell, images: Images) -> str:
    """The cell's dataset in the keys of the caches of its pixels and features: its name and
    options, and its content where the plugin says what it is (``Images.content``: files can
    change in place, under the same names and count)."""
    key = f"{cell.plugin('dataset')}|{options_as_dict(cell.dataset_options)}"
    return f"{key}|content {images.content}" if images.content else key


class CellData:
    """The dataset and the decoded pixels the cells of this process share, one dataset at a time."""

    def __init__(self, registry: Registry, cache_dir: str):
        self.registry = registry
        self.cache_dir = cache_dir
        self._images: dict = {}
        self._pixels: dict = {}

    def load_images(self, cell: Cell) -> Images:
        key = (cell.plugin("dataset"), repr(cell.dataset_options))
        if key not in self._images:
            self._images.clear()  # keep one dataset in memory at a time
            self._pixels.clear()
            dataset = self.registry.get("datasets", cell.plugin("dataset"))(cell.dataset_options)
            images = dataset.load()
            check_images(cell.dataset, images)
            self._images[key] = images
        return self._images[key]

    def fingerprint(self, cell: Cell) -> dict:
        """The cell's dataset as loaded here, and its splits: what another machine must match
        to run the cell on the same data (tlbench.node_check)."""
        images = self.load_images(cell)
        return {"dataset": images_fingerprint(images), "split_digest": cell_splits(cell, images).digest()}

    def cell_images(self, cell: Cell, images: Images, splits: SplitIndices, network, size: int,
                    resample: Resample, device: torch.device) -> CellImages:
        """The splits at ``size``, normalised for ``network``, their batches put on ``device``.
        Each decodes its images when its first batch is asked for, not here."""
        used = np.unique(np.concatenate([splits.train, splits.val, splits.test]))
        source = self._pixels_for(cell, images, used, size, resample)
        data_key = f"{dataset_key(cell, images)}|{size}|{resample}"
        placed = set()

        def split(kind: type, indices: np.ndarray) -> ImageSplit:
            pixels, place = deferred_pixels(source, indices, size, device)
            placed.add(place)
            return kind(images, indices, size, network.mean, network.std, resample, pixels,
                        key=f"{data_key}|{network.mean}|{network.std}", device=device)

        train, val, test = (split(CountingSplit, splits.train), split(CountingSplit, splits.val),
                            split(ImageSplit, splits.test))
        return CellImages(train, val, test, pixels=", ".join(sorted(placed)))

    def _pixels_for(self, cell: Cell, images: Images, used: np.ndarray, size: int, resample: Resample):
        """Where the decoded pixels of the cell's images (``used``) come from, chosen by their
        count, not the dataset's: this process's memory when they fit (DecodedPixels, kept for
        the next cells while what it holds with theirs fits too), else a file under the cache
        folder that every cell and process shares (PixelStore, the disk blocks of ``used``
        reserved now), else None (each batch decoded as it is served). Decodes nothing."""
        key = (cell.plugin("dataset"), repr(cell.dataset_options), size, resample)
        held = self._pixels.get(key)
        if fits_in_memory(len(used), size):
            if not (isinstance(held, DecodedPixels) and fits_in_memory(held.holding_with(used), size)):
                held = DecodedPixels(images.samples, size, resample)
        elif PixelStore.room_for(self.cache_dir, len(used), size):
            held = _pixel_store(self.cache_dir, cell, images, size, resample, used,
                                held if isinstance(held, PixelStore) else None)
        else:
            held = None
        self._pixels = {key: held}  # one dataset and size at a time
        return held


def _pixel_store(cache_dir: str, cell: Cell, images: Images, size: int, resample: Resample,
                 used: np.ndarray, store: Optional[PixelStore]) -> Optional[PixelStore]:
    """The dataset's PixelStore (``store`` if one is open), the disk blocks of the rows ``used``
    reserved, or None (each batch decoded as it is served) when its file cannot be made or has
    no room for them: the disk filled since ``room_for`` looked, a folder it may not write. Said
    once, on stderr: the cell still runs, only slower."""
    key = store_key(dataset_key(cell, images), len(images.samples), size, resample)
    try:
        if store is None:
            store = PixelStore(cache_dir, key, images.samples, size, resample)
        store.reserve(used)
        return store
    except OSError as exc:
        print(f"warning: cannot make the decoded-pixel store of dataset {cell.dataset!r} under {cache_dir!r} "
              f"({exc.strerror or exc}); its images are decoded batch by batch instead. Free space there "
              "or set TLBENCH_CACHE_DIR to another disk.", file=sys.stderr)
        return None
