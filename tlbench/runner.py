"""Run cells: build the network and the splits, time the strategy's fit, score the model.

The core owns the measurement. The strategy never sees the test split; whatever it returns is
put in eval mode and scored here, the same way for every cell.
"""

from __future__ import annotations

import contextlib
import os
import random
import tempfile
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Optional

import numpy as np
import torch

from tlbench import sanity
from tlbench.api import FitContext, Images
from tlbench.data import (DecodedPixels, ImageSplit, Resample, SplitIndices, fits_in_memory, fixed_size_train_val,
                          images_fingerprint, per_class_subsample, stratified_sample, stratified_split)
from tlbench.errors import ConfigError
from tlbench.grid import Cell
from tlbench.machine import (available_memory, environment, held_memory_mb, peak_memory_mb, precision_for,
                             release_memory, reproducible_kernels, reset_peak_memory, resolve_device, synchronize,
                             use_device, warm_up)
from tlbench.options import end_of_list, options_as_dict
from tlbench.pixel_store import PixelStore, StoredRows, store_key
from tlbench.plugins import Registry
from tlbench.predictions import encode as encode_predictions
from tlbench.progress import Progress
from tlbench.results import jsonable, utc_now

CACHE_DIR_ENV = "TLBENCH_CACHE_DIR"


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


def resampling(setting: str, weights_interpolation: str) -> Resample:
    """``auto``: the weights' own interpolation to shrink, bilinear to enlarge. Bicubic
    overshoots at sharp edges when it enlarges small images (8x8 digits to 64 px cost a linear
    probe 3 points of accuracy), while it is what the weights saw when photos were shrunk."""
    if setting == "auto":
        return Resample(shrink=weights_interpolation, enlarge="bilinear")
    return Resample(shrink=setting, enlarge=setting)


def starts_pretrained(cell: Cell, strategy_cls: type) -> bool:
    """The grid asks for pretrained weights and the strategy does not start from random ones."""
    return bool(cell.settings.pretrained and strategy_cls.pretrained)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)  # also seeds every CUDA device


OOM_MESSAGES = ("out of memory", "not enough memory", "can't allocate memory",
                "cublas_status_alloc_failed")  # cuBLAS cannot allocate its workspace: memory too
# Errors after which the process's CUDA context is unusable: every later CUDA call fails too
DEVICE_FAULT_MESSAGES = ("device-side assert", "illegal memory access", "illegal instruction",
                         "unspecified launch failure", "misaligned address", "cuda error: an illegal")


def error_kind(exc: BaseException) -> str:
    """What went wrong, for the record and the summary: oom, non_finite, device_fault or exception."""
    message = str(exc).lower()
    if isinstance(exc, (torch.cuda.OutOfMemoryError, MemoryError)):
        return "oom"
    if isinstance(exc, RuntimeError) and any(m in message for m in DEVICE_FAULT_MESSAGES):
        return "device_fault"
    if isinstance(exc, RuntimeError) and any(m in message for m in OOM_MESSAGES):
        return "oom"  # MPS, the CPU allocator and cuBLAS raise plain RuntimeErrors
    if isinstance(exc, FloatingPointError):  # strategies raise it for a non-finite loss
        return "non_finite"
    return "exception"


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


def pixels_place(part) -> str:
    """Where a split's decoded pixels are, in the record's words."""
    if part is None:
        return "decoded per batch"
    if isinstance(part, StoredRows):
        return "stored decoded on disk"
    return f"held on {part.device.type}"


class CountingSplit(ImageSplit):
    """An ImageSplit that counts the images it serves, so throughput is measured by the core."""

    served = 0

    def batches(self, batch_size, shuffle=False, seed=0, device=None):
        for x, y in super().batches(batch_size, shuffle=shuffle, seed=seed, device=device):
            self.served += len(y)
            yield x, y


@torch.inference_mode()
def evaluate(model: torch.nn.Module, test: ImageSplit, ctx: CellContext) -> dict:
    model.eval()
    predictions, top5_hits, finite = [], [], []
    k = min(5, ctx.num_classes)
    # everything stays on the device until the end: one host synchronisation, not one a batch
    for x, y in test.batches(ctx.settings.batch_size, device=ctx.device):
        with ctx.autocast():
            logits = model(x)
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


class Runner:
    """Runs cells in this process, reusing loaded datasets and decoded pixels between cells."""

    def __init__(self, registry: Registry, results_dir: str | Path, progress: Optional[Progress] = None,
                 cache_dir: Optional[str] = None):
        self.registry = registry
        self.results_dir = Path(results_dir)
        self.progress = progress or Progress(enabled=False)
        self.cache_dir = cache_dir or os.environ.get(CACHE_DIR_ENV) or str(Path.home() / ".cache" / "tlbench")
        self._images: dict = {}
        self.device: Optional[str] = None  # set by an executor: this worker's device, not [settings]
        self._pixels: dict = {}
        self._checks: dict = {}  # sanity checks already made: their warnings

    # -- data ------------------------------------------------------------------------------

    def load_images(self, cell: Cell) -> Images:
        key = (cell.dataset, repr(cell.dataset_options))
        if key not in self._images:
            self._images.clear()  # keep one dataset in memory at a time
            self._pixels.clear()
            dataset = self.registry.get("datasets", cell.dataset)(cell.dataset_options)
            images = dataset.load()
            if len(images.samples) != len(images.labels):
                raise ValueError(f"dataset {cell.dataset!r} returned {len(images.samples)} samples "
                                 f"but {len(images.labels)} labels")
            self._images[key] = images
        return self._images[key]

    def _pixels_for(self, cell: Cell, images: Images, size: int, resample: Resample):
        """Where the cell's decoded pixels come from: this process's memory when the dataset fits
        (DecodedPixels), else a file under the cache folder that every cell and process shares
        (PixelStore), else nothing (each batch decoded as it is served)."""
        count = len(images.samples)
        key = (cell.dataset, repr(cell.dataset_options), size, resample)
        if key not in self._pixels:
            self._pixels.clear()
            if fits_in_memory(count, size):
                self._pixels[key] = DecodedPixels(images.samples, size, resample)
            elif PixelStore.room_for(self.cache_dir, count, size):
                store = store_key(cell.dataset, options_as_dict(cell.dataset_options), count, size, resample)
                self._pixels[key] = PixelStore(self.cache_dir, store, images.samples, size, resample)
            else:
                self._pixels[key] = None
        return self._pixels[key]

    def data_fingerprint(self, cell: Cell) -> dict:
        """The cell's dataset as loaded here, and its splits: what another machine must match
        to run the cell on the same data (tlbench.node_check)."""
        images = self.load_images(cell)
        return {"dataset": images_fingerprint(images), "split_digest": self.prepare_splits(cell, images).digest()}

    def prepare_splits(self, cell: Cell, images: Images) -> SplitIndices:
        s = cell.settings
        splits = stratified_split(images.labels, s.val_fraction, s.test_fraction, s.split_seed,
                                  images.test_indices)
        if s.train_size:
            splits = fixed_size_train_val(splits, images.labels, s.train_size, s.val_fraction, cell.seed)
        if s.train_per_class:
            # k-shot: k per class to train on and at most k to select with, or a strategy that
            # refits on train + val (linear_probe) would learn from many more than k
            splits.train = per_class_subsample(splits.train, images.labels, s.train_per_class, cell.seed)
            splits.val = per_class_subsample(splits.val, images.labels, s.train_per_class, cell.seed)
        if s.test_size and s.test_size < len(splits.test):
            splits.test = stratified_sample(splits.test, images.labels, s.test_size, s.split_seed)
        if len(splits.train) == 0 or len(splits.test) == 0:
            raise ValueError(f"dataset {cell.dataset!r} is too small to split: {splits.sizes()}")
        return splits

    # -- one cell --------------------------------------------------------------------------

    def run_cell(self, cell: Cell) -> dict:
        """Run one cell and return its record, whatever happens in it.

        Ctrl-C (or SIGTERM, which the CLI turns into one) gives a record with status
        ``interrupted`` instead of propagating: the caller stores it, then stops.
        """
        record = self._base_record(cell)
        start = time.perf_counter()
        try:
            record.update(self._measure(cell, record))
            record["status"] = "ok"
        except KeyboardInterrupt as exc:
            record.update(status="interrupted", error_kind="interrupted",
                          error=f"interrupted ({exc.args[0] if exc.args else 'Ctrl-C'})")
        except (Exception, SystemExit) as exc:  # a plugin's sys.exit() ends its cell, not the grid
            record.update(status="failed", error_kind=error_kind(exc), error=f"{type(exc).__name__}: {exc}",
                          traceback=traceback.format_exc())
        record["run_s"] = time.perf_counter() - start
        record["finished_at"] = utc_now()
        if "environment" not in record:  # the cell stopped before its set-up said where it ran
            record["environment"] = environment(self._device(cell), precision=None)
        if record.get("error_kind") == "oom":
            release_memory()  # here, not in the except block: its traceback still held the tensors
        return jsonable(record)  # one rule for what a record holds, whichever executor carries it

    def failed_record(self, cell: Cell, kind: str, error: str, started_at: Optional[str] = None,
                      where: Optional[dict] = None) -> dict:
        """The record of a cell that failed where no record could be made (a killed process).
        ``where``: the ``environment`` and ``node`` of the worker that failed it, when it said;
        otherwise this machine's environment stands in."""
        record = self._base_record(cell)
        status = "interrupted" if kind == "interrupted" else "failed"
        record.update(status=status, error_kind=kind, error=error, finished_at=utc_now(),
                      started_at=started_at or record["started_at"],
                      environment=environment(self._device(cell), precision=None))
        record.update(where or {})
        return record

    def _device(self, cell: Cell) -> torch.device:
        """The cell's device: this worker's own when an executor set one, else the grid's."""
        return resolve_device(self.device or cell.settings.device)

    def _provenance(self, cell: Cell) -> dict:
        """Whether the cell starts from pretrained weights (the grid's setting and the strategy's
        declaration together), and which plugin made each of its parts: a record made by
        another version of a plugin says so (it keeps its run_id; see docs/records.md)."""
        try:
            parts = {"backbone": self.registry.registration("backbones", cell.backbone),
                     "strategy": self.registry.registration("strategies", cell.strategy),
                     "dataset": self.registry.registration("datasets", cell.dataset)}
        except ConfigError:  # a worker without the plugin: its failure says so
            return {}
        return {"pretrained": starts_pretrained(cell, parts["strategy"].component),
                "plugins": {part: {"plugin": reg.plugin, **reg.origin} for part, reg in parts.items()}}

    def _base_record(self, cell: Cell) -> dict:
        return {
            "run_id": cell.run_id,
            "config_id": cell.config_id,
            "grid": cell.grid,
            "backbone": cell.backbone,
            "strategy": cell.strategy,
            "dataset": cell.dataset,
            "seed": cell.seed,
            "sweep": dict(cell.sweep),
            "settings": options_as_dict(cell.settings),
            "options": options_as_dict(cell.strategy_options),
            "backbone_options": options_as_dict(cell.backbone_options),
            "dataset_options": options_as_dict(cell.dataset_options),
            **self._provenance(cell),
            "status": "running",
            "error": None,
            "started_at": utc_now(),
        }

    @staticmethod
    def _pixels_on(pixels: torch.Tensor, device: torch.device) -> torch.Tensor:
        """On CUDA, a split that takes at most a quarter of the memory available is held decoded
        in GPU memory, so batches never wait on the host."""
        if device.type != "cuda" or isinstance(pixels, StoredRows):
            return pixels
        return pixels.to(device) if pixels.numel() <= available_memory(device) // 4 else pixels

    def setup(self, cell: Cell, options=None) -> "CellSetup":
        """Everything one fit needs: the strategy (with ``options``, default the cell's first
        candidate), a freshly built network, the splits and the context."""
        seed_everything(cell.seed)
        device = self._device(cell)
        use_device(device)
        reproducible_kernels(cell.settings, device)
        strategy_cls = self.registry.get("strategies", cell.strategy)
        images = self.load_images(cell)
        splits = self.prepare_splits(cell, images)
        backbone = self.registry.get("backbones", cell.backbone)(cell.backbone_options)
        pretrained = starts_pretrained(cell, strategy_cls)
        network = backbone.create(cell.backbone, num_classes=len(images.classes), pretrained=pretrained)
        changed = cell.changed_files()  # after the load: what was loaded is what the run_id names
        if changed:
            raise RuntimeError(f"{', '.join(changed)} changed since the grid was read, so this cell's "
                               "run_id names other weights; run the same command again to run it "
                               "under the file's new run_id")
        size = cell.settings.image_size or network.input_size
        resample = resampling(cell.settings.interpolation, network.interpolation)
        pixels = self._pixels_for(cell, images, size, resample)
        data_key = f"{cell.dataset}|{options_as_dict(cell.dataset_options)}|{size}|{resample}"

        placed = set()  # where each split's pixels are: the record says

        def split(kind, indices):
            part = None if pixels is None else self._pixels_on(pixels.rows(indices), device)
            placed.add(pixels_place(part))
            return kind(images, indices, size, network.mean, network.std, resample, part,
                        key=f"{data_key}|{network.mean}|{network.std}", device=device)

        model = network.model.to(device)
        warnings = []
        if pretrained and size != network.input_size:
            warnings += filter(None, [self._collapse_warning(cell, network, images, splits.train, size, resample)])
        ctx = CellContext(cell, device, len(images.classes), self.cache_dir, self.progress)
        # random weights differ by seed, so their identity (e.g. for feature caches) includes it
        ctx.weights = network.weights if pretrained else f"{network.weights}@seed{cell.seed}"
        ctx.pretrained = pretrained
        train, val, test = (split(CountingSplit, splits.train), split(CountingSplit, splits.val),
                            split(ImageSplit, splits.test))
        return CellSetup(
            strategy=strategy_cls(options if options is not None else cell.strategy_options),
            model=model,
            train=train,
            val=val,
            test=test,
            ctx=ctx,
            facts={
                "pixels": ", ".join(sorted(placed)),
                "split_sizes": splits.sizes(),
                "split_digest": splits.digest(),
                "weights": network.weights,
                "image_size": size,
                "environment": environment(device, ctx.precision),
                "warnings": warnings,
            },
        )

    def _collapse_warning(self, cell: Cell, network, images: Images, train: np.ndarray, size: int,
                          resample: Resample) -> Optional[str]:
        """Measured once per backbone, weights, dataset and size in this process (the first
        cell's training images stand for the dataset)."""
        key = ("collapse", cell.backbone, network.weights, cell.dataset, repr(cell.dataset_options), size)
        if key not in self._checks:
            ratio = sanity.feature_scale_ratio(network.model, images.samples, train, size,
                                               network.input_size, network.mean, network.std, resample)
            self._checks[key] = sanity.collapse_warning(ratio, size, network.input_size)
        return self._checks[key]

    def _fit(self, cell_setup: "CellSetup") -> tuple[torch.nn.Module, float]:
        device = cell_setup.ctx.device
        if device.type == "cuda":  # the first cell of a process would pay CUDA's set-up in train_s
            warm_up(device, AUTOCAST_DTYPES.get(cell_setup.ctx.precision))
        synchronize(device)
        start = time.perf_counter()
        fitted = cell_setup.strategy.fit(cell_setup.model, cell_setup.train, cell_setup.val, cell_setup.ctx)
        synchronize(device)
        elapsed = time.perf_counter() - start
        if not isinstance(fitted, torch.nn.Module):
            raise TypeError(f"{type(cell_setup.strategy).__name__}.fit() returned {type(fitted).__name__}; "
                            "a strategy's fit must return the model to score (a torch.nn.Module), "
                            "usually the one it was given")
        return fitted, elapsed

    def _measure(self, cell: Cell, record: dict) -> dict:
        """Fit every candidate, keep the best on validation, score it on test."""
        best, candidates, selection_s = self._select(cell, record)
        result = self._score(*best)
        if candidates:
            selected = [c["val_top1"] for c in candidates].index(max(c["val_top1"] for c in candidates))
            result.update(candidates=candidates, selection_s=selection_s, selected=selected)
            result["warnings"] = result["warnings"] + edge_picks([c["options"] for c in candidates], selected)
        return result

    def _select(self, cell: Cell, record: dict) -> tuple[tuple, list, float]:
        """((set-up, fitted model, train_s, its fit's own peak memory) of the candidate to score,
        what each candidate scored on validation, the time all fits took). One candidate is
        fitted and kept as it is."""
        candidates, best, best_val, selection_s = [], None, -1.0, 0.0
        device = self._device(cell)
        for options in cell.strategy_candidates:
            held = held_memory_mb(device)  # the best candidate so far: not this one's memory
            cell_setup = self.setup(cell, options)
            record.update(cell_setup.facts)
            reset_peak_memory(device)
            fitted, train_s = self._fit(cell_setup)
            selection_s += train_s
            fit_peak_mb = peak_memory_mb(device, held)
            if len(cell.strategy_candidates) == 1:
                return (cell_setup, fitted, train_s, fit_peak_mb), [], selection_s
            # the harness, not the strategy, scores each candidate, on validation only
            val_top1 = evaluate(fitted, cell_setup.val, cell_setup.ctx)["top1"]
            candidates.append({"options": options_as_dict(options), "val_top1": val_top1,
                               "train_s": train_s, "strategy_info": cell_setup.ctx.info})
            if val_top1 > best_val:
                best, best_val = (cell_setup, fitted, train_s, fit_peak_mb), val_top1
        return best, candidates, selection_s

    def _score(self, cell_setup: CellSetup, fitted: torch.nn.Module, train_s: float, fit_peak_mb: float) -> dict:
        """The chosen model's metrics on the test split, and what the record says about its fit."""
        ctx, device = cell_setup.ctx, cell_setup.ctx.device
        reset_peak_memory(device)  # the other candidates are gone: what is held now is this cell's
        start = time.perf_counter()
        metrics = evaluate(fitted, cell_setup.test, ctx)
        synchronize(device)
        eval_s = time.perf_counter() - start
        trainable, total = count_parameters(fitted)  # after a forward pass: lazy modules are sized
        served = cell_setup.train.served + cell_setup.val.served
        warnings = cell_setup.facts["warnings"] + list(filter(None, [
            sanity.chance_warning(metrics["top1"], cell_setup.test.labels.numpy())]))
        return {
            **metrics,
            "warnings": warnings,
            "options": options_as_dict(cell_setup.strategy.options),
            "train_s": train_s,
            "eval_s": eval_s,
            # none when the fit drew no images (features from a cache): a rate of 0 would rank it slowest
            "train_samples_per_s": served / train_s if train_s > 0 and served else None,
            # its own fit's peak, or scoring's if higher (on the CPU: the process's, see machine)
            "peak_mem_mb": max(fit_peak_mb, peak_memory_mb(device)),
            "trainable_params": trainable,
            "total_params": total,
            "num_classes": ctx.num_classes,
            "strategy_info": ctx.info,
        }
