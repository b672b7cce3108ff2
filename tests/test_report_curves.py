"""A curve (a list in [settings]) in the leaderboard: its values in numeric order everywhere, the
grid counted in datasets and values, an overall table per value (never averaged across values),
and a column for it in `tlbench runs`."""

import csv
import io
import json

import pytest

from pathlib import Path

from test_report import GRID, _digest, md_table, record, write_all
from tlbench.cli import main

SHOTS = [5, 10]  # as strings these sort 10, 5
TOP1 = {"linear_probe": {5: 0.70, 10: 0.80}, "scratch": {5: 0.20, 10: 0.40}}


def shots_record(dataset, strategy, seed, shots, top1):
    rec = record(dataset, "lite0", strategy, seed, top1, pretrained=strategy != "scratch")
    rec["sweep"] = {"train_per_class": shots}
    rec["settings"]["train_per_class"] = shots
    rec["run_id"] = _digest([rec["run_id"], shots])
    rec["config_id"] = _digest([rec["config_id"], shots])
    return rec


def write_shots_grid(results) -> Path:
    """2 datasets × 2 values of train_per_class × 2 strategies × 2 seeds (faces 0.05 below digits),
    reported; returns the grid's folder."""
    write_all(results, [shots_record(dataset, strategy, seed, shots, top1 - offset + 0.01 * seed)
                        for dataset, offset in (("digits", 0.0), ("faces", 0.05))
                        for strategy, by_shots in TOP1.items() for shots, top1 in by_shots.items()
                        for seed in (0, 1)])
    assert main(["report", "--results", str(results)]) == 0
    return results / GRID


@pytest.fixture(scope="module")
def shots_grid(tmp_path_factory):
    """One report for the whole file: its plots are most of a report's time."""
    return write_shots_grid(tmp_path_factory.mktemp("shots"))


def first_table_after(md: str, heading: str) -> list[dict]:
    """The rows of the first markdown table under ``heading`` (past any notes), as {header: text}."""
    lines = md.split(heading + "\n", 1)[1].splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("|"))
    end = next((i for i in range(start, len(lines)) if not lines[i].startswith("|")), len(lines))
    split = lambda line: [c.strip() for c in line.strip("|").split("|")]
    return [dict(zip(split(lines[start]), split(line))) for line in lines[start + 2:end]]


def test_curve_values_sort_by_size_in_every_table_and_file(shots_grid):
    folder = shots_grid
    md = (folder / "leaderboard.md").read_text()
    tasks = [f"digits (train_per_class={k})" for k in SHOTS] + [f"faces (train_per_class={k})" for k in SHOTS]
    headings = [line[4:] for line in md.splitlines() if line.startswith("### ") and "(train_per_class=" in line]
    assert headings == tasks
    document = json.loads((folder / "leaderboard.json").read_text())
    assert document["datasets"] == tasks
    gain = first_table_after(md, "## Transfer gain over `scratch`")
    assert [row["dataset"] for row in gain] == tasks
    curve = md_table(md, "### digits: top-1 against train_per_class")
    assert list(curve[0])[2:] == ["5", "10"]
    rows = list(csv.DictReader(io.StringIO((folder / "leaderboard.csv").read_text())))
    assert list(dict.fromkeys(row["dataset"] for row in rows)) == tasks


def test_the_header_counts_datasets_and_values_not_tasks(shots_grid):
    md = (shots_grid / "leaderboard.md").read_text()
    assert ("16 cells (16 ok); 1 backbone × 2 strategies × 2 datasets × 2 values of train_per_class "
            "(5, 10) × 2 seeds") in md
    assert "4 datasets" not in md


def test_the_overall_table_has_a_block_per_curve_value_over_its_datasets_only(shots_grid):
    folder = shots_grid
    rows = first_table_after((folder / "leaderboard.md").read_text(), "## Overall")
    assert [(r["train_per_class"], r["strategy"]) for r in rows] == [
        (str(k), s) for k in SHOTS for s in ("linear_probe", "scratch")]
    for row in rows:  # the mean of digits and faces (0.05 lower) at this value, seeds 0 and 1 (+0.01)
        expected = TOP1[row["strategy"]][int(row["train_per_class"])] - 0.025 + 0.005
        assert float(row["mean top-1"]) == pytest.approx(expected, abs=5e-4)
        assert row["datasets"] == "2/2"
    overall = list(csv.DictReader(io.StringIO((folder / "leaderboard_overall.csv").read_text())))
    assert [(r["train_per_class"], r["strategy"]) for r in overall] == [
        (str(k), s) for k in SHOTS for s in ("linear_probe", "scratch")]
    blocks = json.loads((folder / "leaderboard.json").read_text())["overall"]
    assert [r["sweep"] for r in blocks[:2]] == [{"train_per_class": 5}] * 2


def test_runs_has_a_column_for_the_curve_setting_in_numeric_order(shots_grid, cli):
    code, out, err = cli("runs", "--results", shots_grid.parent, "--strategy", "scratch", "--dataset", "digits")
    assert code == 0, err
    header, _, *lines = out.splitlines()[:6]
    assert header.split()[:6] == ["grid", "backbone", "strategy", "dataset", "train_per_class", "seed"]
    assert [line.split()[4] for line in lines] == ["5", "5", "10", "10"]
    code, out, err = cli("runs", "--results", shots_grid.parent, "--strategy", "nothing*")
    assert "train_per_class" not in out + err


def test_a_curves_overall_tex_has_a_block_per_value(shots_grid):
    blocks = (shots_grid / "leaderboard_overall.tex").read_text().split("\\midrule\n")
    assert [block.splitlines()[0].split(" & ")[0] for block in blocks[1:]] == ["5", "10"]


def test_a_stored_0_meaning_all_is_not_drawn_at_the_axis_edge(tmp_path):
    """Records of a grid older than the refusal of 0 in a curve: the plot leaves the point out
    and says so, instead of drawing "all examples" left of the smallest size."""
    from tlbench.report.plots import _plot_curves

    curve = {"dataset": "digits", "setting": "train_size", "backbone": "lite0", "strategy": "linear_probe",
             "points": [{"value": v, "top1": t, "top1_ci95": None, "seeds": 1} for v, t in ((0, 0.95), (100, 0.6))]}
    drawn = []
    import matplotlib.axes

    real = matplotlib.axes.Axes.errorbar

    def spy(self, x, y, *args, **kwargs):
        drawn.append(list(x))
        return real(self, x, y, *args, **kwargs)

    texts = []
    real_text = matplotlib.axes.Axes.text

    def text_spy(self, x, y, s, *args, **kwargs):
        texts.append(s)
        return real_text(self, x, y, s, *args, **kwargs)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(matplotlib.axes.Axes, "errorbar", spy)
        mp.setattr(matplotlib.axes.Axes, "text", text_spy)
        assert _plot_curves([curve]).startswith(b"\x89PNG")
    assert drawn == [[100]] and any("train_size = 0 (all labelled examples) not drawn" in t for t in texts)
