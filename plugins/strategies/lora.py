import importlib.util
from dataclasses import dataclass

import tlbench

from tlbench_plugins.machinery.options import SupervisedOptions

INSTALL_HINT = "the lora strategy needs the peft library: pip install 'tlbench[peft]' (or pip install peft)"


@dataclass(frozen=True)
class LoraOptions(SupervisedOptions):
    lr: float = tlbench.option(3e-3, "AdamW peak learning rate (a list selects on validation)")
    rank: int = tlbench.option(8, "rank r of each adapter (a list selects on validation)")
    alpha: float = tlbench.option(8.0, "adapter scale numerator: the update is (alpha / rank) * B @ A")
    dropout: float = tlbench.option(0.0, "dropout on each adapter's input")
    targets: list[str] = tlbench.option(
        [], "shell patterns of module names to adapt (Linear or Conv2d with groups = 1, head excluded); "
            "empty = every Linear and 1x1 Conv2d")

    def __post_init__(self):
        super().__post_init__()
        if self.rank < 1:
            raise ValueError(f"rank must be at least 1, got {self.rank}")
        if self.alpha <= 0:
            raise ValueError(f"alpha must be > 0, got {self.alpha}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")
        if importlib.util.find_spec("peft") is None:  # checked with the grid, before any cell runs
            raise ValueError(INSTALL_HINT)


class Lora(tlbench.Strategy):
    """Low-rank adapters (peft) on the backbone's Linear and 1x1 conv layers, the head trains; merged for scoring.

    LoRA (Hu et al. 2022) through peft's ``LoraConfig`` and ``inject_adapter_in_model``: each
    target layer W gets a trainable update (alpha / rank) * B @ A with B zero at the start, so
    training begins from the pretrained network. Everything else is frozen (BatchNorm layers
    keep their statistics) except the new head. After training every adapter is merged into its
    layer's weight (peft's ``merge``), so the scored forward is the plain network's; the factors
    stay in the model as the record of what trained, and the trainable-parameter count is
    the adapters' plus the head's.
    """

    name = "lora"
    Options = LoraOptions

    def __init__(self, options=None):
        super().__init__(options)
        # peft loads transformers (seconds): here, while the cell is set up, not in the timed fit
        import peft  # noqa: F401

    def fit(self, model, train, val, ctx):
        from tlbench_plugins.machinery import training

        targets = target_modules(model, self.options.targets)
        adapt(model, targets, self.options)
        training.unfreeze([training.classifier(model)])
        training.fit_supervised(model, train, ctx, self.options.recipe())
        adapters = merge(model)
        ctx.log(val_top1=training.accuracy(model, val, ctx), adapted_modules=len(targets),
                adapter_params=adapters)
        return model


def target_modules(model, patterns) -> list[str]:
    """Names of the modules to adapt: Linear and 1x1 Conv2d by default, or those matching a
    pattern; never the classifier. A pattern that matches nothing is an error listing names."""
    from fnmatch import fnmatchcase

    from torch import nn

    head = {id(m) for m in model.get_classifier().modules()}
    adaptable = {name: m for name, m in model.named_modules()
                 if id(m) not in head and (isinstance(m, nn.Linear)
                                           or (isinstance(m, nn.Conv2d) and m.groups == 1))}
    if not patterns:
        names = [n for n, m in adaptable.items()
                 if isinstance(m, nn.Linear) or tuple(m.kernel_size) == (1, 1)]
    else:
        names = [n for n in adaptable if any(fnmatchcase(n, p) for p in patterns)]
        for pattern in patterns:
            if not any(fnmatchcase(n, pattern) for n in adaptable):
                examples = ", ".join(list(adaptable)[:6])
                raise ValueError(f"lora target {pattern!r} matches no Linear or Conv2d (groups = 1) "
                                 f"module of {type(model).__name__}; some names: {examples}")
    if not names:
        raise ValueError(f"{type(model).__name__} has no Linear or 1x1 Conv2d layer outside the head; "
                         "name target layers with the targets option")
    return names


def adapt(model, targets: list[str], options) -> None:
    """Freeze ``model`` and inject trainable LoRA adapters into ``targets`` (in place)."""
    from peft import LoraConfig, inject_adapter_in_model

    from tlbench_plugins.machinery import training

    training.freeze(model)
    config = LoraConfig(r=options.rank, lora_alpha=options.alpha, lora_dropout=options.dropout,
                        target_modules=_exactly(targets), bias="none")
    inject_adapter_in_model(config, model)
    for name, parameter in model.named_parameters():
        parameter.requires_grad_(".lora_" in name)


def merge(model) -> int:
    """Merge every adapter into its layer; returns the number of adapter parameters."""
    from peft.tuners.lora import LoraLayer

    count = 0
    for module in model.modules():
        if isinstance(module, LoraLayer):
            module.merge(safe_merge=True)
            count += sum(p.numel() for n, p in module.named_parameters() if ".lora_" in f".{n}")
    return count


def _exactly(names: list[str]) -> str:
    """A regex matching these full module names only (peft matches a list by name suffix,
    which would also catch ``blocks.0.mlp.fc`` for a target ``fc``)."""
    import re

    return "|".join(re.escape(name) for name in names)
