import tlbench

from tlbench_plugins.machinery.options import PretrainedFinetuneOptions


class FullFinetune(tlbench.Strategy):
    """Every parameter trains: the body slowly, the new head 10x faster, BatchNorm statistics kept.

    AdamW with warm-up and cosine decay, optional layer-wise lr decay (docs/strategies.md, "Recipes")."""

    name = "full_finetune"
    Options = PretrainedFinetuneOptions

    def fit(self, model, train, val, ctx):
        from tlbench_plugins.machinery import training

        return training.finetune_everything(model, train, val, ctx, self.options.recipe())
