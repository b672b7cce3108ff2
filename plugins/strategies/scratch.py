import tlbench

from tlbench_plugins.machinery.options import FinetuneOptions


class Scratch(tlbench.Strategy):
    """The full_finetune recipe from random weights: the control that measures transfer gain."""

    name = "scratch"
    Options = FinetuneOptions
    pretrained = False

    def fit(self, model, train, val, ctx):
        from tlbench_plugins.machinery import training

        return training.finetune_everything(model, train, val, ctx, self.options.recipe())
