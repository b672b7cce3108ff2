"""A record names what its number depends on; a pinned thread count gives the same number on
one CPU or two; per-image predictions are kept and validated."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from tlbench import predictions
from tlbench.results import iter_records, read_record

GRID = """
    name = "pinned"
    backbones = ["test_efficientnet"]
    strategies = ["full_finetune"]
    datasets = ["faces"]
    seeds = [0]

    [settings]
    image_size = 32
    epochs = 2
    batch_size = 16
    pretrained = false
    threads = {threads}
"""


def run_on_cpus(grid, results, cpus):
    """`tlbench run` in a fresh interpreter allowed only ``cpus`` (what `taskset` does)."""
    return subprocess.run([sys.executable, "-m", "tlbench.cli", "run", "--grid", str(grid), "--results", str(results)],
                          capture_output=True, text=True, timeout=600,
                          preexec_fn=lambda: os.sched_setaffinity(0, cpus))


def only_record(results, grid="pinned"):
    (record,) = list(iter_records(results, grid))
    assert record["status"] == "ok", record.get("error")
    return record


def test_a_pinned_thread_count_gives_the_same_predictions_on_one_cpu_or_two(write_grid, cli, tmp_path):
    cpus = sorted(os.sched_getaffinity(0))
    assert len(cpus) >= 2, "this test needs two CPUs to compare one with two"
    grid = write_grid(GRID.format(threads=2))
    one, two = tmp_path / "one", tmp_path / "two"
    assert run_on_cpus(grid, one, {cpus[0]}).returncode == 0
    assert cli("run", "--grid", grid, "--results", two)[0] == 0  # this process: every CPU it has
    a, b = only_record(one), only_record(two)
    assert a["environment"]["threads"] == b["environment"]["threads"] == 2
    assert a["run_id"] == b["run_id"]
    assert a["predictions"] == b["predictions"] and a["top1"] == b["top1"]


def test_a_record_names_threads_cpu_model_and_determinism(write_grid, cli, tmp_path):
    code, _, err = cli("run", "--grid", write_grid(GRID.format(threads=1)), "--results", tmp_path)
    assert code == 0, err
    environment = only_record(tmp_path)["environment"]
    assert environment["threads"] == 1
    assert environment["deterministic"] is False
    assert environment["cpu_model"] and environment["cpu_model"] == environment["device_name"]
    with open("/proc/cpuinfo") as cpuinfo:
        assert environment["cpu_model"] in cpuinfo.read()


def test_the_pin_and_deterministic_algorithms_do_not_leak_into_the_next_cell(write_grid, cli, tmp_path):
    import torch

    from tlbench.cpus import usable_cpus

    grid = write_grid(GRID.format(threads=1) + "    deterministic = true\n")
    code, _, err = cli("run", "--grid", grid, "--results", tmp_path)
    assert code == 0, err
    assert only_record(tmp_path)["environment"]["deterministic"] is True
    # the next cell of this process sets both again from its own settings
    code, _, err = cli("run", "--grid", write_grid(GRID.format(threads=0).replace('"pinned"', '"free"')),
                       "--results", tmp_path)
    assert code == 0, err
    free = only_record(tmp_path, "free")["environment"]
    assert free["deterministic"] is False and not torch.are_deterministic_algorithms_enabled()
    assert free["threads"] == usable_cpus()  # the local runner's share: all of them, alone


def test_threads_out_of_range_is_a_one_line_error(write_grid, cli, tmp_path):
    code, out, err = cli("run", "--grid", write_grid(GRID.format(threads=-1)), "--results", tmp_path)
    assert code == 2
    assert "threads must be 0" in err and "Traceback" not in err


def test_a_grid_that_pins_nothing_keeps_its_run_ids(registry, write_grid):
    from tlbench.grid import load_grid

    unpinned = load_grid(write_grid(GRID.format(threads=0)), registry).cells[0]
    pinned = load_grid(write_grid(GRID.format(threads=2), name="b.toml"), registry).cells[0]
    assert "threads" not in unpinned.identity()["settings"]
    assert pinned.identity()["settings"]["threads"] == 2 and pinned.run_id != unpinned.run_id


def test_predictions_give_the_top1_and_a_tampered_list_is_refused(write_grid, cli, tmp_path):
    code, _, err = cli("run", "--grid", write_grid(GRID.format(threads=1)), "--results", tmp_path)
    assert code == 0, err
    record = only_record(tmp_path)
    predicted, correct = predictions.of_record(record)
    assert len(predicted) == record["split_sizes"]["test"] == len(correct)
    assert correct.mean() == pytest.approx(record["top1"])
    assert set(np.unique(predicted)) <= {0, 1}  # faces: two classes

    path = next((tmp_path / "pinned" / "records").glob("*.json"))
    shorter = dict(record["predictions"], count=record["predictions"]["count"] + 1)
    path.write_text(json.dumps({**record, "predictions": shorter}))
    assert read_record(path) is None  # set aside as corrupt, never read as a result


def test_predictions_round_trip_and_reject_garbage():
    predicted = np.array([0, 3, 65535, 7, 7, 1, 2, 0, 9])
    correct = np.array([1, 0, 1, 1, 0, 0, 1, 1, 0], dtype=bool)
    got_predicted, got_correct = predictions.decode(predictions.encode(predicted, correct))
    assert got_predicted.tolist() == predicted.tolist() and got_correct.tolist() == correct.tolist()
    assert not predictions.is_valid({"count": 1, "predicted": "!!", "correct": "AA=="})
    assert not predictions.is_valid([1, 2, 3])
    with pytest.raises(ValueError):
        predictions.encode(np.array([-1]), np.array([True]))


def test_each_seed_and_epoch_shuffles_with_the_seed_published_records_trained_with():
    """FitContext.shuffle_seed is the rule the first-party training loop always used
    (seed * 1000 + epoch): published cells rerun with the same batch orders."""
    import tlbench

    ctx = tlbench.FitContext()
    ctx.seed = 3
    assert [ctx.shuffle_seed(epoch) for epoch in range(3)] == [3000, 3001, 3002]
