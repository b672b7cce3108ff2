"""Split a partly frozen network at its freeze boundary, so the frozen part runs once.

The network's forward_features is observed as a sequence of units (its top-level modules, with
containers that mix frozen and trainable parts opened up). The first unit with a trainable
parameter is the boundary: its input is the activation to cache, and the units from there on,
then forward_head, are the trainable part. The split is used only if the trainable part,
applied to the cached activation, reproduces the network's own output; otherwise (a forward
that is not a plain chain of modules) the caller runs the whole network instead.
"""

from __future__ import annotations

import contextlib
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

import torch
from torch import nn

import tlbench
from tlbench_plugins.machinery.training import as_channels_last, train_mode_keeping_frozen_norms


class _Stop(Exception):
    """Raised by a hook to end a forward pass at the boundary."""


@dataclass
class BoundarySplit:
    """A network cut at its freeze boundary (not a data split)."""

    boundary: str  # name of the first trainable unit
    prefix: list  # frozen units, run once
    suffix: list  # (name, module) from the boundary on
    sample_activation: torch.Tensor  # the boundary input for the probe batch

    def bytes_per_image(self) -> int:
        return self.sample_activation[0].numel() * 4  # cached as float32

    def forward(self, model: nn.Module, activation: torch.Tensor) -> torch.Tensor:
        for _, unit in self.suffix:
            activation = unit(activation)
        return model.forward_head(activation)


def _trainable(module: nn.Module) -> set:
    return {p.requires_grad for p in module.parameters()}


def _units(model: nn.Module) -> Optional[list]:
    """Top-level modules, opening containers that hold both frozen and trainable parameters."""
    units, pending = [], list(model.named_children())
    while pending:
        name, module = pending.pop(0)
        if _trainable(module) == {True, False}:
            if not isinstance(module, (nn.Sequential, nn.ModuleList)):
                return None  # mixed inside one opaque module: no clean boundary
            pending[0:0] = [(f"{name}.{child}", m) for child, m in module.named_children()]
        else:
            units.append((name, module))
    return units


def _call_order(model: nn.Module, units: list, sample: torch.Tensor) -> list:
    order = []
    hooks = [module.register_forward_pre_hook(lambda m, args, name=name: order.append(name))
             for name, module in units]
    try:
        model.forward_features(sample)
    finally:
        for hook in hooks:
            hook.remove()
    return order


class BoundaryInput:
    """While the ``with`` block lasts, ``self(model, x)`` runs ``model.forward_features(x)`` up
    to ``unit`` and returns that unit's input, computing nothing after it. One hook serves every
    thread: each call sees only its own pass's input, and passes not made by a call (folding's
    check, say) run through untouched."""

    def __init__(self, unit: nn.Module):
        self.unit = unit
        self._seen = threading.local()

    def __enter__(self) -> "BoundaryInput":
        self._hook = self.unit.register_forward_pre_hook(self._stop)
        return self

    def __exit__(self, *exc) -> None:
        self._hook.remove()

    def _stop(self, module, args):
        if not getattr(self._seen, "armed", False):
            return None
        if len(args) != 1 or not torch.is_tensor(args[0]):
            raise ValueError("boundary unit takes more than one tensor")
        self._seen.input = args[0]
        raise _Stop

    def __call__(self, model: nn.Module, x: torch.Tensor) -> torch.Tensor:
        self._seen.input, self._seen.armed = None, True
        try:
            model.forward_features(x)
        except _Stop:
            pass
        finally:
            self._seen.armed = False
        if self._seen.input is None:
            raise ValueError("boundary unit was not called by forward_features")
        return self._seen.input


def capture(model: nn.Module, unit: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The input of ``unit`` when ``model.forward_features(x)`` runs, computing nothing after it."""
    with BoundaryInput(unit) as boundary_input:
        return boundary_input(model, x)


@torch.no_grad()
def find_split(model: nn.Module, sample: torch.Tensor) -> Optional[BoundarySplit]:
    """The split of ``model`` (frozen parameters already set), or None when there is no exact one."""
    units = _units(model)
    if not units:
        return None
    modules = dict(units)
    model.eval()
    order = _call_order(model, units, sample)
    if len(order) != len(set(order)):
        return None  # a unit called twice: not a chain
    first = next((i for i, name in enumerate(order) if True in _trainable(modules[name])), None)
    if first is None or first == 0:
        return None
    try:
        activation = capture(model, modules[order[first]], sample)
    except ValueError:
        return None
    split = BoundarySplit(order[first], [modules[n] for n in order[:first]],
                  [(n, modules[n]) for n in order[first:]], activation)
    rebuilt = split.forward(model, activation)
    expected = model(sample)
    return split if torch.allclose(rebuilt, expected, rtol=1e-4, atol=1e-5) else None


def eval_prefix_train_suffix(model: nn.Module, split: BoundarySplit) -> None:
    """The frozen part is fixed (eval: no dropout, running statistics); the rest trains."""
    model.eval()
    model.training = True  # the root flag alone: forward_head's functional dropout still applies
    for _, unit in split.suffix:
        train_mode_keeping_frozen_norms(unit)
    model.get_classifier().train()


@dataclass
class CachedActivations:
    model: nn.Module
    split: BoundarySplit
    activations: torch.Tensor  # on the device, or on the CPU backed by a file
    labels: torch.Tensor  # on the device
    batch_size: int
    shuffle_seed: Callable[[int], int]  # the cell's ctx.shuffle_seed

    @property
    def megabytes(self) -> float:
        return self.activations.numel() * self.activations.element_size() / 2**20

    def forward(self, activation: torch.Tensor) -> torch.Tensor:
        return self.split.forward(self.model, activation)

    def batches(self, epoch: int):
        # the order the core's tlbench.Split.batches(shuffle=True, seed=ctx.shuffle_seed(epoch))
        # gives (a randperm drawn with that seed), so both paths see the same batches
        generator = torch.Generator().manual_seed(self.shuffle_seed(epoch))
        order = torch.randperm(len(self.labels), generator=generator)
        device = self.labels.device
        for start in range(0, len(order), self.batch_size):
            rows = order[start:start + self.batch_size]
            activations = self.activations[rows.to(self.activations.device)].to(device, non_blocking=True)
            yield as_channels_last(activations), self.labels[rows.to(device)]


@torch.no_grad()
def cached_batches(model: nn.Module, split: BoundarySplit, train: tlbench.Split, ctx: tlbench.FitContext,
                   file: Optional[Path] = None) -> CachedActivations:
    """Run the frozen part once over ``train`` and keep its output at the boundary: in memory
    on the device, or, given ``file``, in that file (created), mapped into memory, so the page
    cache holds what RAM allows and the disk the rest."""
    size = ctx.settings.batch_size
    images = (as_channels_last(x) for x, _ in train.batches(size, device=ctx.device))
    shape = (len(train), *split.sample_activation.shape[1:])
    # filled in place, batch by batch: no second copy of the whole cache at any moment
    activations = (as_channels_last(torch.empty(shape, device=ctx.device)) if file is None
                   else _file_tensor(file, shape))
    done = 0
    # the boundary unit is trainable, so folding (frozen layers only) leaves it in place
    with ctx.frozen_pass(model) as extraction, BoundaryInput(model.get_submodule(split.boundary)) as boundary_input:
        outputs = extraction.outputs(images, lambda network, x: boundary_input(network, x).float())
        with contextlib.closing(outputs):
            for chunk in ctx.progress(outputs, total=train.num_batches(size), desc="frozen part"):
                activations[done:done + len(chunk)].copy_(chunk)
                done += len(chunk)
    return CachedActivations(model, split, activations, train.labels.to(ctx.device), size, ctx.shuffle_seed)


class NoRoomOnDisk(Exception):
    """The activations' file could not be given its disk space; nothing was computed yet."""


def _file_tensor(file: Path, shape: tuple) -> torch.Tensor:
    """A float32 CPU tensor of ``shape`` whose storage is ``file``, mapped into memory.

    Its disk blocks are reserved first: a disk that fills later would otherwise end the process
    with SIGBUS the first time a mapped page is written, leaving no record. The file leaves its
    directory at once (the mapping keeps its data until the tensor is freed), so a killed run
    leaves nothing behind; where the system refuses that, the caller's deletion after the fit
    removes it."""
    import errno
    import os

    import numpy as np

    nbytes = 4 * int(np.prod(shape))
    try:
        file.parent.mkdir(parents=True, exist_ok=True)
        with open(file, "wb") as handle:
            try:
                os.posix_fallocate(handle.fileno(), 0, nbytes)
            except (AttributeError, OSError) as exc:  # a system or file system that cannot reserve: sized only
                if isinstance(exc, OSError) and exc.errno not in (errno.EINVAL, errno.EOPNOTSUPP):
                    raise
                handle.truncate(nbytes)
    except OSError as exc:
        file.unlink(missing_ok=True)
        raise NoRoomOnDisk(f"no room for {nbytes / 2**20:.1f} MB of activations in {file.parent} "
                           f"({exc.strerror or exc})") from exc
    tensor = torch.from_numpy(np.memmap(file, dtype=np.float32, mode="r+", shape=shape))
    try:
        file.unlink()
    except OSError:
        pass
    return tensor
