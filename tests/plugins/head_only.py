"""A test-only strategy a test can copy, as a loose plugin file of its own, and edit."""

import tlbench


class HeadOnly(tlbench.Strategy):
    """Trains nothing: the head as the backbone made it."""

    name = "head_only"

    def fit(self, model, train, val, ctx):
        for p in model.parameters():
            p.requires_grad_(False)
        return model


@tlbench.hookimpl
def register_strategies(register):
    register(HeadOnly)
