"""A worker (tlbench.worker) builds only its cell's part of the grid, and the outcome a cell's
own process writes reads back as it was sent."""

import json
from dataclasses import asdict

import pytest

from tlbench.cell_job import Outcome, job_maker
from tlbench.errors import ConfigError
from tlbench.grid import build_grid, load_grid
from tlbench.plugins import load_registry
from tlbench.worker import NoSuchCell, cell_of


@pytest.fixture
def two_strategy_grid(write_grid, test_plugins_dir):
    """A grid of a first-party strategy and a test-only one, read by a driver that has both."""
    return load_grid(str(write_grid("""
        name = "w"
        backbones = ["test_efficientnet"]
        strategies = ["linear_probe", "head_only"]
        datasets = ["digits"]
        seeds = [0, 1]
        [budget.head_only]
        epochs = 2
    """)), load_registry(str(test_plugins_dir)))


def test_a_worker_builds_its_cell_without_the_plugins_only_other_cells_use(two_strategy_grid, registry):
    cell = next(c for c in two_strategy_grid.cells if c.strategy == "linear_probe" and c.seed == 1)
    job = job_maker(two_strategy_grid, None, None)(cell)
    with pytest.raises(ConfigError, match="head_only"):  # the whole grid needs the test-only plugin
        build_grid(job.grid_data, job.grid_source, registry)
    built = cell_of(job, registry)
    assert (built.run_id, built.label, built.settings) == (cell.run_id, cell.label, cell.settings)


def test_a_worker_that_builds_other_cells_than_the_driver_says_so(two_strategy_grid, registry):
    cell = next(c for c in two_strategy_grid.cells if c.strategy == "linear_probe")
    job = job_maker(two_strategy_grid, None, None)(cell)
    with pytest.raises(NoSuchCell, match="this worker builds other cells from the grid than the driver"):
        cell_of(type(job)(**{**asdict(job), "run_id": "0" * 16}), registry)


@pytest.mark.parametrize("outcome", [Outcome(record={"status": "ok"}), Outcome(unfit=("node", "lacks a plugin"))])
def test_an_outcome_written_by_a_cells_process_reads_back_the_same(outcome):
    assert Outcome.from_dict(json.loads(json.dumps(asdict(outcome)))) == outcome
