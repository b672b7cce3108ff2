import tlbench

from tlbench_plugins.machinery.options import PretrainedFinetuneOptions


class FullFinetune(tlbench.Strategy):
    """Every parameter trains: the body at a small rate, the new head at a larger one, BatchNorm on
    its running statistics; AdamW, warm-up and cosine decay, optional layer-wise lr decay."""

    name = "full_finetune"
    Options = PretrainedFinetuneOptions

    def fit(self, model, train, val, ctx):
        from tlbench_plugins.machinery import training

        return training.finetune_everything(model, train, val, ctx, self.options.recipe())
