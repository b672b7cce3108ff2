"""Frozen passes, paid once: what a strategy reaches through ``ctx.frozen_features`` and
``ctx.frozen_pass`` (tlbench.FitContext), and the test split's features when the core scores.

- ``features``: pre-logit features of a frozen network for whole splits, through the cache.
- ``cache``: that on-disk cache, keyed by weights, images, pooling and precision; entries keep
  what extracting them cost, so a cell that reads them can say so.
- ``extraction``: frozen-network passes over many batches (folded once, two batches at a time
  on the CPU).
- ``folding``: BatchNorm folded into the convolution before it, for those passes.
- ``scoring``: the core's scoring of a returned network as its head over its pre-logit test
  features, read from the cache when ``body``'s digest proves the body is the cached one.
- ``body``: that digest, and the checks that a network is scored as head over features.

Nothing here imports ``tlbench`` itself (the API imports this lazily).
"""
