"""Benchmark 8: does the model wait on data? Images per second a split too large to hold decoded
delivers (JPEG photos decoded and resized to 224 px per batch by the split's DataLoader workers)
against the images per second efficientnet_lite0 itself takes at 224 px, in one run.

Photos: 256 JPEGs of 500×375 (quality 90, noisy content, so decoding costs what a photo's does).
The split's first pass starts its worker processes; the second reuses them (persistent workers),
which is what every later epoch sees. Then the same images decoded once into a pixel store
(what a dataset too large for memory gets) and served from it. The model's rate is a frozen forward (eval, no grad,
channels_last), the fastest thing a strategy does per image: a training step is slower, so a
split that keeps up with this keeps up with training. On the CPU both share the same cores,
so they are measured one after the other.
"""

from __future__ import annotations

import os
import time

import numpy as np
import pytest
import torch

SIZE = 224
COUNT = 256
BATCH = 32


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    from PIL import Image

    folder = tmp_path_factory.mktemp("photos")
    rng = np.random.default_rng(0)
    base = (rng.random((375, 500, 3)) * 255).astype(np.uint8)
    paths = []
    for i in range(COUNT):
        path = folder / f"{i:04d}.jpg"
        Image.fromarray(np.roll(base, i * 7, axis=1)).save(path, "JPEG", quality=90)
        paths.append(path)
    return paths


class Photos:
    """Opened lazily, as an image-folder dataset's files are."""

    def __init__(self, paths):
        self.paths = paths

    def __len__(self):
        return len(self.paths)

    def __getitem__(self, index):
        from PIL import Image

        with Image.open(self.paths[index]) as image:
            image.load()
            return image


def delivered_per_s(split) -> float:
    start = time.perf_counter()
    count = sum(len(y) for _, y in split.batches(BATCH, shuffle=True, seed=1))
    return count / (time.perf_counter() - start)


def test_the_model_does_not_wait_on_decoding(benchmark, photos, tmp_path):
    import timm
    import tlbench
    from tlbench.batches import ImageSplit
    from tlbench.decoding import Resample

    cache_dir = tmp_path / "cache"

    images = tlbench.Images(samples=Photos(photos), labels=[i % 4 for i in range(COUNT)],
                            classes=["a", "b", "c", "d"])
    split = ImageSplit(images, np.arange(COUNT), SIZE, (0.5,) * 3, (0.5,) * 3)  # no pixels: per batch
    model = timm.create_model("efficientnet_lite0", num_classes=4).eval()
    model = model.to(memory_format=torch.channels_last)
    x = torch.randn(BATCH, 3, SIZE, SIZE).contiguous(memory_format=torch.channels_last)

    from tlbench.pixel_store import PixelStore, store_key

    key = store_key("photos", COUNT, SIZE, Resample())
    store = PixelStore(str(cache_dir), key, images.samples, SIZE, Resample())

    def measure():
        first = delivered_per_s(split)  # starts the workers
        later = delivered_per_s(split)  # the same workers, as every later epoch
        start = time.perf_counter()
        rows = store.rows(np.arange(COUNT))  # decoded once, into the store on disk
        store_fill_s = time.perf_counter() - start
        stored = ImageSplit(images, np.arange(COUNT), SIZE, (0.5,) * 3, (0.5,) * 3, pixels=rows)
        from_store = delivered_per_s(stored)
        with torch.no_grad():
            model(x)  # warm-up
            start = time.perf_counter()
            for _ in range(COUNT // BATCH):
                model(x)
            model_per_s = COUNT / (time.perf_counter() - start)
        return first, later, COUNT / store_fill_s, from_store, model_per_s

    first, later, fill, from_store, model_per_s = benchmark.pedantic(measure, rounds=1, iterations=1)
    info = {"delivered_first_pass_per_s": first, "delivered_later_pass_per_s": later,
            "store_filled_per_s": fill, "delivered_from_store_per_s": from_store,
            "model_forward_per_s": model_per_s, "ratio": later / model_per_s,
            "workers": min(8, len(os.sched_getaffinity(0))), "size": SIZE}
    benchmark.extra_info.update(info)
    print("\n[bench] data vs model at 224 px: " + ", ".join(
        f"{k} {v:.1f}" if isinstance(v, float) else f"{k} {v}" for k, v in info.items()))
    assert later >= model_per_s and from_store >= model_per_s, info
