"""What a cluster node checks before it runs a cell (tlbench.node_check), and what the Ray executor
does with a node that fails a check, without a cluster: the checks on real plugins, files and
image folders; the executor's bookkeeping with Ray as RayExecutor sees it. The same on a real
two-node cluster: test_ray_cluster.py."""

import re
import socket
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from PIL import Image

from tlbench import ray_executor
from tlbench.cell_job import CellJob
from tlbench.errors import ConfigError, RunStopped
from tlbench.grid import build_grid, file_sha256, read_grid_file
from tlbench.node_check import (NODE_WIDE, DriverView, NodeUnfit, check_data, check_dataset_options, check_files,
                                check_plugins,
                                data_scope, describe_node, file_scope, local_plugins_dir, scopes_of)
from tlbench.plugins import load_registry
from tlbench.progress import Progress
from tlbench.ray_executor import RayExecutor
from tlbench.ray_worker import _as_driver_paths
from tlbench.runner import Runner


def photos(folder: Path, per_class: int, classes=("ant", "bee", "cat")) -> Path:
    rng = np.random.default_rng(per_class)
    for name in classes:
        (folder / name).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            Image.fromarray((rng.random((8, 8, 3)) * 255).astype(np.uint8)).save(folder / name / f"{i}.png")
    return folder


@pytest.fixture
def folder_grid(write_grid, registry, tiny_settings):
    """path of an image folder -> the grid of two linear_probe cells (seeds 0, 1) on it."""

    def make(path, name="grid.toml"):
        grid_path = write_grid(f"""
            name = "nodes"
            backbones = ["test_efficientnet"]
            strategies = ["linear_probe"]
            datasets = ["folder"]
            seeds = [0, 1]
            [dataset.folder]
            path = "{path}"
            {tiny_settings}
            device = "cpu"
        """, name)
        data, source = read_grid_file(grid_path)
        return build_grid(data, source, registry)

    return make


def test_a_node_with_another_copy_of_the_data_is_unfit_for_that_dataset(folder_grid, registry, tmp_path):
    driver = Runner(registry, tmp_path / "results")
    grid = folder_grid(photos(tmp_path / "driver", 30))
    expected = DriverView(registry, grid, driver).expected(grid.cells[0])
    assert expected["data"]["dataset"] == {"images": 90, "classes": 3, "digest": expected["data"]["dataset"]["digest"]}

    node = Runner(registry, tmp_path / "node-results")
    check_data(node, grid.cells[0], expected["data"])  # the same folder: nothing to say

    other = folder_grid(photos(tmp_path / "node", 27), "other.toml").cells[0]
    with pytest.raises(NodeUnfit) as unfit:
        check_data(Runner(registry, tmp_path / "r2"), other, expected["data"])
    assert unfit.value.scope == data_scope(other.dataset)
    assert "has another copy of dataset 'folder' (81 images in 3 classes there, 90 in 3 on the driver)" \
        in unfit.value.reason

    relabelled = folder_grid(photos(tmp_path / "renamed", 30, classes=("ant", "bee", "dog")), "renamed.toml")
    with pytest.raises(NodeUnfit, match="as many images and classes as the driver's, but other labels"):
        check_data(Runner(registry, tmp_path / "r3"), relabelled.cells[0], expected["data"])

    other_splits = dict(expected["data"], split_digest="0" * 16)  # another tlbench's split code, say
    with pytest.raises(NodeUnfit, match="splits dataset 'folder' differently from the driver"):
        check_data(node, grid.cells[0], other_splits)

    # the folder is not there on this node: the grid's [dataset.folder] does not hold here
    elsewhere = {**grid.data, "dataset": {"folder": {"path": str(tmp_path / "nowhere")}}}
    with pytest.raises(NodeUnfit, match=r"cannot use dataset 'folder' as the grid sets it up, which the driver "
                                        r"can \(\[dataset.folder\]: Image folder .*nowhere' does not exist") as unfit:
        check_dataset_options(registry, elsewhere, "folder")
    assert unfit.value.scope == data_scope(grid.cells[0].dataset)
    check_dataset_options(registry, grid.data, "folder")



CLUSTER_ONLY = """
import tlbench


class ClusterOnly(tlbench.Dataset):
    name = "cluster_only"

    def load(self):
        raise FileNotFoundError("/data/imagenet is on the cluster's disks only")


@tlbench.hookimpl
def register_datasets(register):
    register(ClusterOnly)
"""


def test_a_dataset_the_driver_cannot_load_is_not_checked_and_it_says_so(write_grid, tiny_settings, tmp_path,
                                                                         capsys):
    (tmp_path / "plugins").mkdir()
    (tmp_path / "plugins" / "cluster_only.py").write_text(CLUSTER_ONLY)
    registry = load_registry(str(tmp_path / "plugins"))
    data, source = read_grid_file(write_grid(f"""
        backbones = ["test_efficientnet"]
        strategies = ["linear_probe"]
        datasets = ["cluster_only"]
        seeds = [0, 1]
        {tiny_settings}
    """))
    grid = build_grid(data, source, registry)
    view = DriverView(registry, grid, Runner(registry, tmp_path / "results", progress=Progress()))
    assert view.expected(grid.cells[0])["data"] is None and view.expected(grid.cells[1])["data"] is None
    err = capsys.readouterr().err
    assert err.count("cannot be loaded on this machine") == 1 and "unchecked" in err
    # the other way round: a node that cannot load what the driver loads
    driver_has = {"dataset": {"images": 90, "classes": 3, "digest": "0" * 16}, "split_digest": "0" * 16}
    with pytest.raises(NodeUnfit, match="cannot load dataset 'cluster_only', which the driver loads "
                                        r"\(FileNotFoundError: /data/imagenet is on the cluster's disks only\)"):
        check_data(Runner(registry, tmp_path / "results"), grid.cells[0], driver_has)


def test_a_node_without_a_plugin_or_with_another_version_is_unfit_for_every_cell(test_plugins_dir, tmp_path):
    driver = load_registry(str(test_plugins_dir))
    expected = {"strategies:sleepy": {"sha256": driver.registration("strategies", "sleepy").origin["sha256"]},
                "strategies:linear_probe": {"package": "tlbench", "version": "0.1.0"}}
    check_plugins(driver, expected)
    with pytest.raises(NodeUnfit) as unfit:
        check_plugins(load_registry(), expected)  # a node without the folder
    assert unfit.value.scope == NODE_WIDE
    assert "lacks the strategy plugin 'sleepy', which the driver has (a file with sha256" in unfit.value.reason
    edited = tmp_path / "plugins"
    edited.mkdir()
    source = (test_plugins_dir / "lost_processes.py").read_text()
    (edited / "lost_processes.py").write_text(source + "\n# edited on this node\n")
    with pytest.raises(NodeUnfit, match="has the strategy plugin 'sleepy' from a file with sha256 .* the driver "
                                        "from a file with sha256"):
        check_plugins(load_registry(str(edited)), expected)
    with pytest.raises(NodeUnfit, match=r"from tlbench 0\.1\.0, the driver from tlbench 9\.9"):
        check_plugins(driver, {"strategies:linear_probe": {"package": "tlbench", "version": "9.9"}})


def test_a_node_without_a_named_file_or_with_another_is_unfit_for_the_cells_naming_it(tmp_path):
    checkpoint = tmp_path / "weights.pt"
    checkpoint.write_bytes(b"driver's weights")
    expected = {str(checkpoint): file_sha256(str(checkpoint))}
    check_files(expected)
    checkpoint.write_bytes(b"this node's weights")
    with pytest.raises(NodeUnfit, match="has another .*weights.pt than the driver") as unfit:
        check_files(expected)
    assert unfit.value.scope == file_scope(str(checkpoint))
    checkpoint.unlink()
    with pytest.raises(NodeUnfit, match="has no file .*weights.pt, which the grid's options name"):
        check_files(expected)


def test_a_shipped_plugin_folder_is_found_and_records_name_the_drivers_path(tmp_path, monkeypatch):
    shipped = tmp_path / "session" / "runtime_resources" / "py_modules_files" / "_ray_pkg_1"
    (shipped / "my-plugins").mkdir(parents=True)
    assert local_plugins_dir("/home/me/my-plugins") == "/home/me/my-plugins"  # nothing shipped
    monkeypatch.setattr(sys, "path", [*sys.path, str(shipped)])
    assert local_plugins_dir("/home/me/my-plugins/") == str(shipped / "my-plugins")
    assert local_plugins_dir(None) is None
    record = {"plugins": {"strategy": {"plugin": f"{shipped}/my-plugins/x.py", "file": f"{shipped}/my-plugins/x.py",
                                       "sha256": "ab"}, "backbone": {"plugin": "tlbench", "package": "tlbench"}}}
    _as_driver_paths(record, str(shipped / "my-plugins"), "/home/me/my-plugins")
    assert record["plugins"]["strategy"] == {"plugin": "/home/me/my-plugins/x.py",
                                             "file": "/home/me/my-plugins/x.py", "sha256": "ab"}


def test_nodes_are_named_by_address_and_id_not_only_by_hostname():
    assert describe_node({"hostname": "vm", "address": "192.0.2.2:42675", "id": "43f6bd8a" + "0" * 48}) == \
        "Ray node vm (192.0.2.2:42675, id 43f6bd8a)"
    assert describe_node({"hostname": "vm"}) == "Ray node vm"


# -- the Ray executor's bookkeeping ---------------------------------------------------------------


class FakeCluster:
    """Ray as RayExecutor sees it: two live nodes, and remote functions that remember their options."""

    def __init__(self):
        self.submitted = []
        self.node_list = [{"NodeID": node, "Alive": True, "Resources": {"CPU": 1.0}, "NodeManagerAddress": "10.0.0.1",
                           "NodeManagerPort": port, "NodeManagerHostname": "vm"}
                          for node, port in (("a" * 56, 1111), ("b" * 56, 2222))]

    def is_initialized(self):
        return True

    def cluster_resources(self):
        return {"CPU": 2.0}

    def nodes(self):
        return self.node_list

    def remote(self, function=None, **_):
        if function is None:
            return lambda f: self.remote(f)
        cluster = self

        class Remote:
            def options(self, **options):
                return SimpleNamespace(remote=lambda job, timeout: cluster.submitted.append(options) or object())

        return Remote()


def test_an_unfit_node_is_left_out_of_the_cells_it_cannot_run_and_said_once(monkeypatch, registry, folder_grid,
                                                                             tmp_path):
    fake = FakeCluster()
    monkeypatch.setattr(ray_executor, "import_ray", lambda: fake)
    pool = RayExecutor(registry, None, cpus_per_cell=1.0, gpu_shares={}, use_gpus=False, max_retries=2)
    cell = folder_grid(photos(tmp_path / "photos", 2)).cells[0]
    job = CellJob({}, "", cell.run_id, cell.backbone, cell.strategy, cell.dataset)
    node_a = {"hostname": "vm", "id": "a" * 56}
    first = pool._left_out(pool._named(node_a), data_scope(cell.dataset), "has another copy of dataset 'folder' (...)")
    assert first.requeue == ("Ray node vm (10.0.0.1:1111, id aaaaaaaa) has another copy of dataset 'folder' "
                             "(...). It gets no more cells of dataset 'folder' in this run")
    assert pool._left_out(pool._named(node_a), data_scope(cell.dataset), "again").requeue == ""  # said once
    pool.submit(cell, job)
    assert fake.submitted[-1]["label_selector"] == {"ray.io/node-id": f"!in({'a' * 56})"}

    pool._left_out({"hostname": "vm", "id": "b" * 56}, NODE_WIDE, "lacks the strategy plugin 'x', ...")
    pool.submit(cell, job)  # no live node can run it: it fails now instead of waiting for ever
    assert len(fake.submitted) == 1
    ((_, outcome),) = pool.finished()
    kind, message = outcome.failure
    assert kind == "node_config" and message.startswith("no Ray node can run this cell: Ray node vm (10.0.0.1:1111")
    assert "Ray node vm (10.0.0.1:2222, id bbbbbbbb) lacks the strategy plugin 'x'" in message
    assert scopes_of(cell) == {NODE_WIDE, data_scope(cell.dataset)}

    # once no node can run any cell of the grid, the run stops instead of failing each cell
    assert pool._left_out(pool._named(node_a), NODE_WIDE, "cannot run cells: The cache folder ...").requeue
    with pytest.raises(RunStopped, match="No Ray node can run this grid's cells: Ray node vm .*cannot run cells"):
        pool.submit(cell, job)
    assert pool._left_out(pool._named(node_a), file_scope("/w.pth"), "has no file").requeue == ""  # left out already


def test_a_gpu_cell_counts_only_nodes_with_a_gpu_as_able_to_run_it(monkeypatch, registry, folder_grid, tmp_path):
    fake = FakeCluster()
    fake.node_list[1]["Resources"]["GPU"] = 1.0  # node b has the one GPU
    monkeypatch.setattr(ray_executor, "import_ray", lambda: fake)
    monkeypatch.setattr(fake, "cluster_resources", lambda: {"CPU": 2.0, "GPU": 1.0})
    pool = RayExecutor(registry, None, cpus_per_cell=1.0, gpu_shares={}, use_gpus=True, max_retries=2)
    cell = folder_grid(photos(tmp_path / "photos", 2)).cells[0]
    pool._left_out({"hostname": "vm", "id": "b" * 56}, data_scope(cell.dataset), "has another copy ...")
    job = CellJob({}, "", cell.run_id, cell.backbone, cell.strategy, cell.dataset)
    pool.submit(cell, job)  # node a has no GPU: it would wait for ever there
    ((_, outcome),) = pool.finished()
    assert outcome.failure[0] == "node_config" and fake.submitted == []


def test_options_naming_files_by_relative_paths_are_refused_for_a_cluster(write_grid, registry, tiny_settings,
                                                                         tmp_path, monkeypatch):
    import timm
    import torch

    monkeypatch.chdir(tmp_path)
    torch.save(timm.create_model("test_efficientnet", num_classes=3).state_dict(), "weights.pth")
    data, source = read_grid_file(write_grid(f"""
        backbones = ["test_efficientnet"]
        strategies = ["linear_probe"]
        datasets = ["faces"]
        [backbone.test_efficientnet]
        checkpoint = "weights.pth"
        {tiny_settings}
    """))
    grid = build_grid(data, source, registry)
    with pytest.raises(ConfigError, match="The option checkpoint = 'weights.pth' .* is a relative path: on a cluster "
                                          r"\(Ray, Slurm\) each node resolves it in its own working folder"):
        DriverView(registry, grid, Runner(registry, tmp_path / "results"))


def test_first_party_options_that_name_files_are_declared_paths(registry):
    import dataclasses

    declared = {(kind, name, f.name) for kind, name in [("datasets", "folder"), ("datasets", "hf"),
                                                       ("datasets", "fashion_mnist"), ("backbones", "test_efficientnet")]
                for f in dataclasses.fields(registry.get(kind, name).Options) if f.metadata.get("path")}
    assert declared == {("datasets", "folder", "path"), ("datasets", "hf", "path"), ("datasets", "hf", "cache_dir"),
                        ("datasets", "fashion_mnist", "root"), ("backbones", "test_efficientnet", "checkpoint")}


@pytest.mark.parametrize("family, host", [(socket.AF_INET, "127.0.0.1"), (socket.AF_INET6, "[::1]")])
def test_an_address_is_probed_before_ray_is_asked_to_join_it(family, host):
    try:
        listener = socket.socket(family)
        listener.bind((host.strip("[]"), 0))
    except OSError:
        pytest.skip(f"no {host} loopback here")
    with listener:
        listener.listen()
        port = listener.getsockname()[1]
        ray_executor._check_answers(f"{host}:{port}")  # something answers: Ray is asked
    with pytest.raises(ConfigError, match=f"Cannot join the Ray cluster at '{re.escape(host)}:{port}': nothing "
                                          "answers there"):
        ray_executor._check_answers(f"{host}:{port}")  # closed now
    for not_probed in (None, "auto", "ray://head:10001"):
        ray_executor._check_answers(not_probed)
