"""A frozen network with each BatchNorm folded into the convolution before it, for extraction.

A frozen BatchNorm in eval mode is an affine map per channel, so it can be merged into the
weights and bias of the convolution that feeds it. The folded network computes the same features
(up to float rounding) and skips one full pass over every activation per layer, which makes
frozen extraction faster on CPUs (measured speed-ups: benchmarks/README.md, "BatchNorm folding").
The swap lasts only while the caller extracts: the original modules are put back on the way
out, exceptions included, so the network that is trained and scored is the one the backbone
plugin built.

Pairs are found by watching one forward pass (a convolution's output tensor arriving as a
BatchNorm's input), so no architecture is named here; the folded network is used only if it
reproduces the original's output on that batch, otherwise the original runs as it is.
"""

from __future__ import annotations

import weakref
from contextlib import contextmanager

import torch
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval


def _frozen(module: nn.Module) -> bool:
    return not any(p.requires_grad for p in module.parameters())


def _after_norm(norm: nn.Module):
    """What is left of ``norm``'s forward once its affine map is folded away, or None when
    that is not known (a BatchNorm subclass with a forward of its own)."""
    if type(norm) is nn.BatchNorm2d:
        return nn.Identity()
    from timm.layers import BatchNormAct2d  # BatchNorm, then dropout and activation

    if type(norm) is BatchNormAct2d:
        return norm.act if isinstance(norm.drop, nn.Identity) else nn.Sequential(norm.drop, norm.act)
    return None


def _uses_weights_as_they_are(conv: nn.Module) -> bool:
    """A convolution whose forward applies its weight unchanged (not, say, timm's StdConv2d,
    which standardises the weight on every call and would undo the fold)."""
    from timm.layers import Conv2dSame  # TF-style "same" padding computed per input

    return type(conv) in (nn.Conv2d, Conv2dSame)


def _pairs(model: nn.Module, sample: torch.Tensor) -> tuple[list[tuple[str, str]], torch.Tensor]:
    """(convolution, BatchNorm) names where the BatchNorm's input is the convolution's output,
    and the features of ``sample`` that forward pass computed."""
    names = {module: name for name, module in model.named_modules()}
    # id -> (conv name, weak reference to the output): the reference tells a live output from a
    # new tensor that reuses a dead one's id, without keeping every activation in memory
    outputs: dict = {}
    calls: dict = {}
    pairs = []

    def conv_done(conv, args, output):
        calls[conv] = calls.get(conv, 0) + 1
        outputs[id(output)] = (names[conv], weakref.ref(output))

    def norm_starts(norm, args):
        calls[norm] = calls.get(norm, 0) + 1
        seen = outputs.get(id(args[0])) if args else None  # bn(input=x) passes no positional
        if seen is not None and seen[1]() is args[0]:
            pairs.append((seen[0], names[norm]))

    hooks = [m.register_forward_hook(conv_done) for m in model.modules()
             if _uses_weights_as_they_are(m) and _frozen(m)]
    hooks += [m.register_forward_pre_hook(norm_starts) for m in model.modules()
              if isinstance(m, nn.BatchNorm2d) and _frozen(m) and m.running_mean is not None
              and _after_norm(m) is not None]
    try:
        features = model.forward_features(sample)
    finally:
        for hook in hooks:
            hook.remove()
    once = {names[m] for m, n in calls.items() if n == 1}  # a module used twice cannot be folded
    convs = [conv for conv, _ in pairs]
    return [(conv, norm) for conv, norm in pairs
            if conv in once and norm in once and convs.count(conv) == 1], features


def _swap(model: nn.Module, modules: dict) -> dict:
    """Put ``modules`` (name -> module) in place; return what they replaced."""
    replaced = {}
    for name, module in modules.items():
        parent, _, leaf = name.rpartition(".")
        owner = model.get_submodule(parent) if parent else model
        replaced[name] = getattr(owner, leaf)
        setattr(owner, leaf, module)
    return replaced


def _same(expected: torch.Tensor, got: torch.Tensor) -> bool:
    scale = expected.abs().max().clamp_min(1e-6)
    return got.shape == expected.shape and bool(((got - expected).abs().max() <= 1e-3 * scale).item())


@contextmanager
@torch.no_grad()
def folded(model: nn.Module, sample: torch.Tensor, log=None):
    """``model`` in eval mode with its frozen conv + BatchNorm pairs folded, for the duration of
    the ``with`` block; unchanged when there is nothing to fold or the folded network does not
    compute the same features on ``sample``. ``log(folded_batchnorms=N)`` says which it was.

    Only ``forward_features`` up to the first trainable layer is guaranteed to match, which is
    all a caller that extracts frozen features or boundary activations runs.
    """
    model.eval()
    pairs, expected = _pairs(model, sample)
    folding = {}
    for conv_name, norm_name in pairs:
        norm = model.get_submodule(norm_name)
        folding[conv_name] = fuse_conv_bn_eval(model.get_submodule(conv_name), norm)
        folding[norm_name] = _after_norm(norm)
    originals = _swap(model, folding)
    try:
        if pairs and not _same(expected, model.forward_features(sample)):
            _swap(model, originals)
            originals = {}
        if log is not None:
            log(folded_batchnorms=len(pairs) if originals else 0)
        yield model
    finally:
        _swap(model, originals)
