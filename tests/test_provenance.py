"""Where things came from: records name the plugins that made them, `tlbench ls` says where each
plugin comes from in a user's words, and a record says whether its cell started from pretrained
weights."""

import hashlib
import json
import shutil
import subprocess
import sys
from pathlib import Path

import tlbench

GRID = """
    name = "prov"
    backbones = ["test_efficientnet"]
    strategies = ["head_only", "scratch"]
    datasets = ["digits"]
    [backbone.test_efficientnet]
    checkpoint = "{checkpoint}"
    [settings]
    image_size = 16
    epochs = 1
    batch_size = 64
    train_size = 60
    test_size = 40
"""


def records(results):
    return {r["strategy"]: r for r in (json.loads(p.read_text()) for p in (results / "prov" / "records").glob("*.json"))}


def weights_file(folder):
    """A tiny timm model's weights as a local checkpoint: "pretrained" without a network."""
    import timm
    import torch

    path = folder / "test_efficientnet.pth"
    torch.save(timm.create_model("test_efficientnet", num_classes=10).state_dict(), path)
    return path


def test_records_name_their_plugins_and_whether_they_started_pretrained(tmp_path, cli, write_grid,
                                                                        test_plugins_dir):
    grid = write_grid(GRID.format(checkpoint=weights_file(tmp_path)))
    plugins = tmp_path / "plugins"
    plugins.mkdir()
    loose = Path(shutil.copy(test_plugins_dir / "head_only.py", plugins))  # a copy of its own, to edit
    results = tmp_path / "results"
    code, out, err = cli("run", "--grid", grid, "--results", results, "--plugins-dir", plugins, "-q")
    assert code == 0, err
    made = records(results)
    head_only, scratch = made["head_only"], made["scratch"]
    assert head_only["plugins"]["strategy"] == {
        "plugin": str(loose), "file": str(loose.resolve()),
        "sha256": hashlib.sha256(loose.read_bytes()).hexdigest()}
    assert scratch["plugins"]["strategy"] == {"plugin": "strategies", "package": "tlbench",
                                              "version": tlbench.__version__}
    assert scratch["plugins"]["backbone"]["package"] == "tlbench"
    assert scratch["plugins"]["dataset"]["plugin"] == "datasets"
    # the grid asks for pretrained weights; scratch declares it starts from random ones
    assert head_only["settings"]["pretrained"] and head_only["pretrained"] is True
    assert scratch["pretrained"] is False
    # so the leaderboard finds its control without being told a name
    board = json.loads((results / "prov" / "leaderboard.json").read_text())
    assert board["control"] == "scratch"

    # an edited plugin keeps the run_id (the record is still the cell's), and says so when rerun
    loose.write_text(loose.read_text(encoding="utf-8") + "\n# edited\n", encoding="utf-8")
    code, out, err = cli("run", "--grid", grid, "--results", results, "--plugins-dir", plugins,
                         "-q", "--force")
    assert code == 0, err
    again = records(results)["head_only"]
    assert again["run_id"] == head_only["run_id"]
    assert again["plugins"]["strategy"]["sha256"] == hashlib.sha256(loose.read_bytes()).hexdigest() \
        != head_only["plugins"]["strategy"]["sha256"]


def test_ls_says_where_each_plugin_comes_from(tmp_path, cli, test_plugins_dir):
    shutil.copy(test_plugins_dir / "head_only.py", tmp_path)
    code, out, err = cli("ls", "strategies", "--plugins-dir", tmp_path)
    assert code == 0, err
    lines = {line.split()[0]: line for line in out.splitlines()}
    assert lines["head_only"].endswith(f"(from {(tmp_path / 'head_only.py').resolve()})")
    assert lines["linear_probe"].endswith(f"(from tlbench {tlbench.__version__})")
    assert "(strategies)" not in out  # an entry point's name means nothing to a user


def test_ls_into_a_closed_pipe_prints_no_traceback():
    process = subprocess.Popen([sys.executable, "-m", "tlbench.cli", "ls", "backbones", "-v"],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    process.stdout.close()  # like `| head` that has read all it wanted
    err = process.stderr.read().decode()
    assert process.wait() == 141, err
    assert "Traceback" not in err and "BrokenPipeError" not in err, err
