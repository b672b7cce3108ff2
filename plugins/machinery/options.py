"""Option dataclasses shared by several first-party strategies: the supervised recipe's
(fields of their Options), and the linear probe's, which lp_ft's first stage uses too.

Importing this module does not import torch: ``tlbench ls`` reads these classes."""

from dataclasses import dataclass

import tlbench

NORM_STATISTICS = ("update", "keep", "recompute")


@dataclass(frozen=True)
class SupervisedOptions:
    lr: float = tlbench.option(1e-3, "AdamW peak learning rate (a list selects on validation)")
    weight_decay: float = tlbench.option(0.05, "AdamW weight decay (not applied to biases and norms)")
    label_smoothing: float = tlbench.option(0.0, "cross-entropy label smoothing")
    warmup_epochs: float = tlbench.option(0.0, "linear warm-up length in epochs before the cosine decay")
    augment: bool = tlbench.option(False, "random resized crop and horizontal flip of training images")
    head_lr_scale: float = tlbench.option(1.0, "the new head's learning rate is lr times this (1 = one rate for all)")
    norm_statistics: str = tlbench.option("update", "BatchNorm while training: update (batch statistics, running averages follow the data), keep (running statistics fixed; scale and shift still train) or recompute (update, then running statistics measured over the training images)")

    def __post_init__(self):
        if self.lr <= 0:
            raise ValueError(f"lr must be > 0, got {self.lr}")
        if self.weight_decay < 0:
            raise ValueError(f"weight_decay must be >= 0, got {self.weight_decay}")
        if not 0.0 <= self.label_smoothing < 1.0:
            raise ValueError(f"label_smoothing must be in [0, 1), got {self.label_smoothing}")
        if self.warmup_epochs < 0:
            raise ValueError(f"warmup_epochs must be >= 0, got {self.warmup_epochs}")
        if self.head_lr_scale <= 0:
            raise ValueError(f"head_lr_scale must be > 0, got {self.head_lr_scale}")
        if self.norm_statistics not in NORM_STATISTICS:
            raise ValueError(f"norm_statistics must be one of {', '.join(NORM_STATISTICS)}, got {self.norm_statistics!r}")

    def recipe(self, **extra):
        from tlbench_plugins.machinery.training import Recipe

        return Recipe(lr=self.lr, weight_decay=self.weight_decay, label_smoothing=self.label_smoothing,
                      warmup_epochs=self.warmup_epochs, augment=self.augment,
                      head_lr_scale=self.head_lr_scale, norm_statistics=self.norm_statistics, **extra)


@dataclass(frozen=True)
class FinetuneOptions(SupervisedOptions):
    layer_decay: float = tlbench.option(1.0, "layer-wise lr decay: each stage nearer the input gets this factor (1 = off)")
    compile: bool = tlbench.option(False, "torch.compile the model for training (pays off on long GPU runs)")

    def __post_init__(self):
        super().__post_init__()
        if not 0 < self.layer_decay <= 1:
            raise ValueError(f"layer_decay must be in (0, 1], got {self.layer_decay}")

    def recipe(self, **extra):
        return super().recipe(layer_decay=self.layer_decay, compile=self.compile, **extra)


@dataclass(frozen=True)
class PretrainedFinetuneOptions(FinetuneOptions):
    """Every parameter of a pretrained network trains: small steps for the body, large ones for
    the new head, BatchNorm on its running statistics, a short warm-up (docs/strategies.md,
    "Recipes", says what was measured to choose each)."""

    lr: float = tlbench.option(1e-4, "AdamW peak learning rate of the pretrained body (a list selects on validation)")
    head_lr_scale: float = tlbench.option(10.0, "the new head's learning rate is lr times this (1 = one rate for all)")
    norm_statistics: str = tlbench.option("keep", "BatchNorm while training: keep (a pretrained network's running statistics fixed; scale and shift still train; from random weights it updates) or update (batch statistics, running averages follow the data)")
    warmup_epochs: float = tlbench.option(0.5, "linear warm-up length in epochs before the cosine decay")


@dataclass(frozen=True)
class LinearProbeOptions:
    l2_max: float = tlbench.option(10.0, "strongest L2 penalty on the path (on standardised features)")
    l2_min: float = tlbench.option(1e-5, "weakest L2 penalty on the path")
    l2_steps: int = tlbench.option(7, "penalties on the log-spaced path (it stops two steps past the best); 1 = l2_max alone")
    max_iter: int = tlbench.option(30, "L-BFGS iterations per penalty (the path is warm-started)")
    cache: bool = tlbench.option(True, "keep features on disk (under the cache dir) for later cells")
    refit_on_val: bool = tlbench.option(False, "refit the chosen penalty on train + val (more data than the strategies that train learn from; never while the core selects among list values)",
                                        tunable=False)

    def __post_init__(self):
        if not 0 < self.l2_min <= self.l2_max:
            raise ValueError(f"need 0 < l2_min <= l2_max, got {self.l2_min} and {self.l2_max}")
        if self.l2_steps < 1 or self.max_iter < 1:
            raise ValueError("l2_steps and max_iter must be at least 1")

    def penalties(self) -> list[float]:
        if self.l2_steps == 1:
            return [self.l2_max]
        ratio = (self.l2_min / self.l2_max) ** (1 / (self.l2_steps - 1))
        return [self.l2_max * ratio ** i for i in range(self.l2_steps)]
