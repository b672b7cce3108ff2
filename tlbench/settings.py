"""The ``[settings]`` table of a grid: defaults for every cell, validated on construction."""

from __future__ import annotations

import re
from dataclasses import dataclass

from tlbench.options import option

MAX_THREADS = 1024
MAX_SEED = 2**32 - 1  # for seeds and split_seed: numpy's legacy seeding takes nothing larger
MAX_IMAGE_SIZE = 4096  # one 4096² image is 200 MB as floats: larger is a typo, not a benchmark


@dataclass(frozen=True)
class Settings:
    """Defaults for every cell of a grid (the ``[settings]`` table)."""

    image_size: int = option(0, "square input size in pixels; 0 = the size the weights were trained at")
    epochs: int = option(5, "passes over the training split for strategies that train")
    batch_size: int = option(64, "mini-batch size for training and evaluation")
    train_per_class: int = option(0, "0 = all training examples; k = k examples per class (k-shot)")
    train_size: int = option(0, "0 = all; n = n labelled examples drawn stratified with the cell's seed, split train/val by val_fraction (VTAB-1k: 1000)")
    test_size: int = option(0, "0 = the whole test split; n = a stratified sample of n test images, the same for every cell")
    val_fraction: float = option(0.2, "share of each class held out for validation (model selection)")
    test_fraction: float = option(0.2, "share of each class held out for the test score (when the dataset has no official test split)")
    split_seed: int = option(0, "seed of the train/val/test split; fixed so every cell sees the same split")
    interpolation: str = option("auto", "resizing: auto (the weights' own to shrink, bilinear to enlarge), bilinear or bicubic")
    pretrained: bool = option(True, "false = random initialisation for every backbone")
    device: str = option("auto", "auto (cuda, then mps, then cpu), cpu, cuda, cuda:N or mps")
    threads: int = option(0, "torch intra-op threads for every cell; 0 = this driver's share of the usable CPUs. Pinned, a trained number does not depend on the machine's CPU count or on concurrent drivers")
    deterministic: bool = option(False, "torch.use_deterministic_algorithms in every cell (CUDA: slower, and kernels without a deterministic version fail the cell)")

    def __post_init__(self):
        if self.image_size < 0 or self.image_size == 1 or self.image_size > MAX_IMAGE_SIZE:
            raise ValueError(f"image_size must be 0 (native) or 2 to {MAX_IMAGE_SIZE} pixels, got {self.image_size}")
        for name in ("epochs", "batch_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")
        for name in ("train_per_class", "train_size", "test_size"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be 0 (all) or a positive number, got {getattr(self, name)}")
        if self.train_per_class and self.train_size:
            raise ValueError("train_per_class and train_size are two ways to choose the training "
                             "examples: set one of them (the other 0)")
        if self.train_size == 1:
            raise ValueError("train_size must leave at least one example for training and one for validation")
        for name in ("val_fraction", "test_fraction"):
            if not 0.0 < getattr(self, name) < 1.0:
                raise ValueError(f"{name} must be between 0 and 1 (exclusive), got {getattr(self, name)}")
        if self.val_fraction + self.test_fraction >= 1.0:
            raise ValueError("val_fraction + test_fraction must leave some data for training")
        if not 0 <= self.split_seed <= MAX_SEED:
            raise ValueError(f"split_seed must be 0 to {MAX_SEED}, got {self.split_seed}")
        if not 0 <= self.threads <= MAX_THREADS:
            raise ValueError(f"threads must be 0 (this driver's share of the CPUs) or 1 to {MAX_THREADS}, got {self.threads}")
        if self.interpolation not in ("auto", "bilinear", "bicubic"):
            raise ValueError(f"interpolation must be auto, bilinear or bicubic, got {self.interpolation!r}")
        if not re.fullmatch(r"auto|cpu|mps|cuda(:\d+)?", self.device):
            raise ValueError(f"device must be auto, cpu, cuda, cuda:N or mps, got {self.device!r}")
