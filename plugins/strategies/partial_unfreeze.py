import shutil
import uuid
from dataclasses import dataclass
from pathlib import Path

import tlbench

from tlbench_plugins.machinery.options import SupervisedOptions


@dataclass(frozen=True)
class PartialUnfreezeOptions(SupervisedOptions):
    blocks: int = tlbench.option(2, "trailing stages to train (timm's coarse parameter groups); the head always trains")
    cache_mb: int = tlbench.option(4096, "memory budget for activations cached at the freeze boundary (0 = none in memory)",
                                   tunable=False)
    disk_cache_mb: int = tlbench.option(0, "disk budget (in the cache dir, deleted after the fit) for boundary activations over cache_mb; 0 = off",
                                        tunable=False)

    def __post_init__(self):
        super().__post_init__()
        if self.blocks < 1:
            raise ValueError(f"blocks must be at least 1, got {self.blocks}")
        for name in ("cache_mb", "disk_cache_mb"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")


class PartialUnfreeze(tlbench.Strategy):
    """Last N stages and the head train; the frozen part runs once (cached) and keeps its statistics."""

    name = "partial_unfreeze"
    Options = PartialUnfreezeOptions

    def fit(self, model, train, val, ctx):
        from tlbench_plugins.machinery import freeze_boundary, training

        groups = training.stage_groups(model)
        if self.options.blocks > len(groups):
            raise ValueError(f"blocks = {self.options.blocks}, but {type(model).__name__} has "
                             f"{len(groups)} stages; use blocks <= {len(groups)} (or full_finetune)")
        training.freeze(model)
        unfrozen = {name for group in groups[-self.options.blocks:] for name in group}
        training.unfreeze(p for name, p in model.named_parameters() if name in unfrozen)
        training.unfreeze([training.classifier(model)])

        sample, _ = next(iter(train.batches(min(8, len(train)), device=ctx.device)))
        split = freeze_boundary.find_split(model, sample)
        recipe = self.options.recipe()
        train_mode = (lambda: freeze_boundary.eval_prefix_train_suffix(model, split)) if split else None
        storage, why_not = self._storage(split, len(train), ctx.cache_dir)
        if storage is not None:
            file = Path(ctx.cache_dir) / "activations" / f"{uuid.uuid4().hex}.f32" if storage == "disk" else None
            try:
                cached = freeze_boundary.cached_batches(model, split, train, ctx, file)
                training.fit_supervised(model, train, ctx, recipe, forward=cached.forward,
                                        batches=cached.batches, train_mode=train_mode)
                ctx.log(path="cached_activations", boundary=split.boundary, storage=storage,
                        activations_mb=round(cached.megabytes, 1))
            except freeze_boundary.NoRoomOnDisk as exc:  # the disk filled since _storage looked
                storage, why_not = None, str(exc)
            finally:
                cached = None  # frees the activations (and unmaps a file) before val is scored
                if file is not None:
                    file.unlink(missing_ok=True)
        if storage is None:
            training.fit_supervised(model, train, ctx, recipe, train_mode=train_mode)
            ctx.log(path="full_forward", reason=why_not)
        ctx.log(val_top1=training.accuracy(model, val, ctx), stages=len(groups))
        return model

    def _storage(self, split, count: int, cache_dir: str):
        """Where the boundary activations go ("memory" or "disk"), or (None, why not)."""
        if self.options.augment:
            return None, "augmentation changes the frozen part's input every epoch"
        if split is None:
            return None, "no exact freeze boundary in this network's forward"
        needed_mb = split.bytes_per_image() * count / 2**20
        if needed_mb <= self.options.cache_mb:
            return "memory", None
        over = f"activations need {needed_mb:.1f} MB > cache_mb = {self.options.cache_mb}"
        if needed_mb > self.options.disk_cache_mb:
            return None, f"{over} and > disk_cache_mb = {self.options.disk_cache_mb} (raise either to cache them)"
        free_mb = shutil.disk_usage(_existing_parent(Path(cache_dir))).free / 2**20
        if needed_mb > free_mb - 1024:  # leave the disk some room
            return None, f"{over}, and the cache dir's disk has only {free_mb:.0f} MB free"
        return "disk", None


def _existing_parent(path: Path) -> Path:
    while not path.exists() and path != path.parent:
        path = path.parent
    return path
