"""Warnings where a number cannot mean anything: collapsed features, chance-level scores."""

import json

import numpy as np
import pytest

from tlbench import sanity
from tlbench.decoding import Resample
from tlbench.results import iter_records


def test_chance_level_is_the_majority_class_within_two_standard_errors():
    labels = np.repeat([0, 1, 2, 3], [40, 20, 20, 20])  # majority 0.4, n = 100: band up to 0.498
    assert sanity.chance_top1(labels) == pytest.approx(0.4)
    assert sanity.at_chance(0.40, labels) and sanity.at_chance(0.49, labels)
    assert not sanity.at_chance(0.51, labels)
    assert "at chance level" in sanity.chance_warning(0.3, labels)
    assert "cannot be told from chance level" in sanity.chance_warning(0.45, labels)
    assert sanity.chance_warning(0.9, labels) is None


@pytest.mark.parametrize("labels, top1", [([0, 1], 1.0), ([0, 1, 1], 1.0), ([0, 1, 2], 1.0)])
def test_a_test_split_too_small_to_tell_is_said_not_called_chance(labels, top1):
    warning = sanity.chance_warning(top1, labels)
    assert "at chance level" not in warning and "cannot be told from chance" in warning
    assert f"on {len(labels)} test images" in warning and "use a larger test split" in warning


def test_a_perfect_score_on_enough_images_is_above_chance():
    assert sanity.chance_warning(1.0, [0, 1] * 3) is None  # 6 images: all right by chance has p = 1/64
    assert not sanity.at_chance(1.0, [0, 1] * 3)


def test_a_cell_at_chance_says_so_in_its_record_and_the_progress_output(write_grid, tiny_settings, cli,
                                                                        test_plugins_dir, tmp_path):
    grid = write_grid(f"""
        name = "chance"
        backbones = ["test_efficientnet"]
        strategies = ["always_zero", "linear_probe"]
        datasets = ["faces"]
        {tiny_settings}
    """)  # always_zero (tests/plugins/broken_results.py) answers class 0 whatever the image
    code, out, err = cli("run", "--grid", grid, "--results", tmp_path, "--plugins-dir", test_plugins_dir)
    assert code == 0, err
    records = {r["strategy"]: r for r in iter_records(tmp_path, "chance")}
    (warning,) = records["always_zero"]["warnings"]
    # faces: 20 faces and 20 non-faces to test on, so answering "face" scores 0.500
    assert "top-1 0.500 is at chance level" in warning and "scores 0.500 on these 40 test images" in warning
    assert records["linear_probe"]["warnings"] == []
    assert f"WARNING: {warning}" in err
    board = json.loads((tmp_path / "chance" / "leaderboard.json").read_text())
    flagged = [row["strategy"] for row in board["per_dataset"] if row.get("warnings")]
    assert flagged == ["always_zero"]


@pytest.fixture(scope="module")
def lite0(registry):
    from tlbench.options import build_options

    backbone = registry.get("backbones", "efficientnet_lite0")
    options = build_options(backbone.Options, {}, "[backbone.efficientnet_lite0]")
    return backbone(options).create("efficientnet_lite0", num_classes=10, pretrained=True)


def test_pretrained_features_collapse_at_32_px_and_not_at_64(lite0):
    from sklearn.datasets import load_digits

    samples = (load_digits().images * (255 / 16)).astype(np.uint8)
    ratio = {size: sanity.feature_scale_ratio(lite0.model, samples, np.arange(16), size, lite0.input_size,
                                             lite0.mean, lite0.std, Resample())
             for size in (32, 64)}
    assert ratio[32] < sanity.COLLAPSE_RATIO < ratio[64]
    assert "features collapse at 32 px" in sanity.collapse_warning(ratio[32], 32, lite0.input_size)
    assert sanity.collapse_warning(ratio[64], 64, lite0.input_size) is None
    assert lite0.model.training  # the check leaves the model as it found it


SMALL_LITE0_GRID = """
    name = "small"
    backbones = ["efficientnet_lite0"]
    strategies = ["linear_probe"]
    datasets = ["faces"]
    [settings]
    image_size = 32
"""  # efficientnet_lite0 (224 px) at 32 px: its features collapse


def test_a_cell_whose_features_collapse_says_so_before_it_is_read(write_grid, cli, tmp_path):
    grid = write_grid(SMALL_LITE0_GRID)
    code, out, err = cli("run", "--grid", grid, "--results", tmp_path)
    assert code == 0, err
    (record,) = iter_records(tmp_path, "small")
    collapse = [w for w in record["warnings"] if "features collapse at 32 px" in w]
    assert len(collapse) == 1 and "of their size at its own 224 px" in collapse[0]
    assert f"WARNING: {collapse[0]}" in err


def test_a_later_process_reads_the_collapse_check_instead_of_decoding_for_it(write_grid, registry, tmp_path,
                                                                              monkeypatch):
    """The ratio is kept in the cache folder: a fresh Runner (another process) setting the same
    cell up warns the same, and decodes no image for it."""
    from tlbench.grid import load_grid
    from tlbench.runner import Runner

    cell = load_grid(str(write_grid(SMALL_LITE0_GRID)), registry).cells[0]
    first = Runner(registry, tmp_path).setup(cell)
    assert any("features collapse at 32 px" in w for w in first.facts["warnings"])
    monkeypatch.setattr(sanity, "to_rgb_uint8", lambda *args: pytest.fail("decoded for the check again"))
    again = Runner(registry, tmp_path).setup(cell)
    assert again.facts["warnings"] == first.facts["warnings"]
