"""`tlbench report`: the statistics, the tables, failed and missing cells, stable bytes.

Most tests write records as JSON files of the shape the runner writes (no torch); one runs
two real grids into separate folders and reports over their merged records.
"""

import base64
import csv
import hashlib
import io
import json
import math
import re
import shutil
import sys
from pathlib import Path

import pytest

from tlbench.report import build_leaderboard, terminal_summary
from tlbench.report.stats import average_ranks, mean_ci, pareto_front, t_quantile
from tlbench.results import write_record

GRID = "paper"
FILES = ["leaderboard.md", "leaderboard.html", "leaderboard.csv", "leaderboard_overall.csv",
         "leaderboard_transfer_gain.csv", "leaderboard.json", "accuracy_vs_train_time.png",
         "accuracy_vs_trainable_params.png"]


def _digest(value) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True).encode()).hexdigest()[:16]


def record(dataset, backbone, strategy, seed, top1=None, status="ok", grid=GRID, lr=0.001,
           started="2026-03-01T10:00:00+00:00", error=None, pretrained=True, **metrics):
    """A record as the runner writes it (field names and nesting of tlbench/runner.py)."""
    identity = {"backbone": backbone, "strategy": strategy, "dataset": dataset, "options": {"lr": lr}}
    rec = {
        "run_id": _digest({**identity, "seed": seed}), "config_id": _digest(identity), "grid": grid,
        "backbone": backbone, "strategy": strategy, "dataset": dataset, "seed": seed,
        "settings": {"batch_size": 32, "device": "auto", "epochs": 3, "image_size": 64,
                     "interpolation": "auto", "pretrained": True, "split_seed": 0, "test_fraction": 0.2,
                     "train_per_class": 0, "val_fraction": 0.2},
        "options": {"lr": lr}, "backbone_options": {"checkpoint": "", "hub": True}, "dataset_options": {},
        "pretrained": pretrained, "status": status, "error": error, "started_at": started, "finished_at": started.replace("10:", "11:"),
        "run_s": 12.5,
        "environment": {"cuda": None, "device": "cpu", "device_name": "x86_64", "hostname": "node-1",
                        "platform": "Linux-x86_64", "precision": "fp32", "python": "3.11.7",
                        "timm": "1.0.31", "tlbench": "0.1.0", "torch": "2.14.1", "torchvision": "0.29.1"},
    }
    if status == "ok":
        rec.update({"top1": top1, "top5": min(1.0, top1 + 0.02), "mean_per_class_acc": top1,
                    "train_s": 10.0, "eval_s": 1.0, "train_samples_per_s": 100.0, "peak_mem_mb": 1000.0,
                    "trainable_params": 3_000_000, "total_params": 3_400_000, "num_classes": 10,
                    "image_size": 64, "split_sizes": {"train": 1079, "val": 359, "test": 359},
                    "split_digest": "3f7699ce42abd18d", "weights": "random", "strategy_info": {}})
        rec.update(metrics)
    else:
        rec.update(error_kind="exception" if status == "failed" else "interrupted",
                   error=error or "RuntimeError: boom", traceback="Traceback ...")
    return rec


def write_all(results, records):
    for r in records:
        write_record(results, r)


def read_csv(path):
    return list(csv.DictReader(io.StringIO(path.read_text())))


def md_table(md: str, heading: str) -> list[dict]:
    """The rows of the markdown table under ``heading``, as {header: cell text}."""
    lines = md.split(heading + "\n", 1)[1].strip().split("\n\n")[0].splitlines()
    split = lambda line: [c.strip() for c in line.strip("|").split("|")]
    return [dict(zip(split(lines[0]), split(line))) for line in lines[2:]]


def report(cli, results, *extra):
    code, out, err = cli("report", "--results", results, *extra)
    assert code == 0, err
    return results / GRID


# -- the arithmetic -----------------------------------------------------------------------------


def test_confidence_interval_is_the_student_t_interval_on_known_numbers():
    # t(0.975, df=2) = 4.303 and t(0.975, df=1) = 12.706 (any t table)
    est = mean_ci([0.90, 0.92, 0.94])
    assert est.n == 3 and est.mean == pytest.approx(0.92)
    assert est.std == pytest.approx(0.02)
    assert est.half_width == pytest.approx(4.3027 * 0.02 / math.sqrt(3), rel=1e-4)  # 0.04968
    assert (est.low, est.high) == pytest.approx((0.92 - 0.049683, 0.92 + 0.049683), abs=1e-5)
    est = mean_ci([0.8, 0.9])
    assert est.half_width == pytest.approx(12.7062 * math.sqrt(0.005) / math.sqrt(2), rel=1e-4)  # 0.6353
    assert t_quantile(29) == pytest.approx(2.0452, abs=1e-4)


def test_one_seed_has_a_value_and_no_interval_and_none_has_neither():
    assert mean_ci([0.7]) == mean_ci([0.7]).__class__(0.7, None, 1)
    assert mean_ci([]).mean is None and mean_ci([]).n == 0
    assert mean_ci([0.5, 0.5, 0.5]).half_width == 0.0


def test_ranks_average_ties_and_put_the_best_first():
    assert average_ranks({"a": 0.9, "b": 0.95, "c": 0.9, "d": 0.5}) == {"b": 1.0, "a": 2.5, "c": 2.5, "d": 4.0}


def test_pareto_front_keeps_only_points_nothing_else_beats():
    points = {"probe": (1.0, 0.90), "ft": (10.0, 0.95), "slow_worse": (20.0, 0.93), "same_cost": (1.0, 0.85),
              "tie": (10.0, 0.95)}
    assert pareto_front(points) == {"probe", "ft", "tie"}


# -- tables from records ------------------------------------------------------------------------


def test_per_dataset_table_shows_mean_ci_and_n_over_seeds(tmp_path, cli):
    write_all(tmp_path, [record("digits", "lite0", "linear_probe", s, v) for s, v in enumerate([0.90, 0.92, 0.94])]
              + [record("digits", "lite0", "full_finetune", 0, 0.97, train_s=40.0, trainable_params=3_383_818)])
    folder = report(cli, tmp_path)
    rows = md_table((folder / "leaderboard.md").read_text(), "### digits")
    assert [(r["strategy"], r["top-1"], r["n"], r["status"]) for r in rows] == [
        ("full_finetune", "**0.970**", "1", "1 ok, 2 missing"),  # n=1: no ±; best in bold
        ("linear_probe", "0.920 ± 0.050", "3", "ok")]
    assert rows[0]["train s"] == "40.0" and rows[0]["trainable params"] == "3.38M"
    rows = {r["strategy"]: r for r in read_csv(folder / "leaderboard.csv")}
    assert float(rows["linear_probe"]["top1_ci95"]) == pytest.approx(0.0496828, rel=1e-5)
    assert rows["linear_probe"]["seeds"] == "3" and rows["full_finetune"]["top1_ci95"] == ""
    assert rows["full_finetune"]["trainable_params"] == "3383818"  # an integer, not 3.38382e+06
    assert list(rows) == ["full_finetune", "linear_probe"]  # best first
    doc = json.loads((folder / "leaderboard.json").read_text())
    assert doc["per_dataset"][1]["top1_ci95"] == pytest.approx(0.0496828, rel=1e-5)
    assert doc["environment"]["torch"] == "2.14.1" and doc["confidence"] == 0.95


def test_failed_and_missing_cells_are_rows_never_dropped(tmp_path, cli):
    write_all(tmp_path, [
        record("digits", "lite0", "linear_probe", 0, 0.9), record("digits", "lite0", "linear_probe", 1, 0.92),
        record("digits", "lite0", "full_finetune", 0, 0.95),
        record("digits", "lite0", "full_finetune", 1, status="failed", error="OutOfMemoryError: CUDA"),
        record("digits", "lite0", "explodes", 0, status="failed"),
        record("digits", "lite0", "explodes", 1, status="interrupted", error="interrupted (SIGTERM)"),
        record("faces", "lite0", "linear_probe", 0, 1.0),  # faces: seed 1 and two strategies never ran
    ])
    folder = report(cli, tmp_path)
    rows = {(r["dataset"], r["strategy"]): r for r in read_csv(folder / "leaderboard.csv")}
    assert len(rows) == 6  # 2 datasets x 3 strategies, whatever ran
    assert rows[("digits", "full_finetune")]["status"] == "1 ok, 1 failed"
    assert rows[("digits", "full_finetune")]["seeds"] == "1"
    assert "seed 1: OutOfMemoryError: CUDA" in rows[("digits", "full_finetune")]["error"]
    assert rows[("digits", "explodes")]["status"] == "1 failed, 1 interrupted"
    assert rows[("digits", "explodes")]["top1"] == ""
    assert rows[("faces", "linear_probe")]["status"] == "1 ok, 1 missing"
    assert rows[("faces", "explodes")]["status"] == "2 missing"
    assert rows[("faces", "full_finetune")]["error"] == "seed 0: no record; seed 1: no record"
    md = md_table((folder / "leaderboard.md").read_text(), "### faces")
    assert [(r["strategy"], r["top-1"], r["n"], r["status"]) for r in md] == [
        ("linear_probe", "**1.000**", "1", "1 ok, 1 missing"), ("explodes", "-", "0", "2 missing"),
        ("full_finetune", "-", "0", "2 missing")]
    overall = {r["strategy"]: r for r in read_csv(folder / "leaderboard_overall.csv")}
    assert overall["explodes"]["datasets"] == "0" and overall["explodes"]["mean_rank"] == ""
    assert "digits (1 failed, 1 interrupted)" in overall["explodes"]["not_ok"]
    html = (folder / "leaderboard.html").read_text()
    assert html.count('class="problem"') >= 4 and "OutOfMemoryError: CUDA" in html


def test_overall_table_gives_mean_top1_and_mean_rank_across_datasets(tmp_path, cli):
    scores = {"digits": {"lp": 0.90, "ft": 0.95, "pu": 0.95}, "faces": {"lp": 0.99, "ft": 0.97, "pu": 0.80},
              "textures": {"lp": 0.70, "ft": 0.75}}  # pu did not run on textures
    write_all(tmp_path, [record(d, "lite0", s, 0, v) for d, by in scores.items() for s, v in by.items()])
    write_all(tmp_path, [record("textures", "lite0", "pu", 0, status="failed")])
    rows = read_csv(report(cli, tmp_path) / "leaderboard_overall.csv")
    got = {r["strategy"]: (float(r["mean_top1"]), float(r["mean_rank"]), int(r["datasets"]), int(r["wins"]))
           for r in rows}
    # one seed each: nothing is tied but equal top-1. ranks: digits ft 1 pu 1 (equal: tied, both
    # best) lp 3; faces lp 1 ft 2 pu 3; textures ft 1 lp 2
    assert got["ft"] == pytest.approx((0.89, (1 + 2 + 1) / 3, 3, 2), rel=1e-5)  # CSV: 6 digits
    assert got["lp"] == pytest.approx((0.86333333, 2.0, 3, 1))
    assert got["pu"] == pytest.approx((0.875, 2.0, 2, 1))
    assert [r["strategy"] for r in rows] == ["ft", "pu", "lp"]  # by mean rank, then mean top-1


def test_transfer_gain_is_each_strategy_minus_the_control_with_paired_seeds(tmp_path, cli):
    write_all(tmp_path, [
        record("digits", "lite0", "linear_probe", 0, 0.90), record("digits", "lite0", "linear_probe", 1, 0.94),
        record("digits", "lite0", "scratch", 0, 0.80, pretrained=False),
        record("digits", "lite0", "scratch", 1, 0.82, pretrained=False),
        record("digits", "lite0", "full_finetune", 0, 0.96),  # one seed: a gain, no interval
        record("digits", "lite1", "linear_probe", 0, 0.93),
    ])
    folder = report(cli, tmp_path)
    rows = {(r["backbone"], r["strategy"]): r for r in read_csv(folder / "leaderboard_transfer_gain.csv")}
    assert "scratch" not in {s for _, s in rows}
    probe = rows[("lite0", "linear_probe")]
    assert float(probe["gain"]) == pytest.approx(0.11)
    # per-seed gains 0.10 and 0.12: mean 0.11, s = 0.01414, t(1) = 12.706
    assert float(probe["gain_ci95"]) == pytest.approx(12.7062 * 0.0141421 / math.sqrt(2), rel=1e-4)
    assert probe["paired_seeds"] == "2"
    assert float(rows[("lite0", "full_finetune")]["gain"]) == pytest.approx(0.15)
    assert rows[("lite0", "full_finetune")]["gain_ci95"] == ""
    # lite1's control never ran: its cells are missing, and so is its gain
    assert rows[("lite1", "linear_probe")]["gain"] == "" and rows[("lite1", "linear_probe")]["note"] == "scratch: 2 missing"
    md = (folder / "leaderboard.md").read_text()
    assert "## Transfer gain over `scratch`" in md and "+0.110 ± 0.127" in md
    assert "(the network trained from random weights)" in md


def test_the_control_is_the_one_strategy_whose_records_start_from_random_weights(tmp_path, cli):
    write_all(tmp_path, [record("digits", "lite0", "linear_probe", 0, 0.90),
                         record("digits", "lite0", "from_nothing", 0, 0.70, pretrained=False)])
    folder = report(cli, tmp_path)
    (row,) = read_csv(folder / "leaderboard_transfer_gain.csv")
    assert row["strategy"] == "linear_probe" and float(row["gain"]) == pytest.approx(0.2)
    assert json.loads((folder / "leaderboard.json").read_text())["control"] == "from_nothing"
    # a second strategy from random weights: which one is the control is the user's choice
    write_all(tmp_path, [record("digits", "lite0", "also_random", 0, 0.60, pretrained=False)])
    folder = report(cli, tmp_path)
    assert read_csv(folder / "leaderboard_transfer_gain.csv") == []
    md = (folder / "leaderboard.md").read_text()
    assert "## Transfer gain\n" in md and "tlbench report --control STRATEGY" in md


def test_control_strategy_is_a_parameter(tmp_path, cli):
    write_all(tmp_path, [record("digits", "lite0", "linear_probe", 0, 0.90),
                         record("digits", "lite0", "random_init", 0, 0.70)])
    folder = report(cli, tmp_path)  # both start from pretrained weights: no control
    assert read_csv(folder / "leaderboard_transfer_gain.csv") == []
    assert "No control" in (folder / "leaderboard.md").read_text()
    report(cli, tmp_path, "--control", "random_init")
    (row,) = read_csv(folder / "leaderboard_transfer_gain.csv")
    assert float(row["gain"]) == pytest.approx(0.2)
    md = (folder / "leaderboard.md").read_text()
    assert "(the control chosen with --control)" in md and "random weights" not in md
    code, out, err = cli("report", "--results", tmp_path, "--control", "random_int")
    assert code == 2 and err.count("\n") == 1 and "Did you mean: random_init?" in err


def test_a_new_configuration_replaces_the_old_one_in_the_tables(tmp_path, cli):
    write_all(tmp_path, [record("digits", "lite0", "linear_probe", 0, 0.5, lr=0.1, started="2026-01-01T10:00:00+00:00"),
                         record("digits", "lite0", "linear_probe", 0, 0.9, lr=0.01, started="2026-02-01T10:00:00+00:00")])
    (row,) = read_csv(report(cli, tmp_path) / "leaderboard.csv")
    assert row["top1"] == "0.9" and row["seeds"] == "1"


SLOW_CLOCK = "2026-01-30T10:00:00+00:00"  # a machine 30 days behind ran the later version
RIGHT_CLOCK = "2026-03-01T10:00:00+00:00"


def snapshot_run(results, *records):
    """Write the grid snapshot `tlbench run` would for a grid of exactly these records' cells."""
    from types import SimpleNamespace

    from tlbench.grid_snapshot import write_snapshot

    cells = [SimpleNamespace(**{k: r[k] for k in ("backbone", "strategy", "dataset", "seed", "run_id", "config_id")},
                             sweep=()) for r in records]
    write_snapshot(results, SimpleNamespace(name=GRID, controls=[], cells=cells))


def test_the_order_of_runs_not_the_clocks_decides_a_rows_current_configuration(tmp_path, cli):
    old = record("digits", "lite0", "linear_probe", 0, 0.5, lr=0.1, started=RIGHT_CLOCK)
    new = record("digits", "lite0", "linear_probe", 0, 0.9, lr=0.01, started=SLOW_CLOCK)
    other = record("faces", "lite1", "scratch", 0, 0.3)
    write_all(tmp_path, [old, new, other])
    snapshot_run(tmp_path, old)
    snapshot_run(tmp_path, new)
    (row,) = read_csv(report(cli, tmp_path) / "leaderboard.csv")[:1]
    assert row["top1"] == "0.9"  # the snapshot lists the row
    snapshot_run(tmp_path, other)  # the grid no longer lists it: the configuration run last still shows
    code, out, err = cli("report", "--results", tmp_path)
    rows = {r["dataset"]: r for r in read_csv(tmp_path / GRID / "leaderboard.csv")}
    assert code == 0 and rows["digits"]["top1"] == "0.9" and rows["digits"]["seeds"] == "1"
    assert "configurations" not in err


def test_without_a_snapshot_the_clocks_choice_is_said(tmp_path, cli):
    write_all(tmp_path, [record("digits", "lite0", "linear_probe", 0, 0.5, lr=0.1, started=RIGHT_CLOCK),
                         record("digits", "lite0", "linear_probe", 0, 0.9, lr=0.01, started=SLOW_CLOCK)])
    code, out, err = cli("report", "--results", tmp_path)
    assert code == 0 and "has records of 2 configurations and no grid snapshot" in err and "clocks" in err


def test_reproduce_reruns_the_configuration_the_snapshot_makes_current(tmp_path):
    from tlbench.reproduce import current_ok, read_published

    old = record("digits", "lite0", "linear_probe", 0, 0.5, lr=0.1, started=RIGHT_CLOCK)
    new = record("digits", "lite0", "linear_probe", 0, 0.9, lr=0.01, started=SLOW_CLOCK)
    write_all(tmp_path, [old, new])
    snapshot_run(tmp_path, old)
    snapshot_run(tmp_path, new)
    published = read_published(tmp_path, GRID)
    assert [r["run_id"] for r in current_ok(published.records, published.snapshot)] == [new["run_id"]]


def test_seeds_added_later_are_told_by_the_seed_lists_not_the_clocks(tmp_path, cli):
    first = [record("digits", "lite0", "linear_probe", seed, 0.8, started=RIGHT_CLOCK, grid_seeds=[0, 1, 2])
             for seed in (0, 1, 2)]
    added = record("digits", "lite0", "linear_probe", 3, 0.8, started=SLOW_CLOCK, grid_seeds=[0, 1, 2, 3])
    write_all(tmp_path, [*first, added])
    report(cli, tmp_path)
    (row,) = json.loads((tmp_path / GRID / "leaderboard.json").read_text())["per_dataset"]
    assert row["later_seeds"] == 1


def test_report_is_byte_stable_for_the_same_records(tmp_path, cli):
    records = [record(d, b, s, seed, 0.5 + 0.1 * i + 0.01 * seed, train_s=1.0 + 7 * i, trainable_params=1000 * 10 ** i)
               for i, (d, b, s) in enumerate([("digits", "lite0", "linear_probe"), ("digits", "lite0", "scratch"),
                                              ("digits", "lite1", "full_finetune"), ("faces", "lite0", "linear_probe")])
               for seed in (0, 1, 2)]
    records.append(record("faces", "lite1", "scratch", 0, status="failed"))
    first, second = tmp_path / "a", tmp_path / "b"
    write_all(first, records)
    write_all(second, list(reversed(records)))  # other files, written in another order
    for results in (first, second):
        report(cli, results)
    before = {name: (first / GRID / name).read_bytes() for name in FILES}
    report(cli, first)  # and again over its own output
    for name in FILES:
        assert (first / GRID / name).read_bytes() == before[name], name
        assert (second / GRID / name).read_bytes() == before[name], name
    assert before["accuracy_vs_train_time.png"].startswith(b"\x89PNG")
    assert b"Software" not in before["accuracy_vs_train_time.png"]


def test_page_is_self_contained(tmp_path, cli):
    write_all(tmp_path, [record("digits", "lite0", s, seed, v + seed / 100)
                         for s, v in [("linear_probe", 0.9), ("scratch", 0.7)] for seed in (0, 1)])
    html = (report(cli, tmp_path) / "leaderboard.html").read_text()
    payloads = re.findall(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', html)
    assert len(payloads) == 2 and all(base64.b64decode(p).startswith(b"\x89PNG") for p in payloads)
    text = re.sub(r"base64,[A-Za-z0-9+/=]+", "base64,", html)
    assert "://" not in text and "www." not in text  # no address of anything, anywhere
    assert "<link" not in text and "<script src" not in text and "url(" not in text and "@import" not in text
    assert all(v.startswith(("data:", "#")) for v in re.findall(r'(?:src|href)="([^"]*)"', text))
    assert "<style>" in html and "<script>" in html
    assert "2.14.1" in html and "node-1" in html  # the environment


def test_markdown_is_github_tables_and_links_the_plots(tmp_path, cli):
    write_all(tmp_path, [record("digits", "lite0", "linear_probe", 0, 0.9)])
    md = (report(cli, tmp_path) / "leaderboard.md").read_text()
    table = [line for line in md.splitlines() if line.startswith("| backbone ")][1]
    assert table.startswith("| backbone ") and "|--" in md
    assert "![Top-1 vs training time](accuracy_vs_train_time.png)" in md
    assert "![Top-1 vs trainable parameters](accuracy_vs_trainable_params.png)" in md


def test_terminal_summary_marks_the_best_strategy_per_dataset(tmp_path):
    write_all(tmp_path, [record("digits", "lite0", "linear_probe", 0, 0.9), record("digits", "lite0", "scratch", 0, 0.7),
                         record("faces", "lite0", "linear_probe", 0, 0.6), record("faces", "lite0", "scratch", 0, 0.8)])
    board = build_leaderboard(tmp_path, GRID)
    lines = terminal_summary(board).splitlines()
    assert [c.strip() for c in lines[0].split("|")[1:-1]] == ["dataset", "backbone", "strategy", "top-1", "seeds",
                                                              "train s", "status"]
    best = [line for line in lines if " *" in line and line.startswith("|")]
    assert [(l.split("|")[1].strip(), l.split("|")[3].strip()) for l in best] == [
        ("digits", "linear_probe"), ("faces", "scratch")]
    colored = terminal_summary(board, color=True)
    assert "\033[1mscratch\033[0m" in colored and "\033[1mlinear_probe" in colored


def test_report_accepts_a_grid_folder_and_rejects_bad_input(tmp_path, cli):
    write_all(tmp_path, [record("digits", "lite0", "linear_probe", 0, 0.9)])
    code, out, err = cli("report", "--results", tmp_path / GRID)
    assert code == 0 and (tmp_path / GRID / "leaderboard.html").is_file()
    assert f"Leaderboard in {tmp_path / GRID}/" in out
    code, out, err = cli("report", "--results", tmp_path, "--grid-name", "papr")
    assert code == 2 and "Did you mean: paper?" in err and "Traceback" not in err


def test_report_help_imports_no_heavy_module():
    code = ("import sys, runpy; sys.argv = ['tlbench', 'report', '--help']\n"
            "try:\n    runpy.run_module('tlbench.cli', run_name='__main__')\n"
            "except SystemExit:\n    pass\n"
            "import tlbench.report, tlbench.report.stats, tlbench.report.browser\n"
            "heavy = [m for m in ('torch', 'pandas', 'matplotlib', 'scipy', 'playwright', 'numpy')"
            " if m in sys.modules]\n"
            "assert not heavy, heavy\n")
    import subprocess

    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


# -- real runs ---------------------------------------------------------------------------------


def test_report_over_records_of_two_separate_runs(write_grid, tiny_settings, cli, tmp_path):
    """Two machines each run one seed of the same grid; their records are merged into one folder."""
    def grid(seed):
        return write_grid(f"""
            name = "merged"
            backbones = ["test_efficientnet"]
            strategies = ["linear_probe", "scratch"]
            datasets = ["faces"]
            seeds = [{seed}]
            {tiny_settings}
        """, name=f"seed{seed}.toml")

    first, second = tmp_path / "machine1", tmp_path / "machine2"
    code, out, err = cli("run", "--grid", grid(0), "--results", first, "-q")
    assert code == 0, err
    assert out.splitlines()[0].startswith("| dataset ") and "Leaderboard in" in out  # terminal summary
    assert cli("run", "--grid", grid(1), "--results", second, "-q")[0] == 0
    for path in (second / "merged" / "records").glob("*.json"):
        shutil.copy(path, first / "merged" / "records")
    # every cell starts from random weights here (pretrained = false): no control unless named
    code, out, err = cli("report", "--results", first, "--control", "scratch")
    assert code == 0, err
    rows = {r["strategy"]: r for r in read_csv(first / "merged" / "leaderboard.csv")}
    assert sorted(rows) == ["linear_probe", "scratch"]
    for row in rows.values():
        assert row["seeds"] == "2" and row["status"] == "ok"
        assert float(row["top1_ci95"]) >= 0 and 0 <= float(row["top1"]) <= 1
    (gain,) = read_csv(first / "merged" / "leaderboard_transfer_gain.csv")
    assert gain["paired_seeds"] == "2"
    assert float(gain["gain"]) == pytest.approx(float(rows["linear_probe"]["top1"]) - float(rows["scratch"]["top1"]),
                                                abs=2e-6)  # CSV keeps 6 significant digits
    md = (first / "merged" / "leaderboard.md").read_text()
    assert "2 seeds" in md and "4 cells (4 ok)" in md
    for name in FILES:
        assert (first / "merged" / name).stat().st_size > 0, name


# -- the published leaderboard -------------------------------------------------------------------

RESULTS = Path(__file__).parent.parent / "results"
PUBLISHED_FOLDERS = sorted(folder.name for folder in RESULTS.glob("*") if (folder / "leaderboard.md").exists())


def test_the_published_folders_are_found():
    assert {"offline-default", "transfer-zoo", "epochs-curve"} <= set(PUBLISHED_FOLDERS)


@pytest.mark.parametrize("name", PUBLISHED_FOLDERS)
def test_published_leaderboard_is_what_its_records_say(name, tmp_path, cli):
    """`tlbench report` over the committed records rewrites the committed tables byte for byte."""
    published = RESULTS / name
    shutil.copytree(published / "records", tmp_path / name / "records")
    code, out, err = cli("report", "--results", tmp_path / name)
    assert code == 0, err
    for file in ("leaderboard.md", "leaderboard.csv", "leaderboard_overall.csv",
                 "leaderboard_transfer_gain.csv", "leaderboard.json"):
        assert (tmp_path / name / file).read_text() == (published / file).read_text(), file

    def without_images(html):  # the PNG bytes may differ with another matplotlib or FreeType
        return re.sub(r"base64,[A-Za-z0-9+/=]+", "base64,", html)

    assert without_images((tmp_path / name / "leaderboard.html").read_text()) == without_images(
        (published / "leaderboard.html").read_text())
    for file in ("accuracy_vs_train_time.png", "accuracy_vs_trainable_params.png"):
        assert (published / file).read_bytes().startswith(b"\x89PNG"), file


def shots_record(strategy, seed, shots, top1):
    rec = record("digits", "lite0", strategy, seed, top1)
    rec["sweep"] = {"train_per_class": shots}
    rec["settings"]["train_per_class"] = shots
    rec["run_id"] = _digest([rec["run_id"], shots])
    rec["config_id"] = _digest([rec["config_id"], shots])
    return rec


def test_a_curve_ranks_each_value_as_its_own_task_and_tables_top1_against_it(tmp_path, cli):
    top1 = {("linear_probe", 1): [0.50, 0.54], ("linear_probe", 5): [0.80, 0.82],
            ("scratch", 1): [0.12, 0.10], ("scratch", 5): [0.30, 0.34]}
    write_all(tmp_path, [shots_record(strategy, seed, shots, values[seed])
                         for (strategy, shots), values in top1.items() for seed in (0, 1)])
    folder = report(cli, tmp_path)
    md = (folder / "leaderboard.md").read_text()
    rows = md_table(md, "### digits (train_per_class=5)")
    assert [(r["strategy"], r["top-1"]) for r in rows] == [("linear_probe", "**0.810 ± 0.127**"),
                                                          ("scratch", "0.320 ± 0.254")]
    curve = md_table(md, "### digits: top-1 against train_per_class")
    assert [(r["strategy"], r["1"], r["5"]) for r in curve] == [
        ("linear_probe", "0.520 ± 0.254", "0.810 ± 0.127"), ("scratch", "0.110 ± 0.127", "0.320 ± 0.254")]
    document = json.loads((folder / "leaderboard.json").read_text())
    probe = next(c for c in document["curves"] if c["strategy"] == "linear_probe")
    assert [(p["value"], round(p["top1"], 3), p["seeds"]) for p in probe["points"]] == [(1, 0.52, 2), (5, 0.81, 2)]
    assert (folder / "accuracy_curves.png").read_bytes()[:4] == b"\x89PNG"


def test_a_grid_without_curves_has_no_curve_section_or_plot(tmp_path, cli):
    write_all(tmp_path, [record("digits", "lite0", "linear_probe", 0, 0.9)])
    folder = report(cli, tmp_path)
    assert "## Curves" not in (folder / "leaderboard.md").read_text()
    assert "curves" not in json.loads((folder / "leaderboard.json").read_text())
    assert not (folder / "accuracy_curves.png").exists()


def test_record_warnings_reach_the_tables_and_the_terminal(tmp_path, cli):
    at_chance = "top-1 0.100 is at chance level (always answering ...)"
    write_all(tmp_path, [record("digits", "lite0", "linear_probe", 0, 0.9),
                         record("digits", "lite0", "bitfit", 0, 0.1, warnings=[at_chance])])
    folder = report(cli, tmp_path)
    md = (folder / "leaderboard.md").read_text()
    assert f"- bitfit on lite0, seed 0: {at_chance}" in md
    board = build_leaderboard(tmp_path, GRID)
    assert f"WARNING digits / lite0 / bitfit, seed 0: {at_chance}" in terminal_summary(board)
    assert "linear_probe, seed" not in terminal_summary(board)


def test_published_default_leaderboard_separates_the_strategies():
    """What a new user's default run must show: on every dataset the best and worst pretrained
    strategies at least 2 points apart, at most one at >= 0.99, three seeds on every row."""
    board = json.loads((RESULTS / "offline-default" / "leaderboard.json").read_text())
    for dataset in board["datasets"]:
        rows = [r for r in board["per_dataset"] if r["dataset"] == dataset]
        assert all(r["seeds"] == 3 and r["top1_ci95"] > 0 for r in rows), dataset
        pretrained = [r["top1"] for r in rows if r["strategy"] != board["control"]]
        assert max(pretrained) - min(pretrained) >= 0.02, dataset
        assert sum(top1 >= 0.99 for top1 in pretrained) <= 1, dataset


# -- names that are not UTF-8 -------------------------------------------------------------------


def test_a_file_name_that_is_not_utf8_is_stored_and_shown_as_a_visible_escape(tmp_path, cli):
    """A broken image named b"bad\\xff.png" lands in its cell's error: the record holds it as the
    escape \\xff, and one stored before (with the raw "\\udcff") is read the same way, so that
    `report` and `runs` never fail on it."""
    import os

    from tlbench.results import record_path

    name = os.fsdecode(b"/data/cats/bad\xff.png")  # as Python lists such a file: "bad\udcff.png"
    failed = record("digits", "lite0", "lp_ft", 0, status="failed", error=f"ConfigError: Cannot read image {name}")
    old = record("digits", "lite0", "scratch", 0, status="failed", error=f"Cannot read image {name}")
    write_all(tmp_path, [failed, record("digits", "lite0", "linear_probe", 0, 0.9)])
    path = record_path(tmp_path, GRID, old["run_id"])
    path.write_text(json.dumps(old), encoding="utf-8")  # as stored before: "\udcff" in its JSON
    assert "/data/cats/bad\\\\xff.png" in record_path(tmp_path, GRID, failed["run_id"]).read_text(encoding="utf-8")
    report(cli, tmp_path)
    code, out, err = cli("runs", "--results", tmp_path, "--status", "failed")
    assert code == 0 and out.count("bad\\xff.png") == 2, err
