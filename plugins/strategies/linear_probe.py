from dataclasses import dataclass

import tlbench


class LinearProbe(tlbench.Strategy):
    """Frozen backbone; logistic-regression head fitted once on its features."""

    name = "linear_probe"

    @dataclass(frozen=True)
    class Options:
        l2: float = tlbench.option(1e-3, "L2 penalty on the head's weights")
        max_iter: int = tlbench.option(300, "L-BFGS iterations for the head")

        def __post_init__(self):
            if self.l2 < 0:
                raise ValueError(f"l2 must be >= 0, got {self.l2}")
            if self.max_iter < 1:
                raise ValueError(f"max_iter must be at least 1, got {self.max_iter}")

    def fit(self, model, train, val, ctx):
        from tlbench_plugins.strategies import training

        training.freeze(model)
        # The frozen network runs once per image, not once per epoch.
        features, labels = training.pooled_features(model, train, ctx)
        head = training.classifier(model)
        training.unfreeze([head])
        training.fit_linear_head(head, features, labels, l2=self.options.l2, max_iter=self.options.max_iter)
        ctx.log(val_top1=training.accuracy(model, val, ctx), feature_dim=features.shape[1])
        return model
