"""First-party sinks: Weights & Biases and MLflow, each told of every record a run stores and
of every leaderboard written.

Written only against tlbench's public API, exactly as a third-party plugin would be. Each
tracker's library is an optional extra (``tlbench[wandb]``, ``tlbench[mlflow]``), imported in
the sink's methods only: ``tlbench --help`` and ``tlbench ls`` never import it.
"""

import tlbench

from tlbench_plugins.sinks.mlflow_sink import MlflowSink
from tlbench_plugins.sinks.wandb_sink import WandbSink


@tlbench.hookimpl
def register_sinks(register):
    register(WandbSink)
    register(MlflowSink)
