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
def pooled_features(model: nn.Module, split, ctx) -> torch.Tensor:
    """Pre-logit features of the frozen network for every image of ``split``."""
    model.eval()
    features = []
    batches = split.batches(ctx.settings.batch_size, device=ctx.device)
    for x, _ in ctx.progress(batches, total=split.num_batches(ctx.settings.batch_size), desc="features"):
        with ctx.autocast():
            features.append(model.forward_head(model.forward_features(x), pre_logits=True).float())
    return torch.cat(features)


def frozen_features(model: nn.Module, split, ctx, use_cache: bool = True) -> tuple[torch.Tensor, bool]:
    """``pooled_features`` through the on-disk cache; returns (features on ctx.device, cache hit)."""
    from tlbench_plugins.strategies import feature_cache

    key = feature_cache.cache_key(model, split, ctx, pooling="pre_logits")
    cached = feature_cache.load(ctx.cache_dir, key, split.labels) if use_cache else None
    if cached is not None:
        return cached.to(ctx.device), True
    features = pooled_features(model, split, ctx)
    if use_cache:
        feature_cache.store(ctx.cache_dir, key, features, split.labels)
    return features, False


def fit_linear_head(head: nn.Module, features: torch.Tensor, labels: torch.Tensor, *,
                    l2: float, max_iter: int) -> None:
    """Multinomial logistic regression, full batch, L-BFGS; L2 on the weights (not the bias).

    Starts from the head's current parameters, so a path of penalties is warm-started.
    """
    weights = [p for name, p in head.named_parameters() if not name.endswith("bias")]
    optimizer = torch.optim.LBFGS(head.parameters(), lr=1.0, max_iter=max_iter, history_size=20,
                                  line_search_fn="strong_wolfe", tolerance_grad=1e-6,
                                  tolerance_change=1e-9)
    loss_fn = nn.CrossEntropyLoss()

    def closure():
        optimizer.zero_grad(set_to_none=True)
        loss = loss_fn(head(features), labels) + 0.5 * l2 * sum((w ** 2).sum() for w in weights)
        loss.backward()
        return loss

    with torch.enable_grad():
        optimizer.step(closure)


def standardizer(features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-feature mean and scale; well-conditioned inputs let L-BFGS converge in few steps."""
    return features.mean(0), features.std(0).clamp_min(1e-6)


@torch.no_grad()
def fold_standardization(head: nn.Linear, mean: torch.Tensor, scale: torch.Tensor) -> None:
    """Rewrite a head trained on (x - mean) / scale so that it takes raw features x."""
    head.weight.div_(scale)
    head.bias.sub_(head.weight @ mean)


def probe_path(train_x, train_y, val_x, val_y, num_classes: int, penalties, max_iter: int):
    """Fit the probe along ``penalties`` (strongest first, warm-started); score each on val.

    Returns the fitted path as [(penalty, val accuracy, head state)] in ``penalties`` order.
    """
    mean, scale = standardizer(train_x)
    train_x, val_x = (train_x - mean) / scale, (val_x - mean) / scale
    head = nn.Linear(train_x.shape[1], num_classes).to(train_x.device)
    nn.init.zeros_(head.weight)
    nn.init.zeros_(head.bias)
    path = []
    for penalty in penalties:
        fit_linear_head(head, train_x, train_y, l2=penalty, max_iter=max_iter)
        with torch.no_grad():
            accuracy = (head(val_x).argmax(1) == val_y).float().mean().item() if len(val_y) else 0.0
        path.append((penalty, accuracy, {k: v.clone() for k, v in head.state_dict().items()}))
    return path


def fit_probe(features, labels, num_classes: int, penalty: float, max_iter: int,
              start: dict | None = None) -> nn.Linear:
    """The final probe on ``features`` (train + val), folded to take raw features."""
    mean, scale = standardizer(features)
    head = nn.Linear(features.shape[1], num_classes).to(features.device)
    if start is not None:
        head.load_state_dict(start)
    else:
        nn.init.zeros_(head.weight)
        nn.init.zeros_(head.bias)
    fit_linear_head(head, (features - mean) / scale, labels, l2=penalty, max_iter=max_iter)
    fold_standardization(head, mean, scale)
    return head
