"""`tlbench reproduce`: a results folder's cells rerun elsewhere, compared, the folder untouched."""

import hashlib
import json
import shutil
from pathlib import Path

import pytest

from tlbench.cli import main
from tlbench.reproduce import sample

GRID = """
name = "tiny"
backbones = ["test_efficientnet"]
strategies = ["linear_probe", "full_finetune", "explodes"]
datasets = ["faces"]
seeds = [0, 1]
"""


@pytest.fixture(scope="module")
def published(tmp_path_factory, tiny_settings, test_plugins_dir):
    """A grid run once for the whole file: 4 ok cells (2 strategies x 2 seeds) and 2 failed ones."""
    folder = tmp_path_factory.mktemp("published")
    grid = folder / "grid.toml"
    grid.write_text(GRID + tiny_settings, encoding="utf-8")
    with pytest.MonkeyPatch.context() as patch:  # the per-test cache fixture is not there yet
        patch.setenv("TLBENCH_CACHE_DIR", str(tmp_path_factory.mktemp("cache")))
        code = main(["run", "--grid", str(grid), "--results", str(folder / "results"), "-q",
                     "--plugins-dir", str(test_plugins_dir)])
    assert code == 1  # the two `explodes` cells failed; the others are ok
    return folder / "results"


@pytest.fixture
def copy(published, tmp_path):
    """A copy of the published folder this test may edit."""
    return Path(shutil.copytree(published, tmp_path / "results"))


@pytest.fixture
def reproduce(cli, test_plugins_dir):
    def run(*argv):
        return cli("reproduce", *argv, "--plugins-dir", test_plugins_dir)

    return run


def records(results: Path) -> dict:
    """{run_id: record} of the tiny grid."""
    return {p.stem: json.loads(p.read_text()) for p in (results / "tiny" / "records").glob("*.json")}


def ok_records(results: Path, strategy: str) -> list[dict]:
    return sorted((r for r in records(results).values() if r["status"] == "ok" and r["strategy"] == strategy),
                  key=lambda r: r["seed"])


def hashes(folder: Path) -> dict:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def rewrite(path: Path, **changes) -> None:
    record = json.loads(path.read_text())
    for key, value in changes.items():
        if isinstance(value, dict):
            record[key] = {**record[key], **value}
        else:
            record[key] = value
    path.write_text(json.dumps(record, indent=2))


def test_a_rerun_within_tolerance_exits_0_lists_every_cell_and_leaves_the_folder_as_it_was(published, reproduce):
    before = hashes(published)
    code, out, err = reproduce("--results", published, "--cells", "50")  # more than there are: all of them
    assert code == 0, out + err
    ok = [r for r in records(published).values() if r["status"] == "ok"]
    assert len(ok) == 4
    for record in ok:  # the table lists each rerun cell with its run_id; failed ones are not sampled
        assert record["run_id"] in out
    assert "explodes" not in out
    assert out.count("yes") == 4 and "Reproduced: all 4 rerun cell(s) are within 0.02" in out
    assert "published" in out and "rerun" in out and "diff" in out
    assert "[4/4]" in err  # progress, as `tlbench run` shows it
    assert hashes(published) == before  # not one byte: no record, lock or leaderboard


def test_an_edited_top1_exits_1_naming_the_cell(copy, reproduce):
    probe = ok_records(copy, "linear_probe")[0]
    path = copy / "tiny" / "records" / f"{probe['run_id']}.json"
    rewrite(path, top1=0.0 if probe["top1"] > 0.5 else 1.0)
    before = hashes(copy)
    code, out, err = reproduce("--results", copy / "tiny", "--run-id", probe["run_id"][:8], "-q")
    assert code == 1, out + err
    assert "Not reproduced: 1 of 1 cell(s) beyond 0.02" in out
    assert f"test_efficientnet / linear_probe / faces / seed {probe['seed']} (cell id {probe['run_id']})" in out
    assert err == ""  # -q: no progress
    assert hashes(copy) == before


def test_a_record_that_contradicts_its_own_predictions_is_named(copy, reproduce):
    probe = ok_records(copy, "linear_probe")[0]
    nudged = max(0.0, probe["top1"] - 0.01)  # within the tolerance: only the predictions give it away
    rewrite(copy / "tiny" / "records" / f"{probe['run_id']}.json", top1=nudged)
    code, out, err = reproduce("--results", copy, "--run-id", probe["run_id"], "-q")
    assert code == 1, out + err
    assert "1 of 1 published record(s) contradict themselves" in out
    assert f"its top-1 {nudged:.3f} disagrees with its own per-image predictions ({probe['top1']:.3f} of" in out


def test_a_larger_tolerance_accepts_the_difference(copy, reproduce):
    probe = ok_records(copy, "linear_probe")[0]
    path = copy / "tiny" / "records" / f"{probe['run_id']}.json"
    rewrite(path, top1=max(0.0, probe["top1"] - 0.05))
    old_style = json.loads(path.read_text())
    del old_style["predictions"]  # a record from before per-image predictions: nothing to check it by
    path.write_text(json.dumps(old_style))
    code, out, err = reproduce("--results", copy, "--run-id", probe["run_id"], "--tolerance", "0.1", "-q")
    assert code == 0, out + err
    assert "within 0.1" in out


def test_a_record_whose_options_hash_to_another_run_id_is_another_configuration(copy, reproduce):
    probe = ok_records(copy, "linear_probe")[0]
    rewrite(copy / "tiny" / "records" / f"{probe['run_id']}.json", options={"max_iter": 7})
    code, out, err = reproduce("--results", copy, "--run-id", probe["run_id"], "-q")
    assert code == 1
    assert "not the same configuration" in out and probe["run_id"] in out
    assert "could not be rerun" in out


def test_unknown_run_id_is_a_usage_error(published, reproduce):
    code, out, err = reproduce("--results", published, "--run-id", "0123456789abcdef")
    assert code == 2
    assert err.startswith("error: --run-id '0123456789abcdef': no record with this cell id (run_id)")
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err


def test_a_failed_record_named_by_run_id_is_a_usage_error(published, reproduce):
    failed = next(r for r in records(published).values() if r["status"] == "failed")
    code, out, err = reproduce("--results", published, "--run-id", failed["run_id"])
    assert code == 2 and "is failed: it has no published top-1" in err


@pytest.mark.parametrize("argv, message", [
    (["--results", "{tmp}/missing"], "Results folder"),
    (["--results", "{results}", "--grid-name", "tinny"], "Unknown grid 'tinny'"),
    (["--results", "{results}", "--cells", "0"], "--cells must be 1 or more"),
    (["--results", "{results}", "--tolerance", "nan"], "--tolerance"),
    (["--results", "{results}", "--scratch", "{results}/tiny/rerun"], "inside the results folder"),
])
def test_usage_errors_are_one_line_and_exit_2(published, reproduce, tmp_path, argv, message):
    argv = [a.format(tmp=tmp_path, results=published) for a in argv]
    code, out, err = reproduce(*argv)
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1
    assert not (published / "tiny" / "rerun").exists()


def test_several_grids_without_grid_name_the_choices(copy, reproduce):
    shutil.copytree(copy / "tiny", copy / "other")
    code, out, err = reproduce("--results", copy)
    assert code == 2 and "several grids: other, tiny" in err and "--grid-name NAME" in err


def test_a_malformed_record_is_reported_and_left_where_it_is(copy, reproduce):
    probe = ok_records(copy, "linear_probe")[0]
    path = copy / "tiny" / "records" / f"{probe['run_id']}.json"
    path.write_text("{not json", encoding="utf-8")
    code, out, err = reproduce("--results", copy, "--run-id", probe["run_id"])
    assert code == 2 and f"Record {path} is malformed" in err
    assert path.read_text() == "{not json"  # not set aside: the folder is only read
    assert not (copy / "tiny" / "records" / "corrupt").exists()


def test_scratch_keeps_the_rerun_records_and_cells_picks_that_many(published, reproduce, tmp_path):
    scratch = tmp_path / "rerun"
    code, out, err = reproduce("--results", published, "--cells", "1", "--scratch", scratch, "-q")
    assert code == 0, out + err
    (kept,) = (scratch / "tiny" / "records").glob("*.json")
    assert kept.stem in out and f"Rerun records kept in {scratch}/tiny/records/" in out
    assert json.loads(kept.read_text())["run_id"] == kept.stem  # the rerun has the published run_id


def test_the_sample_covers_every_strategy_and_dataset_before_repeating():
    cells = [{"strategy": s, "dataset": d, "backbone": "b", "seed": seed, "run_id": f"{s}{d}{seed}", "sweep": {}}
             for s in ("a", "b", "c", "d") for d in ("x", "y") for seed in (0, 1, 2)]
    first = sample(cells, 4)
    assert [c["strategy"] for c in first] == ["a", "b", "c", "d"]
    assert {c["dataset"] for c in first} == {"x", "y"} and len({c["seed"] for c in first}) > 1
    assert sample(cells, 4) == first  # the same every time
    assert sorted(c["run_id"] for c in sample(cells, 100)) == sorted(c["run_id"] for c in cells)


def test_a_cell_of_a_curve_with_candidates_is_rebuilt_with_its_run_id(registry):
    """Options that were lists (candidates selected on validation) and a list in [settings] (a
    curve's point): the record alone rebuilds the same cell."""
    from tlbench.grid import build_grid
    from tlbench.options import options_as_dict
    from tlbench.cell_record import base
    from tlbench.rebuild import rebuild

    data = {"name": "curve", "backbones": ["test_efficientnet"], "strategies": ["full_finetune"],
            "datasets": ["faces"], "seeds": [3], "settings": {"train_per_class": [5, 10], "epochs": 1},
            "strategy": {"full_finetune": {"lr": [1e-3, 3e-4]}}}
    cells = build_grid(data, "curve.toml", registry).cells
    assert len(cells) == 2 and all(len(c.strategy_candidates) == 2 for c in cells)
    for cell in cells:
        record = base(cell, registry)
        record.update(candidates=[{"options": options_as_dict(c), "val_top1": 0.5} for c in cell.strategy_candidates],
                      selected=1, options=options_as_dict(cell.strategy_candidates[1]))
        record = json.loads(json.dumps(record))  # as read back from disk
        rebuilt = rebuild(record, registry, "record.json")
        assert rebuilt.run_id == cell.run_id and rebuilt.sweep == cell.sweep


def test_an_option_added_since_the_record_names_itself(registry):
    """A record made before a plugin had an option, run with a value other than its default now:
    rebuilt, the cell is another configuration, and the message says which option."""
    from tlbench.errors import ConfigError
    from tlbench.grid import build_grid
    from tlbench.cell_record import base
    from tlbench.rebuild import rebuild

    data = {"name": "g", "backbones": ["test_efficientnet"], "strategies": ["full_finetune"],
            "datasets": ["faces"], "strategy": {"full_finetune": {"lr": 0.0123}}}
    (cell,) = build_grid(data, "g.toml", registry).cells
    record = json.loads(json.dumps(base(cell, registry)))
    assert rebuild(record, registry, "record.json").run_id == cell.run_id
    del record["options"]["lr"]
    with pytest.raises(ConfigError, match=r"not the same configuration: strategy option 'lr' is new \(default"):
        rebuild(record, registry, "record.json")


def test_a_difference_of_exactly_the_tolerance_is_within_it():
    """top-1 is a float32 share: 0.744 and 0.724 are 0.02000004 apart as stored."""
    import numpy as np

    from tlbench.reproduce import Check

    def check(published, rerun):
        return Check({"top1": float(np.float32(published))}, rerun={"status": "ok", "top1": float(np.float32(rerun))})

    assert check(0.744, 0.724).within and check(0.724, 0.744).within
    assert not check(0.744, 0.722).within
    assert not Check({"top1": 0.7}, rerun={"status": "failed"}).within


def test_reproduce_help_does_not_import_torch():
    import subprocess
    import sys

    code = ("import sys, runpy; sys.argv = ['tlbench', 'reproduce', '--help']\n"
            "try:\n    runpy.run_module('tlbench.cli', run_name='__main__')\n"
            "except SystemExit:\n    pass\n"
            "heavy = [m for m in ('torch', 'timm', 'numpy') if m in sys.modules]\n"
            "assert not heavy, heavy\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert "--tolerance" in result.stdout


def test_an_environment_field_the_published_record_lacks_is_shown(copy, reproduce):
    probe = ok_records(copy, "linear_probe")[0]
    path = copy / "tiny" / "records" / f"{probe['run_id']}.json"
    older = json.loads(path.read_text())
    del older["environment"]["threads"]  # a record from before the field
    path.write_text(json.dumps(older))
    code, out, err = reproduce("--results", copy, "--run-id", probe["run_id"], "-q")
    assert code == 0, out + err
    assert "  threads: - -> " in out
