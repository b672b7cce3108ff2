from dataclasses import dataclass

import tlbench

from tlbench_plugins.machinery.options import SupervisedOptions


@dataclass(frozen=True)
class BitfitOptions(SupervisedOptions):
    lr: float = tlbench.option(3e-3, "AdamW peak learning rate (a list selects on validation)")
    norm_statistics: str = tlbench.option("keep", "BatchNorm while training: keep (running statistics fixed, as the paper trains biases only) or update")


class Bitfit(tlbench.Strategy):
    """Only the biases and the head train (BitFit, Ben Zaken et al. 2022), BatchNorm statistics kept.

    Every parameter named ``*.bias`` trains, norm-layer biases included (BatchNorm's shift is a
    bias); norm-layer scales (``weight``) stay frozen, as in the paper, which trains biases only.
    BatchNorm layers also keep their running statistics by default (``norm_statistics``):
    nothing but the biases changes (letting the statistics follow the target data cost much
    accuracy; measured in benchmarks/README.md, "bitfit"). Networks whose convolutions have no bias (EfficientNet,
    ResNet: a BatchNorm follows each) train their norm biases.
    """

    name = "bitfit"
    Options = BitfitOptions

    def fit(self, model, train, val, ctx):
        from tlbench_plugins.machinery import training

        training.freeze(model)
        training.unfreeze(p for name, p in model.named_parameters() if name.rsplit(".", 1)[-1] == "bias")
        training.unfreeze([training.classifier(model)])
        training.fit_supervised(model, train, ctx, self.options.recipe())
        ctx.log(val_top1=training.accuracy(model, val, ctx))
        return model
