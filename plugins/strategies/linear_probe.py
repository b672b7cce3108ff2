from dataclasses import dataclass

import tlbench


class LinearProbe(tlbench.Strategy):
    """Frozen backbone; logistic-regression head on cached features, L2 chosen on validation."""

    name = "linear_probe"
    gpu_share = 0.25  # after its one pass over the images, it only reads cached features

    @dataclass(frozen=True)
    class Options:
        l2_max: float = tlbench.option(10.0, "strongest L2 penalty on the path (on standardised features)")
        l2_min: float = tlbench.option(1e-5, "weakest L2 penalty on the path")
        l2_steps: int = tlbench.option(7, "penalties on the log-spaced path (it stops two steps past the best); 1 = l2_max alone")
        max_iter: int = tlbench.option(30, "L-BFGS iterations per penalty (the path is warm-started)")
        cache: bool = tlbench.option(True, "keep features on disk (under the cache dir) for later cells")

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

    def fit(self, model, train, val, ctx):
        # while the core selects among list values on val, val must stay unseen by the fit
        fit_linear_probe(model, train, val, ctx, self.options, refit_on_val=not ctx.selecting)
        return model


def fit_linear_probe(model, train, val, ctx, options, refit_on_val: bool = True) -> float:
    """Freeze ``model``, install the selected probe as its classifier and return its validation
    accuracy (also used by lp_ft).

    With ``refit_on_val``, the chosen penalty is refitted on train + val; lp_ft keeps val unseen
    because it still selects on it later, and so does the core while it selects among a grid's
    list values (``ctx.selecting``).
    """
    import torch

    from tlbench_plugins.strategies import probe, training

    training.freeze(model)
    # The frozen network runs once per image, and not at all when the cache has its features.
    (train_x, val_x), cache = probe.frozen_features(model, [train, val], ctx, options.cache)
    train_y, val_y = train.labels.to(ctx.device), val.labels.to(ctx.device)
    path = probe.probe_path(train_x, train_y, val_x, val_y, ctx.num_classes,
                               options.penalties(), options.max_iter)
    penalty, val_top1, state = max(path, key=lambda step: step[1])  # first (strongest) on ties
    if refit_on_val:  # selection is done, so val is just more data
        train_x, train_y = torch.cat([train_x, val_x]), torch.cat([train_y, val_y])
    weight, bias = probe.fit_probe(train_x, train_y, ctx.num_classes, penalty, options.max_iter, start=state)
    head = training.classifier(model)
    with torch.no_grad():
        head.weight.copy_(weight)
        head.bias.copy_(bias)
    training.unfreeze([head])
    ctx.log(l2=penalty, val_top1=val_top1, l2_path=[[p, acc] for p, acc, _ in path],
            feature_dim=train_x.shape[1], feature_cache=cache, refit_on_val=refit_on_val)
    return val_top1
