"""The linear probe: features of the frozen network (cached) and a logistic-regression head
fitted full-batch with L-BFGS along a path of L2 penalties."""

from __future__ import annotations

import contextlib
import itertools

import torch
from torch import nn

from tlbench_plugins.strategies.training import as_channels_last, channels_last


def pooled_features(extraction, splits, ctx) -> list:
    """Pre-logit features of the frozen network (a folding.Extraction) for every image of each
    of ``splits``. All splits go through as one stream of batches, so the extraction's
    two-at-a-time pipeline fills and drains once."""
    def features(network, x):
        return network.forward_head(network.forward_features(x), pre_logits=True).float()

    size = ctx.settings.batch_size
    images = (as_channels_last(x) for split in splits for x, _ in split.batches(size, device=ctx.device))
    counts = [split.num_batches(size) for split in splits]
    with contextlib.closing(extraction.outputs(images, features)) as batches:
        outputs = list(ctx.progress(batches, total=sum(counts), desc="features"))
    none = outputs[0][:0] if outputs else torch.empty(0, 0, device=ctx.device)  # for an empty split
    ends = itertools.accumulate(counts)
    return [torch.cat(outputs[end - count:end] or [none]) for count, end in zip(counts, ends)]


def frozen_features(model: nn.Module, splits, ctx, use_cache: bool = True) -> tuple[list, str]:
    """``pooled_features`` of each of ``splits`` through the on-disk cache; returns (features on
    ctx.device per split, the cache's part: "hit" when all came from it, "miss" when some were
    extracted, "off" without ``use_cache``). The network is folded for extraction once, and
    only if some split has to be extracted."""
    from tlbench_plugins.strategies import feature_cache
    from tlbench_plugins.strategies.folding import Extraction

    # keys first: while folded, the network's own parameters are not the ones it was built with
    keys = [feature_cache.cache_key(model, split, ctx, pooling="pre_logits") for split in splits]
    found = [feature_cache.load(ctx.cache_dir, key, split.labels) if use_cache else None
             for split, key in zip(splits, keys)]
    missing = [i for i, features in enumerate(found) if features is None]
    if missing:
        with Extraction(channels_last(model), ctx) as extraction:
            extracted = pooled_features(extraction, [splits[i] for i in missing], ctx)
        for i, features in zip(missing, extracted):
            if use_cache:
                feature_cache.store(ctx.cache_dir, keys[i], features, splits[i].labels)
            found[i] = features
    cache = "off" if not use_cache else "miss" if missing else "hit"
    return [features.to(ctx.device) for features in found], cache


class Standardization:
    """The solver's view of raw features: standardised per feature by ``features``' mean and
    scale, with the features constant over ``features``' rows left out.

    Standardised inputs let L-BFGS converge in few steps. A constant feature adds nothing the
    unpenalised bias cannot, so the L2-penalised optimum gives it zero weight; the probe is
    solved without such features and given zeros there. They are common: ReLU-family networks
    have units that never fire on a dataset (492 of efficientnet_lite0's 1,280 features are 0
    on every digits training image), and each one left out is a column fewer in every pass of
    the solver."""

    def __init__(self, features: torch.Tensor):
        self.width = features.shape[1]
        self.columns = varying(features)
        kept = features[:, self.columns]
        self.mean, self.scale = kept.mean(0), kept.std(0).clamp_min(1e-6)

    def __call__(self, features: torch.Tensor) -> torch.Tensor:
        return (features[:, self.columns] - self.mean) / self.scale

    def widened(self, weight: torch.Tensor) -> torch.Tensor:
        """``weight`` for all features, zero on the left-out ones."""
        full = weight.new_zeros(weight.shape[0], self.width)
        full[:, self.columns] = weight
        return full

    def on_raw_features(self, weight: torch.Tensor, bias: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The same linear map, rewritten to take raw features of full width."""
        raw = weight / self.scale
        return self.widened(raw), bias - raw @ self.mean


def varying(features: torch.Tensor) -> torch.Tensor:
    """Indices of the features that are not constant over the rows of ``features``."""
    return (features != features[:1]).any(0).nonzero().squeeze(1)


def probe_path(train_x, train_y, val_x, val_y, num_classes: int, penalties, max_iter: int,
               patience: int = 2):
    """Fit the probe along ``penalties`` (strongest first, warm-started); score each on val.

    Weaker penalties take the most iterations and rarely win once validation accuracy has
    turned down, so the path stops after ``patience`` steps without a new best. Returns the
    fitted path as [(penalty, val accuracy, (weight, bias))], strongest first; each weight is
    for all features, standardised by train's mean and scale (zeros where train's are constant).
    """
    from tlbench_plugins.strategies import softmax_regression

    view = Standardization(train_x)
    train_x, val_x = view(train_x), view(val_x)
    weight = bias = None
    path = []
    for penalty in penalties:
        weight, bias = softmax_regression.fit(train_x, train_y, num_classes, l2=penalty, max_iter=max_iter,
                                              weight=weight, bias=bias)
        accuracy = ((val_x @ weight.t() + bias).argmax(1) == val_y).float().mean().item() if len(val_y) else 0.0
        path.append((penalty, accuracy, (view.widened(weight), bias)))
        best = max(range(len(path)), key=lambda i: path[i][1])  # first on ties
        if len(path) - 1 - best >= patience:
            break
    return path


def fit_probe(features, labels, num_classes: int, penalty: float, max_iter: int,
              start: tuple | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(weight, bias) of the final probe on ``features``, warm-started from ``start`` (a path
    state), rewritten to take raw features."""
    from tlbench_plugins.strategies import softmax_regression

    view = Standardization(features)
    weight, bias = (start[0][:, view.columns], start[1]) if start is not None else (None, None)
    weight, bias = softmax_regression.fit(view(features), labels, num_classes, l2=penalty,
                                          max_iter=max_iter, weight=weight, bias=bias)
    return view.on_raw_features(weight, bias)
