"""The supervised training loop and its recipe, shared by the first-party strategies
(imported inside ``fit`` only): freezing and unfreezing, train modes that keep BatchNorm
statistics, AdamW groups with layer-wise decay, warm-up and cosine schedule, augmentation,
the loop itself and the validation accuracy a strategy logs.

Models follow timm's API: ``get_classifier``, ``forward_features``, ``forward_head`` and, where
available, ``group_matcher`` for the network's stages.
"""

from __future__ import annotations

import contextlib
import math
import time
from dataclasses import dataclass, replace

import torch
import torch.nn.functional as F
from torch import nn

import tlbench


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


def keep_norm_statistics(model: nn.Module) -> None:
    """Every BatchNorm layer normalises with its running statistics (its scale and shift may
    still train): at small batches, batch statistics are noisy, and a pretrained network's
    running statistics are what its later layers (and a probe fitted on its features) expect."""
    for module in model.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            module.eval()


@torch.no_grad()
def recompute_norm_statistics(model: nn.Module, batches, forward) -> None:
    """Each BatchNorm layer's running mean set to the mean of its inputs over one pass of the
    training images with the final weights, its running variance to their batches' average
    variance ("precise BatchNorm",
    Wu and Johnson 2021; SWA's ``update_bn``). The running averages left by training follow the
    last few batches of weights that kept moving; at small batches they are noisy, and so is
    the accuracy they are evaluated with."""
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)
             and m.track_running_stats]
    if not norms:
        return
    model.eval()
    momentum = {module: module.momentum for module in norms}
    for module in norms:
        module.reset_running_stats()
        module.train()
    seen = 0
    for x, y in batches:
        if len(y) < 2:  # BatchNorm cannot normalise a batch of one
            continue
        seen += len(y)
        for module in norms:  # each batch weighted by its images: the mean over all of them
            module.momentum = len(y) / seen
        forward(x)
    for module, value in momentum.items():
        module.momentum = value
    model.eval()


def for_the_weights(recipe: "Recipe", ctx: tlbench.FitContext) -> "Recipe":
    """The pretrained fine-tuning recipe keeps the statistics a pretrained network learned; a
    random network's initial ones (0 and 1) mean nothing, so there it normalises by the batch
    (a grid with ``pretrained = false``), and the record says so."""
    if recipe.norm_statistics == "keep" and not getattr(ctx, "pretrained", True):
        ctx.log(norm_statistics="update (random weights)")
        return replace(recipe, norm_statistics="update")
    return recipe


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


def parameter_groups(model: nn.Module, lr: float, weight_decay: float, layer_decay: float = 1.0,
                     head_lr_scale: float = 1.0) -> list[dict]:
    """AdamW groups: no weight decay on biases and norm weights (1-D tensors); with
    ``layer_decay`` < 1, each stage nearer the input learns ``layer_decay`` times slower; the
    new head learns ``head_lr_scale`` times faster than the body (a pretrained body needs small
    steps, a head from zero large ones)."""
    stages = stage_groups(model)
    depth = {name: i for i, group in enumerate(stages) for name in group}
    head = {id(p) for p in model.get_classifier().parameters()}
    groups: dict = {}
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        scale = layer_decay ** (len(stages) - depth[name]) if name in depth else 1.0
        if id(p) in head:
            scale = head_lr_scale
        decay = weight_decay if p.ndim > 1 else 0.0
        groups.setdefault((scale, decay), []).append(p)
    return [{"params": ps, "lr": lr * scale, "weight_decay": decay} for (scale, decay), ps in groups.items()]


def cosine_with_warmup(optimizer, total_steps: int, warmup_steps: int):
    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def random_resized_crop_flip(x: torch.Tensor, generator: torch.Generator,
                             scale=(0.35, 1.0), ratio=(3 / 4, 4 / 3)) -> torch.Tensor:
    """Per-image random resized crop and horizontal flip of a batch, on its own device. The
    crops are drawn on the CPU (the generator's device) and sent in one transfer."""
    n = x.shape[0]
    rand = lambda: torch.rand(n, generator=generator)
    area = scale[0] + (scale[1] - scale[0]) * rand()
    log_ratio = math.log(ratio[0]) + (math.log(ratio[1]) - math.log(ratio[0])) * rand()
    width = (area * log_ratio.exp()).sqrt().clamp(max=1.0)
    height = (area / log_ratio.exp()).sqrt().clamp(max=1.0)
    centre_x = (rand() * 2 - 1) * (1 - width)
    centre_y = (rand() * 2 - 1) * (1 - height)
    flip = torch.where(rand() < 0.5, -1.0, 1.0)
    theta = torch.zeros(n, 2, 3)
    theta[:, 0, 0], theta[:, 0, 2] = width * flip, centre_x
    theta[:, 1, 1], theta[:, 1, 2] = height, centre_y
    theta = theta.to(x.device, x.dtype, non_blocking=True)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="reflection", align_corners=False)


@dataclass(frozen=True)
class Recipe:
    """How a supervised fit trains; strategies fill it from their options."""

    lr: float
    weight_decay: float
    label_smoothing: float = 0.0
    warmup_epochs: float = 0.0
    layer_decay: float = 1.0
    augment: bool = False
    compile: bool = False
    head_lr_scale: float = 1.0
    # "keep": every BatchNorm normalises with its running statistics; "recompute": batch
    # statistics while training, then running statistics measured over the training images
    norm_statistics: str = "update"


def channels_last(model: nn.Module) -> nn.Module:
    """Convolutions in NHWC layout: oneDNN's NHWC kernels on CPUs and tensor cores on CUDA are
    faster for inference and training alike (measured speed-ups: benchmarks/README.md,
    "channels_last")."""
    return model.to(memory_format=torch.channels_last)


def as_channels_last(x: torch.Tensor) -> torch.Tensor:
    return x.contiguous(memory_format=torch.channels_last) if x.ndim == 4 else x


def image_batches(train: tlbench.Split, ctx: tlbench.FitContext, recipe: Recipe):
    """(epoch -> batches of (images, labels)) from the split, augmented when asked."""
    generator = torch.Generator().manual_seed(ctx.seed)

    def batches(epoch: int):
        for x, y in train.batches(ctx.settings.batch_size, shuffle=True, seed=ctx.shuffle_seed(epoch),
                                  device=ctx.device):
            if recipe.augment:
                x = random_resized_crop_flip(x, generator)
            yield as_channels_last(x), y

    return batches


def fit_supervised(model: nn.Module, train: tlbench.Split, ctx: tlbench.FitContext, recipe: Recipe, *,
                   forward=None, batches=None, steps_per_epoch: int | None = None,
                   train_mode=None) -> None:
    """AdamW with warm-up and cosine decay over ``ctx.settings.epochs`` on the parameters that
    require grad. By default it trains ``model`` on images of ``train``; the cached-activation
    path passes its own ``forward``, ``batches`` and ``train_mode``. A recipe that keeps norm
    statistics puts every BatchNorm in eval mode after whichever train mode."""
    settings = ctx.settings
    channels_last(model)
    compiling = recipe.compile and forward is None
    forward = forward or (compiled(model) if compiling else model)
    batches = batches or image_batches(train, ctx, recipe)
    steps_per_epoch = steps_per_epoch or train.num_batches(settings.batch_size)
    train_mode = train_mode or (lambda: train_mode_keeping_frozen_norms(model))
    optimizer = torch.optim.AdamW(parameter_groups(model, recipe.lr, recipe.weight_decay, recipe.layer_decay,
                                                   recipe.head_lr_scale))
    schedule = cosine_with_warmup(optimizer, steps_per_epoch * settings.epochs,
                                  int(recipe.warmup_epochs * steps_per_epoch))
    loss_fn = nn.CrossEntropyLoss(label_smoothing=recipe.label_smoothing)
    # fp16 gradients underflow without loss scaling; in fp32 and bf16 the scaler passes through
    scaler = torch.amp.GradScaler(ctx.device.type, enabled=ctx.precision == "fp16")
    compile_clock = CompileClock(ctx.device) if compiling else None
    for epoch in range(settings.epochs):
        train_mode()
        if recipe.norm_statistics == "keep":  # the recipe's, whatever the strategy's train mode
            keep_norm_statistics(model)
        desc = f"epoch {epoch + 1}/{settings.epochs}"
        # checked once an epoch, not once a step: reading a flag from the GPU waits for it
        non_finite = torch.zeros((), dtype=torch.bool, device=ctx.device)
        for x, y in ctx.progress(batches(epoch), total=steps_per_epoch, desc=desc):
            if len(y) < 2:  # BatchNorm cannot train on a batch of one
                continue
            with compile_clock or contextlib.nullcontext():
                with ctx.autocast():
                    loss = loss_fn(forward(x), y)
                non_finite |= ~torch.isfinite(loss.detach())
                optimizer.zero_grad(set_to_none=True)
                scaler.scale(loss).backward()
                scaler.step(optimizer)
                scaler.update()
            schedule.step()
        if non_finite:
            raise FloatingPointError(f"non-finite training loss in epoch {epoch + 1}")
    if scaler.is_enabled():
        ctx.log(loss_scale=scaler.get_scale())
    if compile_clock is not None:
        ctx.log(compile_s=compile_clock.seconds, compiled_graphs=compile_clock.graphs)
    if recipe.norm_statistics == "recompute":
        with ctx.autocast():
            recompute_norm_statistics(model, batches(settings.epochs), forward)
    model.eval()


def compiled(model: nn.Module):
    """``torch.compile(model)`` from a clean slate: dynamo's caches are per process, so without
    the reset the first cell of an architecture would pay its compilation and later cells none
    (and after eight recompilations dynamo silently stops compiling)."""
    torch._dynamo.reset()
    return torch.compile(model)


def _graphs_compiled() -> int:
    from torch._dynamo.utils import counters

    return counters["stats"]["unique_graphs"]


class CompileClock:
    """Around each training step of a compiled model: the time of the steps that compiled a
    graph (the first, and the first of each new batch shape), logged as ``compile_s`` so that
    a reader can tell compilation from training in ``train_s``."""

    def __init__(self, device: torch.device):
        self.device, self.seconds, self.graphs = device, 0.0, 0

    def __enter__(self):
        self._graphs, self._start = _graphs_compiled(), time.perf_counter()

    def __exit__(self, *exc):
        added = _graphs_compiled() - self._graphs
        if added > 0:
            if self.device.type == "cuda":
                torch.cuda.synchronize(self.device)  # only on steps that compiled: no sync otherwise
            self.seconds += time.perf_counter() - self._start
            self.graphs += added
        return False


def finetune_everything(model: nn.Module, train: tlbench.Split, val: tlbench.Split,
                        ctx: tlbench.FitContext, recipe: Recipe) -> nn.Module:
    """Every parameter trains with ``recipe``; logs the validation top-1. The whole fit of
    full_finetune and of scratch (random weights, each with its own recipe)."""
    for parameter in model.parameters():
        parameter.requires_grad_(True)
    fit_supervised(model, train, ctx, for_the_weights(recipe, ctx))
    ctx.log(val_top1=accuracy(model, val, ctx))
    return model


@torch.no_grad()
def accuracy(model: nn.Module, split: tlbench.Split, ctx: tlbench.FitContext) -> float:
    """Top-1 on a split the strategy may use (validation), for the record."""
    model.eval()
    correct = 0
    for x, y in split.batches(ctx.settings.batch_size, device=ctx.device):
        with ctx.autocast():
            correct += (model(x).argmax(1) == y).sum().item()
    return correct / max(1, len(split))


