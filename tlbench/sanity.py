"""Warnings for results that cannot mean anything, said in the record and the progress output.

Two ways a published number can be silently meaningless:

- the input size makes a pretrained backbone's features collapse: efficientnet_lite0's pooled
  features at 32 px are about 1/200 of their size at 224 px, so a head fed raw features learns
  nothing (a probe that standardises them still can). Checked before the fit, against the same
  images at the size the weights were trained at.
- a model scores at chance: no better than always answering the test split's most common class,
  within two binomial standard errors.
"""

from __future__ import annotations

import math
from typing import Optional, Sequence

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


def at_chance(top1: float, test_labels: Sequence[int]) -> bool:
    """Top-1 within two binomial standard errors of chance, or below it."""
    chance, n = chance_top1(test_labels), len(test_labels)
    return top1 <= chance + 2 * math.sqrt(chance * (1 - chance) / n)


def chance_warning(top1: float, test_labels: Sequence[int]) -> Optional[str]:
    if not at_chance(top1, test_labels):
        return None
    return (f"top-1 {top1:.3f} is at chance level (always answering the most common class scores "
            f"{chance_top1(test_labels):.3f} on these {len(test_labels)} test images): this cell "
            "learned nothing measurable")
