"""The leaderboard's plots: a strategy keeps its colour from grid to grid (chosen by its name),
x tick labels that never run together, and a top-1 axis that fits the points."""

import io
import math

import pytest

from test_report import GRID, record, write_all
from tlbench.cli import main
from tlbench.report.plots import _log_ticks, _plot_critical_difference, _top1_range, strategy_colors


def colors_in(png: bytes) -> set:
    """The opaque colours of a PNG, as '#rrggbb'."""
    from matplotlib.image import imread

    import numpy as np

    pixels = np.rint(imread(io.BytesIO(png), format="png")[..., :3] * 255).astype(int).reshape(-1, 3)
    return {"#%02x%02x%02x" % tuple(px) for px in np.unique(pixels, axis=0)}


def test_first_party_strategies_have_distinct_colours(registry):
    names = registry.names("strategies")
    assert {"scratch", "linear_probe", "full_finetune"} <= set(names)
    colors = strategy_colors(names)
    assert len(set(colors.values())) == len(names)


def test_a_strategy_has_the_same_colour_in_every_grid(registry, tmp_path):
    """Alone with one other strategy or among all the first-party ones, scratch is drawn in the
    colour its name gives it, wherever it sorts."""
    everyone = strategy_colors(registry.names("strategies"))
    assert strategy_colors(["scratch", "zeta"])["scratch"] == everyone["scratch"]
    assert strategy_colors(["aaa", "scratch"])["aaa"] != everyone["scratch"]  # two strategies, two colours
    write_all(tmp_path, [record("digits", "lite0", strategy, 0, top1, train_s=t)
                         for strategy, top1, t in (("scratch", 0.5, 10.0), ("zeta", 0.9, 1.0))])
    assert main(["report", "--results", str(tmp_path)]) == 0
    drawn = colors_in((tmp_path / GRID / "accuracy_vs_train_time.png").read_bytes())
    assert everyone["scratch"] in drawn


def test_names_with_dollar_signs_are_drawn_as_text_not_typeset(tmp_path):
    """Dataset and strategy names go to matplotlib as they are: a "$...$" pair in one is text,
    not a formula that fails to parse and takes every plot, and the report, down."""
    write_all(tmp_path, [record("a$x_$", "lite0", strategy, 0, top1) for strategy, top1 in (("s$^$", 0.5),
                                                                                           ("t$\\frac$", 0.7))])
    assert main(["report", "--results", str(tmp_path)]) == 0
    assert (tmp_path / GRID / "accuracy_vs_train_time.png").read_bytes().startswith(b"\x89PNG")
    diagram = {"rows": [{"backbone": "b$_$", "strategy": s, "mean_rank": r} for s, r in (("s$^$", 1.2), ("t", 1.8))],
               "groups": [(0, 1)], "critical_difference": 1.0}
    assert _plot_critical_difference(diagram).startswith(b"\x89PNG")


@pytest.mark.parametrize("low, high", [(0.3, 0.5), (0.19, 0.21), (0.35, 0.45), (1.0, 3.0), (0.2, 40.0),
                                       (5.0, 5e6), (1e-3, 4e6), (12_000.0, 3_400_000.0)])
def test_log_ticks_are_at_least_two_and_never_crowded(low, high):
    start, end, ticks = _log_ticks(low, high)
    assert start <= low and end >= high and len(ticks) >= 2
    assert all(start <= t <= end for t in ticks)
    decades = math.log10(end / start)
    assert len(ticks) <= 8
    # labels about a tenth of a panel wide apart at the least: never "0.350.40.45"
    assert min(math.log10(b / a) for a, b in zip(ticks, ticks[1:])) >= decades / 12


def test_the_top1_axis_fits_the_points_not_zero_to_one():
    rows = [{"top1": 0.70, "top1_ci95": 0.05}, {"top1": 0.80, "top1_ci95": None}]
    low, high = _top1_range(rows)
    assert 0.60 <= low < 0.65 and 0.80 < high <= 0.85
    assert _top1_range([{"top1": 0.99, "top1_ci95": 0.05}])[1] <= 1.02


def test_many_datasets_draw_a_page_of_panels_not_one_per_dataset(tmp_path):
    """600 datasets made a PNG 68,090 px tall and a report of minutes: past 12 panels the plot
    shows the first 12 and says so; the tables keep every dataset."""
    from PIL import Image

    from tlbench.report.plots import MAX_PANELS

    datasets = [f"task{i:02d}" for i in range(MAX_PANELS + 5)]
    write_all(tmp_path, [record(d, "lite0", s, 0, 0.5 + 0.01 * i, train_s=1.0 + i)
                         for i, d in enumerate(datasets) for s in ("probe", "tune")])
    assert main(["report", "--results", str(tmp_path)]) == 0
    width, height = Image.open(tmp_path / GRID / "accuracy_vs_train_time.png").size
    assert height <= 1500 and width == 1000  # 4 lines of 3 panels and the legend
    assert all(f"### {d}\n" in (tmp_path / GRID / "leaderboard.md").read_text() for d in datasets)
