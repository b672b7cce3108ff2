"""The statistics behind an honest "best": each against a hand computation and, where scipy has
it, against scipy; then the tie rule, and how the leaderboard files show it."""

import json
import math
import re

import numpy as np
import pytest
import scipy.stats

from tlbench import predictions
from tlbench.report import build_leaderboard, terminal_summary
from tlbench.report.significance import _cliques, compare, judge_task
from tlbench.report.stats import (friedman, holm, mcnemar_exact_p, paired_t_p, probability_of_improvement,
                                  stratified_bootstrap_ci)

from test_report import GRID, md_table, read_csv, record, report, write_all

# -- paired t-test --------------------------------------------------------------------------------


def test_paired_t_test_on_a_hand_computed_case():
    # differences 0.01, 0.02, 0.03: mean 0.02, s 0.01, t = 0.02 / (0.01 / sqrt 3) = sqrt 12; with
    # 2 degrees of freedom P(T > t) = (1 - t / sqrt(t^2 + 2)) / 2, so p = 1 - sqrt(12 / 14)
    assert paired_t_p([0.01, 0.02, 0.03]) == pytest.approx(1 - math.sqrt(12 / 14), rel=1e-9)  # 0.0742


@pytest.mark.parametrize("n", [2, 3, 5, 10])
def test_paired_t_test_is_scipys_ttest_rel(n):
    rng = np.random.default_rng(n)
    a, b = rng.uniform(0.6, 0.9, n), rng.uniform(0.6, 0.9, n)
    assert paired_t_p(list(a - b)) == pytest.approx(scipy.stats.ttest_rel(a, b).pvalue, rel=1e-9)


def test_paired_t_test_without_noise_or_without_pairs():
    assert paired_t_p([0.02, 0.02, 0.02]) == 0.0  # every seed says the same nonzero difference
    assert paired_t_p([0.0, 0.0]) == 1.0
    assert paired_t_p([0.05]) is None and paired_t_p([]) is None


# -- Holm ------------------------------------------------------------------------------------------


def test_holm_on_a_hand_computed_case():
    # sorted: 0.005*4 = 0.02, 0.01*3 = 0.03, 0.03*2 = 0.06, 0.04*1 = 0.04 -> monotone: 0.06
    assert holm([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    assert holm([0.4, 0.6]) == pytest.approx([0.8, 0.8])
    assert holm([0.9, 0.8]) == [1.0, 1.0]  # capped at 1
    assert holm([None, 0.02, None]) == [None, 0.02, None]  # a missing p-value is not in the family
    assert holm([]) == []


def test_mcnemar_exact_on_hand_computed_cases():
    assert mcnemar_exact_p(0, 5) == 2 / 2 ** 5  # all five discordant images favour one model
    assert mcnemar_exact_p(9, 1) == 2 * (1 + 10) / 2 ** 10
    assert mcnemar_exact_p(4, 4) == 1.0 and mcnemar_exact_p(0, 0) == 1.0


@pytest.mark.parametrize("b, c", [(0, 1), (3, 12), (12, 3), (40, 55), (7, 7), (250, 310), (0, 60), (9500, 10500)])
def test_mcnemar_exact_is_scipys_binomial_test(b, c):
    assert mcnemar_exact_p(b, c) == pytest.approx(scipy.stats.binomtest(b, b + c, 0.5).pvalue, rel=1e-9)


# -- across tasks ----------------------------------------------------------------------------------


def test_stratified_bootstrap_resamples_seeds_within_each_task():
    # one task of two seeds 0 and 1: a resample's mean is 0, 0.5 or 1 (probabilities 1/4, 1/2,
    # 1/4), so the 2.5% and 97.5% percentiles of 2,000 resamples are 0 and 1
    assert stratified_bootstrap_ci([[0.0, 1.0]]) == (0.0, 1.0)
    # a task with one seed never moves; the mean over tasks halves the other's spread
    assert stratified_bootstrap_ci([[0.5], [0.0, 1.0]]) == (0.25, 0.75)
    assert stratified_bootstrap_ci([[0.7, 0.7, 0.7], [0.9, 0.9]]) == pytest.approx((0.8, 0.8))
    assert stratified_bootstrap_ci([[0.7], [0.9]]) == (None, None)  # nothing to resample
    assert stratified_bootstrap_ci([]) == (None, None)


def test_stratified_bootstrap_is_the_percentile_interval_of_resampled_task_means():
    tasks = [[0.71, 0.74, 0.69], [0.80, 0.86, 0.83, 0.79]]
    # the same draws by hand: numpy's legacy RandomState stream is frozen across versions
    draws = np.random.RandomState(0)
    means = np.zeros(2000)
    for values in tasks:
        picks = (draws.random_sample((2000, len(values))) * len(values)).astype(int)
        means += np.array(values)[picks].mean(axis=1) / len(tasks)
    low, high = stratified_bootstrap_ci(tasks)
    assert (low, high) == pytest.approx(tuple(np.percentile(means, [2.5, 97.5])), abs=1e-12)
    point = np.mean([np.mean(v) for v in tasks])
    assert low < point < high and high - low < 0.05
    assert stratified_bootstrap_ci(tasks) == (low, high)  # the same records, the same interval


def test_probability_of_improvement_on_a_hand_computed_case():
    # task 1: of the 6 pairs, 1 vs 2 loses twice, 2 vs 2 ties twice (1/2 each), 3 vs 2 wins twice
    # -> 3/6; task 2: 5 beats 1 -> 1; averaged over tasks: 0.75
    assert probability_of_improvement([([1, 2, 3], [2, 2]), ([5], [1])]) == 0.75
    assert probability_of_improvement([([1], [2])]) == 0.0
    assert probability_of_improvement([([], [1])]) is None


def test_probability_of_improvement_is_the_mann_whitney_u_over_pairs():
    x, y = [0.81, 0.79, 0.83, 0.80], [0.80, 0.78, 0.82]
    u = scipy.stats.mannwhitneyu(x, y).statistic  # U of the first sample, ties counting 1/2
    assert probability_of_improvement([(x, y)]) == pytest.approx(u / (len(x) * len(y)))


def test_friedman_is_scipys_and_its_mean_ranks_are_hand_computed():
    scores = [[0.90, 0.80, 0.70], [0.85, 0.86, 0.60], [0.70, 0.70, 0.50], [0.95, 0.90, 0.91],
              [0.60, 0.50, 0.55]]
    test = friedman(scores)
    # ranks per task (1 = best): 1 2 3 | 2 1 3 | 1.5 1.5 3 | 1 3 2 | 1 3 2
    assert test.mean_ranks == pytest.approx([6.5 / 5, 10.5 / 5, 13 / 5])
    expected = scipy.stats.friedmanchisquare(*zip(*scores))
    assert test.statistic == pytest.approx(expected.statistic, rel=1e-12)
    assert test.p_value == pytest.approx(expected.pvalue, rel=1e-12)


def test_nemenyi_critical_difference_matches_demsars_table():
    # Demšar (2006), table 5a: q_0.05 = 1.960, 2.343, 2.569, 2.728 for k = 2..5 models;
    # CD = q sqrt(k (k + 1) / (6 N))
    for k, q in [(2, 1.960), (3, 2.343), (4, 2.569), (5, 2.728)]:
        scores = [[float(j == t % k) for j in range(k)] for t in range(6)]
        assert friedman(scores).critical_difference == pytest.approx(q * math.sqrt(k * (k + 1) / 36), abs=2e-3)


def test_diagram_bars_join_rows_whose_ranks_lie_within_cd():
    assert _cliques([1.0, 1.5, 3.0, 3.2], 1.0) == [[0, 1], [2, 3]]
    assert _cliques([1.0, 1.8, 2.6], 1.0) == [[0, 1], [1, 2]]  # overlapping groups, none inside another
    assert _cliques([1.0, 3.0, 5.0], 1.0) == []


# -- the tie rule ----------------------------------------------------------------------------------


def runs(values, correct=None):
    """{seed: record} of one row's ok seeds, optionally with per-image right/wrong flags."""
    out = {}
    for seed, top1 in enumerate(values):
        rec = {"seed": seed, "top1": top1, "status": "ok", "split_digest": "abc"}
        if correct is not None:
            flags = np.asarray(correct[seed], dtype=bool)
            rec["predictions"] = predictions.encode(np.zeros(flags.size, dtype=int), flags)
        out[seed] = rec
    return out


def row(top1):
    return {"top1": top1}


def test_rows_whose_seed_differences_straddle_zero_are_tied():
    best, other = [0.90, 0.92, 0.94], [0.89, 0.93, 0.92]  # differences -0.01, +0.01, -0.02
    got = compare(row(0.913), runs(other), row(0.92), runs(best))
    assert got["tied_with_best"] is True and got["tie_test"] == "seeds"
    assert got["difference"] == pytest.approx(-0.02 / 3)
    assert got["difference_ci95"] == pytest.approx(scipy.stats.t.ppf(0.975, 2) * np.std([-0.01, 0.01, -0.02], ddof=1)
                                                    / math.sqrt(3))
    assert got["p_value"] == pytest.approx(scipy.stats.ttest_rel(other, best).pvalue)


def test_rows_a_consistent_gap_behind_are_separated():
    best, other = [0.90, 0.92, 0.94], [0.85, 0.86, 0.89]  # 5, 6 and 5 points behind on every seed
    got = compare(row(0.867), runs(other), row(0.92), runs(best))
    assert got["tied_with_best"] is False and got["tie_test"] == "seeds"
    assert got["difference"] + got["difference_ci95"] < 0


def test_one_seed_without_predictions_judges_nothing():
    got = compare(row(0.80), runs([0.80]), row(0.95), runs([0.95]))
    assert got["tied_with_best"] is None and got["tie_test"] is None and got["p_value"] is None
    # seeds that do not overlap cannot be paired either
    got = compare(row(0.80), {1: runs([0.0, 0.80])[1]}, row(0.95), runs([0.95]))
    assert got["paired_seeds"] == 0 and got["tied_with_best"] is None


def test_equal_top1_is_a_tie_even_with_one_seed():
    got = compare(row(0.95), runs([0.95]), row(0.95), runs([0.95]))
    assert got["tied_with_best"] is True and got["tie_test"] == "equal"


def flags(right, n=100):
    return [i < right for i in range(n)]


def test_one_seed_with_predictions_is_judged_by_mcnemar_over_the_images():
    # the best is right on images 0-89; the other on 0-79: 10 discordant images, all the best's
    got = compare(row(0.80), runs([0.80], [flags(80)]), row(0.90), runs([0.90], [flags(90)]))
    assert got["tie_test"] == "images" and got["images"] == 100
    assert got["p_images"] == pytest.approx(scipy.stats.binomtest(0, 10).pvalue) and got["tied_with_best"] is False
    got = compare(row(0.88), runs([0.88], [flags(88)]), row(0.90), runs([0.90], [flags(90)]))
    assert got["p_images"] == 0.5 and got["tied_with_best"] is True  # 2 discordant images: p = 2 / 4


def test_two_seeds_with_predictions_pool_each_seeds_discordant_images():
    # 3 discordant images on each seed: p = 0.25 alone, 6 pooled: p = 2 / 64, separated
    best = runs([0.90, 0.90], [flags(90), flags(90)])
    got = compare(row(0.87), runs([0.87, 0.87], [flags(87), flags(87)]), row(0.90), best)
    assert (got["tie_test"], got["images"], got["p_images"]) == ("images", 200, 2 / 64)
    assert got["tied_with_best"] is False
    assert got["p_value"] == 1.0 or got["p_value"] == 0.0  # the seeds alone: no spread to test against


def test_three_seeds_are_judged_by_the_seeds_even_with_predictions():
    best = runs([0.90, 0.91, 0.92], [flags(90), flags(91), flags(92)])
    other = runs([0.89, 0.92, 0.90], [flags(89), flags(92), flags(90)])
    got = compare(row(0.903), other, row(0.91), best)
    assert got["tie_test"] == "seeds" and got["tied_with_best"] is True and got["p_images"] is not None


def test_predictions_of_other_test_images_are_not_paired():
    best = runs([0.90], [flags(90)])
    other = runs([0.80], [flags(80, n=120)])  # another number of test images
    assert compare(row(0.8), other, row(0.9), best)["tied_with_best"] is None
    other = runs([0.80], [flags(80)])
    other[0]["split_digest"] = "other"
    assert compare(row(0.8), other, row(0.9), best)["p_images"] is None


def test_the_tied_group_shares_rank_one_and_the_rest_keep_their_place():
    values = {"best": [0.90, 0.92, 0.94], "close_but_steady": [0.89, 0.91, 0.93],
              "noisy": [0.80, 0.95, 0.90], "far": [0.50, 0.52, 0.51]}
    rows = [{"dataset": "d", "backbone": "b", "strategy": name, "top1": float(np.mean(v))}
            for name, v in sorted(values.items(), key=lambda kv: -np.mean(kv[1]))]
    table = judge_task(rows, lambda r: runs(values[r["strategy"]]))
    got = {r["strategy"]: (r["rank"], r["best"], r["tied_with_best"]) for r in rows}
    # close_but_steady is 1 point behind on every seed: separated; noisy is further behind on
    # average but its differences straddle zero: tied (not separated, which is not "as good")
    assert got == {"best": (1.0, True, True), "close_but_steady": (2.0, False, False),
                   "noisy": (1.0, True, True), "far": (4.0, False, False)}
    assert [r["strategy"] for r in table] == ["close_but_steady", "noisy", "far"]
    assert [r["p_holm"] for r in table] == pytest.approx(holm([r["p_value"] for r in table]))


# -- in the leaderboard files ----------------------------------------------------------------------


def three_seeds(dataset, strategy, values, **extra):
    return [record(dataset, "lite0", strategy, seed, v, **extra) for seed, v in enumerate(values)]


def test_every_row_tied_with_the_best_is_bold_and_says_so_in_every_file(tmp_path, cli):
    write_all(tmp_path, [*three_seeds("digits", "linear_probe", [0.90, 0.92, 0.94]),
                         *three_seeds("digits", "lp_ft", [0.89, 0.93, 0.92]),  # tied
                         *three_seeds("digits", "full_finetune", [0.85, 0.86, 0.89]),  # separated
                         *three_seeds("digits", "scratch", [0.50, 0.52, 0.51], pretrained=False)])
    folder = report(cli, tmp_path)
    md = (folder / "leaderboard.md").read_text()
    rows = md_table(md, "### digits")
    assert [(r["strategy"], r["top-1"], r["rank"]) for r in rows] == [
        ("linear_probe", "**0.920 ± 0.050**", "1"), ("lp_ft", "**0.913 ± 0.052**", "1"),
        ("full_finetune", "0.867 ± 0.052", "3"), ("scratch", "0.510 ± 0.025", "4")]
    pairwise = md_table(md, "Against the best, lite0 / linear_probe:")
    assert [(r["strategy"], r["n"], r["tied"]) for r in pairwise] == [
        ("lp_ft", "3", "yes"), ("full_finetune", "3", "no"), ("scratch", "3", "no")]
    assert pairwise[0]["minus best"] == "**-0.007 ± 0.038**" and pairwise[0]["p"] == "0.529"
    assert "ties cannot be judged" not in md

    document = json.loads((folder / "leaderboard.json").read_text())
    tied = {r["strategy"]: r["tied_with_best"] for r in document["per_dataset"]}
    assert tied == {"linear_probe": True, "lp_ft": True, "full_finetune": False, "scratch": False}
    by_strategy = {r["strategy"]: r for r in document["pairwise"]}
    assert by_strategy["full_finetune"]["p_value"] == pytest.approx(
        scipy.stats.ttest_rel([0.85, 0.86, 0.89], [0.90, 0.92, 0.94]).pvalue, abs=1e-9)
    assert [r["p_holm"] for r in document["pairwise"]] == pytest.approx(
        holm([r["p_value"] for r in document["pairwise"]]), abs=1e-9)
    assert {r["strategy"]: r["tied_with_best"] for r in read_csv(folder / "leaderboard.csv")} == {
        "linear_probe": "True", "lp_ft": "True", "full_finetune": "False", "scratch": "False"}

    overall = {r["strategy"]: r for r in read_csv(folder / "leaderboard_overall.csv")}
    assert overall["lp_ft"]["mean_rank"] == "1" and overall["lp_ft"]["wins"] == "1"
    assert float(overall["full_finetune"]["p_improvement"]) == 1.0 and overall["scratch"]["p_improvement"] == ""
    low, high = float(overall["lp_ft"]["mean_top1_low"]), float(overall["lp_ft"]["mean_top1_high"])
    assert 0.89 <= low < 0.9133 < high <= 0.93

    html = (folder / "leaderboard.html").read_text()
    table = html.split('id="table-dataset-digits"', 1)[1].split("</table>", 1)[0]
    assert re.findall(r'<tr data-index="(\d)" class="best"', table) == ["0", "1"]  # highlighted, both
    table = html.split('id="table-pairwise-digits"', 1)[1].split("</table>", 1)[0]
    assert re.findall(r'<tr data-index="(\d)" class="best"', table) == ["0"]
    marked = [line.split("|")[3].strip() for line in terminal_summary(build_leaderboard(tmp_path, GRID)).splitlines()
              if " *" in line and line.startswith("|")]
    assert marked == ["linear_probe", "lp_ft"]


def test_one_seed_without_predictions_says_ties_cannot_be_judged(tmp_path, cli):
    write_all(tmp_path, [record("digits", "lite0", "linear_probe", 0, 0.90),
                         record("digits", "lite0", "lp_ft", 0, 0.89)])
    folder = report(cli, tmp_path)
    md = (folder / "leaderboard.md").read_text()
    assert [r["top-1"] for r in md_table(md, "### digits")] == ["**0.900**", "0.890"]
    assert "One seed: ties cannot be judged for lite0 / lp_ft" in md
    document = json.loads((folder / "leaderboard.json").read_text())
    assert [r["tied_with_best"] for r in document["per_dataset"]] == [True, None]
    assert [r["tied_with_best"] for r in read_csv(folder / "leaderboard.csv")] == ["True", ""]


def test_one_seed_with_predictions_is_judged_over_the_test_images(tmp_path, cli):
    def scored(strategy, right):
        rec = record("digits", "lite0", strategy, 0, right / 100)
        rec["predictions"] = predictions.encode(np.zeros(100, dtype=int), np.array(flags(right)))
        return rec

    write_all(tmp_path, [scored("linear_probe", 90), scored("lp_ft", 88), scored("scratch", 60)])
    folder = report(cli, tmp_path)
    md = (folder / "leaderboard.md").read_text()
    assert [r["top-1"] for r in md_table(md, "### digits")] == ["**0.900**", "**0.880**", "0.600"]
    pairwise = md_table(md, "Against the best, lite0 / linear_probe:")
    assert [(r["images"], r["McNemar p"], r["tied"]) for r in pairwise] == [
        ("100", "0.500", "yes (images)"), ("100", "<0.001", "no (images)")]
    assert "ties cannot be judged" not in md and "McNemar p = exact McNemar test" in md


def test_five_datasets_draw_a_critical_difference_diagram_and_fewer_do_not(tmp_path, cli):
    tasks = ["a", "b", "c", "d", "e"]
    offsets = {"linear_probe": 0.0, "lp_ft": 0.02, "scratch": -0.3}
    write_all(tmp_path, [record(task, "lite0", strategy, seed, 0.6 + offset + 0.01 * i + 0.005 * seed)
                         for i, task in enumerate(tasks) for strategy, offset in offsets.items() for seed in (0, 1)])
    folder = report(cli, tmp_path)
    md = (folder / "leaderboard.md").read_text()
    assert "![Critical difference of mean ranks across datasets](critical_difference.png)" in md
    assert (folder / "critical_difference.png").read_bytes().startswith(b"\x89PNG")
    cd = json.loads((folder / "leaderboard.json").read_text())["critical_difference"]
    assert [(r["strategy"], r["mean_rank"]) for r in cd["rows"]] == [("lp_ft", 1), ("linear_probe", 2),
                                                                      ("scratch", 3)]
    # every dataset ranks the three the same way: scipy's Friedman statistic is 2 N = 10
    expected = scipy.stats.friedmanchisquare([0.62] * 5, [0.6] * 5, [0.3] * 5)
    assert cd["friedman_chi2"] == pytest.approx(expected.statistic) == pytest.approx(10.0)
    assert cd["critical_difference"] == pytest.approx(2.343 * math.sqrt(3 * 4 / 30), abs=2e-3)
    assert "Friedman's test over the 5 datasets" in md

    for task in tasks[2:]:  # two datasets left: no diagram, and the old one goes
        for path in (tmp_path / GRID / "records").glob("*.json"):
            if json.loads(path.read_text())["dataset"] == task:
                path.unlink()
    folder = report(cli, tmp_path)
    md = (folder / "leaderboard.md").read_text()
    assert "No critical-difference diagram: 2 datasets" in md and "critical_difference.png" not in md
    assert not (folder / "critical_difference.png").exists()
    assert json.loads((folder / "leaderboard.json").read_text())["critical_difference"]["drawn"] is False
