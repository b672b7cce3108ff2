import tlbench

from tlbench_plugins.machinery.options import FinetuneOptions


class FullFinetune(tlbench.Strategy):
    """Every parameter trains: AdamW, warm-up and cosine decay, optional layer-wise lr decay."""

    name = "full_finetune"
    Options = FinetuneOptions

    def fit(self, model, train, val, ctx):
        from tlbench_plugins.machinery import training

        return training.finetune_everything(model, train, val, ctx, self.options.recipe())
