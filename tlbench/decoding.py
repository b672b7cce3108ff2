"""Image decoding: any sample a dataset yields to H×W×3 uint8 pixels at one size, decoded once.

PIL images of any mode and uint8 arrays are converted to RGB, resized (shorter side to the
cell's size) and centre-cropped. A cell's images whose decoded pixels fit in memory are decoded
at most once per process (DecodedPixels); more, once into a file (tlbench.pixel_store).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional, Union

import numpy as np
import torch

from tlbench.materialize import materialize_bytes

THREADED_DECODE_S = 0.0005  # below this per image, decoding on threads is slower than on one
# an image is resized whole, then centre-cropped, while that costs at most this many times the
# output's pixels (any photo, a 64:1 strip); a thinner one (2 × 2,000,000 px to 32 px would be
# 32 × 32,000,000 resized whole, gigabytes) has only its crop's part resized
WHOLE_RESIZE_AREA = 64


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
        except (OSError, Image.DecompressionBombError) as exc:
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
    left, top = (resized[0] - size) // 2, (resized[1] - size) // 2
    if resized != image.size and resized[0] * resized[1] > WHOLE_RESIZE_AREA * size * size:
        # the crop's part of the image only (PIL's box, in the image's own pixels): the memory is
        # the output's; PIL's filter windows differ a little from resizing whole, so a pixel can
        # differ by a few levels, and only images that could not be resized whole come here
        x, y = width / resized[0], height / resized[1]
        image = image.resize((size, size), method, box=(left * x, top * y, (left + size) * x, (top + size) * y))
    else:
        if resized != image.size:
            image = image.resize(resized, method)
        image = image.crop((left, top, left + size, top + size))
    return np.array(image, dtype=np.uint8)  # a writable copy, as torch.from_numpy wants


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

    with torch.inference_mode(False):  # a plain tensor, which the threads (never in that mode) may write
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

    def rows(self, indices: np.ndarray) -> "HeldRows":
        """The rows ``indices`` as a split holds them (no copy), decoding those not decoded yet."""
        indices = np.asarray(indices, dtype=np.int64)
        todo = np.unique(indices[~self.decoded[indices]])
        if len(todo):
            self.pixels[torch.from_numpy(todo)] = decode_all(self.samples, todo, self.size, self.resample)
            self.decoded[todo] = True
        return HeldRows(self.pixels, torch.from_numpy(indices))

    def holding_with(self, indices: np.ndarray) -> int:
        """How many images it holds once ``indices`` are decoded too."""
        return int(self.decoded.sum()) + int(np.count_nonzero(~self.decoded[indices]))


class HeldRows:
    """Some rows of a DecodedPixels, as a split holds its pixels: ``rows[positions]`` gathers
    those positions' images. A view, not a copy: the splits of a cell hold their pixels once,
    in the dataset's tensor, not a second time split by split."""

    def __init__(self, pixels: torch.Tensor, rows: torch.Tensor):
        self.pixels, self.rows = pixels, rows

    @property
    def device(self) -> torch.device:
        return self.pixels.device

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, positions) -> Union["HeldRows", torch.Tensor]:
        if isinstance(positions, slice):
            return HeldRows(self.pixels, self.rows[positions])
        return self.pixels[self.rows[positions.to(self.rows.device)]]

    def to(self, device) -> Union["HeldRows", torch.Tensor]:
        """Itself on its own device; elsewhere (a GPU), the rows copied there as one tensor."""
        return self if torch.device(device) == self.pixels.device else self.pixels[self.rows].to(device)


def fits_in_memory(count: int, size: int) -> bool:
    """Whether ``count`` images' resized uint8 pixels fit in TLBENCH_MATERIALIZE_MB
    (tlbench.materialize): a cell's images that fit are decoded once and held in memory; more
    are decoded once into a file (tlbench.pixel_store), or per batch by DataLoader workers when
    the disk has no room for them."""
    return count * 3 * size * size <= materialize_bytes()
