"""Results you can trust: kill -9 and resume, concurrent runners, failures that stay in their
cell, Ctrl-C, corrupt records, provenance and `tlbench runs`."""

import contextlib
import io
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from tlbench.cli import main
from tlbench.grid import load_grid
from tlbench.results import (claim_cell, iter_records, read_record, records_dir,
                             remove_leftovers, write_record)


@pytest.fixture
def plugins(test_plugins_dir):
    """The --plugins-dir of the test-only strategies: `logged` (tests/plugins/logged.py) appends
    each fit to $TLBENCH_TEST_LOG and sleeps $TLBENCH_TEST_SLEEP s; broken_results.py fails in
    every other way."""
    return test_plugins_dir


@pytest.fixture
def fit_log(tmp_path, monkeypatch):
    """The file every `logged` fit appends to (in this process and in subprocesses)."""
    path = tmp_path / "fits.log"
    path.touch()
    monkeypatch.setenv("TLBENCH_TEST_LOG", str(path))
    return path


def fits(log: Path) -> list[int]:
    """The seed of every fit that started, in order."""
    return [int(line.split()[-1]) for line in log.read_text().splitlines()]


@pytest.fixture
def logged_grid(write_grid, tiny_settings):
    """(seeds, strategies) -> a grid file of those cells on faces."""

    def write(seeds, strategies='"logged"'):
        return write_grid(f"""
            name = "g"
            backbones = ["test_efficientnet"]
            strategies = [{strategies}]
            datasets = ["faces"]
            seeds = {list(seeds)}
            {tiny_settings}
        """)

    return write


def start(grid, results, plugins, *extra, sleep=0.0):
    env = {**os.environ, "TLBENCH_TEST_SLEEP": str(sleep)}
    return subprocess.Popen(
        [sys.executable, "-m", "tlbench.cli", "run", "--grid", str(grid), "--results", str(results),
         "--plugins-dir", str(plugins), *extra],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
        # Ctrl-C must reach the runner even when these tests run where SIGINT is ignored (a
        # background job, nohup): Python turns SIGINT into KeyboardInterrupt only where it was
        # not ignored when the interpreter started
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))


def wait_until(condition, proc, timeout=120.0):
    deadline = time.monotonic() + timeout
    while not condition():
        assert proc.poll() is None, f"exited early ({proc.returncode}): {proc.communicate()[1]}"
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


def record_files(results, grid="g"):
    return sorted(records_dir(results, grid).glob("*.json"))


def leaderboard_seeds(markdown: str) -> str:
    header, _, row = [line for line in markdown.splitlines() if line.startswith("|")][:3]
    cells = dict(zip(header.split("|"), row.split("|")))
    return next(value.strip() for key, value in cells.items() if key.strip() == "seeds")


def fingerprint(path: Path):
    stat = path.stat()
    return stat.st_ino, stat.st_mtime_ns, json.loads(path.read_text())["started_at"]


# -- kill -9, resume, concurrency --------------------------------------------------------------


def test_sigkill_at_any_point_then_resume_gives_one_ok_record_per_cell(logged_grid, plugins, fit_log, tmp_path,
                                                                       cli):
    grid, results = logged_grid(range(5)), tmp_path / "results"
    kept = {}  # records that existed when a runner was killed: they must never be redone
    checkpoints = []  # (fits logged so far, seeds with a record) at each kill

    proc = start(grid, results, plugins, sleep=0.3)
    time.sleep(0.5)  # still importing: nothing to lose
    proc.kill()
    proc.wait()
    for records_before_kill in (1, 3):
        proc = start(grid, results, plugins, sleep=0.3)
        wait_until(lambda: len(record_files(results)) >= records_before_kill, proc)
        proc.kill()  # SIGKILL: no handler runs, the claim of the cell in flight dies with it
        proc.wait()
        kept.update({p: fingerprint(p) for p in record_files(results)})
        checkpoints.append((len(fits(fit_log)), {json.loads(p.read_text())["seed"] for p in kept}))

    code, out, err = cli("run", "--grid", grid, "--results", results, "--plugins-dir", plugins)
    assert code == 0, err
    records = list(iter_records(results, "g"))
    assert sorted(r["seed"] for r in records) == [0, 1, 2, 3, 4]
    assert all(r["status"] == "ok" for r in records)
    assert {p: fingerprint(p) for p in kept} == kept  # not rewritten
    done_before = {json.loads(p.read_text())["seed"] for p in kept}
    assert len(done_before) >= 3
    started = fits(fit_log)
    for fitted_before, recorded in checkpoints:
        # a cell with a record is never fitted again (a fit that began before a kill, without
        # reaching its record, is rightly redone)
        assert not recorded & set(started[fitted_before:]), (started, fitted_before, recorded)
    assert not list(records_dir(results, "g").glob("*.lock"))  # stale claims were taken over
    assert not (records_dir(results, "g") / "corrupt").exists()


def test_two_concurrent_runners_share_the_cells(logged_grid, plugins, fit_log, tmp_path):
    grid, results = logged_grid(range(4)), tmp_path / "results"
    procs = [start(grid, results, plugins, sleep=1.0) for _ in range(2)]
    outputs = [p.communicate(timeout=300) for p in procs]
    for proc, (out, err) in zip(procs, outputs):
        assert proc.returncode == 0, err
        assert leaderboard_seeds(out) == "4"  # every seed, whoever ran it
    assert sorted(fits(fit_log)) == [0, 1, 2, 3]  # every cell fitted exactly once
    records = list(iter_records(results, "g"))
    assert sorted(r["seed"] for r in records) == [0, 1, 2, 3]
    assert all(r["status"] == "ok" for r in records)


def test_ctrl_c_records_the_cell_as_interrupted_and_the_next_run_finishes_it(logged_grid, plugins, fit_log,
                                                                             tmp_path, cli):
    grid, results = logged_grid(range(2)), tmp_path / "results"
    proc = start(grid, results, plugins, sleep=60)
    wait_until(lambda: fits(fit_log), proc)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "Traceback" not in err and "Run the same command again to resume" in err
    (record,) = iter_records(results, "g")
    assert (record["seed"], record["status"], record["error_kind"]) == (0, "interrupted", "interrupted")
    assert record["error"] == "interrupted (Ctrl-C)" and record["run_s"] > 0 and record["finished_at"]
    assert not list(records_dir(results, "g").glob("*.lock"))

    code, out, err = cli("run", "--grid", grid, "--results", results, "--plugins-dir", plugins)
    assert code == 0, err
    assert sorted((r["seed"], r["status"]) for r in iter_records(results, "g")) == [(0, "ok"), (1, "ok")]
    assert fits(fit_log) == [0, 0, 1]


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGHUP])
def test_sigterm_and_sighup_stop_the_grid_like_ctrl_c(logged_grid, plugins, fit_log, tmp_path, cli, monkeypatch,
                                                      signum):
    """As a batch scheduler stops a job, or a closed terminal its run; in this process, from a
    thread, once the fit runs."""
    grid, results = logged_grid(range(2)), tmp_path / "results"
    monkeypatch.setenv("TLBENCH_TEST_SLEEP", "60")

    def terminate_when_fitting():
        deadline = time.monotonic() + 60
        while not fits(fit_log) and time.monotonic() < deadline:
            time.sleep(0.02)
        os.kill(os.getpid(), signum)

    handler = signal.getsignal(signum)
    threading.Thread(target=terminate_when_fitting, daemon=True).start()
    code, out, err = cli("run", "--grid", grid, "--results", results, "--plugins-dir", plugins)
    assert code == 130 and "is recorded as interrupted" in err
    (record,) = iter_records(results, "g")
    assert (record["status"], record["error"]) == ("interrupted", f"interrupted ({signum.name})")
    assert signal.getsignal(signum) == handler  # restored


# -- failures stay in their cell ---------------------------------------------------------------


@pytest.fixture(scope="module")
def failed_grid(tmp_path_factory, test_plugins_dir, tiny_settings):
    """A grid where one cell raises, one runs out of memory, one diverges and one works."""
    folder = tmp_path_factory.mktemp("failures")
    (folder / "fits.log").touch()
    grid = folder / "grid.toml"
    grid.write_text(f"""
name = "failures"
backbones = ["test_efficientnet"]
strategies = ["explodes", "oom", "full_finetune", "logged"]
datasets = ["faces"]
{tiny_settings}
[strategy.full_finetune]
lr = 1e30
""")
    err = io.StringIO()
    with (pytest.MonkeyPatch.context() as env, contextlib.redirect_stderr(err),
          contextlib.redirect_stdout(io.StringIO())):
        env.setenv("TLBENCH_TEST_LOG", str(folder / "fits.log"))
        env.setenv("TLBENCH_CACHE_DIR", str(folder / "cache"))
        code = main(["run", "--grid", str(grid), "--results", str(folder / "results"),
                     "--plugins-dir", str(test_plugins_dir)])
    return folder / "results", code, err.getvalue()


def test_failing_cells_are_classified_and_the_others_finish(failed_grid):
    results, code, err = failed_grid
    assert code == 1
    by_strategy = {r["strategy"]: r for r in iter_records(results, "failures")}
    assert by_strategy["logged"]["status"] == "ok"
    assert {s: (r["status"], r.get("error_kind")) for s, r in by_strategy.items() if s != "logged"} == {
        "explodes": ("failed", "exception"),
        "oom": ("failed", "oom"),
        "full_finetune": ("failed", "non_finite"),
    }
    assert "non-finite training loss" in by_strategy["full_finetune"]["error"]
    assert "OutOfMemoryError: CUDA out of memory" in by_strategy["oom"]["error"]
    assert "3 cell(s) failed" in err and "[oom]" in err and "hint: out of memory" in err
    assert "hint: non-finite loss" in err and "--retry-failed" in err


def test_records_carry_provenance(failed_grid):
    results, _, _ = failed_grid
    for record in iter_records(results, "failures"):
        env = record["environment"]  # failed records too
        assert record["started_at"] <= record["finished_at"] and record["run_s"] > 0
        assert env["hostname"] and env["torch"] and env["timm"] and env["device_name"]
        assert env["tlbench_git_commit"] is None or len(env["tlbench_git_commit"]) == 40
        assert set(record["split_sizes"]) == {"train", "val", "test"} and record["split_digest"]
        assert record["weights"] == "random" and env["precision"] == "fp32"


def test_runs_lists_records_with_status_and_metrics(failed_grid, cli):
    results, _, _ = failed_grid
    code, out, err = cli("runs", "--results", results)
    assert code == 0, err
    lines = out.splitlines()
    assert lines[0].split() == ["grid", "backbone", "strategy", "dataset", "seed", "status", "top1",
                                "train_s", "cell", "id", "(run_id)", "node", "error"]
    rows = [line.split()[:6] for line in lines[2:-1]]
    assert [row[2] for row in rows] == ["explodes", "full_finetune", "logged", "oom"]  # sorted
    assert [row[5] for row in rows] == ["failed", "failed", "ok", "failed"]
    assert "RuntimeError: boom" in out and lines[-1] == "4 record(s): 3 failed, 1 ok"


@pytest.mark.parametrize("argv, strategies", [
    (["--status", "ok"], ["logged"]),
    (["--strategy", "e*"], ["explodes"]),
    (["--dataset", "faces", "--status", "failed"], ["explodes", "full_finetune", "oom"]),
    (["--grid-name", "failures", "--backbone", "test_*"], ["explodes", "full_finetune", "logged", "oom"]),
])
def test_runs_filters(failed_grid, cli, argv, strategies):
    code, out, err = cli("runs", "--results", failed_grid[0], *argv)
    assert code == 0, err
    assert [line.split()[2] for line in out.splitlines()[2:-1]] == strategies


def test_runs_with_no_match_or_unknown_grid(failed_grid, cli):
    code, out, err = cli("runs", "--results", failed_grid[0], "--backbone", "resnet50")
    assert code == 0 and out == "" and "No records match --backbone resnet50 (4 record(s)" in err
    code, out, err = cli("runs", "--results", failed_grid[0], "--grid-name", "failurs")
    assert code == 2 and "Unknown grid 'failurs'" in err and "Did you mean: failures?" in err


def test_runs_and_report_inside_a_grids_folder_read_that_grid(failed_grid, cli, monkeypatch):
    listed = cli("runs", "--results", failed_grid[0])[1]
    monkeypatch.chdir(failed_grid[0] / "failures")
    code, out, err = cli("runs", "--results", ".")
    assert code == 0 and out == listed, err
    code, out, err = cli("report", "--results", ".")
    assert code == 0 and "Leaderboard in " in out and "failures" in out, err


def test_runs_shows_cells_running_now(failed_grid, cli):
    results = failed_grid[0]
    (record,) = [r for r in iter_records(results, "failures") if r["strategy"] == "oom"]
    about = {k: record[k] for k in ("backbone", "strategy", "dataset", "seed")}
    with claim_cell(results, "failures", record["run_id"], about):
        code, out, err = cli("runs", "--results", results, "--status", "running")
    assert code == 0, err
    (row,) = out.splitlines()[2:-1]
    assert row.split()[2] == "oom" and f"pid {os.getpid()}" in row


def test_runs_shows_a_detached_arrays_cells_queued_and_a_corrupt_submission_file_is_one_warning(
        failed_grid, cli, tmp_path, monkeypatch):
    # what `tlbench run --executor slurm --detach` leaves (tests/test_slurm_cluster.py runs it on
    # a real cluster), here where Slurm does not answer: the cells are shown as they were submitted
    import shutil

    shutil.copytree(Path(failed_grid[0]) / "failures", tmp_path / "failures")
    by_strategy = {r["strategy"]: r for r in iter_records(tmp_path, "failures")}
    cells = {r["run_id"]: {**{k: r[k] for k in ("backbone", "strategy", "dataset", "seed")}, "finished_at": at}
             for r, at in ((by_strategy["oom"], by_strategy["oom"]["finished_at"]),  # to retry: no record since
                           (by_strategy["explodes"], "2000-01-01T00:00:00+00:00"))}  # recorded since: done
    slurm = tmp_path / "failures" / "slurm"
    slurm.mkdir()
    (slurm / "12.json").write_text(json.dumps({"job_id": "12", "submitted_at": "2030-01-01T00:00:00+00:00",
                                                "outbox": str(slurm / "x"), "tasks": [list(cells)], "cells": cells}))
    (slurm / "13.json").write_text('{"job_id": "13", "submitted_at": "x", "outbox": "x", "tasks": "x"}')
    (slurm / "14.json").write_text('{"job_id": "14", "ta')
    monkeypatch.setenv("PATH", str(tmp_path))  # no squeue here
    code, out, err = cli("runs", "--results", tmp_path)
    assert code == 0, err
    rows = {line.split()[2]: line for line in out.splitlines()[2:-1]}
    assert rows["oom"].split()[5] == "queued" and "Slurm job 12, as submitted (Slurm did not answer)" in rows["oom"]
    assert rows["explodes"].split()[5] == "failed" and out.splitlines()[-1] == "4 record(s): 2 failed, 1 ok, 1 queued"
    assert err.count("warning:") == 3 and "Traceback" not in err
    assert "Slurm does not answer here (no squeue on this machine)" in err
    assert f"{slurm / '13.json'} is ignored (tasks must be lists of run_ids)" in err
    assert f"{slurm / '14.json'} is ignored (unreadable" in err


def test_runs_does_not_import_torch(failed_grid):
    code = ("import sys\nfrom tlbench.cli import main\n"
            f"main(['runs', '--results', {str(failed_grid[0])!r}])\n"
            "assert 'torch' not in sys.modules and 'pandas' not in sys.modules")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


# -- corrupt records, claims, leftovers --------------------------------------------------------


def test_corrupt_record_is_set_aside_and_only_its_cell_reruns(logged_grid, plugins, fit_log, tmp_path, cli):
    grid, results = logged_grid(range(3)), tmp_path / "results"
    argv = ("run", "--grid", grid, "--results", results, "--plugins-dir", plugins, "-q")
    assert cli(*argv)[0] == 0
    paths = {json.loads(p.read_text())["seed"]: p for p in record_files(results)}
    others = {seed: fingerprint(p) for seed, p in paths.items() if seed != 1}
    paths[1].write_text('{"run_id": "trunc')

    code, out, err = cli(*argv)
    assert code == 0, err
    assert err.count("warning: corrupt record") == 1 and str(paths[1]) in err
    (aside,) = (records_dir(results, "g") / "corrupt").iterdir()
    assert aside.name.startswith(paths[1].name) and aside.read_text() == '{"run_id": "trunc'
    assert fits(fit_log) == [0, 1, 2, 1]  # only the corrupt cell ran again
    assert {seed: fingerprint(paths[seed]) for seed in others} == others
    assert json.loads(paths[1].read_text())["status"] == "ok"
    assert "corrupt" not in cli(*argv)[2]  # reported once


@pytest.mark.parametrize("text, why", [
    ("", "unreadable"),
    ("[1, 2]", "not a JSON object"),
    ('{"run_id": "abc"}', "missing or invalid 'grid'"),
    ('{"run_id": "other", "grid": "g", "backbone": "b", "strategy": "s", "dataset": "d", "seed": 0, '
     '"status": "ok", "top1": 0.5}', "does not match the file name"),
    ('{"run_id": "abc", "grid": "g", "backbone": "b", "strategy": "s", "dataset": "d", "seed": 0, '
     '"status": "ok"}', "without a top1"),
])
def test_unsound_records_are_not_trusted(tmp_path, capsys, text, why):
    path = tmp_path / "records" / "abc.json"
    path.parent.mkdir()
    path.write_text(text)
    assert read_record(path) is None
    assert why in capsys.readouterr().err
    assert not path.exists() and len(list((tmp_path / "records" / "corrupt").iterdir())) == 1


def test_a_claim_excludes_other_claims_until_released(tmp_path):
    claim = claim_cell(tmp_path, "g", "abc")
    assert claim is not None and claim_cell(tmp_path, "g", "abc") is None
    assert json.loads(claim.path.read_text())["pid"] == os.getpid()
    claim.release()
    assert not claim.path.exists()
    with claim_cell(tmp_path, "g", "abc") as again:
        assert again is not None


def test_leftovers_of_killed_writers_are_removed(tmp_path):
    folder = records_dir(tmp_path, "g")
    folder.mkdir(parents=True)
    old, young = folder / ".a.json.x1.tmp", folder / ".b.json.x2.tmp"
    for path in (old, young):
        path.write_text("{")
    os.utime(old, (time.time() - 7 * 3600,) * 2)
    (folder / "dead.lock").write_text('{"pid": 1}')  # its holder is gone, so is its lock
    with claim_cell(tmp_path, "g", "live") as live:
        remove_leftovers(tmp_path, "g")
        assert live.path.exists()
    assert not old.exists() and young.exists() and not (folder / "dead.lock").exists()


def test_a_file_named_by_an_option_is_part_of_the_run_id(write_grid, registry, tmp_path):
    weights = tmp_path / "weights.pth"
    weights.write_bytes(b"first")
    grid = write_grid(f"""
        name = "g"
        backbones = ["test_efficientnet"]
        strategies = ["linear_probe"]
        datasets = ["faces"]
        [backbone.test_efficientnet]
        checkpoint = "{weights}"
    """)

    def run_id():
        return load_grid(str(grid), registry).cells[0].run_id

    first = run_id()
    weights.write_bytes(b"first")  # rewritten, same bytes: the same configuration
    assert run_id() == first
    weights.write_bytes(b"other")
    assert run_id() != first


def test_a_checkpoint_replaced_while_the_grid_runs_is_never_recorded_under_the_old_run_id(write_grid, registry,
                                                                                          tiny_settings, tmp_path):
    import timm
    import torch

    from tlbench.runner import Runner

    weights = tmp_path / "weights.pth"
    torch.save(timm.create_model("test_efficientnet").state_dict(), weights)
    grid = load_grid(str(write_grid(f"""
        name = "g"
        backbones = ["test_efficientnet"]
        strategies = ["linear_probe"]
        datasets = ["faces"]
        seeds = [0, 1]
        {tiny_settings.replace("pretrained = false", "")}
        [backbone.test_efficientnet]
        checkpoint = "{weights}"
    """)), registry)
    runner = Runner(registry, tmp_path)
    first = runner.run_cell(grid.cells[0])
    assert first["status"] == "ok" and first["run_id"] == grid.cells[0].run_id
    torch.manual_seed(1)
    torch.save(timm.create_model("test_efficientnet").state_dict(), weights)  # replaced mid-grid
    second = runner.run_cell(grid.cells[1])
    assert second["status"] == "failed" and "changed since the grid was read" in second["error"]
    assert str(weights) in second["error"]


# -- a strategy's result is checked, not trusted -----------------------------------------------


def check_nan_logits(record):
    assert record["error_kind"] == "non_finite" and "non-finite logits" in record["error"]


def check_returns_none(record):
    assert record["status"] == "failed"
    assert "fit() returned NoneType; a strategy's fit must return the model to score" in record["error"]


def check_exits(record):
    assert record["status"] == "failed" and record["error"] == "SystemExit: 3"


def check_logs_odd_values(record):
    assert record["status"] == "ok"  # one rule in every executor: NaN -> null, objects -> str
    info = record["strategy_info"]
    assert info["nan"] is None and info["tensor"] == 0.25
    assert info["pair"] == [1, 2] and info["obj"].startswith("<object")


def check_logged(record):
    assert record["status"] == "ok"


EXPECTED = {"nan_logits": check_nan_logits, "returns_none": check_returns_none, "exits": check_exits,
            "logs_odd_values": check_logs_odd_values, "logged": check_logged}


@pytest.mark.parametrize("executor, strategies", [
    ("local", list(EXPECTED)),
    # in a process of its own, what differs: sys.exit() there, and the record's trip as JSON
    # (each cell there costs a Python start-up with torch)
    ("subprocess", ["exits", "logs_odd_values"]),
])
def test_a_broken_strategy_fails_its_own_cell_only(logged_grid, plugins, fit_log, tmp_path, cli, executor,
                                                   strategies):
    grid = logged_grid([0], ", ".join(f'"{s}"' for s in strategies))
    code, out, err = cli("run", "--grid", grid, "--results", tmp_path, "--plugins-dir", plugins,
                         "--executor", executor)
    assert code == 1 and "Traceback" not in err
    records = {r["strategy"]: r for r in iter_records(tmp_path, "g")}
    assert set(records) == set(strategies)
    for strategy in strategies:
        EXPECTED[strategy](records[strategy])


# -- records are data from disk ----------------------------------------------------------------


def sound_record(run_id="abc", **fields):
    return {"run_id": run_id, "grid": "g", "backbone": "b", "strategy": "s", "dataset": "d", "seed": 0,
            "status": "ok", "top1": 0.5, **fields}


@pytest.mark.parametrize("fields, why", [
    ({"started_at": 12345}, "invalid 'started_at'"),
    ({"environment": []}, "invalid 'environment'"),
    ({"top1": 1e308}, "invalid 'top1'"),
    ({"train_s": -1.0}, "invalid 'train_s'"),
    ({"seed": True}, "missing or invalid 'seed'"),
    ({"warnings": "one"}, "invalid 'warnings'"),
    ({"sweep": {"train_per_class": [1]}}, "invalid 'sweep'"),
    ({"error_kind": "gremlins"}, "invalid 'error_kind'"),
    ({"scoring": {"path": ["features"]}}, "invalid 'scoring'"),
])
def test_a_record_with_a_wrongly_typed_field_is_set_aside(tmp_path, capsys, fields, why):
    path = tmp_path / "records" / "abc.json"
    path.parent.mkdir()
    path.write_text(json.dumps(sound_record(**fields)))
    assert read_record(path) is None
    err = capsys.readouterr().err
    assert why in err and str(path) in err and len(err.strip().splitlines()) == 1
    assert not path.exists() and len(list((tmp_path / "records" / "corrupt").iterdir())) == 1


def test_nan_in_a_record_file_is_corrupt_and_never_ranked(tmp_path, cli):
    folder = tmp_path / "g" / "records"
    folder.mkdir(parents=True)
    (folder / "abc.json").write_text(json.dumps(sound_record()).replace('"top1": 0.5', '"top1": NaN'))
    write_record(tmp_path, sound_record("def", strategy="t", top1=0.7))
    code, out, err = cli("report", "--results", tmp_path)
    assert code == 0 and "is not a JSON number" in err and "Traceback" not in err
    board = (tmp_path / "g" / "leaderboard.json").read_text()
    assert "NaN" not in board and json.loads(board)["strategies"] == ["t"]


def folder_state(folder: Path) -> dict:
    """{relative path: bytes} of every file under ``folder``: what a read-only command must keep."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.mark.parametrize("command", [("report",), ("runs",)])
def test_read_only_commands_leave_a_corrupt_record_where_it_is(tmp_path, cli, command):
    write_record(tmp_path, sound_record("abc"))
    (records_dir(tmp_path, "g") / "def.json").write_text('{"run_id": "trunc')
    before = folder_state(records_dir(tmp_path, "g"))
    code, out, err = cli(*command, "--results", tmp_path)
    assert code == 0 and err.count("warning: corrupt record") == 1 and "left as it is" in err
    assert folder_state(records_dir(tmp_path, "g")) == before  # nothing moved, no claim file left


@pytest.mark.parametrize("fields", [{"status": "queued"}, {"status": "failed", "error_kind": "preempted"}])
@pytest.mark.parametrize("command", [("report",), ("runs",)])
def test_a_newer_versions_record_is_skipped_with_one_warning_and_kept(tmp_path, cli, fields, command):
    write_record(tmp_path, sound_record("abc"))
    newer = sound_record("def", strategy="t", environment={"tlbench": "9.2.0"}, **fields)
    (records_dir(tmp_path, "g") / "def.json").write_text(json.dumps(newer))
    before = folder_state(records_dir(tmp_path, "g"))
    code, out, err = cli(*command, "--results", tmp_path)
    assert code == 0 and "Traceback" not in err and "corrupt" not in err
    assert err.count("written by tlbench 9.2.0") == 1 and "left as it is" in err
    assert folder_state(records_dir(tmp_path, "g")) == before
    assert [r["run_id"] for r in iter_records(tmp_path, "g")] == ["abc"]


def test_a_newer_versions_record_of_a_cell_is_not_rerun_nor_replaced(logged_grid, plugins, fit_log, tmp_path, cli):
    grid, results = logged_grid([0]), tmp_path / "results"
    argv = ("run", "--grid", grid, "--results", results, "--plugins-dir", plugins, "-q")
    assert cli(*argv)[0] == 0
    (path,) = record_files(results)
    path.write_text(json.dumps({**json.loads(path.read_text()), "status": "queued",
                                "environment": {"tlbench": "9.2.0"}}))
    before = path.read_bytes()
    code, out, err = cli(*argv, "--force")
    assert code == 0 and err.count("written by tlbench 9.2.0") == 1
    assert path.read_bytes() == before and fits(fit_log) == [0]


def test_an_older_or_same_versions_unknown_status_is_corrupt(tmp_path, capsys):
    path = records_dir(tmp_path, "g") / "abc.json"
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps(sound_record(status="queued", environment={"tlbench": "0.1.0"})))
    assert read_record(path) is None  # `tlbench run`'s reader sets it aside
    assert "corrupt record" in capsys.readouterr().err and not path.exists()


def test_each_cell_counts_once_however_many_files_record_it(tmp_path, cli):
    cell = {"config_id": "c1", "seed": 0}
    write_record(tmp_path, sound_record("abc", top1=0.5, **cell))
    # the same cell under another name, and a record edited to another run_id: n stays 1
    folder = records_dir(tmp_path, "g")
    (folder / "copy.json").write_text(json.dumps(sound_record("abc", top1=0.9, **cell)))
    write_record(tmp_path, sound_record("abd", top1=0.9, **cell))
    # a lone record stored under another cell's name counts as the cell it records
    (folder / "xyz.json").write_text(json.dumps(sound_record("other", strategy="t", top1=0.7, config_id="c2")))
    code, out, err = cli("report", "--results", tmp_path)
    assert code == 0, err
    rows = {r["strategy"]: r for r in json.loads((tmp_path / "g" / "leaderboard.json").read_text())["per_dataset"]}
    assert rows["s"]["seeds"] == 1 and rows["s"]["top1"] == 0.5 and rows["t"]["top1"] == 0.7
    assert err.count("is of the same cell as") == 2 and str(folder / "abc.json") in err
    assert "xyz.json is named after another cell" in err
    assert sorted(p.name for p in folder.iterdir()) == ["abc.json", "abd.json", "copy.json", "xyz.json"]


def test_a_record_is_never_written_with_bare_nan(tmp_path):
    path = write_record(tmp_path, sound_record(strategy_info={"loss": float("nan"), "at": float("inf")}))
    text = path.read_text()
    assert "NaN" not in text and "Infinity" not in text
    assert json.loads(text)["strategy_info"] == {"loss": None, "at": None}


def test_a_record_this_user_cannot_read_is_not_corrupt(tmp_path, cli, monkeypatch):
    """Root reads every file, so the permission error is simulated where the record is read."""
    write_record(tmp_path, sound_record("abc"))
    path = records_dir(tmp_path, "g") / "abc.json"
    import tlbench.results

    real = tlbench.results.read_regular_text

    def read_text(file, *args, **kwargs):
        if file == path:
            raise PermissionError(13, "Permission denied")
        return real(file, *args, **kwargs)

    monkeypatch.setattr(tlbench.results, "read_regular_text", read_text)
    code, out, err = cli("report", "--results", tmp_path)
    assert code == 2 and len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert "not readable by this user" in err and "chmod a+r" in err
    assert path.exists() and not (path.parent / "corrupt").exists()


def test_files_others_read_get_the_umask_mode(tmp_path, cli):
    old = os.umask(0o022)
    try:
        write_record(tmp_path, sound_record("abc"))
        assert cli("report", "--results", tmp_path)[0] == 0
    finally:
        os.umask(old)
    assert (records_dir(tmp_path, "g") / "abc.json").stat().st_mode & 0o777 == 0o644
    for name in ("leaderboard.md", "leaderboard.html", "leaderboard.json"):
        assert (tmp_path / "g" / name).stat().st_mode & 0o777 == 0o644, name


# -- faults during writing ---------------------------------------------------------------------


def leaderboard_then_a_new_record(tmp_path, cli):
    """(grid folder, {file: bytes} of its leaderboard set) with a record newer than that set."""
    write_record(tmp_path, sound_record("abc"))
    assert cli("report", "--results", tmp_path)[0] == 0
    folder = tmp_path / "g"
    before = {p.name: p.read_bytes() for p in folder.iterdir() if p.is_file()}
    write_record(tmp_path, sound_record("def", strategy="t", top1=0.9))
    return folder, before


def test_a_failed_leaderboard_write_leaves_the_old_set_and_no_temporaries(tmp_path, cli, monkeypatch):
    folder, before = leaderboard_then_a_new_record(tmp_path, cli)
    import tempfile

    real_mkstemp = tempfile.mkstemp

    def full_disk(*args, prefix="", **kwargs):
        if prefix.startswith(".leaderboard.json"):  # the sixth file of the set: the disk is full
            raise OSError(28, "No space left on device")
        return real_mkstemp(*args, prefix=prefix, **kwargs)

    monkeypatch.setattr(tempfile, "mkstemp", full_disk)
    code, out, err = cli("report", "--results", tmp_path)
    monkeypatch.undo()
    assert code == 2 and "No space left on device" in err and "Traceback" not in err
    assert "the files there are unchanged" in err
    assert not [p for p in folder.iterdir() if p.name.endswith(".tmp")]
    assert {p.name: p.read_bytes() for p in folder.iterdir() if p.is_file()} == before  # all old, none new


def test_a_full_disk_while_storing_a_record_stops_the_run_cleanly(logged_grid, plugins, fit_log, tmp_path, cli,
                                                                  monkeypatch):
    grid = logged_grid([0, 1, 2])
    import tlbench.driver as driver

    real = driver.write_record
    stored = []

    def write_or_fail(results_dir, record):
        if len(stored) == 1:
            raise OSError(28, "No space left on device")
        stored.append(record["seed"])
        return real(results_dir, record)

    monkeypatch.setattr(driver, "write_record", write_or_fail)
    code, out, err = cli("run", "--grid", grid, "--results", tmp_path, "--plugins-dir", plugins)
    assert code == 1 and "Traceback" not in err
    assert "No space left on device" in err and "the records stored before are intact" in err
    assert [r["seed"] for r in iter_records(tmp_path, "g")] == stored == [0]
    assert fits(fit_log) == [0, 1]  # it stopped at the cell it could not store


def test_ctrl_c_during_report_leaves_the_old_set_and_no_temporaries(tmp_path, cli, monkeypatch):
    folder, before = leaderboard_then_a_new_record(tmp_path, cli)
    import tempfile

    real_mkstemp, calls = tempfile.mkstemp, []

    def interrupted(*args, prefix="", **kwargs):
        if str(kwargs.get("dir", "")) == str(folder):  # the leaderboard set only
            calls.append(prefix)
            if len(calls) == 4:  # Ctrl-C while the fourth file of the set is being written
                raise KeyboardInterrupt
        return real_mkstemp(*args, prefix=prefix, **kwargs)

    monkeypatch.setattr(tempfile, "mkstemp", interrupted)
    code, out, err = cli("report", "--results", tmp_path)
    monkeypatch.undo()
    assert code == 130 and "Traceback" not in err
    assert {p.name: p.read_bytes() for p in folder.iterdir() if p.is_file()} == before


def test_temporaries_of_a_report_killed_with_sigkill_are_removed_by_the_next(tmp_path, cli):
    write_record(tmp_path, sound_record("abc"))
    folder = tmp_path / "g"
    folder.mkdir(exist_ok=True)
    stray = folder / ".leaderboard.md.x1y2.tmp"
    stray.write_text("half")
    os.utime(stray, (time.time() - 3600, time.time() - 3600))
    assert cli("report", "--results", tmp_path)[0] == 0
    assert not stray.exists() and (folder / "leaderboard.md").exists()
