"""End to end through the CLI: records, leaderboard, resume, failures, exit codes."""

import json
import subprocess
from pathlib import Path

import pytest

from tlbench.results import iter_records


@pytest.fixture
def tiny_grid(write_grid, tiny_settings):
    """A grid of one backbone, these strategies and one small dataset (faces: 200 images, two
    classes)."""

    def write(strategies='"linear_probe", "full_finetune"', dataset="faces"):
        return write_grid(f"""
            name = "tiny"
            backbones = ["test_efficientnet"]
            strategies = [{strategies}]
            datasets = ["{dataset}"]
            {tiny_settings}
        """)

    return write


def test_grid_run_writes_records_and_leaderboard(tiny_grid, cli, tmp_path):
    results = tmp_path / "results"
    code, out, err = cli("run", "--grid", tiny_grid(), "--results", results)
    assert code == 0, err
    records = sorted(iter_records(results, "tiny"), key=lambda r: r["strategy"])
    assert [r["strategy"] for r in records] == ["full_finetune", "linear_probe"]
    for record in records:
        assert record["status"] == "ok"
        assert 0.0 <= record["top1"] <= record["top5"] <= 1.0
        assert record["split_sizes"] == {"train": 120, "val": 40, "test": 40}
        assert record["trainable_params"] <= record["total_params"]
        assert record["train_s"] > 0 and record["train_samples_per_s"] > 0
        assert record["environment"]["torch"] and record["environment"]["device"] == "cpu"
        assert record["weights"] == "random"
    # the probe is scored on the same split as the fine-tune
    assert len({r["split_digest"] for r in records}) == 1
    board = (results / "tiny" / "leaderboard.md").read_text()
    assert "linear_probe" in board and "full_finetune" in board and "faces" in board
    csv = (results / "tiny" / "leaderboard.csv").read_text().splitlines()
    assert csv[0].startswith("dataset,backbone,strategy") and len(csv) == 3
    assert "[2/2]" in err  # progress lines


def test_rerun_skips_done_cells_and_force_reruns(tiny_grid, cli, tmp_path):
    grid = tiny_grid('"linear_probe"')
    results = tmp_path / "results"
    assert cli("run", "--grid", grid, "--results", results)[0] == 0
    (path,) = (results / "tiny" / "records").glob("*.json")
    first = json.loads(path.read_text())
    code, out, err = cli("run", "--grid", grid, "--results", results)
    assert code == 0 and "1 of 1 cells already have records" in err
    assert json.loads(path.read_text())["started_at"] == first["started_at"]
    assert cli("run", "--grid", grid, "--results", results, "--force", "-q")[0] == 0
    assert len(list((results / "tiny" / "records").glob("*.json"))) == 1


def test_failing_cells_are_recorded_and_the_rest_still_run(tiny_grid, cli, test_plugins_dir, tmp_path):
    plugins = test_plugins_dir
    grid = tiny_grid('"explodes", "wrong_shape", "linear_probe"')
    results = tmp_path / "results"
    code, out, err = cli("run", "--grid", grid, "--results", results, "--plugins-dir", plugins)
    assert code == 1
    by_strategy = {r["strategy"]: r for r in iter_records(results, "tiny")}
    assert by_strategy["linear_probe"]["status"] == "ok"
    assert by_strategy["explodes"]["status"] == "failed"
    assert by_strategy["explodes"]["error"] == "RuntimeError: boom"
    assert "expected (batch, 2)" in by_strategy["wrong_shape"]["error"]  # faces: 2 classes
    assert "2 cell(s) failed" in err and "explodes" in err and "--retry-failed" in err
    board = (results / "tiny" / "leaderboard.md").read_text()
    assert "1 failed" in board
    # failed cells are not rerun unless asked
    code, out, err = cli("run", "--grid", grid, "--results", results, "--plugins-dir", plugins)
    assert code == 1 and "3 of 3 cells already have records" in err
    code, out, err = cli("run", "--grid", grid, "--results", results, "--plugins-dir", plugins,
                         "--retry-failed")
    assert code == 1 and "1 of 3 cells already have records" in err


def test_report_rebuilds_leaderboard_from_records(tiny_grid, cli, tmp_path):
    results = tmp_path / "results"
    assert cli("run", "--grid", tiny_grid('"linear_probe"'), "--results", results, "-q")[0] == 0
    board = results / "tiny" / "leaderboard.md"
    original = board.read_text()
    board.unlink()
    code, out, err = cli("report", "--results", results)
    assert code == 0 and board.read_text() == original


def test_cli_errors_are_one_line_exit_2_no_traceback(write_grid, cli, tmp_path):
    bad = write_grid('name = "x"\nbackbones = ["test_efficientnet"]\nstrategies = ["linar_probe"]\n'
                     'datasets = ["digits"]\n')
    code, out, err = cli("run", "--grid", bad, "--results", tmp_path)
    assert code == 2
    assert err.strip().splitlines() == [
        "error: Unknown strategy 'linar_probe'. Did you mean: linear_probe, knn_probe? "
        "Available: bitfit, full_finetune, knn_probe, l2sp, linear_probe, lora, lp_ft, partial_unfreeze, scratch."]
    assert not (tmp_path / "x").exists()  # nothing run, nothing written
    code, out, err = cli("run", "--grid", tmp_path / "missing.toml")
    assert code == 2 and "not found" in err
    code, out, err = cli("report", "--results", tmp_path / "empty")
    assert code == 2 and "No records" in err


def test_unwritable_results_dir_is_a_config_error(tiny_grid, cli, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    code, out, err = cli("run", "--grid", tiny_grid(), "--results", blocker)
    assert code == 2 and "not writable" in err and "--results" in err


def test_k_shot_setting_reaches_the_cell(write_grid, tiny_settings, cli, tmp_path):
    grid = write_grid(f"""
        name = "kshot"
        backbones = ["test_efficientnet"]
        strategies = ["linear_probe"]
        datasets = ["faces"]
        seeds = [0, 1]
        {tiny_settings}
        train_per_class = 5
    """)
    assert cli("run", "--grid", grid, "--results", tmp_path, "-q")[0] == 0
    records = list(iter_records(tmp_path, "kshot"))
    # k per class to train on and at most k per class to select with: a probe that refits on
    # train + val must not learn from the 40 validation images
    assert [r["split_sizes"] for r in records] == [{"train": 10, "val": 10, "test": 40}] * 2
    assert all(r["trainable_params"] == 256 * 2 + 2 for r in records)  # the head: 256 features, 2 classes


def test_vtab_style_train_size_and_test_size_reach_the_cell(write_grid, tiny_settings, cli, tmp_path):
    grid = write_grid(f"""
        name = "vtab"
        backbones = ["test_efficientnet"]
        strategies = ["linear_probe"]
        datasets = ["digits"]
        seeds = [0, 1]
        {tiny_settings}
        train_size = 100
        test_size = 50
    """)
    assert cli("run", "--grid", grid, "--results", tmp_path, "-q")[0] == 0
    records = sorted(iter_records(tmp_path, "vtab"), key=lambda r: r["seed"])
    assert [r["split_sizes"] for r in records] == [{"train": 80, "val": 20, "test": 50}] * 2
    # the seed draws the 100 examples; the test sample is the same for every cell
    assert records[0]["split_digest"] != records[1]["split_digest"]


def test_train_size_larger_than_the_dataset_fails_the_cell_saying_how_many_there_are(write_grid, tiny_settings, cli, tmp_path):
    grid = write_grid(f"""
        name = "big"
        backbones = ["test_efficientnet"]
        strategies = ["linear_probe"]
        datasets = ["faces"]
        {tiny_settings}
        train_size = 1000
    """)
    code, out, err = cli("run", "--grid", grid, "--results", tmp_path, "-q")
    assert code == 1
    (record,) = iter_records(tmp_path, "big")
    assert "train_size = 1000, but the dataset has only 160 examples outside its test split" in record["error"]


def test_changed_grid_gets_new_records_and_leaderboard_shows_only_current(tiny_grid, cli, tmp_path):
    grid = tiny_grid('"linear_probe"')
    assert cli("run", "--grid", grid, "--results", tmp_path, "-q")[0] == 0
    grid.write_text(grid.read_text().replace("epochs = 1", "epochs = 2").replace(
        "batch_size = 32", "batch_size = 16"))
    code, out, err = cli("run", "--grid", grid, "--results", tmp_path, "-q")
    assert code == 0
    records = list(iter_records(tmp_path, "tiny"))
    assert len(records) == 2 and len({r["run_id"] for r in records}) == 2  # the old one is kept
    newest = max(records, key=lambda r: r["settings"]["batch_size"] == 16)
    for _ in range(2):  # as `run` wrote it, then as `report` rebuilds it
        csv = (tmp_path / "tiny" / "leaderboard.csv").read_text().splitlines()
        assert len(csv) == 2 and ",1," in csv[1]  # one row, one seed: nothing averaged across configs
        assert f"{newest['top1']:.6g}" in csv[1]
        assert cli("report", "--results", tmp_path)[0] == 0


def test_candidates_without_validation_images_fail_the_cell_saying_why(write_grid, tiny_settings, cli, tmp_path):
    grid = write_grid(f"""
        name = "noval"
        backbones = ["test_efficientnet"]
        strategies = ["full_finetune"]
        datasets = ["digits"]
        {tiny_settings}
        train_size = 2
        [strategy.full_finetune]
        lr = [0.001, 0.01]
    """)
    code, out, err = cli("run", "--grid", grid, "--results", tmp_path, "-q")
    (record,) = iter_records(tmp_path, "noval")
    assert code == 1 and record["status"] == "failed"
    assert "validation split is empty (2 train, 0 val" in record["error"]
    assert "2 candidates of [strategy.full_finetune]" in record["error"] and "torch.cat" not in record["error"]


def test_the_training_rate_counts_training_images_only(write_grid, tiny_settings, cli, tmp_path):
    """full_finetune scores its validation split at the end of each epoch: those images are not
    training throughput (they made train_samples_per_s 8% higher than a plain loop's)."""
    grid = write_grid(f"""
        name = "rate"
        backbones = ["test_efficientnet"]
        strategies = ["full_finetune"]
        datasets = ["digits"]
        {tiny_settings.replace("epochs = 1", "epochs = 2")}
        train_size = 100
    """)
    assert cli("run", "--grid", grid, "--results", tmp_path, "-q")[0] == 0
    (record,) = iter_records(tmp_path, "rate")
    drawn = record["train_samples_per_s"] * record["train_s"]
    assert drawn == pytest.approx(2 * record["split_sizes"]["train"], abs=0.5)


def test_list_of_values_is_selected_on_validation(write_grid, tiny_settings, cli, tmp_path):
    grid = write_grid(f"""
        name = "sweep"
        backbones = ["test_efficientnet"]
        strategies = ["linear_probe"]
        datasets = ["digits"]
        {tiny_settings}
        [strategy.linear_probe]
        l2_max = [1000.0, 0.001]
        l2_steps = 1
        max_iter = 50
    """)
    assert cli("run", "--grid", grid, "--results", tmp_path, "-q")[0] == 0
    (record,) = iter_records(tmp_path, "sweep")
    scores = [c["val_top1"] for c in record["candidates"]]
    assert [c["options"]["l2_max"] for c in record["candidates"]] == [1000.0, 0.001]
    assert record["selected"] == scores.index(max(scores))
    assert record["options"] == record["candidates"][record["selected"]]["options"]
    # an absurd penalty cannot win: it predicts near-constant classes
    assert record["options"]["l2_max"] == 0.001 and scores[0] < scores[1]
    assert record["selection_s"] >= record["train_s"] > 0
    # val stays out of every candidate's fit, so the harness's val score is the probe's own
    for candidate in record["candidates"]:
        info = candidate["strategy_info"]
        assert info["refit_on_val"] is False
        assert candidate["val_top1"] == pytest.approx(info["val_top1"], abs=1.5 / record["split_sizes"]["val"])
    assert record["strategy_info"]["refit_on_val"] is False


@pytest.mark.skipif(not Path("/proc/self/statm").exists(), reason="the peak RSS restarts per cell on Linux only")
def test_cpu_peak_memory_restarts_for_each_cell_and_outside_tools_still_see_the_process_peak():
    """A record's CPU peak is its cell's: an earlier cell's high-water mark does not carry over,
    a peak inside the cell below that mark is still seen, and the kernel's mark (what
    `/usr/bin/time -v` reports) is the process's, never reset."""
    import time

    import torch

    from tlbench import rss_peak
    from tlbench.machine import peak_memory_mb, reset_peak_memory

    cpu = torch.device("cpu")
    earlier_cell = torch.ones(512 * 2**20 // 4)  # 512 MB, written, then freed
    del earlier_cell
    high = peak_memory_mb(cpu)
    reset_peak_memory(cpu)
    assert peak_memory_mb(cpu) < high - 400
    assert rss_peak.high_water_mark_kb() / 1024 >= high  # not reset: outside tools see the real peak
    this_cell = torch.ones(256 * 2**20 // 4)  # 256 MB, below the process's earlier peak
    time.sleep(20 * rss_peak.INTERVAL_S)
    base = rss_peak.current_kb() / 1024 - 256
    del this_cell
    assert base + 200 < peak_memory_mb(cpu) < high - 100


# -- output streams that are closed, full or ASCII-only ------------------------------------------


@pytest.fixture
def two_seed_grid(write_grid, tiny_settings):
    """One probe cell per seed on faces at 16 px: a leaderboard with a "±"."""
    return write_grid(f"""
        name = "streams"
        backbones = ["test_efficientnet"]
        strategies = ["linear_probe"]
        datasets = ["faces"]
        seeds = [0, 1]
        {tiny_settings.replace("image_size = 32", "image_size = 16")}
    """)


def test_an_ascii_stdout_and_a_full_stderr_change_nothing_but_the_text(two_seed_grid, tmp_path, monkeypatch):
    """"±" on an ASCII-only stdout is written as \\xb1; stderr on a full disk loses the progress
    lines, and the run stores its records and exits 0 as on a terminal."""
    import io

    from tlbench.cli import main

    stdout = io.TextIOWrapper(io.BytesIO(), encoding="ascii")
    monkeypatch.setattr("sys.stdout", stdout)
    monkeypatch.setattr("sys.stderr", open("/dev/full", "w", encoding="utf-8"))
    assert main(["run", "--grid", str(two_seed_grid), "--results", str(tmp_path / "r")]) == 0
    stdout.flush()
    assert "\\xb1" in stdout.buffer.getvalue().decode("ascii")
    assert len(list(iter_records(tmp_path / "r", "streams"))) == 2


def test_a_full_stdout_is_said_on_stderr_and_the_exit_status_stays(two_seed_grid, tmp_path, monkeypatch, capsys):
    from tlbench.cli import main

    assert main(["run", "--grid", str(two_seed_grid), "--results", str(tmp_path / "r"), "-q"]) == 0
    capsys.readouterr()
    monkeypatch.setattr("sys.stdout", open("/dev/full", "w", encoding="utf-8"))
    assert main(["runs", "--results", str(tmp_path / "r")]) == 0
    assert "the output to stdout was lost (No space left on device)" in capsys.readouterr().err


def test_closed_stdout_and_stderr_store_the_records_and_exit_0(two_seed_grid, tmp_path, monkeypatch):
    """`tlbench run >&- 2>&-`: the interpreter has no sys.stdout or sys.stderr then (None); the
    run stores its records and exits 0. And in a fresh interpreter, whose descriptors 1 and 2
    are closed, `runs` too."""
    import sys

    from tlbench.cli import main

    monkeypatch.setattr(sys, "stdout", None)
    monkeypatch.setattr(sys, "stderr", None)
    assert main(["run", "--grid", str(two_seed_grid), "--results", str(tmp_path / "r")]) == 0
    assert len(list(iter_records(tmp_path / "r", "streams"))) == 2
    command = f'exec "{sys.executable}" -m tlbench.cli runs --results "{tmp_path / "r"}" >&- 2>&-'
    assert subprocess.run(["sh", "-c", command], timeout=120).returncode == 0
