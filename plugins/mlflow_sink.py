"""The ``mlflow`` sink: MLflow, one run per cell in an experiment named after the grid, and one
per leaderboard with its files as artifacts.

As MLflow users set it up elsewhere (Ray Tune's ``MLflowLoggerCallback``): the tracking URI comes
from ``[sink.mlflow]`` or ``MLFLOW_TRACKING_URI``, else MLflow's default. A cell's run has the
cell's configuration as parameters (flat: ``settings.epochs``, ``options.lr``), the record's
numbers as metrics, and ends FINISHED or FAILED as the cell did. The client API is used, not
MLflow's global active run, so nothing leaks into the user's own MLflow code in the process.

Written only against tlbench's public API, as a third-party plugin would be. ``mlflow`` is the
``tlbench[mlflow]`` extra, imported in the sink's methods only.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass

import tlbench

from tlbench_plugins.machinery.cell_fields import cell_config, cell_metrics, cell_name, flat, missing_package

# MLflow's limits: a parameter value's length, and how many parameters one log_batch call takes
PARAM_LENGTH = 6000
BATCH = 100
# tracking URIs of a database, served by MLflow's SQLAlchemy store
DATABASE_SCHEMES = ("sqlite", "postgresql", "mysql", "mssql")


@dataclass(frozen=True)
class MlflowOptions:
    tracking_uri: str = tlbench.option(
        "", "where runs go (sqlite:///mlflow.db, http://host:5000, ...); '' = MLFLOW_TRACKING_URI, "
        "else MLflow's default")
    experiment: str = tlbench.option("", "experiment name; '' = the grid's name")


class MlflowSink(tlbench.Sink):
    """MLflow: a run per cell (params, metrics), the leaderboard's files as artifacts."""

    name = "mlflow"
    Options = MlflowOptions

    def unavailable(self):
        missing = missing_package("mlflow", "mlflow")
        uri = self.options.tracking_uri or os.environ.get("MLFLOW_TRACKING_URI", "")
        if missing is None and (uri.split(":", 1)[0].split("+")[0] in DATABASE_SCHEMES or not uri):
            # a database store (MLflow's default is sqlite:///mlflow.db) needs SQLAlchemy and Alembic
            missing = missing_package("sqlalchemy", "mlflow") or missing_package("alembic", "mlflow")
        return missing

    def start(self):
        import logging

        from mlflow import MlflowClient

        # MLflow's notes on creating its database tables would interleave with tlbench's progress
        logging.getLogger("mlflow").setLevel(logging.WARNING)

        self.client = MlflowClient(self.options.tracking_uri or None)
        self.experiments = {}
        self.client.search_experiments(max_results=1)  # an unreachable store shows here, once

    def record(self, record):
        from mlflow.entities import Metric, Param, RunStatus

        run_id = self._run(record["grid"], cell_name(record), {"tlbench.kind": "cell",
                                                              "tlbench.run_id": record["run_id"],
                                                              "tlbench.status": record["status"]})
        now = int(time.time() * 1000)
        params = [Param(key, str(value)[:PARAM_LENGTH]) for key, value in flat(cell_config(record)).items()]
        metrics = [Metric(key, float(value), now, 0) for key, value in cell_metrics(record).items()]
        for start in range(0, max(len(params), 1), BATCH):
            self.client.log_batch(run_id, metrics=metrics if start == 0 else [], params=params[start:start + BATCH])
        status = "FINISHED" if record["status"] == "ok" else "FAILED"
        self.client.set_terminated(run_id, RunStatus.to_string(RunStatus.from_string(status)))

    def report(self, report):
        run_id = self._run(report.grid, f"{report.grid} leaderboard", {"tlbench.kind": "leaderboard"})
        for path in report.files:
            self.client.log_artifact(run_id, str(path))
        self.client.set_terminated(run_id, "FINISHED")

    def _run(self, grid: str, name: str, tags: dict) -> str:
        experiment = self.options.experiment or grid
        if experiment not in self.experiments:
            found = self.client.get_experiment_by_name(experiment)
            self.experiments[experiment] = (found.experiment_id if found is not None
                                            else self.client.create_experiment(experiment))
        run = self.client.create_run(self.experiments[experiment], run_name=name, tags={"tlbench.grid": grid, **tags})
        return run.info.run_id


@tlbench.hookimpl
def register_sinks(register):
    register(MlflowSink)
