"""Progress lines a user reads while cells run side by side: each cell keeps one number from its
start line to its result line, and Ctrl-C names every cell it stopped."""

import io

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
    lines = stream.getvalue().splitlines()[1:]
    assert lines == ["[2/4] a ...", "[3/4] b ...", "[3/4] b: top1 0.500, fit 1.0 s",
                     "[2/4] a: top1 0.700, fit 1.0 s", "[4/4] c: ok (run by another process)"]


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
