"""Training pieces shared by the first-party strategies (imported inside ``fit`` only).

Models follow timm's API: ``get_classifier``, ``forward_features``, ``forward_head`` and, where
available, ``group_matcher`` for the network's stages.
"""

from __future__ import annotations

import math

import torch
from torch import nn


def freeze(model: nn.Module) -> None:
    for parameter in model.parameters():
        parameter.requires_grad_(False)


def classifier(model: nn.Module) -> nn.Module:
    head = model.get_classifier()
    if not any(True for _ in head.parameters()):
        raise ValueError(f"{type(model).__name__} has no trainable classifier; "
                         "create the backbone with num_classes > 0")
    return head


def unfreeze(modules_or_params) -> None:
    for item in modules_or_params:
        params = item.parameters() if isinstance(item, nn.Module) else [item]
        for parameter in params:
            parameter.requires_grad_(True)


def train_mode_keeping_frozen_norms(model: nn.Module) -> None:
    """Train mode, except BatchNorm layers with nothing to train: they keep their running
    statistics (eval mode), so a frozen part of the network computes what it was trained to."""
    model.train()
    for module in model.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            if not any(p.requires_grad for p in module.parameters(recurse=False)):
                module.eval()


def stage_groups(model: nn.Module) -> list[list[str]]:
    """Parameter names grouped into the network's stages, input to output, head excluded.

    Uses timm's coarse ``group_matcher`` (stem, each stage or block, final conv) when the model
    has one; otherwise its top-level children.
    """
    head = {id(p) for p in model.get_classifier().parameters()}
    body = [name for name, p in model.named_parameters() if id(p) not in head]
    if hasattr(model, "group_matcher"):
        from timm.models import group_parameters

        grouped = group_parameters(model, model.group_matcher(coarse=True))
        groups = [list(names) for names in grouped.values()]
    else:
        by_child: dict[str, list[str]] = {}
        for name in body:
            by_child.setdefault(name.split(".", 1)[0], []).append(name)
        groups = list(by_child.values())
    keep = set(body)
    return [g for g in ([n for n in group if n in keep] for group in groups) if g]


def trainable_parameters(model: nn.Module) -> list[nn.Parameter]:
    return [p for p in model.parameters() if p.requires_grad]


def cosine_with_warmup(optimizer, total_steps: int, warmup_steps: int):
    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def fit_supervised(model: nn.Module, train, ctx, *, lr: float, weight_decay: float,
                   label_smoothing: float = 0.0, warmup_epochs: float = 0.0) -> None:
    """AdamW over the parameters that require grad, cosine schedule, ``ctx.settings.epochs``."""
    settings = ctx.settings
    params = trainable_parameters(model)
    optimizer = torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
    steps_per_epoch = train.num_batches(settings.batch_size)
    total = steps_per_epoch * settings.epochs
    schedule = cosine_with_warmup(optimizer, total, int(warmup_epochs * steps_per_epoch))
    loss_fn = nn.CrossEntropyLoss(label_smoothing=label_smoothing)
    for epoch in range(settings.epochs):
        train_mode_keeping_frozen_norms(model)
        batches = train.batches(settings.batch_size, shuffle=True, seed=ctx.seed * 1000 + epoch,
                                device=ctx.device)
        for x, y in ctx.progress(batches, total=steps_per_epoch, desc=f"epoch {epoch + 1}/{settings.epochs}"):
            if len(y) < 2:  # BatchNorm cannot train on a batch of one
                continue
            with ctx.autocast():
                loss = loss_fn(model(x), y)
            if not torch.isfinite(loss):
                raise FloatingPointError(f"non-finite training loss ({loss.item()}) in epoch {epoch + 1}")
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
    model.eval()


@torch.no_grad()
def accuracy(model: nn.Module, split, ctx) -> float:
    """Top-1 on a split the strategy may use (validation), for the record."""
    model.eval()
    correct = 0
    for x, y in split.batches(ctx.settings.batch_size, device=ctx.device):
        with ctx.autocast():
            correct += (model(x).argmax(1) == y).sum().item()
    return correct / max(1, len(split))


@torch.no_grad()
def pooled_features(model: nn.Module, split, ctx) -> tuple[torch.Tensor, torch.Tensor]:
    """Pre-logit features of the frozen network for every image of ``split``, once."""
    model.eval()
    features = []
    batches = split.batches(ctx.settings.batch_size, device=ctx.device)
    for x, _ in ctx.progress(batches, total=split.num_batches(ctx.settings.batch_size), desc="features"):
        with ctx.autocast():
            features.append(model.forward_head(model.forward_features(x), pre_logits=True).float())
    return torch.cat(features), split.labels.to(ctx.device)


def fit_linear_head(head: nn.Module, features: torch.Tensor, labels: torch.Tensor, *,
                    l2: float, max_iter: int) -> None:
    """Multinomial logistic regression, full batch, L-BFGS; L2 on the weights (not the bias)."""
    weights = [p for name, p in head.named_parameters() if not name.endswith("bias")]
    optimizer = torch.optim.LBFGS(head.parameters(), lr=1.0, max_iter=max_iter, history_size=20,
                                  line_search_fn="strong_wolfe", tolerance_grad=1e-6)
    loss_fn = nn.CrossEntropyLoss()

    def closure():
        optimizer.zero_grad(set_to_none=True)
        loss = loss_fn(head(features), labels) + 0.5 * l2 * sum((w ** 2).sum() for w in weights)
        loss.backward()
        return loss

    optimizer.step(closure)
