from dataclasses import dataclass

import tlbench

from tlbench_plugins.machinery.options import FinetuneOptions, LinearProbeOptions


@dataclass(frozen=True)
class LpFtOptions(FinetuneOptions):
    lr: float = tlbench.option(3e-5, "AdamW peak learning rate of the fine-tuning stage (a list selects on validation)")
    warmup_epochs: float = tlbench.option(0.5, "linear warm-up length in epochs before the cosine decay")
    norm_statistics: str = tlbench.option("keep", "BatchNorm while fine-tuning: keep (the running statistics the probe was fitted with) or update")


class LpFt(tlbench.Strategy):
    """Linear probe first, then fine-tune everything from that head (Kumar et al., 2022)."""

    name = "lp_ft"
    Options = LpFtOptions

    def fit(self, model, train, val, ctx):
        from tlbench_plugins.machinery import training
        from tlbench_plugins.machinery.linear_head import fit_linear_probe

        # the probe selects its penalty on val but is not refitted on it: val stays unseen
        # for the validation score (and any selection the harness makes on it)
        probe_val_top1 = fit_linear_probe(model, train, val, ctx, LinearProbeOptions(), refit_on_val=False)
        for parameter in model.parameters():
            parameter.requires_grad_(True)
        # The probe was fitted on features normalised by BatchNorm's running statistics; batch
        # statistics would hand it other features and fine-tuning would start by undoing it
        # (measured: benchmarks/README.md, "lp_ft"): norm_statistics defaults to keep.
        training.fit_supervised(model, train, ctx, self.options.recipe())
        ctx.log(probe_val_top1=probe_val_top1, val_top1=training.accuracy(model, val, ctx))
        return model
