"""Racing (`tlbench run --race-seeds N`): seeds only where the best row is still tied, the rule in
the records, finished cells never rerun."""

import pytest

from tlbench.race import RULE, unsettled
from tlbench.results import iter_records


@pytest.fixture
def twin_plugins(tmp_path, test_plugins_dir):
    """head_only and an identical copy under another name: two rows that can never separate."""
    folder = tmp_path / "plugins"
    folder.mkdir()
    source = (test_plugins_dir / "head_only.py").read_text()
    (folder / "head_only.py").write_text(source)
    (folder / "head_only_twin.py").write_text(
        source.replace('"head_only"', '"head_only_twin"').replace("HeadOnly", "HeadOnlyTwin"))
    return folder


def grid_text(strategies, seeds, dataset="faces"):
    return f"""
        name = "race"
        backbones = ["test_efficientnet"]
        strategies = [{strategies}]
        datasets = ["{dataset}"]
        seeds = {seeds}
        [settings]
        image_size = 32
        epochs = 1
        batch_size = 32
        pretrained = false
    """


def test_tied_rows_get_seeds_until_the_cap_and_each_added_record_says_why(twin_plugins, write_grid, cli, tmp_path):
    grid = write_grid(grid_text('"head_only", "head_only_twin"', [0, 1]))
    results = tmp_path / "results"
    code, _, err = cli("run", "--grid", grid, "--results", results, "--plugins-dir", twin_plugins,
                       "--race-seeds", 4)
    assert code == 0, err
    assert "Racing, round 1: seed 2" in err and "Racing, round 2: seed 3" in err
    records = list(iter_records(results, "race"))
    seeds = {(r["strategy"], r["seed"]) for r in records}
    assert seeds == {(s, k) for s in ("head_only", "head_only_twin") for k in range(4)}
    for record in records:
        if record["seed"] < 2:
            assert "race" not in record
        else:
            assert record["race"] == {"round": record["seed"] - 1, "max_seeds": 4, "rule": RULE}
    board = (results / "race" / "leaderboard.json").read_text()
    assert '"seeds": 4' in board and '"raced_seeds": 2' in board  # the leaderboard counts the raced seeds
    markdown = (results / "race" / "leaderboard.md").read_text()
    assert "| 4 (2 raced) |" in markdown and "by a rule fixed before any result was read" in markdown
    assert "optional stopping" not in markdown

    # the same command again: the rule replays its rounds from the records, and runs nothing again
    before = {p.name: p.stat().st_mtime_ns for p in (results / "race" / "records").glob("*.json")}
    code, _, err = cli("run", "--grid", grid, "--results", results, "--plugins-dir", twin_plugins,
                       "--race-seeds", 4)
    assert code == 0 and err.count("2 of 2 cells already have records") == 2
    assert {p.name: p.stat().st_mtime_ns for p in (results / "race" / "records").glob("*.json")} == before


def test_a_best_row_already_separated_gets_no_more_seeds(test_plugins_dir, write_grid, cli, tmp_path):
    grid = write_grid(grid_text('"linear_probe", "always_zero"', [0], dataset="digits"))
    code, _, err = cli("run", "--grid", grid, "--results", tmp_path, "--plugins-dir", test_plugins_dir,
                       "--race-seeds", 3)
    assert code == 0, err
    assert "Racing" not in err
    assert {r["seed"] for r in iter_records(tmp_path, "race")} == {0}


def test_the_rule_races_only_the_best_and_rows_tied_with_it():
    rows = [
        {"dataset": "a", "backbone": "b", "strategy": "x", "top1": 0.9, "seeds": 3, "tied_with_best": True},
        {"dataset": "a", "backbone": "b", "strategy": "y", "top1": 0.88, "seeds": 3, "tied_with_best": True},
        {"dataset": "a", "backbone": "b", "strategy": "z", "top1": 0.5, "seeds": 3, "tied_with_best": False},
        {"dataset": "c", "backbone": "b", "strategy": "x", "top1": 0.9, "seeds": 3, "tied_with_best": True},
        {"dataset": "c", "backbone": "b", "strategy": "y", "top1": 0.7, "seeds": 3, "tied_with_best": False},
        {"dataset": "d", "backbone": "b", "strategy": "x", "top1": 0.9, "seeds": 5, "tied_with_best": True},
        {"dataset": "d", "backbone": "b", "strategy": "y", "top1": 0.9, "seeds": 5, "tied_with_best": True},
        {"dataset": "e", "backbone": "b", "strategy": "x", "top1": 0.9, "seeds": 1, "tied_with_best": True},
        {"dataset": "e", "backbone": "b", "strategy": "y", "top1": 0.2, "seeds": 1, "tied_with_best": None},
    ]
    assert unsettled(rows, max_seeds=5) == {"a": {("b", "x"), ("b", "y")}, "e": {("b", "x"), ("b", "y")}}


def test_a_cap_not_above_the_grid_seeds_and_ray_are_refused(write_grid, cli, tmp_path):
    grid = write_grid(grid_text('"linear_probe"', [0, 1]))
    code, _, err = cli("run", "--grid", grid, "--results", tmp_path, "--race-seeds", 2)
    assert code == 2 and "must be more than the grid's 2 seed(s)" in err
    code, _, err = cli("run", "--grid", grid, "--results", tmp_path, "--race-seeds", 5, "--executor", "ray")
    assert code == 2 and "--executor local or subprocess" in err


def test_seeds_a_person_adds_after_a_first_run_are_marked_as_added_later(write_grid, cli, tmp_path):
    first = write_grid(grid_text('"linear_probe"', [0], dataset="digits"))
    assert cli("run", "--grid", first, "--results", tmp_path, "-q")[0] == 0
    grown = write_grid(grid_text('"linear_probe"', [0, 1, 2], dataset="digits"), name="grown.toml")
    assert cli("run", "--grid", grown, "--results", tmp_path, "-q")[0] == 0
    markdown = (tmp_path / "race" / "leaderboard.md").read_text()
    assert "| 3 (2 added later) |" in markdown and "optional stopping" in markdown
    assert {r["seed"]: r["grid_seeds"] for r in iter_records(tmp_path, "race")} == {0: [0], 1: [0, 1, 2], 2: [0, 1, 2]}
