"""A test-only sink, ``raising``: it appends every call it gets to $TLBENCH_TEST_SINK_LOG and
raises at the step $TLBENCH_TEST_SINK_RAISES names (start, record, report or close)."""

import os

import tlbench


class Raising(tlbench.Sink):
    """Logs each call to $TLBENCH_TEST_SINK_LOG; raises at the step $TLBENCH_TEST_SINK_RAISES names."""

    name = "raising"

    def _call(self, step: str, what: str = "") -> None:
        with open(os.environ["TLBENCH_TEST_SINK_LOG"], "a") as log:
            log.write(f"{step} {what}".strip() + "\n")
        if os.environ.get("TLBENCH_TEST_SINK_RAISES") == step:
            raise RuntimeError(f"the tracker is down ({step})")

    def start(self):
        self._call("start")

    def record(self, record):
        self._call("record", record["run_id"])

    def report(self, report):
        self._call("report", report.grid)

    def close(self):
        self._call("close")


@tlbench.hookimpl
def register_sinks(register):
    register(Raising)
