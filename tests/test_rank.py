"""Transferability scores (LogME, H-score, kNN accuracy) and `tlbench rank`."""

import json

import numpy as np
import pytest
from scipy import optimize, stats

from tlbench.rank import kendall_tau
from tlbench_plugins.scores import h_score, knn_accuracy, logme


def labelled(n=300, classes=5, seed=0):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, classes, n)
    return rng, labels


# -- LogME -------------------------------------------------------------------------------------


def test_logme_ranks_features_that_are_the_labels_above_noise():
    rng, labels = labelled()
    one_hot = np.eye(5)[labels] + 0.01 * rng.normal(size=(300, 5))
    noise = rng.normal(size=(300, 5))
    half = np.where(rng.random((300, 1)) < 0.5, np.eye(5)[labels], noise)  # labels for half the images
    assert logme(one_hot, labels) > logme(half, labels) > logme(noise, labels)


def test_logme_is_unchanged_by_a_global_scale_or_a_rotation_of_the_features():
    # the evidence depends on F only through F F' / alpha: alpha absorbs a scale, F Q Q' F' = F F'
    rng, labels = labelled(n=40, classes=3)
    features = rng.normal(size=(40, 60))  # more features than images, as with real backbones
    rotation, _ = np.linalg.qr(rng.normal(size=(60, 60)))
    reference = logme(features, labels)
    for transformed in (features * 1e-3, features * 7.0, features * 1e4, features @ rotation):
        assert logme(transformed, labels) == pytest.approx(reference, rel=1e-9)


def test_logme_does_change_with_per_feature_scaling_or_a_shift():
    # isotropic prior, no intercept: these are not symmetries of the model, so LogME moves
    rng, labels = labelled(n=40, classes=3)
    features = rng.normal(size=(40, 60))
    reference = logme(features, labels)
    assert abs(logme(features * rng.uniform(0.1, 10, 60), labels) - reference) > 1e-3
    assert abs(logme(features + 1.0, labels) - reference) > 1e-3


def test_logme_of_orthonormal_features_by_hand():
    # F = I: y ~ N(0, v I) with v = 1/alpha + 1/beta, best at v = |y|^2 / N = 1/2 for both
    # classes of [0, 1, 0, 1]; log evidence per image = -log(2 pi v) / 2 - 1/2 = -(log pi + 1) / 2
    assert logme(np.eye(4), np.array([0, 1, 0, 1])) == pytest.approx(-(np.log(np.pi) + 1) / 2, rel=1e-9)


def test_logme_equals_the_brute_force_maximum_of_the_gaussian_evidence():
    rng, labels = labelled(n=12, classes=2, seed=3)
    features = rng.normal(size=(12, 3)) + labels[:, None]

    def best_evidence(y):
        def negative(log_ab):
            alpha, beta = np.exp(log_ab)
            cov = features @ features.T / alpha + np.eye(12) / beta
            return -stats.multivariate_normal(np.zeros(12), cov).logpdf(y)

        found = optimize.minimize(negative, x0=[0.0, 0.0], method="Nelder-Mead",
                                  options={"xatol": 1e-10, "fatol": 1e-12, "maxiter": 5000})
        return -found.fun / 12

    expected = np.mean([best_evidence((labels == c).astype(float)) for c in (0, 1)])
    assert logme(features, labels) == pytest.approx(expected, abs=1e-6)


def test_logme_is_deterministic():
    rng, labels = labelled(n=200, classes=4)
    features = rng.normal(size=(200, 50)).astype(np.float32)
    assert logme(features, labels) == logme(features.copy(), labels.copy())


# -- the other scores --------------------------------------------------------------------------


@pytest.mark.parametrize("score", [h_score, knn_accuracy])
def test_other_scores_rank_labels_above_noise(score):
    rng, labels = labelled()
    one_hot = np.eye(5)[labels] + 0.01 * rng.normal(size=(300, 5))
    assert score(one_hot, labels) > score(rng.normal(size=(300, 5)), labels)


def test_knn_accuracy_leaves_each_image_out_of_its_own_vote():
    labels = np.array([0, 1, 0, 1])  # each image's twin carries the other class
    features = np.array([[1.0, 0.0], [1.0, 0.01], [0.0, 1.0], [0.01, 1.0]])
    assert knn_accuracy(features, labels, k=1) == 0.0


# -- Kendall's tau -----------------------------------------------------------------------------


def test_kendall_tau_matches_scipy_within_one_group():
    rng = np.random.default_rng(1)
    forecast, measured = rng.normal(size=9), rng.normal(size=9)
    tau, compared = kendall_tau([list(zip(forecast, measured))])
    assert compared == 36 and tau == pytest.approx(stats.kendalltau(forecast, measured).statistic)


def test_kendall_tau_never_compares_across_groups():
    # within each dataset the forecast orders backbones exactly right, though its scale differs
    digits = [(10.0, 0.90), (20.0, 0.95)]
    textures = [(-5.0, 0.50), (-1.0, 0.60)]
    assert kendall_tau([digits, textures]) == (1.0, 2)
    assert kendall_tau([[(1.0, 0.5)]]) == (None, 0)


# -- the command -------------------------------------------------------------------------------


@pytest.fixture
def tiny_grid(write_grid, tiny_settings):
    def make(strategies='"linear_probe"', extra=""):
        return write_grid(f"""
            name = "zoo"
            backbones = ["test_efficientnet", "test_resnet", "test_vit"]
            strategies = [{strategies}]
            datasets = ["faces"]
            {tiny_settings}
            {extra}
        """)

    return make


def test_rank_scores_every_pair_from_the_probes_feature_cache_and_correlates(cli, tiny_grid, tmp_path):
    grid, results = tiny_grid(), tmp_path / "r"
    code, out, err = cli("run", "--grid", grid, "--results", results, "-q")
    assert code == 0, err
    code, out, err = cli("rank", "--grid", grid, "--results", results)
    assert code == 0, err
    ranking = json.loads((results / "zoo" / "rank.json").read_text())
    assert [(p["dataset"], p["backbone"]) for p in ranking["pairs"]] == [
        ("faces", "test_efficientnet"), ("faces", "test_resnet"), ("faces", "test_vit")]
    for pair in ranking["pairs"]:
        assert pair["info"]["feature_cache"] == "hit"  # the linear probe cells built them
        assert set(pair["scores"]) == {"logme", "h_score", "knn_accuracy"}
        assert all(np.isfinite(v) for v in pair["scores"].values())
        assert pair["best_strategy"] == "linear_probe" and 0 < pair["best_top1"] <= 1
    for score in ("logme", "h_score", "knn_accuracy"):
        tau = ranking["kendall_tau_vs_best"][score]
        assert tau["faces"]["pairs"] == 3 and tau["pooled"] == tau["faces"]
        forecast = [p["scores"][score] for p in ranking["pairs"]]
        measured = [p["best_top1"] for p in ranking["pairs"]]
        assert tau["faces"]["tau"] == pytest.approx(kendall_tau([list(zip(forecast, measured))])[0])
    assert "How far the forecast can be trusted" in out and "| logme |" in out
    csv = (results / "zoo" / "rank.csv").read_text().splitlines()
    assert csv[0].startswith("dataset,backbone,h_score,knn_accuracy,logme,") and len(csv) == 4


def test_rank_before_any_run_builds_features_and_says_how_to_get_correlations(cli, tiny_grid, tmp_path):
    code, out, err = cli("rank", "--grid", tiny_grid(), "--results", tmp_path / "r", "--scores", "logme")
    assert code == 0, err
    assert "No measured top-1 for these pairs yet" in out
    # tiny_settings has pretrained = false: the networks are labelled by what they are
    assert "pretrained weights" not in out and "random weights, not pretrained ones" in out
    assert "| faces | test_vit | random |" in out
    ranking = json.loads((tmp_path / "r" / "zoo" / "rank.json").read_text())
    assert ranking["scores"] == ["logme"] and {p["weights"] for p in ranking["pairs"]} == {"random"}
    assert {p["info"]["feature_cache"] for p in ranking["pairs"]} == {"miss"}
    assert not (tmp_path / "r" / "zoo" / "records").exists()  # ranking adds no empty grid to report


def test_rank_unknown_score_suggests_the_closest(cli, tiny_grid, tmp_path):
    code, out, err = cli("rank", "--grid", tiny_grid(), "--results", tmp_path, "--scores", "logmee")
    assert code == 2 and "Unknown score 'logmee'. Did you mean: logme?" in err and "Traceback" not in err


def test_a_grids_score_table_sets_that_scores_options(cli, tiny_grid, tmp_path):
    def knn_accuracies(extra=""):
        code, out, err = cli("rank", "--grid", tiny_grid(extra=extra), "--results", tmp_path / "r",
                             "--scores", "knn_accuracy", "-q")
        assert code == 0, err
        ranking = json.loads((tmp_path / "r" / "zoo" / "rank.json").read_text())
        return [p["scores"]["knn_accuracy"] for p in ranking["pairs"]]

    default, five = knn_accuracies(), knn_accuracies("[score.knn_accuracy]\nk = 5\n")
    assert default == knn_accuracies("[score.knn_accuracy]\nk = 20\n")  # the default written out
    assert five != default  # 5 neighbours vote, not 20
    # the ranking files say which options gave their numbers
    ranking = json.loads((tmp_path / "r" / "zoo" / "rank.json").read_text())
    assert ranking["score_options"] == {"knn_accuracy": {"k": 20, "temperature": 0.07}}
    knn_accuracies("[score.knn_accuracy]\nk = 5\n")
    ranking = json.loads((tmp_path / "r" / "zoo" / "rank.json").read_text())
    assert ranking["score_options"] == {"knn_accuracy": {"k": 5, "temperature": 0.07}}
    assert "`knn_accuracy` k = 5, temperature = 0.07" in (tmp_path / "r" / "zoo" / "rank.md").read_text()


def test_an_unknown_score_option_is_one_clear_error(cli, tiny_grid, tmp_path):
    code, out, err = cli("rank", "--grid", tiny_grid(extra="[score.knn_accuracy]\nneighbours = 5\n"),
                         "--results", tmp_path)
    assert code == 2 and "Traceback" not in err
    (line,) = err.strip().splitlines()
    assert line.endswith("Unknown option 'neighbours' in [score.knn_accuracy]. Valid options: k, temperature")


def test_rank_needs_a_strategy_from_pretrained_weights(cli, tiny_grid, tmp_path):
    code, out, err = cli("rank", "--grid", tiny_grid('"scratch"'), "--results", tmp_path)
    assert code == 2 and "no strategy that starts from pretrained weights" in err


def test_rank_missing_grid_file_is_one_clear_error(cli, tmp_path):
    code, out, err = cli("rank", "--grid", tmp_path / "nope.toml", "--results", tmp_path)
    assert code == 2 and "not found" in err


def test_ls_scores_lists_the_first_party_scores(cli):
    code, out, err = cli("ls", "scores", "-v")
    assert code == 0
    names = [line.split()[0] for line in out.splitlines() if not line.startswith(" ")]
    assert names == ["h_score", "knn_accuracy", "logme"]
    assert "k (int, default 20)" in out


def test_a_third_party_score_from_a_plugins_folder_is_ranked(cli, tiny_grid, test_plugins_dir, tmp_path):
    # width (tests/plugins/scores.py): how many pre-logit features the network has
    code, out, err = cli("rank", "--grid", tiny_grid(), "--results", tmp_path / "r", "--scores", "width",
                         "--plugins-dir", test_plugins_dir)
    assert code == 0, err
    ranking = json.loads((tmp_path / "r" / "zoo" / "rank.json").read_text())
    assert [p["scores"]["width"] for p in ranking["pairs"]] == [256.0, 96.0, 64.0]


def test_a_score_that_fails_is_reported_and_the_rest_still_run(cli, tiny_grid, test_plugins_dir, tmp_path):
    # broken (tests/plugins/scores.py) raises RuntimeError("no luck")
    code, out, err = cli("rank", "--grid", tiny_grid(), "--results", tmp_path / "r", "--scores", "broken,logme",
                         "--plugins-dir", test_plugins_dir, "-q")
    assert code == 1
    assert "test_vit / faces / broken: RuntimeError: no luck" in out
    ranking = json.loads((tmp_path / "r" / "zoo" / "rank.json").read_text())
    assert all(p["scores"]["broken"] is None and p["scores"]["logme"] is not None for p in ranking["pairs"])


def test_listing_scores_does_not_import_torch():
    import subprocess
    import sys

    code = ("import sys; from tlbench.cli import main; main(['ls', 'scores']); "
            "print('torch' in sys.modules)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and done.stdout.strip().endswith("False"), done.stdout + done.stderr
