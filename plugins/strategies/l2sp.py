from dataclasses import dataclass

import tlbench

from tlbench_plugins.machinery.options import PretrainedFinetuneOptions


@dataclass(frozen=True)
class L2spOptions(PretrainedFinetuneOptions):
    alpha: float = tlbench.option(0.01, "strength of the pull toward the pretrained weights (alpha/2 ||w - w0||^2)")
    beta: float = tlbench.option(0.01, "L2 strength on the new head (beta/2 ||w||^2)")
    weight_decay: float = tlbench.option(0.0, "AdamW decoupled weight decay on top of the penalties (0: L2-SP replaces it)")

    def __post_init__(self):
        super().__post_init__()
        if self.alpha < 0 or self.beta < 0:
            raise ValueError(f"alpha and beta must be >= 0, got {self.alpha} and {self.beta}")


class L2sp(tlbench.Strategy):
    """Every parameter trains, pulled toward its pretrained value (L2-SP, Li et al. 2018).

    The penalty alpha/2 ||w - w0||^2 covers every backbone parameter (norm layers included) and
    beta/2 ||w||^2 the new head; it is added to each gradient (the paper's coupled L2, here with
    AdamW instead of SGD). The rest is the full_finetune recipe.
    """

    name = "l2sp"
    Options = L2spOptions

    def fit(self, model, train, val, ctx):
        import torch

        from tlbench_plugins.machinery import training

        training.channels_last(model)  # before the anchors: the layout change must not follow them
        head = {id(p) for p in training.classifier(model).parameters()}
        hooks, anchored = [], []
        for parameter in model.parameters():
            parameter.requires_grad_(True)
            if id(parameter) in head:
                strength, anchor = self.options.beta, None
            else:
                strength, anchor = self.options.alpha, parameter.detach().clone()
                anchored.append((parameter, anchor))
            if strength:
                hooks.append(parameter.register_hook(_pull(parameter, anchor, strength)))
        try:
            training.fit_supervised(model, train, ctx, training.for_the_weights(self.options.recipe(), ctx))
        finally:
            for hook in hooks:
                hook.remove()
        with torch.no_grad():  # how far the backbone moved, relative to its pretrained norm
            moved = sum(((p - a) ** 2).sum().item() for p, a in anchored)
            norm = sum((a ** 2).sum().item() for _, a in anchored)
        ctx.log(val_top1=training.accuracy(model, val, ctx), relative_drift=(moved / max(norm, 1e-12)) ** 0.5)
        return model


def _pull(parameter, anchor, strength):
    """The gradient of strength/2 ||parameter - anchor||^2, added to the loss's gradient."""

    def hook(grad):
        target = parameter.detach() if anchor is None else parameter.detach() - anchor
        return grad + strength * target.to(grad.dtype)

    return hook
