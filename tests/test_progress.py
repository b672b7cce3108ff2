"""Progress lines a user reads while cells run side by side: each cell keeps one number from its
start line to its result line, and Ctrl-C names every cell it stopped."""

import io
import re

import pytest

from tlbench.cli_views import interrupted_cells
from tlbench.driver import GridInterrupted
from tlbench.progress import Progress


def ok(top1):
    return {"status": "ok", "top1": top1, "train_s": 1.0}


def test_a_cell_keeps_its_number_whatever_order_cells_finish_in():
    stream = io.StringIO()  # not a terminal: a line per event
    progress = Progress(stream=stream)
    progress.grid_start(total=4, already_done=1)
    progress.cell_start("a")
    progress.cell_start("b")
    progress.cell_done("b", ok(0.5))  # b finishes first, as with two Ray workers
    progress.cell_done("a", ok(0.7))
    progress.cell_done_elsewhere("c", {"status": "ok"})  # run by another process
    lines = [re.sub(r" \(elapsed .*\)$", "", line) for line in stream.getvalue().splitlines()[1:]]
    assert lines == ["[2/4] a ...", "[3/4] b ...", "[3/4] b: top1 0.500, fit 1.0 s",
                     "[2/4] a: top1 0.700, fit 1.0 s", "[4/4] c: ok (run by another process)"]


def test_each_result_line_says_the_time_elapsed_and_an_estimate_of_the_time_left(monkeypatch):
    now = [1000.0]
    monkeypatch.setattr("tlbench.progress.time.monotonic", lambda: now[0])
    stream = io.StringIO()
    progress = Progress(stream=stream)
    progress.grid_start(total=5, already_done=1)  # 4 to run here
    for label, seconds in (("a", 100), ("b", 140)):  # parallel or not: the rate is cells per second
        progress.cell_start(label)
        now[0] += seconds
        progress.cell_done(label, ok(0.5))
    progress.cell_done_elsewhere("c", {"status": "ok"})  # another process's: not this run's rate
    progress.cell_start("d")
    now[0] += 3 * 3600
    progress.cell_done("d", ok(0.5))
    lines = [line for line in stream.getvalue().splitlines() if ": top1" in line]
    assert lines[0].endswith("(elapsed 1m 40s, about 5m 00s left)")  # 100 s a cell, 3 left
    assert lines[1].endswith("(elapsed 4m 00s, about 4m 00s left)")  # 120 s a cell, 2 left
    assert lines[2].endswith("(elapsed 3h 04m)")  # the last: no estimate


@pytest.mark.parametrize("seconds, shown", [(0, "0s"), (59.4, "59s"), (60, "1m 00s"), (3599, "59m 59s"),
                                            (3600, "1h 00m"), (26 * 3600 + 61, "26h 01m")])
def test_durations_read_as_a_person_reads_them(seconds, shown):
    from tlbench.progress import duration

    assert duration(seconds) == shown


def test_ctrl_c_names_every_cell_it_stopped():
    def record(strategy):
        return {"backbone": "lite0", "strategy": strategy, "dataset": "digits", "seed": 0}

    both = GridInterrupted([record("linear_probe"), record("full_finetune")])
    assert interrupted_cells(both.records) == ("lite0 / linear_probe / digits / seed 0 and lite0 / "
                                                "full_finetune / digits / seed 0 are recorded as interrupted; ")
    one = GridInterrupted([record("linear_probe")])
    assert interrupted_cells(one.records) == "lite0 / linear_probe / digits / seed 0 is recorded as interrupted; "
    assert interrupted_cells(GridInterrupted([]).records) == ""


def test_a_cell_of_a_curve_is_named_with_its_point_in_messages_and_in_progress(registry):
    from tlbench.grid import build_grid, cell_label

    data = {"name": "curve", "backbones": ["test_efficientnet"], "strategies": ["full_finetune"],
            "datasets": ["digits"], "settings": {"train_per_class": [5, 10]}}
    cells = build_grid(data, "curve.toml", registry).cells
    records = [{"backbone": c.backbone, "strategy": c.strategy, "dataset": c.dataset, "seed": c.seed,
                "sweep": dict(c.sweep)} for c in cells]
    assert interrupted_cells(records) == ("test_efficientnet / full_finetune / digits (train_per_class=5) / seed 0 "
                                           "and test_efficientnet / full_finetune / digits (train_per_class=10) / "
                                           "seed 0 are recorded as interrupted; ")
    assert [c.label for c in cells] == [cell_label(r) for r in records]  # progress lines name them the same
