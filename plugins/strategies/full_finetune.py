from dataclasses import dataclass

import tlbench


class FullFinetune(tlbench.Strategy):
    """Every parameter trains: AdamW with a cosine schedule."""

    name = "full_finetune"

    @dataclass(frozen=True)
    class Options:
        lr: float = tlbench.option(1e-3, "AdamW peak learning rate")
        weight_decay: float = tlbench.option(0.05, "AdamW weight decay")
        label_smoothing: float = tlbench.option(0.0, "cross-entropy label smoothing")
        warmup_epochs: float = tlbench.option(0.0, "linear warm-up length in epochs before the cosine decay")

        def __post_init__(self):
            if self.lr <= 0:
                raise ValueError(f"lr must be > 0, got {self.lr}")
            if not 0.0 <= self.label_smoothing < 1.0:
                raise ValueError(f"label_smoothing must be in [0, 1), got {self.label_smoothing}")
            if self.warmup_epochs < 0:
                raise ValueError(f"warmup_epochs must be >= 0, got {self.warmup_epochs}")

    def fit(self, model, train, val, ctx):
        from tlbench_plugins.strategies import training

        for parameter in model.parameters():
            parameter.requires_grad_(True)
        o = self.options
        training.fit_supervised(model, train, ctx, lr=o.lr, weight_decay=o.weight_decay,
                                label_smoothing=o.label_smoothing, warmup_epochs=o.warmup_epochs)
        ctx.log(val_top1=training.accuracy(model, val, ctx))
        return model
