"""Sinks: every record a run stores and every leaderboard written also go to an experiment
tracker, read back here for real (W&B offline, from its own run files; MLflow on a SQLite store,
through its client). A sink that fails is said once and changes nothing else."""

import contextlib
import io
import json
import struct
import sys
from pathlib import Path

import pytest

from tlbench.cli import main
from tlbench.grid import load_grid

def records_of(results: Path, grid: str) -> dict:
    """The stored records of a grid, by run_id."""
    found = (json.loads(p.read_text()) for p in (results / grid / "records").glob("*.json"))
    return {record["run_id"]: record for record in found}


# -- W&B and MLflow, read back -------------------------------------------------------------------


@pytest.fixture(scope="module")
def tracked(tmp_path_factory, test_plugins_dir, one_cell_text):
    """A 4-cell grid (4 seeds) run once with both trackers on, and the test-only ``raising`` sink
    failing at the first record: (its folder, its records, what the run said on stderr)."""
    pytest.importorskip("wandb", reason="the test extra installs it")
    pytest.importorskip("mlflow", reason="the test extra installs it")
    folder = tmp_path_factory.mktemp("tracked")
    (folder / "grid.toml").write_text(f"""
name = "tracked"
seeds = [0, 1, 2, 3]
sinks = ["wandb", "mlflow"]
{one_cell_text}
[sink.wandb]
mode = "offline"
dir = "{folder}"
project = "tlbench-tests"
tags = ["ci"]
[sink.mlflow]
tracking_uri = "sqlite:///{folder}/mlflow.db"
""")
    stderr = io.StringIO()
    with pytest.MonkeyPatch.context() as patch, contextlib.redirect_stderr(stderr):
        patch.chdir(folder)  # MLflow keeps a SQLite store's artifacts in ./mlruns
        patch.setenv("TLBENCH_CACHE_DIR", str(folder / "cache"))
        patch.setenv("TLBENCH_TEST_SINK_LOG", str(folder / "raising.log"))
        patch.setenv("TLBENCH_TEST_SINK_RAISES", "record")
        code = main(["run", "--grid", "grid.toml", "--results", "results", "-q", "--sink", "raising",
                     "--plugins-dir", str(test_plugins_dir)])
    assert code == 0, stderr.getvalue()
    records = records_of(folder / "results", "tracked")
    return folder, records, stderr.getvalue()


def wandb_log(path: Path):
    """The records of a W&B run's transaction log (run-ID.wandb, W&B's protobuf records in
    LevelDB's log format: 32 KiB blocks of chunks with a 7-byte header), parsed with W&B's own
    protobuf classes."""
    from wandb.proto import wandb_internal_pb2

    data = path.read_bytes()
    assert data[:4] == b":W&B"
    position, pending = 7, b""  # after W&B's header: magic, key, version
    while position + 7 <= len(data):
        if 32768 - position % 32768 < 7:  # a block's tail too short for a header is padding
            position += 32768 - position % 32768
            continue
        _, length, kind = struct.unpack("<IHB", data[position:position + 7])
        pending += data[position + 7:position + 7 + length]
        position += 7 + length
        if kind in (1, 4):  # a full record, or the last chunk of one
            record = wandb_internal_pb2.Record()
            record.ParseFromString(pending)
            pending = b""
            yield record


def wandb_run(path: Path) -> dict:
    """What a W&B offline run logged: its name, group, job type, tags, config, summary, exit code."""
    def items(updates):
        return {item.key or "/".join(item.nested_key): json.loads(item.value_json) for item in updates}

    run = {"summary": {}}
    for record in wandb_log(path):
        kind = record.WhichOneof("record_type")
        if kind == "run":
            run.update(name=record.run.display_name, group=record.run.run_group, job_type=record.run.job_type,
                       project=record.run.project, tags=list(record.run.tags), config=items(record.run.config.update))
        elif kind == "summary":
            run["summary"].update(items(record.summary.update))
        elif kind == "exit":
            run["exit_code"] = record.exit.exit_code
    return run


def test_the_wandb_sink_logs_a_run_per_cell_and_the_leaderboard_tables(tracked):
    folder, records, _ = tracked
    runs = {path: wandb_run(path) for path in sorted(folder.glob("wandb/offline-run-*/run-*.wandb"))}
    cells = {run["config"]["run_id"]: run for run in runs.values() if run["job_type"] == "cell"}
    assert set(cells) == set(records)
    for run_id, run in cells.items():
        record = records[run_id]
        assert run["name"] == f"test_efficientnet / linear_probe / digits / seed {record['seed']}"
        assert (run["project"], run["group"], run["tags"], run["exit_code"]) == ("tlbench-tests", "tracked", ["ci", "ok"], 0)
        assert {k: run["config"][k] for k in ("grid", "backbone", "strategy", "dataset", "seed")} == {
            k: record[k] for k in ("grid", "backbone", "strategy", "dataset", "seed")}
        assert run["config"]["settings"] == record["settings"] and run["config"]["options"] == record["options"]
        for metric in ("top1", "top5", "train_s", "eval_s", "trainable_params", "total_params"):
            assert run["summary"][metric] == pytest.approx(record[metric])
    ((path, board),) = [(path, run) for path, run in runs.items() if run["job_type"] == "leaderboard"]
    assert board["name"] == "tracked leaderboard"
    summary = board["summary"]  # a table's entry is nested: per_dataset/_type, per_dataset/path, ...
    assert (summary["per_dataset/_type"], summary["per_dataset/nrows"]) == ("table-file", 1)
    assert summary["overall/nrows"] == 1
    logged = json.loads((path.parent / "files" / summary["per_dataset/path"]).read_text())
    written = json.loads((folder / "results" / "tracked" / "leaderboard.json").read_text())["per_dataset"]
    row = dict(zip(logged["columns"], logged["data"][0]))
    assert row["strategy"] == "linear_probe" and row["top1"] == pytest.approx(written[0]["top1"])


def test_the_mlflow_sink_logs_a_run_per_cell_and_the_leaderboard_files(tracked):
    from mlflow import MlflowClient

    folder, records, _ = tracked
    client = MlflowClient(f"sqlite:///{folder}/mlflow.db")
    experiment = client.get_experiment_by_name("tracked")
    runs = client.search_runs([experiment.experiment_id])
    cells = {run.data.tags["tlbench.run_id"]: run for run in runs if run.data.tags["tlbench.kind"] == "cell"}
    assert set(cells) == set(records)
    for run_id, run in cells.items():
        record = records[run_id]
        assert run.info.status == "FINISHED" and run.info.run_name.endswith(f"seed {record['seed']}")
        params = run.data.params
        assert (params["strategy"], params["seed"], params["run_id"]) == ("linear_probe", str(record["seed"]), run_id)
        assert params["settings.epochs"] == str(record["settings"]["epochs"])
        assert params["options.max_iter"] == str(record["options"]["max_iter"])
        for metric in ("top1", "top5", "train_s", "trainable_params"):
            assert run.data.metrics[metric] == pytest.approx(record[metric])
    (board,) = [run for run in runs if run.data.tags["tlbench.kind"] == "leaderboard"]
    artifacts = {a.path for a in client.list_artifacts(board.info.run_id)}
    assert {"leaderboard.md", "leaderboard.csv", "leaderboard.json"} <= artifacts
    # every leaderboard file (the grid snapshot beside them is run's, not the leaderboard's)
    assert artifacts == {p.name for p in (folder / "results" / "tracked").iterdir()
                         if p.is_file() and p.name != "grid.json"}


# -- failures ------------------------------------------------------------------------------------


def test_a_sink_that_raises_is_said_once_and_the_cells_and_other_sinks_go_on(tracked):
    folder, records, stderr = tracked  # the W&B and MLflow tests above read all 4 cells back
    assert stderr.count("sink 'raising' failed") == 1 and "the tracker is down (record)" in stderr
    assert "Traceback" not in stderr
    assert (folder / "raising.log").read_text().splitlines()[0] == "start"
    assert len((folder / "raising.log").read_text().splitlines()) == 2  # start, the first record
    assert len(records) == 4 and all(r["status"] == "ok" for r in records.values())


@pytest.mark.parametrize("step, calls", [("report", ["start", "report tracked"]), ("start", ["start"])])
def test_tlbench_report_tells_sinks_and_a_failure_there_changes_nothing(cli, tracked, tmp_path, monkeypatch,
                                                                       test_plugins_dir, step, calls):
    folder, _, _ = tracked
    log = tmp_path / "raising.log"
    monkeypatch.setenv("TLBENCH_TEST_SINK_LOG", str(log))
    monkeypatch.setenv("TLBENCH_TEST_SINK_RAISES", step)
    code, out, err = cli("report", "--results", folder / "results", "--sink", "raising",
                         "--plugins-dir", test_plugins_dir)
    assert code == 0 and err.count("sink 'raising' failed") == 1 and f"the tracker is down ({step})" in err
    assert log.read_text().splitlines() == calls
    assert "leaderboard.md" in out


@pytest.mark.parametrize("sink, module", [("wandb", "wandb"), ("mlflow", "mlflow")])
def test_a_sink_whose_library_is_missing_stops_the_grid_before_any_cell(cli, write_grid, tmp_path, monkeypatch,
                                                                        one_cell_text, sink, module):
    monkeypatch.setitem(sys.modules, module, None)  # None in sys.modules: the import fails
    grid = write_grid(f'name = "untracked"\nsinks = ["{sink}"]\n{one_cell_text}')
    code, out, err = cli("run", "--grid", grid, "--results", tmp_path / "results")
    assert code == 2 and "Traceback" not in err
    assert f"sink '{sink}': the Python package '{module}' is not installed" in err
    assert f'pip install "tlbench[{sink}]"' in err
    assert not (tmp_path / "results" / "untracked" / "records").exists()


def test_sink_options_are_checked_like_every_plugins_and_change_no_cell_id(cli, write_grid, registry, tmp_path,
                                                                          one_cell_text):
    misspelt = write_grid(f'name = "g"\nsinks = ["wandb"]\n{one_cell_text}\n[sink.wandb]\nprojekt = "x"\n')
    code, _, err = cli("run", "--grid", misspelt, "--results", tmp_path)
    assert code == 2 and "Unknown option 'projekt' in [sink.wandb]. Did you mean 'project'?" in err
    unknown = write_grid(f'name = "g"\nsinks = ["wandbb"]\n{one_cell_text}')
    code, _, err = cli("run", "--grid", unknown, "--results", tmp_path)
    assert code == 2 and "Unknown sink 'wandbb'" in err and "Did you mean: wandb?" in err
    plain_grid = write_grid(f'name = "g"\n{one_cell_text}')
    code, _, err = cli("run", "--grid", plain_grid, "--results", tmp_path, "--sink", "mlfow")
    assert code == 2 and "Did you mean: mlflow?" in err
    plain = load_grid(plain_grid, registry)
    tracked_text = f'name = "g"\nsinks = ["mlflow"]\n{one_cell_text}\n[sink.mlflow]\nexperiment = "e"\n'
    tracked = load_grid(write_grid(tracked_text), registry)
    assert [c.run_id for c in tracked.cells] == [c.run_id for c in plain.cells]
    assert tracked.sinks["on"] == ["mlflow"] and tracked.sinks["options"]["mlflow"].experiment == "e"


def test_ls_sinks_lists_the_first_party_trackers(cli):
    code, out, _ = cli("ls", "sinks")
    assert code == 0 and [line.split()[0] for line in out.splitlines()] == ["mlflow", "wandb"]


def test_a_worker_builds_its_cell_without_the_drivers_sink_plugins(write_grid, registry, test_plugins_dir,
                                                                   one_cell_text):
    """Only the driver tells sinks: a subprocess or a Ray node rebuilds its cell from the grid
    without the sink's plugin, and gets the driver's cell id."""
    from tlbench.cell_job import job_maker
    from tlbench.plugins import load_registry
    from tlbench.worker import cell_of

    assert "raising" not in registry.names("sinks")
    driver = load_grid(write_grid(f'name = "g"\nsinks = ["raising"]\n{one_cell_text}'),
                       load_registry(str(test_plugins_dir)))
    (cell,) = driver.cells
    assert cell_of(job_maker(driver, None, None)(cell), registry).run_id == cell.run_id
