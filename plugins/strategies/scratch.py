from dataclasses import dataclass

import tlbench

from tlbench_plugins.machinery.options import FinetuneOptions


@dataclass(frozen=True)
class ScratchOptions(FinetuneOptions):
    lr: float = tlbench.option(3e-3, "AdamW peak learning rate for every parameter (a list selects on validation)")
    norm_statistics: str = tlbench.option("recompute", "BatchNorm while training: recompute (batch statistics, then running statistics measured over the training images with the final weights), update (running averages of the last batches) or keep")


class Scratch(tlbench.Strategy):
    """Every parameter trains from random weights (lr 3e-3, batch statistics, then BatchNorm statistics recomputed over the training images): the control that measures transfer gain."""

    name = "scratch"
    Options = ScratchOptions
    pretrained = False

    def fit(self, model, train, val, ctx):
        from tlbench_plugins.machinery import training

        return training.finetune_everything(model, train, val, ctx, self.options.recipe())
