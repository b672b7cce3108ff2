"""The split protocol: which image of a dataset goes to train, val or test, decided by the core.

Splits are stratified and drawn from ``split_seed`` alone, so every cell of a grid (every
backbone, strategy and seed) is trained, selected and scored on the same images. k-shot
subsampling of the training split uses the cell's seed, so seeds also vary the k examples.
A dataset plugin only lists its images; it never decides who sees which.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Optional, Sequence

import numpy as np


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
