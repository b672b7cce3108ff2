"""The test split's logits of a returned network, computed as its head over its pre-logit
features: read from the cache when the core proves the body is the cached one, else extracted
through the fast path (folded, two batches at a time) and kept for the next cell.

The runner scores whatever this returns exactly as it scores ``model(x)`` (runner.evaluate);
None sends it to that plain forward pass. The decision is the core's alone (body.py): the
network must be the class the backbone built, with none of its forwards replaced and no hooks,
and a cached entry is used only under the sha256 of the body's every parameter, buffer and
attribute, taken now. A spot check then runs the network itself on the first test images and
compares its logits with the head's over the features; any difference, and the plain pass
scores it instead.
"""

from __future__ import annotations

import time
from types import SimpleNamespace
from typing import Optional

import torch
from torch import nn

from tlbench.frozen import body
from tlbench.frozen import cache as feature_cache

SPOT_IMAGES = 8  # images the network itself scores on every use, to check the head's logits


@torch.no_grad()
def scored_logits(model: nn.Module, test, ctx, built: type) -> tuple[Optional[list], dict]:
    """([(logits, labels)] per batch of ``test`` on ``ctx.device``, or None for the plain pass;
    the record's ``scoring`` facts). ``built``: the class of the network the backbone built."""
    model.eval()
    why = ("features are cached in fp32; this cell scores in " + ctx.precision if ctx.precision != "fp32"
           else body.refusal(model, built))
    if why:
        return None, {"path": "forward", "why": why}
    try:
        return _through_features(model, test, ctx)
    except Exception as exc:  # scoring must not fail where the plain pass would not; it says why
        return None, {"path": "forward", "why": f"its pre-logit features failed: {type(exc).__name__}: {exc}"[:300]}


def _through_features(model: nn.Module, test, ctx) -> tuple[Optional[list], dict]:
    """``scored_logits`` for a network ``body.refusal`` accepts: cached or extracted features,
    the spot check, then the head per batch."""
    head_name = body.head_name(model)
    head = model.get_submodule(head_name)
    key, facts = _cache_key(model, head_name, test, ctx)
    entry = feature_cache.load(ctx.cache_dir, key, test.labels) if key else None
    if entry:
        features, seconds = entry
        facts.update(cache="hit", cached_extraction_s=seconds)
    else:
        features, seconds = _extract(model, test, ctx, facts)
    features = features.to(ctx.device)
    why = _spot_check(model, head, features, test, ctx)
    if why:
        return None, {"path": "forward", "why": why}
    if key and not entry and torch.isfinite(features).all():
        feature_cache.store(ctx.cache_dir, key, features, test.labels, seconds)
    size = ctx.settings.batch_size
    labels = test.labels.to(ctx.device)
    return [(head(f), y) for f, y in zip(features.split(size), labels.split(size))], facts


def _cache_key(model: nn.Module, head_name: str, test, ctx) -> tuple[Optional[dict], dict]:
    """(the cache key of ``test``'s features through this exact body, or None when the body
    cannot be cached; the facts so far). A body with trainable parameters is not looked up:
    whatever its flags claim, the digest alone decides a hit, so the flag only saves hashing."""
    facts: dict = {"path": "features", "cache": "off"}
    if body.trainable_body(model, head_name):
        return None, {**facts, "why_not_cached": "the body has trainable parameters"}
    digest = body.digest(model, head_name)
    if digest is None:
        return None, {**facts, "why_not_cached": "part of the body has no exact digest"}
    kind = type(model)
    key = {
        "format": feature_cache.FORMAT,
        "body": digest,  # in place of the weights' name: what the features were computed by
        "architecture": f"{kind.__module__}.{kind.__qualname__}",
        "images": test.key,
        "pooling": "pre_logits",
        "precision": feature_cache.FEATURE_PRECISION,
        # rounding differs between devices and torch versions: a hit must match the plain pass
        "device": ctx.device.type,
        "torch": str(torch.__version__),  # a plain str: the entry is read back with weights_only
    }
    return key, {**facts, "cache": "miss", "body_digest": digest[:16]}


def _extract(model: nn.Module, test, ctx, facts: dict) -> tuple[torch.Tensor, float]:
    """``test``'s pre-logit features through the fast path, and what they cost. Its facts
    (folded_batchnorms) go to ``facts``, not to the strategy's info."""
    from tlbench.frozen.extraction import Extraction
    from tlbench.frozen.features import channels_last, pooled_features

    view = SimpleNamespace(device=ctx.device, precision=ctx.precision, settings=ctx.settings,
                           progress=ctx.progress, log=facts.update)
    start = time.perf_counter()
    with Extraction(channels_last(model), view) as extraction:
        (features,) = pooled_features(extraction, [test], view)
    return features, time.perf_counter() - start


def _spot_check(model: nn.Module, head: nn.Module, features: torch.Tensor, test, ctx) -> Optional[str]:
    """Why the head over ``features`` is not what ``model`` itself gives on the first test
    images; None when it is (within float rounding, and the same predictions)."""
    x, _ = test.first_images(SPOT_IMAGES, ctx.device, ctx.settings.batch_size)  # decodes only these, if it can
    expected = model(x)
    got = head(features[:len(x)])
    if not isinstance(expected, torch.Tensor) or not isinstance(got, torch.Tensor) or got.shape != expected.shape:
        return "its head over its pre-logit features does not give its logits' shape"
    expected, got = expected.float(), got.float()
    scale = expected.abs().max().clamp_min(1e-6)
    if not bool(((got - expected).abs().max() <= 1e-3 * scale).item()) or not torch.equal(
            got.argmax(1), expected.argmax(1)):
        return "its head over its pre-logit features did not reproduce its logits on the first test images"
    return None
