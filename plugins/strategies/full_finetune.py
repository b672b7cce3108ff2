import tlbench

from tlbench_plugins.strategies.options import FinetuneOptions


class FullFinetune(tlbench.Strategy):
    """Every parameter trains: AdamW, warm-up and cosine decay, optional layer-wise lr decay."""

    name = "full_finetune"
    Options = FinetuneOptions

    def fit(self, model, train, val, ctx):
        from tlbench_plugins.strategies import training

        for parameter in model.parameters():
            parameter.requires_grad_(True)
        training.fit_supervised(model, train, ctx, self.options.recipe())
        ctx.log(val_top1=training.accuracy(model, val, ctx))
        return model


class Scratch(FullFinetune):
    """The full_finetune recipe from random weights: the control that measures transfer gain."""

    name = "scratch"
    pretrained = False
