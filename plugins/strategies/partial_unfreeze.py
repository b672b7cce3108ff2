from dataclasses import dataclass

import tlbench

from tlbench_plugins.strategies.options import SupervisedOptions


@dataclass(frozen=True)
class PartialUnfreezeOptions(SupervisedOptions):
    blocks: int = tlbench.option(2, "trailing stages to train (timm's coarse parameter groups); the head always trains")
    cache_mb: int = tlbench.option(4096, "memory budget for activations cached at the freeze boundary (0 = never cache)")

    def __post_init__(self):
        super().__post_init__()
        if self.blocks < 1:
            raise ValueError(f"blocks must be at least 1, got {self.blocks}")
        if self.cache_mb < 0:
            raise ValueError(f"cache_mb must be >= 0, got {self.cache_mb}")


class PartialUnfreeze(tlbench.Strategy):
    """Last N stages and the head train; the frozen part runs once (cached) and keeps its statistics."""

    name = "partial_unfreeze"
    Options = PartialUnfreezeOptions

    def fit(self, model, train, val, ctx):
        from tlbench_plugins.strategies import boundary, training

        groups = training.stage_groups(model)
        if self.options.blocks > len(groups):
            raise ValueError(f"blocks = {self.options.blocks}, but {type(model).__name__} has "
                             f"{len(groups)} stages; use blocks <= {len(groups)} (or full_finetune)")
        training.freeze(model)
        unfrozen = {name for group in groups[-self.options.blocks:] for name in group}
        training.unfreeze(p for name, p in model.named_parameters() if name in unfrozen)
        training.unfreeze([training.classifier(model)])

        sample, _ = next(iter(train.batches(min(8, len(train)), device=ctx.device)))
        split = boundary.find_split(model, sample)
        recipe = self.options.recipe()
        train_mode = (lambda: boundary.eval_prefix_train_suffix(model, split)) if split else None
        why_not = self._why_not_cached(split, len(train))
        if why_not is None:
            cached = boundary.cached_batches(model, split, train, ctx)
            training.fit_supervised(model, train, ctx, recipe, forward=cached.forward,
                                    batches=cached.batches, train_mode=train_mode)
            ctx.log(path="cached_activations", boundary=split.boundary, cache_mb=round(cached.megabytes, 1))
        else:
            training.fit_supervised(model, train, ctx, recipe, train_mode=train_mode)
            ctx.log(path="full_forward", reason=why_not)
        ctx.log(val_top1=training.accuracy(model, val, ctx), stages=len(groups))
        return model

    def _why_not_cached(self, split, count: int):
        if self.options.augment:
            return "augmentation changes the frozen part's input every epoch"
        if split is None:
            return "no exact freeze boundary in this network's forward"
        needed_mb = split.bytes_per_image() * count / 2**20
        if needed_mb > self.options.cache_mb:
            return f"activations need {needed_mb:.0f} MB > cache_mb = {self.options.cache_mb}"
        return None
