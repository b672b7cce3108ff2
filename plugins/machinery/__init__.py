"""Machinery the first-party plugins share: a library, not a plugin.

Nothing here registers anything or is an entry point; ``tlbench_plugins.strategies``,
``tlbench_plugins.scores`` and the sinks import it, and it imports nothing of tlbench but the
public ``tlbench`` module, exactly as a third-party package's own helpers would.

- ``training``: the supervised training loop and its recipe (freezing, train modes that keep
  BatchNorm statistics, AdamW groups with layer-wise decay, schedule, augmentation, accuracy).
- ``options``: option dataclasses shared by several strategies (the supervised recipe's, the
  linear probe's).

Frozen passes (features of whole splits through the on-disk cache, and passes over many
batches with folded BatchNorms) are public API, ``ctx.frozen_features`` and ``ctx.frozen_pass``
(tlbench/frozen/), so that a third-party probe pays for them as the first-party ones do.
- ``freeze_boundary``: a partly frozen network cut where training starts, so its frozen part
  runs once and its output (the boundary activations) is cached.
- ``linear_head``: the linear probe's logistic-regression head (standardisation, L2 path,
  refit, installation as the classifier).
- ``softmax_regression``: the full-batch L-BFGS solver that head is fitted with.
- ``knn``: the weighted k-nearest-neighbour vote, its head and classifier.
- ``cell_fields``: what an experiment tracker receives of a record (the ``wandb`` and ``mlflow``
  sinks): the cell's name, its configuration, its metrics.

Only ``options`` may be imported at module level by a plugin: the others import torch, and
``tlbench ls`` must not. Import them inside ``fit`` or ``estimate``.
"""
