"""A test-only strategy whose fits the tests can count and slow down, in this process or in any
other: it appends "PID seed SEED" to the file $TLBENCH_TEST_LOG, then sleeps
$TLBENCH_TEST_SLEEP seconds (default 0). It trains nothing."""

import os
import time

import tlbench


class Logged(tlbench.Strategy):
    """Appends its fit to $TLBENCH_TEST_LOG, sleeps $TLBENCH_TEST_SLEEP s, trains nothing."""

    name = "logged"

    def fit(self, model, train, val, ctx):
        with open(os.environ["TLBENCH_TEST_LOG"], "a") as log:
            log.write(f"{os.getpid()} seed {ctx.seed}\n")
        time.sleep(float(os.environ.get("TLBENCH_TEST_SLEEP", "0")))
        return model


@tlbench.hookimpl
def register_strategies(register):
    register(Logged)
