"""Batch serving: ImageSplit, the core's Split, serves one split's images as normalised batches.

Pixels decoded beforehand (in memory or in the pixel store) are indexed a batch at a time;
otherwise DataLoader workers decode each batch as it is served. A split may be given, instead
of its pixels, a function that decodes them: it is called when the first batch is asked for,
so a split that is never served (its features come from a cache) decodes nothing. Strategies
and scores see only ``tlbench.Split``'s methods.
"""

from __future__ import annotations

import contextlib
import hashlib
import time
from typing import Callable, Iterator, Optional, Union

import numpy as np
import torch

from tlbench.api import Images, Split
from tlbench.decoding import Resample, to_rgb_uint8


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


class ImageSplit(Split):
    """One split of a dataset, as strategies see it.

    ``batches()`` yields normalised float images and labels on a device. Small datasets are
    held as one uint8 tensor (decoded once); large ones are decoded by DataLoader workers.
    """

    def __init__(self, images: Images, indices: np.ndarray, size: int, mean, std,
                 resample: Resample = Resample(),
                 pixels: Union[torch.Tensor, Callable[[], Optional[torch.Tensor]], None] = None, key: str = "",
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
        # N×3×S×S uint8 (on the CPU or the GPU), None (decoded on the fly), or a function that
        # returns either, called by the first pass
        self._pixels = pixels
        # what deferred decoding took, left out of the fit's and the scoring's times by the
        # Runner: they time the strategy and the model, as when splits were decoded before
        self.decode_s = 0.0
        # identifies exactly these images as the model sees them (dataset, indices, size,
        # normalisation): a key for caches of anything computed from them
        self.key = f"{key}|{hashlib.sha256(self.indices.tobytes()).hexdigest()[:16]}"

    def __len__(self) -> int:
        return len(self.indices)

    @property
    def pixels(self) -> Optional[torch.Tensor]:
        """The split's decoded pixels (decoding them now if they were deferred), or None."""
        if callable(self._pixels):
            start = time.perf_counter()
            # as plain tensors even when the first pass is scoring's, in inference mode: they
            # are kept for later passes, and the threads that decode them are not in that mode
            with torch.inference_mode(False):
                self._pixels = self._pixels()
            self.decode_s = time.perf_counter() - start
        return self._pixels

    @pixels.setter
    def pixels(self, pixels: Optional[torch.Tensor]) -> None:
        self._pixels = pixels

    def first_images(self, n: int, device=None, batch_size: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
        """The split's first ``n`` images, normalised, and their labels; a split not decoded yet
        decodes only these (a check on a few images, on a warm feature cache). Otherwise they are
        the first of a pass at ``batch_size`` (that of the passes to come: a split decoded per
        batch keeps its loader for them)."""
        device = self.device if device is None else device
        deferred = getattr(self._pixels, "first", None)
        if deferred is None:
            with contextlib.closing(self.batches(max(n, batch_size), device=device)) as batches:
                x, y = next(batches, (self.normalize(torch.empty(0, 3, self.size, self.size), device),
                                      self.labels[:0].to(device)))
            return x[:n], y[:n]
        with torch.inference_mode(False):  # kept by the source for the split's later decoding
            pixels = deferred(n)
        return self.normalize(pixels, device), self._constants(device)[2][:len(pixels)]

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
        held = self.pixels
        if held is not None:
            # the order where the pixels are, the labels where the batches go: once a pass
            rows_here, labels = order.to(held.device), self._constants(device)[2]
            rows_there = rows_here.to(labels.device)
            for start in range(0, len(self), batch_size):
                pixels = held[rows_here[start:start + batch_size]]
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
