import tlbench

from tlbench_plugins.machinery.options import LinearProbeOptions


class LinearProbe(tlbench.Strategy):
    """Frozen backbone; logistic-regression head on cached features, L2 chosen on validation."""

    name = "linear_probe"
    Options = LinearProbeOptions
    gpu_share = 0.25  # after its one pass over the images, it only reads cached features

    def fit(self, model, train, val, ctx):
        from tlbench_plugins.machinery.linear_head import fit_linear_probe

        # By default the probe learns from the training split alone, as every strategy that trains
        # does; and while the core selects among list values on val, val must stay unseen.
        fit_linear_probe(model, train, val, ctx, self.options,
                         refit_on_val=self.options.refit_on_val and not ctx.selecting)
        return model
