"""Warnings for results that cannot mean anything, said in the record and the progress output.

Two ways a published number can be silently meaningless:

- the input size makes a pretrained backbone's features collapse: efficientnet_lite0's pooled
  features at 32 px are about 1/200 of their size at 224 px, so a head fed raw features learns
  nothing (a probe that standardises them still can). Checked before the fit, against the same
  images at the size the weights were trained at; the ratio is kept in the cache folder, so a
  later process's cell reads it instead of decoding those images again.
- a model scores at chance: no better than always answering the test split's most common class,
  by the exact one-sided binomial test (a test split too small to tell any score from chance
  is said as such).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Callable, Optional, Sequence

import numpy as np
import torch

from tlbench.decoding import Resample, to_rgb_uint8

# Pooled features smaller than this share of their size at the weights' own input size count as
# collapsed (efficientnet_lite0 on Fashion-MNIST: 0.005 at 32 px, 4.6 at 48 px, 1.8 at 64 px).
COLLAPSE_RATIO = 0.1
PROBE_IMAGES = 16  # images the check looks at: enough for a stable mean, cheap at 224 px


def _pooled_scale(model: torch.nn.Module, pixels: torch.Tensor, mean, std) -> float:
    x = pixels.permute(0, 3, 1, 2).float().div_(255.0)
    x = (x - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1)
    features = model.forward_head(model.forward_features(x), pre_logits=True)
    return features.float().abs().mean().item()


def feature_scale_ratio(model: torch.nn.Module, samples: Sequence, indices: Sequence[int], size: int,
                        native_size: int, mean, std, resample: Resample) -> Optional[float]:
    """Mean |pooled feature| at ``size`` over the same at ``native_size`` (on the CPU, in eval
    mode, the model left as it was); None for a model without timm's feature API."""
    if not (hasattr(model, "forward_features") and hasattr(model, "forward_head")):
        return None
    chosen = [int(i) for i in indices[:PROBE_IMAGES]]
    if not chosen:
        return None
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode():
            scales = []
            for side in (size, native_size):
                pixels = torch.from_numpy(np.stack([to_rgb_uint8(samples[i], side, resample) for i in chosen]))
                scales.append(_pooled_scale(model, pixels.to(device), mean, std))
    except (TypeError, RuntimeError, ValueError):  # a model this check cannot drive
        return None
    finally:
        model.train(was_training)
    return scales[0] / scales[1] if scales[1] > 0 else None


def kept_ratio(cache_dir: str, key: list, measure: Callable[[], Optional[float]]) -> Optional[float]:
    """``measure()``, kept in ``cache_dir/checks`` under ``key`` (JSON values): a cell of a later
    process with the same weights, images and size reads it instead of decoding images and
    running the network, so a cell whose features come from the cache decodes nothing. An entry
    that cannot be read is measured again; one that cannot be written is not kept."""
    from tlbench.atomic_files import write_atomic

    path = Path(cache_dir) / "checks" / f"{hashlib.sha256(json.dumps(key).encode()).hexdigest()[:32]}.json"
    try:
        entry = json.loads(path.read_text())
        if entry["key"] == key and (entry["ratio"] is None or isinstance(entry["ratio"], float)):
            return entry["ratio"]
    except (OSError, ValueError, KeyError, TypeError):
        pass
    ratio = measure()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(path, json.dumps({"key": key, "ratio": ratio}))
    except OSError:
        pass  # a cache that cannot keep it: measured again next time
    return ratio


def collapse_warning(ratio: Optional[float], size: int, native_size: int) -> Optional[str]:
    if ratio is None or ratio >= COLLAPSE_RATIO:
        return None
    return (f"features collapse at {size} px: the backbone's pooled features are {ratio:.3f} of "
            f"their size at its own {native_size} px, so strategies that feed them unscaled to a "
            "head may score at chance; use a larger image_size (0 = the weights' own)")


def chance_top1(test_labels: Sequence[int]) -> float:
    """Top-1 of always answering the test split's most common class."""
    counts = np.bincount(np.asarray(test_labels, dtype=np.int64))
    return float(counts.max() / counts.sum())


ALPHA = 0.025  # one-sided: about the two binomial standard errors of a large test split


def above_chance_p(top1: float, test_labels: Sequence[int]) -> float:
    """The probability that a model right on each test image with the chance rate alone scores
    ``top1`` or more: the exact one-sided binomial test, right for two test images as for two
    thousand (a normal band of two standard errors is not: on two images it spans past 1)."""
    from scipy.special import bdtrc  # P(X > k) of a binomial; scipy.special alone imports fast

    chance, n = chance_top1(test_labels), len(test_labels)
    right = int(round(top1 * n))
    return 1.0 if right <= 0 else float(bdtrc(right - 1, n, chance))


def at_chance(top1: float, test_labels: Sequence[int]) -> bool:
    """Top-1 not above chance by the exact binomial test at ALPHA (or below chance)."""
    return top1 <= chance_top1(test_labels) or above_chance_p(top1, test_labels) >= ALPHA


def chance_warning(top1: float, test_labels: Sequence[int]) -> Optional[str]:
    """What a chance-level score means: a cell at (or below) chance learned nothing measurable;
    above it but within the test's reach of chance, the number cannot be told from chance; and
    on a test split so small that even a perfect score could be chance, it is the split that is
    too small, whatever the cell learned."""
    if not at_chance(top1, test_labels):
        return None
    chance, n = chance_top1(test_labels), len(test_labels)
    if top1 <= chance:
        return (f"top-1 {top1:.3f} is at chance level (always answering the most common class scores "
                f"{chance:.3f} on these {n} test images): this cell learned nothing measurable")
    perfect = chance ** n  # the probability of every image right at the chance rate
    if perfect >= ALPHA:
        return (f"top-1 {top1:.3f} on {n} test images cannot be told from chance ({chance:.3f}): with so few "
                f"images even a perfect score comes from answering at chance with probability {perfect:.3f}; "
                "use a larger test split (test_size, test_fraction, or a larger dataset)")
    return (f"top-1 {top1:.3f} cannot be told from chance level ({chance:.3f}, always answering the most "
            f"common class) on these {n} test images (one-sided binomial p = {above_chance_p(top1, test_labels):.3f}): "
            "this cell learned nothing measurable")
