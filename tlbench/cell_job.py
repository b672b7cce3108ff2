"""What passes between the driver and a worker for one cell: the job the driver sends
(``CellJob``) and the outcome that comes back (``Outcome``), both plain data.

No plugin class is pickled: a worker rebuilds the cell from the grid's parsed file with its own
installed plugins, so a worker needs tlbench and the plugins, not the driver's disk.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from tlbench.grid import Cell, Grid


@dataclass(frozen=True)
class CellJob:
    """What a worker needs to run one cell: the grid as parsed, and which cell of it."""

    grid_data: dict
    grid_source: str
    run_id: str
    backbone: str  # the cell's names: the worker builds only the grid's part that holds the cell
    strategy: str
    dataset: str
    plugins_dir: Optional[str] = None
    cache_dir: Optional[str] = None
    threads: Optional[int] = None  # torch intra-op threads in the worker (None: its usable CPUs)
    progress: bool = False  # draw the cell's step bars (a worker that shares the driver's terminal)
    device: Optional[str] = None  # the device to use instead of [settings] device (a Ray GPU worker's own)
    resources: Optional[dict] = None  # what the executor reserved for the cell, for its record
    #: what the driver has, for a Ray node to compare with before the cell runs (tlbench.node_check);
    #: set by the Ray executor only, read by tlbench.ray_worker only
    expected: Optional[dict] = None
    #: (axis, name) where the grid file lists the cell's row under another name (an ablation's
    #: rows: ``lora[rank=4]`` is listed as ``lora``), for the worker to find the row's part
    listed_as: tuple = ()


@dataclass
class Outcome:
    """What came back for a cell: its record, or why there is none.

    ``failure`` (error kind, message) means the cell failed without a record of its own (the
    driver writes one); ``lost`` means the worker vanished and the cell stays pending;
    ``requeue`` means the cell did not start where it was sent and is handed out again.
    """

    record: Optional[dict] = None
    failure: Optional[tuple[str, str]] = None
    lost: Optional[str] = None
    where: Optional[dict] = None  # with a failure: the worker's environment and node, when it said
    unfit: Optional[tuple[str, str]] = None  # (scope, reason): the worker's node cannot run it (node_check)
    requeue: Optional[str] = None  # the cell goes back to the queue, to run elsewhere ("" : said before)

    @classmethod
    def from_dict(cls, data: dict) -> "Outcome":
        """The outcome ``dataclasses.asdict`` gave, back from JSON (its pairs came back as lists)."""
        pairs = {key: tuple(data[key]) for key in ("failure", "unfit") if data.get(key) is not None}
        return cls(**{**data, **pairs})


def job_maker(grid: Grid, plugins_dir: Optional[str], cache_dir: Optional[str],
              threads: Optional[int] = None, progress: bool = False):
    """cell -> CellJob for a cell of ``grid``."""

    def job_for(cell: Cell) -> CellJob:
        return CellJob(grid.data, grid.source, cell.run_id, cell.backbone, cell.strategy, cell.dataset,
                       plugins_dir, cache_dir, threads, progress, listed_as=cell.listed_as)

    return job_for
