from dataclasses import dataclass

import tlbench


class PartialUnfreeze(tlbench.Strategy):
    """Last N stages and the head train; the rest stays frozen, BatchNorm statistics included."""

    name = "partial_unfreeze"

    @dataclass(frozen=True)
    class Options:
        blocks: int = tlbench.option(2, "trailing stages to train (timm's coarse parameter groups; the head always trains)")
        lr: float = tlbench.option(1e-3, "AdamW peak learning rate")
        weight_decay: float = tlbench.option(0.05, "AdamW weight decay")
        label_smoothing: float = tlbench.option(0.0, "cross-entropy label smoothing")

        def __post_init__(self):
            if self.blocks < 1:
                raise ValueError(f"blocks must be at least 1, got {self.blocks}")
            if self.lr <= 0:
                raise ValueError(f"lr must be > 0, got {self.lr}")
            if not 0.0 <= self.label_smoothing < 1.0:
                raise ValueError(f"label_smoothing must be in [0, 1), got {self.label_smoothing}")

    def fit(self, model, train, val, ctx):
        from tlbench_plugins.strategies import training

        groups = training.stage_groups(model)
        if self.options.blocks > len(groups):
            raise ValueError(f"blocks = {self.options.blocks}, but {type(model).__name__} has "
                             f"{len(groups)} stages; use blocks <= {len(groups)} (or full_finetune)")
        training.freeze(model)
        unfrozen = {name for group in groups[-self.options.blocks:] for name in group}
        training.unfreeze(p for name, p in model.named_parameters() if name in unfrozen)
        training.unfreeze([training.classifier(model)])
        o = self.options
        training.fit_supervised(model, train, ctx, lr=o.lr, weight_decay=o.weight_decay,
                                label_smoothing=o.label_smoothing)
        ctx.log(val_top1=training.accuracy(model, val, ctx), stages=len(groups))
        return model
