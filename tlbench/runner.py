"""Run cells: build the network and the splits, time the strategy's fit, score the model.

The core owns the measurement. The strategy never sees the test split; whatever it returns is
put in eval mode and scored here, the same way for every cell. A cell, top to bottom:
``run_cell`` -> ``_measure`` -> ``_fit`` each candidate (``setup``, then the timed fit), keep the
best on validation -> ``_score`` it on test.
"""

from __future__ import annotations

import contextlib
import random
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Optional

import numpy as np
import torch

from tlbench import cell_record, sanity
from tlbench.api import FitContext, Images
from tlbench.batches import ImageSplit
from tlbench.caches import CACHE_DIR_ENV
from tlbench.caches import cache_dir as default_cache_dir
from tlbench.cell_data import CellData, capped_settings, cell_splits, resampling
from tlbench.cell_record import starts_pretrained
from tlbench.decoding import Resample
from tlbench.errors import ConfigError
from tlbench.frozen import scoring as frozen_scoring
from tlbench.grid import Cell
from tlbench.machine import (environment, held_memory_mb, peak_memory_mb, precision_for, release_memory,
                             reproducible_kernels, reset_peak_memory, resolve_device, synchronize, use_device,
                             warm_up)
from tlbench.materialize import materialize_bytes
from tlbench.options import end_of_list, options_as_dict
from tlbench.plugins import Registry
from tlbench.predictions import encode as encode_predictions
from tlbench.progress import Progress
from tlbench.records import jsonable
from tlbench.results import utc_now

def check_cache_dir(cache_dir: str) -> None:
    """Feature caches are written after minutes of extraction: an unusable folder is said before
    the first cell, not after each cell's work is lost."""
    try:
        Path(cache_dir).mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=cache_dir):
            pass
    except OSError as exc:
        raise ConfigError(f"The cache folder {cache_dir!r} is not writable ({exc.strerror or exc}). "
                          f"Set {CACHE_DIR_ENV} to a writable folder.") from None


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)  # also seeds every CUDA device


AUTOCAST_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


class CellContext(FitContext):
    def __init__(self, cell: Cell, device: torch.device, num_classes: int, cache_dir: str,
                 progress: Progress):
        self.device = device
        self.settings = cell.settings
        self.seed = cell.seed
        self.num_classes = num_classes
        self.precision = precision_for(device)
        self.selecting = len(cell.strategy_candidates) > 1  # the core scores each fit on val
        self.cache_dir = cache_dir
        self.weights = ""
        self.info: dict = {}
        self.memo: dict = {}
        self._progress = progress

    def progress(self, iterable: Iterable, total: Optional[int] = None, desc: str = "") -> Iterable:
        """Wrap a loop so the cell's progress bar shows it."""
        return self._progress.steps(iterable, total=total, desc=desc)

    def log(self, **info) -> None:
        """Facts about the fit worth keeping in the record (chosen values, paths taken)."""
        self.info.update(info)

    def autocast(self):
        dtype = AUTOCAST_DTYPES.get(self.precision)
        return torch.autocast(self.device.type, dtype=dtype) if dtype else contextlib.nullcontext()


@torch.inference_mode()
def evaluate(model: torch.nn.Module, test: ImageSplit, ctx: CellContext, batches: Optional[list] = None) -> dict:
    """``model``'s metrics on ``test``. ``batches``: its (logits, labels) per batch, computed
    elsewhere (tlbench.frozen.scoring: its head over its test features); else ``model(x)``."""
    model.eval()
    predictions, top5_hits, finite = [], [], []
    k = min(5, ctx.num_classes)
    # everything stays on the device until the end: one host synchronisation, not one a batch
    for logits, y in (batches if batches is not None else _forward(model, test, ctx)):
        logits = logits.float()
        if logits.ndim != 2 or logits.shape[1] != ctx.num_classes:
            raise ValueError(
                f"the fitted model returned logits of shape {tuple(logits.shape)}; "
                f"expected (batch, {ctx.num_classes})"
            )
        finite.append(torch.isfinite(logits).all())
        predictions.append(logits.argmax(1))
        top5_hits.append((logits.topk(k, dim=1).indices == y[:, None]).any(1))
    if finite and not torch.stack(finite).all():  # argmax of NaN picks a class: a score from nothing
        raise FloatingPointError("the fitted model returned non-finite logits (NaN or inf) on "
                                 "the images it was scored on")
    predicted = torch.cat(predictions).cpu()
    labels = test.labels
    correct = predicted == labels
    per_class = [correct[labels == c].float().mean().item()
                 for c in range(ctx.num_classes) if (labels == c).any()]
    return {
        "top1": correct.float().mean().item(),
        "top5": torch.cat(top5_hits).float().mean().item(),
        "mean_per_class_acc": float(np.mean(per_class)),
        # per image, for paired tests over the test images (McNemar, bootstrap): tlbench.predictions
        "predictions": encode_predictions(predicted.numpy(), correct.numpy()),
    }


def _forward(model: torch.nn.Module, test: ImageSplit, ctx: CellContext):
    for x, y in test.batches(ctx.settings.batch_size, device=ctx.device):
        with ctx.autocast():
            logits = model(x)
        yield logits, y  # outside autocast: the caller's float(), argmax and topk are not under it


def edge_picks(candidates: list[dict], selected: int) -> list[str]:
    """A warning for each tuned number whose chosen value is the smallest or the largest of its
    list: validation preferred the edge, so the best value may lie beyond it."""
    warnings = []
    for key in candidates[0]:
        values = [c[key] for c in candidates]
        side = end_of_list(values, selected)
        # two values have no inside (either pick is an edge): a row of seeds judges those (report)
        if side in ("smallest", "largest") and len(set(values)) >= 3:
            warnings.append(f"{key} = {values[selected]} was chosen on validation as the {side} value of its "
                            f"list {sorted(set(values))}: the best may lie beyond it; extend the list")
    return warnings


def count_parameters(model: torch.nn.Module) -> tuple[int, int]:
    total = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return trainable, total


@dataclass
class CellSetup:
    strategy: "object"
    model: torch.nn.Module
    train: ImageSplit
    val: ImageSplit
    test: ImageSplit
    ctx: CellContext
    facts: dict  # what the record keeps about the set-up
    built: type  # the network's class as the backbone built it (a strategy may not swap it)


@dataclass
class FittedCandidate:
    """One candidate's options fitted: its set-up, the model its strategy returned, the fit's cost."""

    setup: CellSetup
    model: torch.nn.Module
    train_s: float
    peak_mem_mb: float  # the fit's own peak, without what earlier candidates still held


class Runner:
    """Runs cells in this process, reusing loaded datasets and decoded pixels between cells."""

    def __init__(self, registry: Registry, results_dir: str | Path, progress: Optional[Progress] = None,
                 cache_dir: Optional[str] = None):
        materialize_bytes()  # a malformed TLBENCH_MATERIALIZE_MB is said before any cell, not in each
        self.registry = registry
        self.results_dir = Path(results_dir)
        self.progress = progress or Progress(enabled=False)
        self.cache_dir = cache_dir or default_cache_dir()
        self.data = CellData(registry, self.cache_dir)
        self.device: Optional[str] = None  # set by an executor: this worker's device, not [settings]
        self._checks: dict = {}  # sanity checks already made: their warnings

    def run_cell(self, cell: Cell) -> dict:
        """Run one cell and return its record, whatever happens in it.

        Ctrl-C (or SIGTERM, which the CLI turns into one) gives a record with status
        ``interrupted`` instead of propagating: the caller stores it, then stops.
        """
        record = cell_record.base(cell, self.registry)
        start = time.perf_counter()
        try:
            record.update(self._measure(cell, record))
            record["status"] = "ok"
        # SystemExit too: a plugin's sys.exit() ends its cell, not the grid
        except (KeyboardInterrupt, SystemExit, Exception) as exc:
            record.update(cell_record.ended_by(exc))
        record["run_s"] = time.perf_counter() - start
        record["finished_at"] = utc_now()
        if "environment" not in record:  # the cell stopped before its set-up said where it ran
            record["environment"] = self._environment(cell)
        if record.get("error_kind") == "oom":
            release_memory()  # here, not in the except block: its traceback still held the tensors
        return jsonable(record)  # one rule for what a record holds, whichever executor carries it

    def _measure(self, cell: Cell, record: dict) -> dict:
        """Fit every candidate, keep the best on validation, score it on test. A single
        candidate is fitted and scored as it is."""
        if len(cell.strategy_candidates) == 1:
            return self._score(self._fit(cell, cell.strategy_options, record))
        self._check_val_can_choose(cell)
        best, best_top1, candidates = None, -1.0, []
        for options in cell.strategy_candidates:
            fitted = self._fit(cell, options, record)
            # the harness, not the strategy, scores each candidate, on validation only
            val_top1 = evaluate(fitted.model, fitted.setup.val, fitted.setup.ctx)["top1"]
            candidates.append({"options": options_as_dict(options), "val_top1": val_top1,
                               "train_s": fitted.train_s, "strategy_info": fitted.setup.ctx.info})
            if val_top1 > best_top1:
                best, best_top1, selected = fitted, val_top1, len(candidates) - 1
        result = self._score(best)
        result.update(candidates=candidates, selection_s=sum(c["train_s"] for c in candidates),
                      selected=selected)
        result["warnings"] = result["warnings"] + edge_picks([c["options"] for c in candidates], selected)
        return result

    def _check_val_can_choose(self, cell: Cell) -> None:
        """Candidates are compared on the validation split: without one there is nothing to
        choose by (said before any candidate is fitted)."""
        sizes = cell_splits(cell, self.data.load_images(cell)).sizes()
        if not sizes["val"]:
            raise ConfigError(
                f"This cell's validation split is empty ({sizes['train']} train, 0 val, {sizes['test']} test "
                f"images), so the {len(cell.strategy_candidates)} candidates of [strategy.{cell.strategy}] "
                "cannot be compared. Raise train_size (or train_per_class) or val_fraction in [settings], "
                "or give each option of the strategy one value.")

    def _fit(self, cell: Cell, options, record: dict) -> FittedCandidate:
        """A freshly built network for ``options``, fitted by the strategy, the fit timed."""
        device = self._device(cell)
        held = held_memory_mb(device)  # the best candidate so far: not this one's memory
        cell_setup = self.setup(cell, options)
        record.update(cell_setup.facts)  # kept when the fit fails
        reset_peak_memory(device)
        if device.type == "cuda":  # the first cell of a process would pay CUDA's set-up in train_s
            warm_up(device, AUTOCAST_DTYPES.get(cell_setup.ctx.precision))
        synchronize(device)
        start = time.perf_counter()
        model = cell_setup.strategy.fit(cell_setup.model, cell_setup.train, cell_setup.val, cell_setup.ctx)
        synchronize(device)
        train_s = time.perf_counter() - start - cell_setup.train.decode_s - cell_setup.val.decode_s
        if not isinstance(model, torch.nn.Module):
            raise TypeError(f"{type(cell_setup.strategy).__name__}.fit() returned {type(model).__name__}; "
                            "a strategy's fit must return the model to score (a torch.nn.Module), "
                            "usually the one it was given")
        return FittedCandidate(cell_setup, model, train_s, peak_memory_mb(device, held))

    def _score(self, chosen: FittedCandidate) -> dict:
        """The chosen model's metrics on the test split, and what the record says about its fit."""
        cell_setup = chosen.setup
        ctx, device = cell_setup.ctx, cell_setup.ctx.device
        reset_peak_memory(device)  # the other candidates are gone: what is held now is this cell's
        start = time.perf_counter()
        # from the test split's cached features when the core proves the body is the cached one
        logits, scoring = frozen_scoring.scored_logits(chosen.model, cell_setup.test, ctx, cell_setup.built)
        metrics = evaluate(chosen.model, cell_setup.test, ctx, logits)
        synchronize(device)
        eval_s = time.perf_counter() - start - cell_setup.test.decode_s
        trainable, total = count_parameters(chosen.model)  # after a forward pass: lazy modules are sized
        served = cell_setup.train.served  # a fit's validation passes are not training throughput
        warnings = cell_setup.facts["warnings"] + list(filter(None, [
            sanity.chance_warning(metrics["top1"], cell_setup.test.labels.numpy())]))
        return {
            **metrics,
            "warnings": warnings,
            "options": options_as_dict(cell_setup.strategy.options),
            "train_s": chosen.train_s,
            "eval_s": eval_s,
            "scoring": scoring,
            # none when the fit drew no images (features from a cache): a rate of 0 would rank it slowest
            "train_samples_per_s": served / chosen.train_s if chosen.train_s > 0 and served else None,
            # its own fit's peak, or scoring's if higher (on the CPU: the process's, see machine)
            "peak_mem_mb": max(chosen.peak_mem_mb, peak_memory_mb(device)),
            "trainable_params": trainable,
            "total_params": total,
            "num_classes": ctx.num_classes,
            "strategy_info": ctx.info,
        }

    # -- the set-up of one fit -------------------------------------------------------------

    def setup(self, cell: Cell, options=None) -> CellSetup:
        """Everything one fit needs: the strategy (with ``options``, default the cell's first
        candidate), a freshly built network, the splits and the context."""
        seed_everything(cell.seed)
        device = self._device(cell)
        use_device(device)
        reproducible_kernels(cell.settings, device)
        strategy_cls = self.registry.get("strategies", cell.plugin("strategy"))
        images = self.data.load_images(cell)
        splits = cell_splits(cell, images)
        pretrained = starts_pretrained(cell, strategy_cls)
        network = self._network(cell, len(images.classes), pretrained)
        size = cell.settings.image_size or network.input_size
        resample = resampling(cell.settings.interpolation, network.interpolation)
        model = network.model.to(device)
        warnings = []
        if pretrained and size != network.input_size:
            warnings += filter(None, [self._collapse_warning(cell, network, images, splits.train, size, resample)])
        ctx = CellContext(cell, device, len(images.classes), self.cache_dir, self.progress)
        # random weights differ by seed, so their identity (e.g. for feature caches) includes it
        ctx.weights = network.weights if pretrained else f"{network.weights}@seed{cell.seed}"
        ctx.pretrained = pretrained
        data = self.data.cell_images(cell, images, splits, network, size, resample, device)
        return CellSetup(
            strategy=strategy_cls(options if options is not None else cell.strategy_options),
            model=model,
            train=data.train,
            val=data.val,
            test=data.test,
            ctx=ctx,
            facts={
                "pixels": data.pixels,
                "split_sizes": splits.sizes(),
                "split_digest": splits.digest(),
                # only when the data fell short: the records of other cells stay as they were
                **({"capped": capped} if (capped := capped_settings(cell, images, splits)) else {}),
                "weights": network.weights,
                "image_size": size,
                "environment": environment(device, ctx.precision),
                "warnings": warnings,
            },
            built=type(model),
        )

    def _network(self, cell: Cell, num_classes: int, pretrained: bool):
        """The backbone's network for the cell, built afresh."""
        backbone = self.registry.get("backbones", cell.plugin("backbone"))(cell.backbone_options)
        network = backbone.create(cell.plugin("backbone"), num_classes=num_classes, pretrained=pretrained)
        changed = cell.changed_files()  # after the load: what was loaded is what the run_id names
        if changed:
            raise RuntimeError(f"{', '.join(changed)} changed since the grid was read, so this cell's "
                               "run_id names other weights; run the same command again to run it "
                               "under the file's new run_id")
        return network

    def _collapse_warning(self, cell: Cell, network, images: Images, train: np.ndarray, size: int,
                          resample: Resample) -> Optional[str]:
        """Measured once per backbone, weights, dataset and size (the first cell's training
        images stand for the dataset), and kept in the cache folder for later processes."""
        # by plugin, as the data caches are: variants with one plugin and options share the check
        key = ("collapse", cell.plugin("backbone"), network.weights, cell.plugin("dataset"),
               repr(cell.dataset_options), size)
        if key not in self._checks:
            kept = [*key, repr(cell.backbone_options), images.content, network.input_size, repr(resample)]
            ratio = sanity.kept_ratio(self.cache_dir, kept, lambda: sanity.feature_scale_ratio(
                network.model, images.samples, train, size, network.input_size, network.mean, network.std, resample))
            self._checks[key] = sanity.collapse_warning(ratio, size, network.input_size)
        return self._checks[key]

    # -- where -------------------------------------------------------------------------------

    def _device(self, cell: Cell) -> torch.device:
        """The cell's device: this worker's own when an executor set one, else the grid's."""
        return resolve_device(self.device or cell.settings.device)

    def _environment(self, cell: Cell) -> dict:
        """Where a cell that never reached its set-up would have run."""
        return environment(self._device(cell), precision=None)

    def failed_record(self, cell: Cell, kind: str, error: str, started_at: Optional[str] = None,
                      where: Optional[dict] = None) -> dict:
        """The record of a cell that failed where no record could be made (a killed process).
        ``where``: the ``environment`` and ``node`` of the worker that failed it, when it said;
        otherwise this machine's environment stands in."""
        record = cell_record.base(cell, self.registry)
        return cell_record.failed(record, kind, error, self._environment(cell), started_at, where)
