"""Test-only transferability scores: one from a third party, one that always fails."""

import tlbench


class Width(tlbench.Score):
    """How many pre-logit features the network has."""

    name = "width"

    def estimate(self, model, train, ctx):
        return float(model.num_features)


class Broken(tlbench.Score):
    """Raises whatever it is given."""

    name = "broken"

    def estimate(self, model, train, ctx):
        raise RuntimeError("no luck")


@tlbench.hookimpl
def register_scores(register):
    register(Width)
    register(Broken)
