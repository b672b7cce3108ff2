"""The accuracy tlbench promises on offline data with real pretrained weights (minutes, not
seconds: these run the committed grids in grids/ end to end through the CLI)."""

from pathlib import Path

import pytest

from tlbench.results import iter_records

GRIDS = Path(__file__).parent.parent / "grids"
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def top1(tmp_path_factory):
    """Mean test top-1 by (grid, strategy, dataset) after running both floor grids once."""
    from tlbench.cli import main

    results = tmp_path_factory.mktemp("floors")
    scores = {}
    for grid in ("accuracy-floors", "few-shot"):
        assert main(["run", "--grid", str(GRIDS / f"{grid}.toml"), "--results", str(results), "-q"]) == 0
        for record in iter_records(results, grid):
            shots = record["settings"]["train_per_class"]
            key = (grid, record["strategy"], record["dataset"]) + ((shots,) if shots else ())
            scores.setdefault(key, []).append(record["top1"])
    return {key: sum(values) / len(values) for key, values in scores.items()}


@pytest.mark.parametrize("dataset, floor", [("digits", 0.92), ("mnist5k", 0.91)])
def test_linear_probe_floor(top1, dataset, floor):
    assert top1[("accuracy-floors", "linear_probe", dataset)] >= floor


@pytest.mark.parametrize("dataset", ["digits", "mnist5k"])
def test_full_finetune_beats_linear_probe(top1, dataset):
    assert top1[("accuracy-floors", "full_finetune", dataset)] >= top1[("accuracy-floors", "linear_probe", dataset)]


def test_pretrained_probe_beats_scratch_by_ten_points_at_ten_shots(top1):
    gain = top1[("few-shot", "linear_probe", "digits", 10)] - top1[("few-shot", "scratch", "digits", 10)]
    assert gain >= 0.10


def test_pretrained_probe_improves_with_shots(top1):
    curve = [top1[("few-shot", "linear_probe", "digits", shots)] for shots in (1, 5, 10, 25)]
    assert curve == sorted(curve) and curve[-1] - curve[0] >= 0.10
