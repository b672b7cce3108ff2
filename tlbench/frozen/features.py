"""Pre-logit features of a frozen network, each image through the network at most once.

``frozen_features`` looks every split up in the on-disk cache (cache.py) and extracts only the
missing ones, all in one stream through a folded network (extraction.py). Plugins reach it as
``ctx.frozen_features`` (tlbench.FitContext): the first-party probes, lp_ft, the
transferability scores and any third-party strategy share one cache.
"""

from __future__ import annotations

import contextlib
import time

import torch
from torch import nn



def channels_last(model: nn.Module) -> nn.Module:
    return model.to(memory_format=torch.channels_last)


def as_channels_last(x: torch.Tensor) -> torch.Tensor:
    return x.contiguous(memory_format=torch.channels_last) if x.ndim == 4 else x


def pooled_features(extraction, splits: list, ctx) -> list:
    """Pre-logit features of the frozen network (an extraction.Extraction) for every image of
    each of ``splits``. All splits go through as one stream of batches, so the extraction's
    two-at-a-time pipeline fills and drains once."""
    def features(network, x):
        return network.forward_head(network.forward_features(x), pre_logits=True).float()

    size = ctx.settings.batch_size
    images = (as_channels_last(x) for split in splits for x, _ in split.batches(size, device=ctx.device))
    # each batch's rows: (split, first row), in the order the batches come
    places = [(i, start) for i, split in enumerate(splits) for start in range(0, len(split), size)]
    found = None  # one tensor per split, made at the first batch (its width) and filled in place:
    # the batches are not kept to be concatenated, which would hold the features twice
    with contextlib.closing(extraction.outputs(images, features)) as batches:
        for (i, start), batch in zip(places, ctx.progress(batches, total=len(places), desc="features")):
            if found is None:
                found = [batch.new_empty((len(split), *batch.shape[1:])) for split in splits]
            found[i][start:start + len(batch)] = batch
    return found or [torch.empty(0, 0, device=ctx.device) for _ in splits]


def frozen_features(model: nn.Module, splits: list, ctx,
                    use_cache: bool = True) -> tuple[list, str]:
    """``pooled_features`` of each of ``splits`` through the on-disk cache; returns (features on
    ctx.device per split, the cache's part: "hit" when all came from it, "miss" when some were
    extracted, "off" without ``use_cache``). The network is folded for extraction once, and
    only if some split has to be extracted."""
    from tlbench.frozen import cache as feature_cache
    from tlbench.frozen.extraction import Extraction

    # keys first: while folded, the network's own parameters are not the ones it was built with
    keys = [feature_cache.cache_key(model, split, ctx, pooling="pre_logits") for split in splits]
    entries = [feature_cache.load(ctx.cache_dir, key, split.labels) if use_cache else None
               for split, key in zip(splits, keys)]
    found = [entry and entry[0] for entry in entries]
    # Extraction an earlier cell paid: logged, so that a probe's compute does not depend on
    # whether the cache was warm (the leaderboard adds it to the fit's time)
    ctx.log(cached_extraction_s=sum(entry[1] for entry in entries if entry))
    missing = [i for i, features in enumerate(found) if features is None]
    if missing:
        start = time.perf_counter()
        with Extraction(channels_last(model), ctx) as extraction:
            extracted = pooled_features(extraction, [splits[i] for i in missing], ctx)
        images = sum(len(splits[i]) for i in missing)
        per_image = (time.perf_counter() - start) / max(1, images)
        for i, features in zip(missing, extracted):
            if use_cache:
                feature_cache.store(ctx.cache_dir, keys[i], features, splits[i].labels, per_image * len(splits[i]))
            found[i] = features
    cache = "off" if not use_cache else "miss" if missing else "hit"
    return [features.to(ctx.device) for features in found], cache
