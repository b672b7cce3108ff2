"""A slice of a grid (`tlbench run --only`), the leaderboard after any run (every record of the
grid, as `tlbench report` writes it) and the grid's `control` key.

One real 4-cell grid (a tiny random network, 100 digits at 16 px) runs once per module; tests
copy its results folder and run slices of it.
"""

import csv
import shutil

import pytest

from tlbench.errors import ConfigError
from tlbench.grid import load_grid
from tlbench.results import iter_records

GRID = """
name = "sl"
backbones = ["test_efficientnet"]
strategies = ["linear_probe", "scratch"]
datasets = ["digits"]
seeds = [0, 1]
{extra}
[settings]
image_size = 16
epochs = 1
batch_size = 32
pretrained = false
threads = 1
train_size = 100
"""


def grid_text(extra=""):
    return GRID.format(extra=extra)


def record_files(results):
    """{file name: (inode, bytes)} of the grid's records: a rewritten record gets a new inode."""
    return {p.name: (p.stat().st_ino, p.read_bytes()) for p in (results / "sl" / "records").glob("*.json")}


def board_files(results):
    """{name: bytes} of every file next to the records (the leaderboard set and grid.json)."""
    return {p.name: p.read_bytes() for p in (results / "sl").iterdir() if p.is_file()}


@pytest.fixture(scope="module")
def ran(tmp_path_factory):
    """A results folder where the whole grid has run (copy it before changing it)."""
    from tlbench.cli import main

    folder = tmp_path_factory.mktemp("ran")
    (folder / "grid.toml").write_text(grid_text())
    assert main(["run", "--grid", str(folder / "grid.toml"), "--results", str(folder / "results"), "-q"]) == 0
    return folder / "results"


@pytest.fixture
def results(ran, tmp_path):
    copy = tmp_path / "results"
    shutil.copytree(ran, copy)
    return copy


def test_a_slice_runs_only_its_cells_and_says_how_many_of_the_grid_it_holds(write_grid, cli, tmp_path):
    results = tmp_path / "results"
    code, out, err = cli("run", "--grid", write_grid(grid_text()), "--results", results,
                         "--only", "strategy=linear_probe,seed=1")
    assert code == 0, err
    assert [(r["strategy"], r["seed"]) for r in iter_records(results, "sl")] == [("linear_probe", 1)]
    assert "1 of the 4 cells of grid 'sl'" in err and "[1/1]" in err


def test_values_of_one_axis_are_alternatives_and_axes_must_all_match(write_grid, registry):
    from tlbench.slices import parse_only, slice_cells

    grid = load_grid(str(write_grid(grid_text().replace("train_size = 100", "train_per_class = [2, 5]"))), registry)
    assert len(grid.cells) == 8

    def chosen(*flags):
        return {(c.strategy, c.seed, dict(c.sweep)["train_per_class"]) for c in slice_cells(grid, parse_only(flags))}

    assert chosen("train_per_class=5,seed=0") == {("linear_probe", 0, 5), ("scratch", 0, 5)}
    assert chosen("seed=0,seed=1", "strategy=scratch", "train_per_class=5.0") == {("scratch", 0, 5), ("scratch", 1, 5)}


@pytest.mark.parametrize("flag, expected", [
    ("strat=scratch", "no axis 'strat'. Did you mean 'strategy'? Its axes: backbone, strategy, dataset, seed."),
    ("strategy=full_finetune", "the grid has no strategy 'full_finetune'. Its strategy values: linear_probe, scratch."),
    ("seed=7", "Its seed values: 0, 1."),
    ("seed", "expected AXIS=VALUE pairs separated by commas"),
    ("train_per_class=5", "no axis 'train_per_class'"),  # not a curve of this grid
])
def test_a_bad_slice_is_one_line_and_exit_2_before_anything_runs(flag, expected, write_grid, cli, tmp_path):
    code, out, err = cli("run", "--grid", write_grid(grid_text()), "--results", tmp_path / "results", "--only", flag)
    assert code == 2 and err.count("\n") == 1 and expected in err, err
    assert not (tmp_path / "results").exists()


def test_racing_takes_the_whole_grid_not_a_slice(write_grid, cli, tmp_path):
    code, out, err = cli("run", "--grid", write_grid(grid_text()), "--results", tmp_path, "--only", "seed=0",
                         "--race-seeds", "4")
    assert code == 2 and err.count("\n") == 1 and "run the slice (--only) first" in err


def test_force_on_a_slice_reruns_the_slice_and_leaves_every_other_record_alone(results, write_grid, cli):
    before = record_files(results)
    code, out, err = cli("run", "--grid", write_grid(grid_text()), "--results", results, "--only", "seed=1",
                         "--force", "-q")
    assert code == 0, err
    after = record_files(results)
    assert sorted(after) == sorted(before)  # the same cells, no new ones
    seeds = {r["run_id"]: r["seed"] for r in iter_records(results, "sl")}
    rerun = {name for name in after if after[name][0] != before[name][0]}
    assert {seeds[name[:-5]] for name in rerun} == {1} and len(rerun) == 2
    assert {n: after[n] for n in after if n not in rerun} == {n: before[n] for n in before if n not in rerun}


def test_a_slice_then_the_whole_grid_runs_only_the_missing_cells(write_grid, cli, tmp_path):
    results, grid = tmp_path / "results", write_grid(grid_text())
    assert cli("run", "--grid", grid, "--results", results, "--only", "strategy=scratch,seed=0", "-q")[0] == 0
    sliced = record_files(results)
    # the leaderboard after the slice is the grid's: the slice's record, the rest missing, as `report` builds it
    written = board_files(results)
    assert "3 missing" not in written["leaderboard.md"].decode() and "2 missing" in written["leaderboard.md"].decode()
    code, out, err = cli("report", "--results", results)
    assert code == 0, err
    assert board_files(results) == written
    code, out, err = cli("run", "--grid", grid, "--results", results)
    assert code == 0, err
    assert "1 of 4 cells already have records" in err and "[4/4]" in err and "[5/" not in err
    after = record_files(results)
    assert len(after) == 4 and {n: after[n] for n in sliced} == sliced


def test_the_board_after_a_run_shows_every_record_of_the_grid_however_narrow_the_run(results, write_grid, cli):
    """The old way to rerun one cell: a one-cell grid of the same name, with --force."""
    one = write_grid(grid_text().replace('["linear_probe", "scratch"]', '["scratch"]').replace("[0, 1]", "[1]"))
    code, out, err = cli("run", "--grid", one, "--results", results, "--force", "-q")
    assert code == 0, err
    written = board_files(results)
    md = written["leaderboard.md"].decode()
    assert "4 cells (4 ok)" in md and "linear_probe" in md
    assert cli("report", "--results", results)[0] == 0
    assert board_files(results) == written


def test_after_an_edit_a_slice_leaves_the_other_rows_missing_not_showing_the_old_numbers(results, write_grid, cli):
    edited = write_grid(grid_text().replace("epochs = 1", "epochs = 2"))
    code, out, err = cli("run", "--grid", edited, "--results", results, "--only", "strategy=scratch,seed=0", "-q")
    assert code == 0, err
    with open(results / "sl" / "leaderboard.csv", newline="") as handle:
        rows = {row["strategy"]: row for row in csv.DictReader(handle)}
    assert (rows["scratch"]["status"], rows["scratch"]["seeds"]) == ("1 ok, 1 missing", "1")
    assert (rows["linear_probe"]["status"], rows["linear_probe"]["top1"]) == ("2 missing", "")
    assert len(list(iter_records(results, "sl"))) == 5  # the old version's records stay on disk


def test_a_snapshot_that_cannot_be_read_is_said_once_and_the_grid_is_taken_from_the_records(results, cli):
    (results / "sl" / "grid.json").write_text('{"format": 1, "grid": "sl", "cells": "oops"')
    code, out, err = cli("report", "--results", results)
    assert code == 0 and err.count("grid.json is not a grid snapshot") == 1 and "Traceback" not in err
    assert "4 cells (4 ok)" in (results / "sl" / "leaderboard.md").read_text()


# -- the grid's control --------------------------------------------------------------------------


@pytest.mark.parametrize("control, expected", [
    ('"scrach"', "control 'scrach' in {path} is not one of the grid's strategies. Did you mean 'scratch'? "
                 "Strategies: linear_probe, scratch"),
    ('"full_finetune"', "is not one of the grid's strategies."),
    ('["scratch", "scratch"]', "remove the duplicate"),
    ("3", "must be a strategy name or a list of them"),
])
def test_the_control_must_be_one_of_the_grids_strategies(control, expected, write_grid, registry):
    path = write_grid(grid_text(f"control = {control}"))
    with pytest.raises(ConfigError) as error:
        load_grid(str(path), registry)
    assert expected.format(path=repr(str(path))) in str(error.value)


def test_the_control_changes_no_cell(write_grid, registry):
    plain = load_grid(str(write_grid(grid_text(), name="plain.toml")), registry)
    named = load_grid(str(write_grid(grid_text('control = ["scratch", "linear_probe"]'), name="named.toml")), registry)
    assert named.controls == ["scratch", "linear_probe"] and plain.controls == []
    assert [(c.run_id, c.config_id) for c in named.cells] == [(c.run_id, c.config_id) for c in plain.cells]


def test_the_grids_controls_each_get_a_table_in_run_and_in_report_anywhere(results, write_grid, cli, tmp_path):
    # every cell starts from random weights (pretrained = false): no control unless named
    assert "No control" in (results / "sl" / "leaderboard.md").read_text()
    grid = write_grid(grid_text('control = ["linear_probe", "scratch"]'))
    code, out, err = cli("run", "--grid", grid, "--results", results)
    assert code == 0 and "4 of 4 cells already have records" in err  # the same cells: nothing reruns
    folder = results / "sl"
    md = (folder / "leaderboard.md").read_text()
    assert "## Transfer gain over `linear_probe`" in md and "## Transfer gain over `scratch`" in md
    assert "P(> linear_probe)" in md  # the first control is the overall table's
    (first,) = (folder / "leaderboard_transfer_gain.csv").read_text().splitlines()[1:]
    (second,) = (folder / "leaderboard_transfer_gain_vs_scratch.csv").read_text().splitlines()[1:]
    assert first.split(",")[2] == "scratch" and second.split(",")[2] == "linear_probe"
    assert float(first.split(",")[5]) == pytest.approx(-float(second.split(",")[5]))
    # and a LaTeX table each, named as the CSVs are
    assert "linear\\_probe" in (folder / "leaderboard_transfer_gain_vs_scratch.tex").read_text()
    assert "scratch" in (folder / "leaderboard_transfer_gain.tex").read_text()
    written = board_files(results)
    # another machine: the grid's folder copied, no grid file, `tlbench report` writes the same files
    elsewhere = tmp_path / "elsewhere"
    shutil.copytree(folder, elsewhere / "sl", ignore=shutil.ignore_patterns("leaderboard*"))
    assert cli("report", "--results", elsewhere)[0] == 0
    assert board_files(elsewhere) == written
    # --control replaces the grid's controls for this report: one table, its own files only
    assert cli("report", "--results", elsewhere, "--control", "scratch")[0] == 0
    assert not (elsewhere / "sl" / "leaderboard_transfer_gain_vs_scratch.csv").exists()
    assert not (elsewhere / "sl" / "leaderboard_transfer_gain_vs_scratch.tex").exists()
    md = (elsewhere / "sl" / "leaderboard.md").read_text()
    assert "## Transfer gain over `scratch`" in md and "over `linear_probe`" not in md
