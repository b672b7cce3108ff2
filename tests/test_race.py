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
        threads = 1
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

    # the same command again: the leaderboard already counts the raced seeds, so nothing races or reruns
    before = {p.name: p.stat().st_mtime_ns for p in (results / "race" / "records").glob("*.json")}
    code, _, err = cli("run", "--grid", grid, "--results", results, "--plugins-dir", twin_plugins,
                       "--race-seeds", 4)
    assert code == 0 and "Racing" not in err
    assert {p.name: p.stat().st_mtime_ns for p in (results / "race" / "records").glob("*.json")} == before


def test_a_best_row_its_seeds_separate_gets_no_more_seeds(test_plugins_dir, write_grid, cli, tmp_path):
    grid = write_grid(grid_text('"linear_probe", "always_zero"', [0, 1, 2], dataset="digits"))
    code, _, err = cli("run", "--grid", grid, "--results", tmp_path, "--plugins-dir", test_plugins_dir,
                       "--race-seeds", 5)
    assert code == 0, err
    assert "Racing" not in err
    assert {r["seed"] for r in iter_records(tmp_path, "race")} == {0, 1, 2}


def test_one_seed_separated_only_over_test_images_still_races(test_plugins_dir, write_grid, cli, tmp_path):
    # McNemar over the test images separates these at once; it says nothing of the spread from
    # seed to seed, so the race goes on until the seeds judge
    grid = write_grid(grid_text('"linear_probe", "always_zero"', [0], dataset="digits"))
    code, _, err = cli("run", "--grid", grid, "--results", tmp_path, "--plugins-dir", test_plugins_dir,
                       "--race-seeds", 3)
    assert code == 0, err
    assert "Racing, round 1: seed 1" in err and "Racing, round 2: seed 2" in err
    assert {r["seed"] for r in iter_records(tmp_path, "race")} == {0, 1, 2}


def test_the_leaderboard_keeps_raced_seeds_whoever_writes_it(test_plugins_dir, write_grid, cli, tmp_path):
    import shutil

    plugins = tmp_path / "both"
    plugins.mkdir()
    shutil.copy(test_plugins_dir / "broken_results.py", plugins)
    (plugins / "probe_twin.py").write_text(
        "import tlbench\n"
        "from tlbench_plugins.strategies.linear_probe import LinearProbe\n\n\n"
        "class LinearProbeTwin(LinearProbe):\n"
        "    name = 'linear_probe_twin'\n\n\n"
        "@tlbench.hookimpl\n"
        "def register_strategies(register):\n"
        "    register(LinearProbeTwin)\n")
    grid = write_grid(grid_text('"linear_probe", "linear_probe_twin", "always_zero"', [0, 1, 2], dataset="digits"))
    results = tmp_path / "results"
    assert cli("run", "--grid", grid, "--results", results, "--plugins-dir", plugins, "--race-seeds", 4)[0] == 0
    seeds = {(r["strategy"], r["seed"]) for r in iter_records(results, "race")}
    assert ("linear_probe", 3) in seeds and ("linear_probe_twin", 3) in seeds and ("always_zero", 3) not in seeds

    def rows():
        import json

        board = json.loads((results / "race" / "leaderboard.json").read_text())
        return {r["strategy"]: (r["seeds"], r["status"]) for r in board["per_dataset"]}

    raced = {"linear_probe": (4, "ok"), "linear_probe_twin": (4, "ok"), "always_zero": (3, "ok")}
    assert rows() == raced
    # a plain run of the same grid, and a report from the records alone, show the same rows
    assert cli("run", "--grid", grid, "--results", results, "--plugins-dir", plugins)[0] == 0
    assert rows() == raced
    assert cli("report", "--results", results)[0] == 0
    assert rows() == raced


def test_the_rule_races_only_the_best_and_rows_tied_with_it():
    def row(task, strategy, top1, seeds, tied, test):
        return {"dataset": task, "backbone": "b", "strategy": strategy, "top1": top1, "seeds": seeds,
                "tied_with_best": tied, "tie_test": test}

    rows = [
        row("a", "x", 0.9, 3, True, "best"), row("a", "y", 0.88, 3, True, "seeds"), row("a", "z", 0.5, 3, False, "seeds"),
        row("c", "x", 0.9, 3, True, "best"), row("c", "y", 0.7, 3, False, "seeds"),
        row("d", "x", 0.9, 5, True, "best"), row("d", "y", 0.9, 5, True, "equal"),
        row("e", "x", 0.9, 1, True, "best"), row("e", "y", 0.2, 1, None, None),
        row("f", "x", 0.9, 2, True, "best"), row("f", "y", 0.3, 2, False, "images"),  # the images, not the seeds
    ]
    assert unsettled(rows, max_seeds=5) == {task: {("b", "x"), ("b", "y")} for task in ("a", "e", "f")}


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
