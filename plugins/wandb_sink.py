"""The ``wandb`` sink: Weights & Biases, one run per cell and one per leaderboard.

As W&B users set it up elsewhere (timm's ``--log-wandb``, lm-evaluation-harness's
``--wandb_args``): the project, entity and mode come from ``[sink.wandb]`` or W&B's own
environment variables (``WANDB_PROJECT``, ``WANDB_ENTITY``, ``WANDB_MODE=offline``,
``WANDB_DIR``). A cell's run has the cell's configuration as its config and the record's numbers
as its metrics (in the summary, where the runs table compares them); a leaderboard's run
(``job_type = "leaderboard"``) holds its tables as W&B Tables.

Written only against tlbench's public API, as a third-party plugin would be. ``wandb`` is the
``tlbench[wandb]`` extra, imported in the sink's methods only (never by ``tlbench --help`` or
``tlbench ls``).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import tlbench

from tlbench_plugins.machinery.cell_fields import cell_config, cell_metrics, cell_name, missing_package

MODES = ("", "online", "offline", "disabled")
DEFAULT_PROJECT = "tlbench"


@dataclass(frozen=True)
class WandbOptions:
    project: str = tlbench.option("", "W&B project; '' = WANDB_PROJECT, else 'tlbench'")
    entity: str = tlbench.option("", "W&B team or user; '' = WANDB_ENTITY, else your default entity")
    group: str = tlbench.option("", "the runs' group; '' = the grid's name")
    tags: list[str] = tlbench.option([], "tags on every run (a cell's run also gets its status)")
    mode: str = tlbench.option("", "online, offline or disabled; '' = WANDB_MODE, else online")
    dir: str = tlbench.option("", "folder W&B writes its files in; '' = WANDB_DIR, else ./wandb", path=True)

    def __post_init__(self):
        if self.mode not in MODES:
            raise ValueError(f"mode must be one of {', '.join(repr(m) for m in MODES[1:])}, got {self.mode!r}")
        if self.dir and not os.path.isdir(os.path.expanduser(self.dir)):
            raise ValueError(f"dir {self.dir!r} is not a folder; create it or leave dir out")


class WandbSink(tlbench.Sink):
    """Weights & Biases: a run per cell (config, metrics), the leaderboard's tables in a run."""

    name = "wandb"
    Options = WandbOptions

    def unavailable(self):
        return missing_package("wandb", "wandb")

    def start(self):
        import wandb  # noqa: F401  (a broken installation shows here, before the first cell)

    def record(self, record):
        run = self._init(record["grid"], name=cell_name(record), job_type="cell",
                         tags=[*self.options.tags, record["status"]], config=cell_config(record))
        run.log(cell_metrics(record))
        run.finish(exit_code=0 if record["status"] == "ok" else 1)

    def report(self, report):
        import wandb

        run = self._init(report.grid, name=f"{report.grid} leaderboard", job_type="leaderboard",
                         tags=list(self.options.tags), config={"grid": report.grid})
        run.log({name: wandb.Table(columns=list(rows[0]), data=[list(row.values()) for row in rows],
                                   allow_mixed_types=True)
                 for name, rows in report.tables.items() if rows})
        run.finish()

    def close(self):
        import sys

        if "wandb" in sys.modules:  # stop W&B's service process, which outlives the runs
            sys.modules["wandb"].teardown()

    def _init(self, grid: str, **kwargs):
        import wandb

        options = self.options
        return wandb.init(
            project=options.project or os.environ.get("WANDB_PROJECT") or DEFAULT_PROJECT,
            entity=options.entity or None, group=options.group or grid, mode=options.mode or None,
            dir=os.path.expanduser(options.dir) if options.dir else None, reinit="create_new",
            # tlbench's own output stays on the terminal: no console capture, no banner
            settings=wandb.Settings(console="off", silent=True, save_code=False),
            **kwargs)


@tlbench.hookimpl
def register_sinks(register):
    register(WandbSink)
