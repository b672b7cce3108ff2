"""Grid files: expansion into cells, run ids, and one clear error per mistake."""

import re
from pathlib import Path

import pytest

from tlbench.errors import ConfigError
from tlbench.grid import Settings, load_grid

BASE = """
name = "g"
backbones = ["test_efficientnet"]
strategies = ["linear_probe", "full_finetune"]
datasets = ["digits"]
"""


def test_grid_expands_to_every_combination(write_grid, registry):
    path = write_grid("""
        name = "combo"
        backbones = ["test_efficientnet", "test_vit"]
        strategies = ["linear_probe", "partial_unfreeze", "full_finetune"]
        datasets = ["digits", "textures"]
        seeds = [0, 1]
        [settings]
        epochs = 2
        [strategy.partial_unfreeze]
        blocks = 3
    """)
    grid = load_grid(str(path), registry)
    assert len(grid.cells) == 2 * 3 * 2 * 2
    assert len({c.run_id for c in grid.cells}) == len(grid.cells)
    assert {(c.backbone, c.strategy, c.dataset, c.seed) for c in grid.cells} == {
        (b, s, d, seed) for b in grid.backbones for s in grid.strategies
        for d in grid.datasets for seed in (0, 1)}
    unfreeze = next(c for c in grid.cells if c.strategy == "partial_unfreeze")
    assert unfreeze.strategy_options.blocks == 3
    assert unfreeze.settings.epochs == 2 and unfreeze.settings.batch_size == Settings().batch_size


def test_run_id_changes_with_any_option_and_only_then(write_grid, registry):
    def first_cell(extra=""):
        return load_grid(str(write_grid(BASE + extra)), registry).cells[0]

    plain = first_cell()
    assert first_cell().run_id == plain.run_id
    assert first_cell("[settings]\nepochs = 7\n").run_id != plain.run_id
    assert first_cell("[strategy.linear_probe]\nl2_max = 0.5\n").run_id != plain.run_id
    # a default written out explicitly is the same configuration
    assert first_cell("[settings]\nbatch_size = 64\n").run_id == plain.run_id
    # a score's options are tlbench rank's, not any cell's
    assert first_cell("[score.knn_accuracy]\nk = 5\n").run_id == plain.run_id


def test_score_tables_hold_the_options_rank_gives_each_score(write_grid, registry):
    grid = load_grid(str(write_grid(BASE + "[score.knn_accuracy]\nk = 5\n")), registry)
    assert grid.score_options["knn_accuracy"].k == 5
    assert grid.score_options["knn_accuracy"].temperature == 0.07  # the rest keep their defaults
    assert "logme" not in grid.score_options


def test_default_grid_is_valid_and_offline(registry):
    grid = load_grid(None, registry)
    assert grid.name == "offline-default"
    assert "efficientnet_lite0" in grid.backbones
    assert {"linear_probe", "partial_unfreeze", "full_finetune"} <= set(grid.strategies)
    assert len(grid.datasets) >= 2
    assert len(grid.seeds) >= 3  # every leaderboard row gets a real interval
    assert grid.settings.pretrained


@pytest.mark.parametrize("text, expected", [
    ('name = "g"\nbackbones = ["test_efficientnet"]\n', "needs a 'strategies' list"),
    (BASE + "colour = 3\n", "Unknown key 'colour'"),
    (BASE + "[setings]\nepochs = 2\n", "Did you mean 'settings'?"),
    (BASE + "[settings]\nepoch = 2\n", "Did you mean 'epochs'?"),
    (BASE + "[settings]\nepochs = \"three\"\n", "'epochs' in [settings] must be int"),
    (BASE + "[settings]\nepochs = 0\n", "epochs must be at least 1"),
    (BASE + "[settings]\nval_fraction = 1.5\n", "val_fraction must be between 0 and 1"),
    (BASE + "[settings]\ndevice = \"tpu\"\n", "device must be auto"),
    (BASE + "seeds = []\n", "'seeds'"),
    (BASE + "seeds = [0, 0]\n", "repeats a seed"),
    (BASE.replace('["digits"]', "[]"), "'datasets'"),
    (BASE.replace('"g"', '"../escape"'), "not a safe folder name"),
    (BASE.replace("linear_probe", "linar_probe"), "Did you mean: linear_probe, knn_probe?"),
    (BASE.replace('["digits"]', '["digit"]'), "Unknown dataset 'digit'"),
    (BASE + "[strategy.linear_probe]\nl3 = 1.0\n", "Unknown option 'l3' in [strategy.linear_probe]"),
    (BASE + "[strategy.linear_probe]\nl2_min = -1.0\n", "need 0 < l2_min"),
    (BASE + "[strategy.partial_unfreeze]\nblocks = 1\n", "does not use"),
    (BASE + "[score.knn_accuracy]\nkk = 5\n", "Unknown option 'kk' in [score.knn_accuracy]. Did you mean 'k'?"),
    (BASE + "[score.knn_acuracy]\nk = 5\n", "Unknown score 'knn_acuracy' in [score.knn_acuracy]"),
    (BASE + "[score.knn_accuracy]\nk = [5, 10]\n", "'k' in [score.knn_accuracy] must be int, got [5, 10]. "
                                                     "It takes one value: only a strategy's options take a list"),
    (BASE.replace('"digits"', '"textures"') + "[dataset.textures]\npatch_size = [16, 32]\n",
     "It takes one value: only a strategy's options take a list"),
    (BASE + "score = 3\n", "must be a table of [score.NAME] tables"),
    (BASE + "[settings\n", "not valid TOML"),
])
def test_config_mistakes_are_one_clear_error(write_grid, registry, text, expected):
    path = write_grid(text)
    with pytest.raises(ConfigError) as info:
        load_grid(str(path), registry)
    assert expected in str(info.value)


def test_malformed_toml_names_the_line(write_grid, registry):
    path = write_grid(BASE + "[settings]\nepochs = = 3\n")
    with pytest.raises(ConfigError, match=r"line 7"):
        load_grid(str(path), registry)


def test_missing_grid_file(registry, tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_grid(str(tmp_path / "absent.toml"), registry)


def test_numeric_option_lists_become_candidates(write_grid, registry):
    path = write_grid(BASE + "[strategy.full_finetune]\nlr = [1e-3, 3e-4]\nweight_decay = [0.0, 0.05]\n")
    cell = next(c for c in load_grid(str(path), registry).cells if c.strategy == "full_finetune")
    assert [(o.lr, o.weight_decay) for o in cell.strategy_candidates] == [
        (1e-3, 0.0), (1e-3, 0.05), (3e-4, 0.0), (3e-4, 0.05)]
    assert len(cell.identity()["strategy_options"]) == 4


@pytest.mark.parametrize("table, expected", [
    ("lr = []", "empty list"),
    ("lr = [1e-3, 1e-3]", "lists a value twice"),
    ("lr = [1e-3, -1.0]", "lr must be > 0"),
    ("lr = [1e-3, \"fast\"]", "must be float"),
])
def test_bad_option_lists_are_config_errors(write_grid, registry, table, expected):
    path = write_grid(BASE + f"[strategy.full_finetune]\n{table}\n")
    with pytest.raises(ConfigError, match=expected):
        load_grid(str(path), registry)


def test_a_settings_list_makes_a_curve_one_cell_per_value(write_grid, registry):
    path = write_grid(BASE + "[settings]\ntrain_per_class = [1, 5, 10, 25]\n")
    grid = load_grid(str(path), registry)
    assert len(grid.cells) == 4 * 2  # values × strategies (one backbone, dataset and seed)
    shots = sorted({c.settings.train_per_class for c in grid.cells})
    assert shots == [1, 5, 10, 25]
    cell = next(c for c in grid.cells if c.settings.train_per_class == 5)
    assert cell.sweep == (("train_per_class", 5),)
    assert cell.task == f"{cell.dataset} (train_per_class=5)" and cell.task in cell.label
    assert len({c.run_id for c in grid.cells}) == len(grid.cells)


def test_new_settings_at_their_default_leave_existing_run_ids_alone(write_grid, registry):
    plain = load_grid(str(write_grid(BASE)), registry).cells[0]
    assert "train_size" not in plain.identity()["settings"]
    explicit = load_grid(str(write_grid(BASE + "[settings]\ntrain_size = 0\ntest_size = 0\n")), registry).cells[0]
    assert explicit.run_id == plain.run_id
    vtab = load_grid(str(write_grid(BASE + "[settings]\ntrain_size = 1000\n")), registry).cells[0]
    assert vtab.run_id != plain.run_id


@pytest.mark.parametrize("table, expected", [
    ("batch_size = [16, 32]", "'batch_size' in [settings] takes one value"),
    ("train_per_class = []", "must list distinct values"),
    ("train_per_class = [5, 5]", "must list distinct values"),
    ("train_per_class = [5, -1]", "train_per_class must be 0 (all) or a positive number"),
    ("train_size = [1000, 500]\ntrain_per_class = 5", "set one of them"),
    # 0 means "all" (or the native size): not a point on a curve's size axis
    ("train_size = [0, 300, 1000]", "'train_size' in [settings] lists 0, which means all labelled examples, "
                                    "not a size"),
    ("train_per_class = [5, 0]", "e.g. train_per_class = [5]; for all training examples, run a grid with "
                                 "train_per_class = 0 (one value, not a list)"),
    ("image_size = [0, 64]", "lists 0, which means each backbone's own input size"),
])
def test_bad_settings_lists_are_config_errors(write_grid, registry, table, expected):
    with pytest.raises(ConfigError, match=re.escape(expected)):
        load_grid(str(write_grid(BASE + f"[settings]\n{table}\n")), registry)


@pytest.mark.parametrize("path", sorted((Path(__file__).parent.parent / "grids").glob("*.toml")), ids=lambda p: p.stem)
def test_every_published_grid_file_loads(path, registry):
    grid = load_grid(str(path), registry)
    assert grid.name == path.stem and grid.cells
