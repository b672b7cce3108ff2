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
    ends = itertools.accumulate(counts)
    return [torch.cat(outputs[end - count:end]) for count, end in zip(counts, ends)]


def frozen_features(model: nn.Module, splits, ctx, use_cache: bool = True) -> tuple[list, bool]:
    """``pooled_features`` of each of ``splits`` through the on-disk cache; returns (features on
    ctx.device per split, whether all came from the cache). The network is folded for
    extraction once, and only if some split has to be extracted."""
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
    return [features.to(ctx.device) for features in found], not missing


def fit_linear_head(head: nn.Linear, features: torch.Tensor, labels: torch.Tensor, *,
                    l2: float, max_iter: int) -> None:
    """Multinomial logistic regression, full batch, L-BFGS; L2 on the weights (not the bias).

    Starts from the head's current parameters, so a path of penalties is warm-started."""
    from tlbench_plugins.strategies import softmax_regression

    weight, bias = softmax_regression.fit(features, labels, head.out_features, l2=l2,
                                          max_iter=max_iter, weight=head.weight, bias=head.bias)
    with torch.no_grad():
        head.weight.copy_(weight)
        head.bias.copy_(bias)


def standardizer(features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-feature mean and scale; well-conditioned inputs let L-BFGS converge in few steps."""
    return features.mean(0), features.std(0).clamp_min(1e-6)


def varying(features: torch.Tensor) -> torch.Tensor:
    """Indices of the features that are not constant over the rows of ``features``.

    A constant feature adds nothing the unpenalised bias cannot, so the L2-penalised optimum
    gives it zero weight; the probe is solved without such features and given zeros there.
    They are common: ReLU-family networks have units that never fire on a dataset (492 of
    efficientnet_lite0's 1,280 features are 0 on every digits training image), and each one
    left out is a column fewer in every pass of the solver."""
    return (features != features[:1]).any(0).nonzero().squeeze(1)


@torch.no_grad()
def fold_standardization(head: nn.Linear, mean: torch.Tensor, scale: torch.Tensor) -> None:
    """Rewrite a head trained on (x - mean) / scale so that it takes raw features x."""
    head.weight.div_(scale)
    head.bias.sub_(head.weight @ mean)


def zero_head(in_features: int, num_classes: int, device) -> nn.Linear:
    head = nn.Linear(in_features, num_classes).to(device)
    nn.init.zeros_(head.weight)
    nn.init.zeros_(head.bias)
    return head


def widened(head: nn.Linear, columns: torch.Tensor, in_features: int) -> dict:
    """``head``'s state for all ``in_features`` features, zero weight outside ``columns``."""
    weight = head.weight.new_zeros(head.out_features, in_features)
    weight[:, columns] = head.weight.detach()
    return {"weight": weight, "bias": head.bias.detach().clone()}


def probe_path(train_x, train_y, val_x, val_y, num_classes: int, penalties, max_iter: int,
               patience: int = 2):
    """Fit the probe along ``penalties`` (strongest first, warm-started); score each on val.

    Weaker penalties take the most iterations and rarely win once validation accuracy has
    turned down, so the path stops after ``patience`` steps without a new best. Returns the
    fitted path as [(penalty, val accuracy, head state on standardised features)], strongest first.
    """
    mean, scale = standardizer(train_x)
    columns = varying(train_x)
    train_x, val_x = [(x[:, columns] - mean[columns]) / scale[columns] for x in (train_x, val_x)]
    head = zero_head(len(columns), num_classes, train_x.device)
    path = []
    for penalty in penalties:
        fit_linear_head(head, train_x, train_y, l2=penalty, max_iter=max_iter)
        with torch.no_grad():
            accuracy = (head(val_x).argmax(1) == val_y).float().mean().item() if len(val_y) else 0.0
        path.append((penalty, accuracy, widened(head, columns, len(mean))))
        best = max(range(len(path)), key=lambda i: path[i][1])  # first on ties
        if len(path) - 1 - best >= patience:
            break
    return path


def fit_probe(features, labels, num_classes: int, penalty: float, max_iter: int,
              start: dict | None = None) -> nn.Linear:
    """The final probe on ``features``, warm-started from ``start``, folded to take raw features."""
    mean, scale = standardizer(features)
    columns = varying(features)
    solved = zero_head(len(columns), num_classes, features.device)
    if start is not None:
        with torch.no_grad():
            solved.weight.copy_(start["weight"][:, columns])
            solved.bias.copy_(start["bias"])
    fit_linear_head(solved, (features[:, columns] - mean[columns]) / scale[columns], labels,
                    l2=penalty, max_iter=max_iter)
    head = zero_head(features.shape[1], num_classes, features.device)
    head.load_state_dict(widened(solved, columns, features.shape[1]))
    fold_standardization(head, mean, scale)
    return head
