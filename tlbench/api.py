"""Four kinds of component a plugin can register (backbones, strategies, datasets, scores), and
what they exchange with the core; the fifth, the sink, is in ``tlbench.sink``.

Nothing here imports torch: ``tlbench ls`` and ``tlbench --help`` only read class attributes.
Plugins keep their heavy imports inside methods for the same reason.
"""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, ClassVar, Iterable, Mapping, Optional, Sequence

from tlbench.options import NoOptions
from tlbench.settings import Settings

if TYPE_CHECKING:  # pragma: no cover
    import torch


class Component:
    """Shared by backbones, strategies, datasets, scores and sinks.

    ``name`` is the one name used in grid files, ``tlbench ls``, records and leaderboards.
    ``description`` defaults to the first line of the class docstring.
    ``Options`` is a dataclass of the options a grid may set under ``[strategy.NAME]``
    (or ``[backbone.NAME]``, ``[dataset.NAME]``, ``[score.NAME]``, ``[sink.NAME]``); see
    :func:`tlbench.option`.
    One rule for every kind: the core constructs the component with its validated options,
    which its methods read as ``self.options``.
    """

    name: ClassVar[str] = ""
    description: ClassVar[str] = ""
    Options: ClassVar[type] = NoOptions

    def __init__(self, options: Any = None):
        self.options = options if options is not None else self.Options()

    @classmethod
    def summary(cls) -> str:
        if cls.description:
            return cls.description
        doc = (cls.__doc__ or "").strip()
        return doc.splitlines()[0] if doc else ""

    @classmethod
    def is_family(cls) -> bool:
        """True for a backbone whose name is a pattern standing for many names."""
        return False

    def unavailable(self) -> Optional[str]:
        """Why this component, with its options, cannot run on this machine, as one line that
        ends with the fix ("... not installed. Fix: pip install x"); None when it can.

        The core asks once per distinct configuration of a grid, before the first cell, and
        stops the run (exit 2) when any answers: so look, do not load. Check that files exist,
        that an extra's package is installed, that a download site answers; never download,
        decode or build a network here.
        """
        return None


# -- backbones ---------------------------------------------------------------------------------


@dataclass
class Network:
    """A backbone ready for a cell: the model with a fresh head and what its weights expect.

    ``model`` follows timm's model API (``forward_features``, ``forward_head``,
    ``get_classifier``, ``reset_classifier``); its forward returns logits for ``num_classes``.
    """

    model: "torch.nn.Module"
    input_size: int  # the square input size the weights were trained at
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    weights: str  # where the weights came from, e.g. "bundled:efficientnet_lite0 sha256:..."
    interpolation: str = "bilinear"


class Backbone(Component):
    """A source of networks.

    ``name`` is either one name or a glob pattern (``"*"``) for a family resolved on demand,
    such as every timm model. A family lists a few names with a one-line description each in
    ``featured`` for ``tlbench ls``, and
    overrides :meth:`claims` to decide cheaply whether it knows a name.
    """

    featured: ClassVar[Mapping[str, str]] = {}

    @classmethod
    def is_family(cls) -> bool:
        return any(ch in cls.name for ch in "*?[")

    def claims(self, name: str) -> bool:
        return fnmatch.fnmatchcase(name, self.name)

    def matching(self, pattern: str) -> Mapping[str, str]:
        """{name: one-line description} of the names this family serves that match the fnmatch
        ``pattern``, for ``tlbench ls backbones PATTERN``; by default its ``featured`` ones."""
        return {name: text for name, text in self.featured.items() if fnmatch.fnmatchcase(name, pattern)}

    def create(self, name: str, *, num_classes: int, pretrained: bool) -> Network:
        raise NotImplementedError

    def unavailable(self, name: str, *, pretrained: bool) -> Optional[str]:  # type: ignore[override]
        """As :meth:`Component.unavailable`, for the network ``name`` with pretrained weights or
        random ones (a family serves many names, and random weights need no file)."""
        return None


# -- datasets ----------------------------------------------------------------------------------


@dataclass
class Images:
    """A labelled image collection as a dataset plugin returns it.

    ``samples[i]`` is a PIL image or a uint8 numpy array (H×W grey or H×W×C); the core converts,
    resizes and normalises. ``test_indices`` marks an official test split to keep as is; without
    it the core draws a stratified test split itself. ``content`` identifies files that may
    change in place (``tlbench.files_digest``).
    """

    samples: Sequence[Any]
    labels: Sequence[int]
    classes: Sequence[str]
    test_indices: Optional[Sequence[int]] = None
    source: str = ""
    #: identifies the samples' content where it can change under the same name and options
    #: (files: ``tlbench.files_digest(paths)``); keys every cache of the dataset's pixels and
    #: features. Empty: the dataset's name, options and labels identify it.
    content: str = ""


class Dataset(Component):
    """A source of labelled images."""

    def load(self) -> Images:
        raise NotImplementedError


# -- what strategies and scores receive ---------------------------------------------------------


class Split:
    """One split of a dataset (train, val or test) as the core hands it to a strategy or score.

    The core decodes, resizes and normalises the images (with the network's mean and std);
    a split only serves them. Example::

        for x, y in train.batches(ctx.settings.batch_size, shuffle=True,
                                  seed=ctx.shuffle_seed(epoch), device=ctx.device):
            loss = F.cross_entropy(model(x), y)
    """

    #: the split's labels, a CPU int64 tensor in the order ``batches()`` serves them unshuffled
    labels: "torch.Tensor"
    #: how many classes the dataset has (labels are ``0 .. num_classes - 1``)
    num_classes: int
    #: identifies exactly these images as the network sees them (dataset and its options,
    #: indices, size, resampling, normalisation): a key for caches of anything computed from them
    key: str

    def __len__(self) -> int:
        raise NotImplementedError

    def batches(self, batch_size: int, shuffle: bool = False, seed: int = 0,
                device=None) -> "Iterable[tuple[torch.Tensor, torch.Tensor]]":
        """(images N×3×S×S float32, labels N int64) batches on ``device`` (default: the cell's
        device, ``ctx.device``); ``shuffle`` draws the order with ``seed``: pass
        ``ctx.shuffle_seed(epoch)`` for an order of the cell's own."""
        raise NotImplementedError

    def num_batches(self, batch_size: int) -> int:
        """How many batches ``batches(batch_size)`` yields."""
        return (len(self) + batch_size - 1) // batch_size


class FitContext:
    """What the core gives a strategy's ``fit`` (and a score's ``estimate``) besides the model
    and the data. Example::

        def fit(self, model, train, val, ctx):
            for x, y in ctx.progress(train.batches(ctx.settings.batch_size, device=ctx.device),
                                     total=train.num_batches(ctx.settings.batch_size), desc="epoch 1"):
                with ctx.autocast():
                    loss = F.cross_entropy(model(x), y)
                ...
            ctx.log(final_loss=loss.item())  # kept in the record's ``strategy_info``
            return model
    """

    device: "torch.device"
    settings: Settings
    seed: int
    num_classes: int
    #: what ``autocast()`` computes in: "fp32" (CPU, MPS), "bf16" (GPUs of compute capability 8.0
    #: and up) or "fp16" (older GPUs; a strategy that trains under it scales its loss, e.g. with
    #: ``torch.amp.GradScaler``, or fp16 gradients underflow). The record keeps it.
    precision: str
    weights: str  # identity of the initial weights (with the seed for random init), for caches
    #: whether the network starts from pretrained weights (False: random initialisation, e.g.
    #: ``scratch`` or a grid with ``pretrained = false``)
    pretrained: bool = True
    cache_dir: str
    #: ``ctx.progress(iterable, total=None, desc="")`` wraps a loop so the cell's progress bar shows it
    progress: Callable[..., Iterable]
    #: ``ctx.log(**facts)`` keeps facts about the fit (chosen values, paths taken) in the record
    log: Callable[..., None]
    #: True while the core fits one of several candidates (a list-valued option) and will score
    #: the returned model on ``val`` to choose among them: the fit must not train on ``val`` then.
    selecting: bool = False
    #: A dict that lives as long as this context. ``tlbench rank`` hands every score of one
    #: backbone × dataset pair the same context, so what one score computes from the frozen
    #: network (e.g. the training split's features) the next one can reuse from here.
    memo: dict

    def shuffle_seed(self, epoch: int) -> int:
        """The seed of epoch ``epoch``'s batch order (``Split.batches(shuffle=True, seed=...)``):
        each seed of a grid and each epoch gets its own order, and a rerun of the cell the same.
        ``seed * 1000 + epoch``: the orders the first-party strategies have always trained with,
        so their published records still rerun equal."""
        return self.seed * 1000 + epoch

    def autocast(self):
        """A context manager for forward passes: autocast to ``precision`` (bf16 or fp16 on CUDA), or
        nothing in fp32. Scoring runs under it too."""
        raise NotImplementedError

    def frozen_features(self, model, splits: "list[Split]", cache: bool = True) -> list:
        """The frozen ``model``'s pre-logit features (``forward_head(..., pre_logits=True)``, fp32)
        of every image of each split, one tensor per split on ``device``: the path the
        first-party probes take. Each image goes through the network at most once across
        cells and processes: features are kept on disk under ``cache_dir`` (``cache=False``:
        not), keyed by the weights, the exact images, the pooling and the precision; on the CPU
        the network runs with its BatchNorms folded, two batches at a time. Logs
        ``feature_cache`` (hit, miss or off) and ``cached_extraction_s`` (what extracting the
        features read from the cache cost when they were made: the leaderboard charges it, so
        that a probe's compute does not depend on whether the cache was warm). Example::

            (train_x, val_x) = ctx.frozen_features(model, [train, val])
        """
        from tlbench.frozen.features import frozen_features

        found, state = frozen_features(model, list(splits), self, use_cache=cache)
        self.log(feature_cache=state)
        return found

    def frozen_pass(self, model):
        """A ``with`` block for passes of a frozen ``model`` over many batches, as the feature
        extraction runs them (eval mode, no gradients, fp32; on the CPU folded BatchNorms and
        two batches at a time; the model in channels_last layout): ``outputs(batches, compute)``
        yields ``compute(network, x)`` for each batch, in order. Close that generator inside the
        block. Example::

            with ctx.frozen_pass(model) as frozen, contextlib.closing(
                    frozen.outputs(images, lambda net, x: net.forward_features(x))) as outputs:
                maps = [m.cpu() for m in outputs]
        """
        from tlbench.frozen.extraction import Extraction
        from tlbench.frozen.features import channels_last

        return Extraction(channels_last(model), self)


class Strategy(Component):
    """How a pretrained network is adapted to a dataset.

    The core builds the network, calls :meth:`fit` (timed), then evaluates the returned model on
    the test split itself: a strategy decides how the model is trained, never how it is scored.
    Parameters that ``fit`` trained must be left with ``requires_grad=True`` and all others
    ``False``: the core counts them as the strategy's trainable parameters.
    """

    #: False for controls that must start from random weights ("from scratch").
    pretrained: ClassVar[bool] = True

    #: How much of one GPU a cell of this strategy needs when an executor packs cells onto a
    #: cluster's GPUs (``--executor ray``): 1.0 for training, less for strategies that mostly
    #: read cached features. Users override it with ``--gpu-share NAME=FRACTION``.
    gpu_share: ClassVar[float] = 1.0

    def fit(
        self,
        model: "torch.nn.Module",
        train: "Split",
        val: "Split",
        ctx: FitContext,
    ) -> "torch.nn.Module":
        raise NotImplementedError


# -- scores ------------------------------------------------------------------------------------


class Score(Component):
    """A transferability estimate: a number, computed before any fine-tuning, that should be
    higher for a pretrained network that will transfer better to a dataset.

    ``tlbench rank`` builds each backbone × dataset pair of a grid exactly as a cell would and
    calls :meth:`estimate` (timed) with the frozen network and the training split. Estimates of
    one score are compared across backbones on the same dataset only; their scale is the
    score's own.
    """

    def estimate(self, model: "torch.nn.Module", train: "Split", ctx: FitContext) -> float:
        raise NotImplementedError
