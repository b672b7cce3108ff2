"""A test-only strategy whose cells wait while a file exists: a test holds them running (to
cancel them, or to see them running) and lets them go by removing the file."""

import os
import time
from pathlib import Path

import tlbench


class Held(tlbench.Strategy):
    """Waits while the file $TLBENCH_TEST_HOLD exists (at most 10 minutes), then trains nothing."""

    name = "held"

    def fit(self, model, train, val, ctx):
        hold = os.environ.get("TLBENCH_TEST_HOLD")
        deadline = time.monotonic() + 600
        while hold and Path(hold).exists() and time.monotonic() < deadline:
            time.sleep(0.1)
        for p in model.parameters():
            p.requires_grad_(False)
        return model


@tlbench.hookimpl
def register_strategies(register):
    register(Held)
