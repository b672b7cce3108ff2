"""Test-only strategies that misbehave the way real cells do at the process level: hang, or take
their process down with them, or take long enough for a test to kill the node they run on (for
the subprocess and Ray executors)."""

import os
import signal
import time
from pathlib import Path

import tlbench


class Hangs(tlbench.Strategy):
    """Never finishes (a deadlocked data loader, a solver that does not converge)."""

    name = "hangs"

    def fit(self, model, train, val, ctx):
        time.sleep(3600)
        return model


class DiesOnce(tlbench.Strategy):
    """Kills its own process the first time it runs: a worker lost mid-cell (node failure, OOM
    killer); the next attempt succeeds. It remembers the first time with the file
    ``dies_once.died`` in the cell's cache folder (one per test: conftest's private_cache_dir),
    which every worker of a local run can see."""

    name = "dies_once"

    def fit(self, model, train, val, ctx):
        marker = Path(ctx.cache_dir) / "dies_once.died"
        if not marker.exists():
            marker.touch()
            os.kill(os.getpid(), signal.SIGKILL)
        return model


class Sleepy(tlbench.Strategy):
    """Takes a few seconds, saying in its node's cache folder (``sleepy.started``) that it runs:
    long enough for a test to kill the node under it."""

    name = "sleepy"

    def fit(self, model, train, val, ctx):
        (Path(ctx.cache_dir) / "sleepy.started").touch()
        time.sleep(4)
        return model


@tlbench.hookimpl
def register_strategies(register):
    register(Hangs)
    register(DiesOnce)
    register(Sleepy)
