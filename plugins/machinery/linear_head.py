"""A logistic-regression head on frozen features: the linear probe.

The features are standardised for the solver (softmax_regression.py), with constant ones left
out; the head is fitted along a path of L2 penalties (strongest first, warm-started), the best
on validation is refitted, rewritten to take raw features and installed as the network's
classifier. Shared by the linear_probe strategy and lp_ft's first stage.
"""

from __future__ import annotations

import torch
from torch import nn

import tlbench


def fit_linear_probe(model: nn.Module, train: tlbench.Split, val: tlbench.Split, ctx: tlbench.FitContext,
                     options, refit_on_val: bool = True) -> float:
    """Freeze ``model``, install the selected probe as its classifier and return its validation
    accuracy: the whole fit of linear_probe and the first stage of lp_ft. ``options`` is an
    options.LinearProbeOptions.

    With ``refit_on_val``, the chosen penalty is refitted on train + val; lp_ft keeps val unseen
    because it still selects on it later, and so does the core while it selects among a grid's
    list values (``ctx.selecting``).
    """
    from tlbench_plugins.machinery import training

    training.freeze(model)
    # The frozen network runs once per image, and not at all when the cache has its features.
    train_x, val_x = ctx.frozen_features(model, [train, val], cache=options.cache)
    train_y, val_y = train.labels.to(ctx.device), val.labels.to(ctx.device)
    width = train_x.shape[1]
    # without a refit the raw training features are not needed again: standardised in their own
    # memory, they are the solver's one copy (the features of 60k images are 300 MB)
    view = train_x if refit_on_val else Standardization(train_x, in_place=True)
    if not refit_on_val:
        del train_x
    path = probe_path(view, train_y, val_x, val_y, ctx.num_classes, options.penalties(), options.max_iter)
    penalty, val_top1, state = max(path, key=lambda step: step[1])  # first (strongest) on ties
    if refit_on_val:  # selection is done, so val is just more data
        view, train_y = torch.cat([view, val_x]), torch.cat([train_y, val_y])
    weight, bias = fit_probe(view, train_y, ctx.num_classes, penalty, options.max_iter, start=state)
    head = training.classifier(model)
    with torch.no_grad():
        head.weight.copy_(weight)
        head.bias.copy_(bias)
    training.unfreeze([head])
    ctx.log(l2=penalty, val_top1=val_top1, l2_path=[[p, acc] for p, acc, _ in path],
            feature_dim=width, refit_on_val=refit_on_val)
    return val_top1


class Standardization:
    """The solver's view of raw features: standardised per feature by ``features``' mean and
    scale, with the features constant over ``features``' rows left out.

    Standardised inputs let L-BFGS converge in few steps. A constant feature adds nothing the
    unpenalised bias cannot, so the L2-penalised optimum gives it zero weight; the probe is
    solved without such features and given zeros there. They are common: ReLU-family networks
    have units that never fire on a dataset (492 of efficientnet_lite0's 1,280 features are 0
    on every digits training image), and each one left out is a column fewer in every pass of
    the solver."""

    def __init__(self, features: torch.Tensor, in_place: bool = False):
        """``in_place``: the standardised features are made in ``features``' own memory, which
        they overwrite (the same numbers as from a copy)."""
        self.width = features.shape[1]
        self.columns = varying(features)
        kept = kept_in_place(features, self.columns) if in_place else features[:, self.columns]
        self.mean, self.scale = kept.mean(0), kept.std(0).clamp_min(1e-6)
        # ``features`` as the solver sees them, from the copy the statistics were taken on:
        # the same numbers as calling the view on them, a copy and two n x d tensors fewer
        self.standardized = kept.sub_(self.mean).div_(self.scale)

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


def kept_in_place(features: torch.Tensor, columns: torch.Tensor) -> torch.Tensor:
    """``features[:, columns]`` written over ``features`` itself, its rows moved to the front a
    chunk at a time: one n x d tensor where a copy would hold two. A row's new place never lies
    past its old one, so no row is overwritten before it is read."""
    n, d = features.shape
    if not features.is_contiguous():
        return features[:, columns]
    if len(columns) == d:
        return features
    kept = features.view(-1)[: n * len(columns)].view(n, len(columns))
    rows = max(1, 2**20 // d)  # a chunk of about 4 MB
    for start in range(0, n, rows):
        kept[start:start + rows] = features[start:start + rows][:, columns]
    return kept


def varying(features: torch.Tensor) -> torch.Tensor:
    """Indices of the features that are not constant over the rows of ``features``."""
    return (features != features[:1]).any(0).nonzero().squeeze(1)


def probe_path(train_x, train_y, val_x, val_y, num_classes: int, penalties, max_iter: int,
               patience: int = 2):
    """Fit the probe along ``penalties`` (strongest first, warm-started); score each on val.
    ``train_x``: raw features, or their Standardization.

    Weaker penalties take the most iterations and rarely win once validation accuracy has
    turned down, so the path stops after ``patience`` steps without a new best. Returns the
    fitted path as [(penalty, val accuracy, (weight, bias))], strongest first; each weight is
    for all features, standardised by train's mean and scale (zeros where train's are constant).
    """
    from tlbench_plugins.machinery import softmax_regression

    view = train_x if isinstance(train_x, Standardization) else Standardization(train_x)
    train_x, val_x = view.standardized, view(val_x)
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
    """(weight, bias) of the final probe on ``features`` (raw, or their Standardization),
    warm-started from ``start`` (a path state), rewritten to take raw features."""
    from tlbench_plugins.machinery import softmax_regression

    view = features if isinstance(features, Standardization) else Standardization(features)
    weight, bias = (start[0][:, view.columns], start[1]) if start is not None else (None, None)
    weight, bias = softmax_regression.fit(view.standardized, labels, num_classes, l2=penalty,
                                          max_iter=max_iter, weight=weight, bias=bias)
    return view.on_raw_features(weight, bias)
