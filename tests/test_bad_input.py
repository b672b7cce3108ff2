"""Every kind of bad input is one clear line on stderr, exit status 2, and nothing run or written."""

import os

import pytest

BASE = """
name = "g"
backbones = ["test_efficientnet"]
strategies = ["linear_probe", "full_finetune"]
datasets = ["faces"]
"""
# BASE with random weights: every component can run on this machine, so the error a test makes
# is the one said (hub weights it cannot download would be said first: tests/test_preflight.py)
RUNNABLE = BASE + "[settings]\npretrained = false\n"


@pytest.mark.parametrize("text, expected", [
    # malformed TOML, with the line
    (BASE + "[settings]\nepochs = = 3\n", "not valid TOML"),
    (BASE + 'name = "twice"\n', "line 6"),
    # unknown keys, with the closest valid one
    (BASE + "seed = [1]\n", "Unknown key 'seed' in grid file"),
    (BASE + "[settings]\nbatchsize = 8\n", "Did you mean 'batch_size'?"),
    (BASE + "[settings.epochs]\nvalue = 3\n", "'epochs' in [settings] must be int"),
    # unknown names, with the closest valid one
    (BASE.replace('"faces"', '"face"'), "Unknown dataset 'face'. Did you mean: faces?"),
    (BASE.replace("full_finetune", "full_fintune"), "Did you mean: full_finetune?"),
    # wrong types
    ('name = 3\n' + BASE.split("\n", 2)[2], "'name' in"),
    (BASE.replace('["faces"]', '["faces", 3]'), "'datasets' in"),
    (BASE.replace('["faces"]', '[["faces"]]'), "must be a list of names"),
    (BASE + "settings = 3\n", "'settings' in"),
    (BASE + "strategy = 3\n", "must be a table of [strategy.NAME] tables"),
    (BASE + "[strategy]\nlinear_probe = 3\n", "[strategy.linear_probe]"),
    (BASE + 'seeds = "0"\n', "'seeds' in"),
    (BASE + "seeds = [0.5]\n", "'seeds' in"),
    (BASE + "seeds = [true]\n", "'seeds' in"),
    (BASE + "[settings]\npretrained = 1\n", "'pretrained' in [settings] must be bool"),
    (BASE + "[strategy.full_finetune]\nlr = \"fast\"\n", "'lr' in [strategy.full_finetune] must be float"),
    # out of range
    (BASE + "seeds = [-1]\n", "from 0 to 4294967295"),
    (BASE + "seeds = [4294967296]\n", "from 0 to 4294967295"),
    (BASE + "[settings]\nbatch_size = 0\n", "batch_size must be at least 1"),
    (BASE + "[settings]\ntest_fraction = 0.9\n", "must leave some data for training"),
    (BASE + "[settings]\ntrain_size = -5\n", "train_size must be 0 (all) or a positive number"),
    (BASE + "[settings]\nimage_size = 100000\n", "image_size must be 0 (native) or 2 to 4096 pixels"),
    (BASE.replace('"g"', '"abc\\n"'), "not a safe folder name"),
    (BASE.replace('"g"', '"' + "g" * 101 + '"'), "use at most 100 letters, digits"),
    (BASE + "[settings]\nsplit_seed = -1\n", "split_seed must be 0 to 4294967295, got -1"),
    (BASE + "[settings]\ntest_size = -1\n", "test_size must be 0 (all) or a positive number"),
    (BASE + "[settings]\ntrain_size = 1000\ntrain_per_class = 5\n", "set one of them"),
    (BASE + "[settings]\ntrain_size = 1\n", "train_size must leave at least one example"),
    (BASE + "[settings]\ntrain_size = 10.5\n", "'train_size' in [settings] must be int"),
    (BASE.replace('"faces"', '"fashion_mnist"') + "[dataset.fashion_mnist]\ndownload = \"no\"\n",
     "'download' in [dataset.fashion_mnist] must be bool"),
    (BASE + "[strategy.full_finetune]\nlr = nan\n", "strategy.full_finetune.lr = nan"),
    (BASE + "[strategy.full_finetune]\nlr = [1e-3, inf]\n", "use a finite number"),
    (BASE + "[settings]\nval_fraction = -inf\n", "use a finite number"),
    # empty lists
    (BASE.replace('["faces"]', "[]"), "'datasets' in"),
    (BASE + "seeds = []\n", "'seeds' in"),
    (BASE + "[strategy.full_finetune]\nlr = []\n", "empty list"),
    # lists of values to select from hold single values, and only for what a fit learns
    (BASE + "[strategy.full_finetune]\nlr = [[1e-3]]\n", "lists [0.001]; a list of values to select from"),
    (BASE + "[strategy.linear_probe]\nl2_min = [1e-5, {a = 1}]\n", "lists {'a': 1}"),
    (BASE.replace("full_finetune", "partial_unfreeze") + "[strategy.partial_unfreeze]\ncache_mb = [0, 10]\n",
     "'cache_mb' in [strategy.partial_unfreeze] takes one value"),
    # options a plugin does not take
    (BASE + "[strategy.full_finetune]\nlearning_rate = 0.1\n", "Unknown option 'learning_rate'"),
    (BASE + "[dataset.faces]\npath = \"x\"\n", "Unknown option 'path' in [dataset.faces]"),
    (BASE + "[backbone.test_efficientnet]\ncheckpoint = \"/no/such.pth\"\n", "does not exist"),
    # names that would escape the results folder
    (BASE.replace('"g"', '"../g"'), "not a safe folder name"),
    (BASE.replace('"g"', '"/tmp/g"'), "not a safe folder name"),
    (BASE.replace('"g"', '"a/b"'), "not a safe folder name"),
    (BASE.replace('"g"', '".."'), "not a safe folder name"),
    (BASE.replace('"g"', '""'), "not a safe folder name"),
])
def test_bad_grid_is_one_line_exit_2_and_nothing_runs(write_grid, cli, tmp_path, text, expected):
    results = tmp_path / "results"
    code, out, err = cli("run", "--grid", write_grid(text), "--results", results)
    assert code == 2
    assert len(err.strip().splitlines()) == 1 and err.startswith("error: "), err
    assert expected in err and "Traceback" not in err
    assert not results.exists()


def test_missing_grid_file(cli, tmp_path):
    code, out, err = cli("run", "--grid", tmp_path / "absent.toml", "--results", tmp_path / "r")
    assert code == 2 and "not found" in err and not (tmp_path / "r").exists()


def test_grid_file_is_a_folder(cli, tmp_path):
    code, out, err = cli("run", "--grid", tmp_path, "--results", tmp_path / "r")
    assert code == 2 and "Cannot read grid file" in err


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes anywhere")
def test_read_only_results_dir(write_grid, cli, tmp_path):
    results = tmp_path / "results"
    results.mkdir()
    results.chmod(0o500)
    try:
        code, out, err = cli("run", "--grid", write_grid(RUNNABLE), "--results", results)
    finally:
        results.chmod(0o700)
    assert code == 2 and "not writable" in err


def test_results_dir_that_is_a_file(write_grid, cli, tmp_path):
    blocker = tmp_path / "results"
    blocker.write_text("")
    code, out, err = cli("run", "--grid", write_grid(RUNNABLE), "--results", blocker)
    assert code == 2 and "not writable" in err


def test_results_dir_behind_a_dangling_link_names_the_link(write_grid, cli, tmp_path):
    (tmp_path / "results").symlink_to(tmp_path / "gone")
    code, out, err = cli("run", "--grid", write_grid(RUNNABLE), "--results", tmp_path / "results")
    assert code == 2
    assert f"'{tmp_path / 'results'}' is a symbolic link to '{tmp_path / 'gone'}', which does not exist" in err


def test_missing_plugins_dir(write_grid, cli, tmp_path):
    code, out, err = cli("run", "--grid", write_grid(BASE), "--plugins-dir", tmp_path / "nope")
    assert code == 2 and "Plugins folder" in err


def test_device_this_machine_lacks(write_grid, cli, tmp_path):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    results = tmp_path / "results"
    code, out, err = cli("run", "--grid", write_grid(RUNNABLE + 'device = "cuda"\n'),
                         "--results", results)
    assert code == 2 and "device = 'cuda'" in err and "usable CUDA device" in err
    assert not results.exists()


def test_unknown_grid_in_report(cli, tmp_path):
    (tmp_path / "mine" / "records").mkdir(parents=True)
    code, out, err = cli("report", "--results", tmp_path, "--grid-name", "mien")
    assert code == 2 and "Unknown grid 'mien'" in err and "mine" in err


def test_grid_file_is_data_not_code(write_grid, cli, tmp_path):
    marker = tmp_path / "pwned"
    text = BASE + f'[settings]\ndevice = "__import__(\'os\').system(\'touch {marker}\')"\n'
    code, out, err = cli("run", "--grid", write_grid(text), "--results", tmp_path / "r")
    assert code == 2 and "device must be" in err and not marker.exists()


def test_a_byte_order_mark_at_the_top_of_a_grid_file_is_accepted(write_grid, cli, tmp_path):
    path = tmp_path / "bom.toml"
    path.write_bytes(b"\xef\xbb\xbf" + (BASE.replace("linear_probe", "knn_probe").replace(
        ', "full_finetune"', "") + "[settings]\nimage_size = 32\npretrained = false\n").encode())
    code, out, err = cli("run", "--grid", path, "--results", tmp_path / "r", "-q")
    assert code == 0, err


@pytest.mark.parametrize("argv, expected", [
    (["run", "--executor", "subprocess", "--cell-timeout", "nan"], "--cell-timeout must be a positive number"),
    (["run", "--executor", "subprocess", "--cell-timeout", "inf"], "--cell-timeout must be a positive number"),
    (["run", "--results", ""], "--results is empty"),
    (["report", "--results", " "], "--results is empty"),
    (["rank", "--scores", ","], "names no score"),
])
def test_bad_command_line_values_are_exit_2(write_grid, cli, tmp_path, argv, expected, capsys):
    if argv[0] != "report":
        argv = [argv[0], "--grid", str(write_grid(BASE)), *argv[1:]]
    if argv[0] == "rank":
        argv += ["--results", str(tmp_path / "r")]
    code, out, err = cli(*argv)
    assert code == 2 and expected in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1


def test_an_unwritable_cache_dir_is_said_before_any_cell_runs(write_grid, cli, tmp_path, monkeypatch):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    monkeypatch.setenv("TLBENCH_CACHE_DIR", str(blocker / "cache"))
    results = tmp_path / "results"
    code, out, err = cli("run", "--grid", write_grid(RUNNABLE), "--results", results)
    assert code == 2 and "Set TLBENCH_CACHE_DIR to a writable folder" in err
    assert not list(results.glob("*/records/*.json"))



@pytest.mark.parametrize("value", ["abc", "0.5", "", "-1"])
def test_a_malformed_materialize_size_is_one_line_naming_the_variable(write_grid, cli, tmp_path, monkeypatch, value):
    monkeypatch.setenv("TLBENCH_MATERIALIZE_MB", value)
    results = tmp_path / "results"
    code, out, err = cli("run", "--grid", write_grid(RUNNABLE), "--results", results)
    assert code == 2 and "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert f"TLBENCH_MATERIALIZE_MB={value!r} is not a whole number of megabytes" in err and "0 or more" in err
    assert not list(results.glob("*/records/*.json"))

def _image(path, classes_to_count):
    from PIL import Image

    for name, count in classes_to_count.items():
        (path / name).mkdir(parents=True, exist_ok=True)
        for i in range(count):
            Image.new("RGB", (8, 8), (i * 20, 0, 0)).save(path / name / f"{i}.png")


@pytest.mark.parametrize("layout, expected", [
    ({}, "does not exist"),
    ({"cats": 0, "dogs": 0}, "has no images in its class sub-folders"),
    ({"cats": 3}, "has only one class (cats)"),
    ({"train/cats": 3, "train/dogs": 3, "test/cats": 1, "test/birds": 1},
     "has test classes with no training images (birds)"),
])
def test_folder_mistakes_are_grid_mistakes_before_anything_runs(write_grid, cli, tmp_path, layout, expected):
    root = tmp_path / "images"
    if layout:
        root.mkdir()
        _image(root, layout)
    grid = write_grid(BASE.replace('"faces"', '"folder"') + f'[dataset.folder]\npath = "{root}"\n')
    results = tmp_path / "results"
    code, out, err = cli("run", "--grid", grid, "--results", results)
    assert code == 2 and expected in err and len(err.strip().splitlines()) == 1
    assert not results.exists()
