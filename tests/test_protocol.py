"""One protocol for every strategy: what each learns from, and tuning lists that say when
validation preferred an edge."""

import textwrap

import pytest

from tlbench.results import iter_records
from tlbench.runner import edge_picks


@pytest.fixture
def digits_grid(write_grid, tiny_settings):
    """A grid of test_efficientnet on digits (tiny settings): ``digits_grid(name, strategies, extra)``."""

    def write(name, strategies='"linear_probe"', extra=""):
        return write_grid(f"""
            name = "{name}"
            backbones = ["test_efficientnet"]
            strategies = [{strategies}]
            datasets = ["digits"]
            {tiny_settings}
        """ + textwrap.dedent(extra), name=f"{name}.toml")

    return write


def test_a_value_chosen_at_the_edge_of_its_list_is_warned_about():
    candidates = [{"lr": lr, "layers": 2} for lr in (1e-4, 3e-4, 1e-3)]
    (largest,) = edge_picks(candidates, 2)
    assert "lr = 0.001" in largest and "largest" in largest and "extend the list" in largest
    (smallest,) = edge_picks(candidates, 0)
    assert "smallest" in smallest
    assert edge_picks(candidates, 1) == []  # inside the range: nothing to say
    assert edge_picks(candidates[:2], 1) == []  # two values have no inside


def test_edges_are_judged_per_option_in_a_product_of_lists():
    grid = [{"lr": lr, "alpha": a} for lr in (1e-4, 3e-4, 1e-3) for a in (0.1, 1.0, 10.0)]
    chosen = grid.index({"lr": 3e-4, "alpha": 10.0})
    (warning,) = edge_picks(grid, chosen)
    assert warning.startswith("alpha = 10.0")


def test_an_edge_pick_reaches_the_record_and_the_progress_output(digits_grid, cli, tmp_path):
    grid = digits_grid("edge", extra="""
        [strategy.linear_probe]
        l2_max = [1000.0, 100.0, 0.001]
        l2_steps = 1
        max_iter = 50
    """)
    code, _, err = cli("run", "--grid", grid, "--results", tmp_path)
    assert code == 0, err
    (record,) = iter_records(tmp_path, "edge")
    assert record["options"]["l2_max"] == 0.001  # the weakest penalty fits digits best
    assert any("l2_max = 0.001" in w and "smallest" in w for w in record["warnings"])
    assert "l2_max = 0.001 was chosen" in err


def test_the_probe_learns_from_the_training_split_alone_like_every_trained_strategy(digits_grid, cli, tmp_path):
    grid = digits_grid("alike")
    assert cli("run", "--grid", grid, "--results", tmp_path, "-q")[0] == 0
    (record,) = iter_records(tmp_path, "alike")
    assert record["strategy_info"]["refit_on_val"] is False
    assert record["options"]["refit_on_val"] is False

    refit = digits_grid("refit", extra="""
        [strategy.linear_probe]
        refit_on_val = true
    """)
    assert cli("run", "--grid", refit, "--results", tmp_path, "-q")[0] == 0
    (record,) = iter_records(tmp_path, "refit")
    assert record["strategy_info"]["refit_on_val"] is True


def test_a_budget_table_gives_one_strategy_its_own_epochs(registry, write_grid):
    from tlbench.grid import load_grid

    plain = """
        name = "budgets"
        backbones = ["test_efficientnet"]
        strategies = ["linear_probe", "full_finetune"]
        datasets = ["digits"]
        [settings]
        epochs = 3
    """
    grid = load_grid(write_grid(plain + "[budget.full_finetune]\nepochs = 10\nbatch_size = 8\n"), registry)
    by_strategy = {cell.strategy: cell for cell in grid.cells}
    assert (by_strategy["full_finetune"].settings.epochs, by_strategy["full_finetune"].settings.batch_size) == (10, 8)
    assert by_strategy["linear_probe"].settings.epochs == 3
    unbudgeted = {cell.strategy: cell.run_id for cell in load_grid(write_grid(plain, name="plain.toml"), registry).cells}
    assert unbudgeted["linear_probe"] == by_strategy["linear_probe"].run_id  # untouched strategies keep their ids
    assert unbudgeted["full_finetune"] != by_strategy["full_finetune"].run_id


def test_a_wrong_budget_is_one_line_naming_the_fix(write_grid, cli, tmp_path):
    base = """
        name = "b"
        backbones = ["test_efficientnet"]
        strategies = ["full_finetune"]
        datasets = ["digits"]
    """
    for table, expected in (("[budget.linear_probe]\nepochs = 2", "does not use"),
                            ("[budget.full_finetune]\nimage_size = 64", "is not a budget"),
                            ("[budget.full_finetune]\nepochs = 0", "whole number >= 1")):
        code, _, err = cli("run", "--grid", write_grid(base + table), "--results", tmp_path)
        assert code == 2 and expected in err and "Traceback" not in err, err


def test_epochs_can_be_a_curve_but_not_also_a_budget(registry, write_grid):
    from tlbench.errors import ConfigError
    from tlbench.grid import load_grid

    text = """
        name = "budget-curve"
        backbones = ["test_efficientnet"]
        strategies = ["full_finetune"]
        datasets = ["digits"]
        [settings]
        epochs = [1, 3]
    """
    cells = load_grid(write_grid(text), registry).cells
    assert [(c.settings.epochs, c.sweep, c.task) for c in cells] == [
        (1, (("epochs", 1),), "digits (epochs=1)"), (3, (("epochs", 3),), "digits (epochs=3)")]
    with pytest.raises(ConfigError, match="lists as a curve"):
        load_grid(write_grid(text + "\n[budget.full_finetune]\nepochs = 5\n", name="both.toml"), registry)


def test_a_probe_on_a_warm_cache_is_charged_the_extraction_an_earlier_cell_paid(digits_grid, cli, tmp_path):
    import csv

    grid = digits_grid("warm")
    assert cli("run", "--grid", grid, "--results", tmp_path, "-q")[0] == 0
    (cold,) = iter_records(tmp_path, "warm")
    assert cold["strategy_info"]["feature_cache"] == "miss" and cold["strategy_info"]["cached_extraction_s"] == 0
    assert cli("run", "--grid", grid, "--results", tmp_path, "-q", "--force")[0] == 0
    (warm,) = iter_records(tmp_path, "warm")
    info = warm["strategy_info"]
    assert info["feature_cache"] == "hit" and info["cached_extraction_s"] > 0
    (row,) = csv.DictReader((tmp_path / "warm" / "leaderboard.csv").open())
    assert float(row["fit_s"]) == pytest.approx(warm["train_s"] + info["cached_extraction_s"], rel=1e-5)  # CSV: 6 significant digits


def test_a_row_whose_seeds_mostly_chose_one_end_of_its_list_is_flagged():
    from tlbench.report.board import _edge_picks

    def record(selected, lrs=(1e-3, 3e-3)):
        return {"candidates": [{"options": {"lr": lr, "blocks": 2}} for lr in lrs], "selected": selected}

    (note,) = _edge_picks([record(1), record(1), record(1)])
    assert note.startswith("lr: 3 of 3 seeds chose the largest value")
    assert _edge_picks([record(1), record(0), record(1)]) == []  # validation disagrees: 2 of 3 is not enough
    (eight,) = _edge_picks([record(1)] * 8 + [record(0)] * 2)
    assert eight.startswith("lr: 8 of 10 seeds chose the largest value")
    assert _edge_picks([record(1)]) == []  # one seed says little
    assert _edge_picks([record(1, (1, 2, 3)), record(1, (1, 2, 3))]) == []  # the middle value
    assert "smallest" in _edge_picks([record(0), record(0)])[0]


def test_a_tuned_probe_is_charged_one_extraction_whichever_candidate_wins(digits_grid, cli, tmp_path,
                                                                          monkeypatch):
    import csv

    for name, order in (("first", "[0.001, 1000.0, 100.0]"), ("last", "[1000.0, 100.0, 0.001]")):
        grid = digits_grid(name, extra=f"""
            [strategy.linear_probe]
            l2_max = {order}
            l2_steps = 1
            max_iter = 50
        """)
        monkeypatch.setenv("TLBENCH_CACHE_DIR", str(tmp_path / f"cache-{name}"))  # cold for each order
        assert cli("run", "--grid", grid, "--results", tmp_path, "-q")[0] == 0
        (record,) = iter_records(tmp_path, name)
        assert record["options"]["l2_max"] == 0.001
        assert record["candidates"][0]["strategy_info"]["cached_extraction_s"] == 0  # it extracted
        (row,) = csv.DictReader((tmp_path / name / "leaderboard.csv").open())
        assert float(row["fit_s"]) == pytest.approx(record["selection_s"], rel=1e-5)  # nothing added twice


NEAREST_MEAN = '''
import tlbench


class NearestMean(tlbench.Strategy):
    """A third-party probe: each class's mean frozen feature; the nearest mean answers."""

    name = "nearest_mean"

    def fit(self, model, train, val, ctx):
        import torch

        model.eval().requires_grad_(False)
        (features,) = ctx.frozen_features(model, [train])
        labels = train.labels.to(ctx.device)
        means = torch.stack([features[labels == c].mean(0) for c in range(ctx.num_classes)])
        head = model.get_classifier()
        with torch.no_grad():  # argmax of 2 m.x - |m|^2 is the nearest mean
            head.weight.copy_(2 * means)
            head.bias.copy_(-(means ** 2).sum(1))
        head.requires_grad_(True)
        return model


@tlbench.hookimpl
def register_strategies(register):
    register(NearestMean)
'''


def test_a_third_party_probe_shares_the_frozen_features_and_their_accounting(digits_grid, cli, tmp_path):
    plugins = tmp_path / "plugins"
    plugins.mkdir()
    (plugins / "nearest_mean.py").write_text(NEAREST_MEAN)
    grid = digits_grid("third", '"linear_probe", "nearest_mean"')
    code, _, err = cli("run", "--grid", grid, "--results", tmp_path, "--plugins-dir", plugins, "-q")
    assert code == 0, err
    records = {r["strategy"]: r for r in iter_records(tmp_path, "third")}
    caches = sorted(r["strategy_info"]["feature_cache"] for r in records.values())
    assert caches == ["hit", "miss"]  # whichever ran second read what the first extracted
    reader = next(r for r in records.values() if r["strategy_info"]["feature_cache"] == "hit")
    assert reader["strategy_info"]["cached_extraction_s"] > 0
    assert records["nearest_mean"]["top1"] > 0.3  # digits: ten classes, chance is 0.1
