"""Frozen passes, paid once: what a strategy reaches through ``ctx.frozen_features`` and
``ctx.frozen_pass`` (tlbench.FitContext).

- ``features``: pre-logit features of a frozen network for whole splits, through the cache.
- ``cache``: that on-disk cache, keyed by weights, images, pooling and precision; entries keep
  what extracting them cost, so a cell that reads them can say so.
- ``extraction``: frozen-network passes over many batches (folded once, two batches at a time
  on the CPU).
- ``folding``: BatchNorm folded into the convolution before it, for those passes.

Nothing here imports ``tlbench`` itself (the API imports this lazily).
"""
