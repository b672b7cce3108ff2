"""--executor ray on a real two-node Ray cluster on this machine (tests/ray_cluster.py): the second
node runs in a mount namespace of its own, where the driver's results, plugin folder and data are
not there (no shared filesystem), with a cache folder of its own.

What a cluster user must be able to trust: the nodes run the grid as the local executor does,
loose plugins reach every node, a node with other data or without a plugin is left out of the
cells it cannot run (never scoring them on other data, never failing a column of cells), records
name the node that ran them, and a node that dies mid-cell costs a retry, not the run.

The drivers run in this process (``here``), but for the last test's, which checks what reaches a
driver's own stdout and stderr. The first run joins the cluster as `tlbench run` does (its own
ray.init, which ships the plugin folder) and stays joined, as a driver's process does: the later
runs are the same Ray job, so each node's worker, with torch, timm and the plugins already
loaded, serves them all (a new job starts a new worker on each node: seconds a run, and most of
a CPU).

A node check runs only on a node that is offered a cell. Tiny cells end before the second
node's lease comes back, and the head's worker would take them all; so the grids of the node
checks run `logged` cells (tests/plugins/logged.py) that take SLEEP_S each on the head: while
one runs there, the next goes to the other node, which then says why it cannot run it.
"""

import os
import subprocess
import time
from pathlib import Path

import pytest

from tlbench.results import iter_records

pytest.importorskip("ray", reason="the test extra installs Ray")
if os.geteuid() != 0:
    pytest.skip("a second node in its own mount namespace needs root (unshare)", allow_module_level=True)

from ray_cluster import TwoNodeCluster  # noqa: E402  (tests/ is on sys.path)
from ray_grids import grid, make_site, on_ray, photos, records, tlbench  # noqa: E402
from tlbench.cli import main  # noqa: E402


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    made = make_site(tmp_path_factory.mktemp("cluster"))
    return {**made, "package": installed_package(made["base"] / "site-packages")}


EXTRA_PLUGIN = '''
import tlbench


class Untrained(tlbench.Strategy):
    """Fits nothing: a plugin some nodes have and others lack."""

    name = "untrained"

    def fit(self, model, train, val, ctx):
        return model


@tlbench.hookimpl
def register_strategies(register):
    register(Untrained)
'''


def installed_package(folder: Path) -> Path:
    """A plugin package as pip installs it (module, dist-info, entry point), on a PYTHONPATH only
    the driver and the head node get."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "tlbench_extra.py").write_text(EXTRA_PLUGIN)
    info = folder / "tlbench_extra-1.0.dist-info"
    info.mkdir(exist_ok=True)
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: tlbench-extra\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text("[tlbench]\nextra = tlbench_extra\n")
    return folder


SLEEP_S = 1.5  # a `logged` cell on the head: long beside the other node's lease (milliseconds warm)


@pytest.fixture(scope="module")
def cluster(site):
    logged = {"TLBENCH_TEST_LOG": site["base"] / "fits.log", "TLBENCH_TEST_SLEEP": SLEEP_S}
    with TwoNodeCluster(site["base"], hide=[site["driver_only"]],
                        worker_binds={site["photos"]: site["other_photos"]},
                        head_env={"TLBENCH_CACHE_DIR": site["head_cache"], "PYTHONPATH": site["package"], **logged},
                        worker_env={"TLBENCH_CACHE_DIR": site["worker_cache"], **logged}) as running:
        yield running


@pytest.fixture
def here(cluster, monkeypatch, capsys):
    """`tlbench ARGV` in this process, with the environment a driver subprocess gets
    (ray_grids.tlbench), as a CompletedProcess."""

    def run(*argv, path=None):
        env = cluster.driver_env({"TLBENCH_CACHE_DIR": str(cluster.temp_dir / "driver_cache")})
        for name in set(os.environ) - set(env):
            monkeypatch.delenv(name)
        for name, value in env.items():
            monkeypatch.setenv(name, value)
        if path is not None:  # a plugin package only this driver has (PYTHONPATH for a subprocess)
            monkeypatch.syspath_prepend(str(path))
        capsys.readouterr()
        code = main([str(a) for a in argv])
        out = capsys.readouterr()
        return subprocess.CompletedProcess(argv, code, out.out, out.err)

    return run


def test_two_nodes_run_the_grid_as_the_local_executor_and_records_name_their_node(cluster, site, cli, here):
    path = grid(site, "same", ["linear_probe", "head_only"], seeds=(0, 1, 2))
    done = here(*on_ray(cluster, site, path))
    assert done.returncode == 0, done.stderr
    assert "Ray: 2 node(s)" in done.stderr
    ray_records = records(site, "same")
    code, _, err = cli("run", "--grid", path, "--results", site["base"] / "local", "--plugins-dir", site["plugins"],
                       "-q")  # the local executor, in this process
    assert code == 0, err
    local_records = sorted(iter_records(site["base"] / "local", "same"), key=lambda r: (r["strategy"], r["seed"]))
    assert [(r["run_id"], r["top1"], r["split_digest"]) for r in ray_records] == \
           [(r["run_id"], r["top1"], r["split_digest"]) for r in local_records]
    nodes = {r["node"]["id"] for r in ray_records}
    # both nodes ran cells; the second could only after it found the shipped plugin folder and
    # matched head_only.py's sha256 (a node checks every plugin of the grid before any cell)
    assert nodes == {cluster.head_node_id, cluster.worker_node_id}
    addresses = {r["node"]["id"]: r["node"]["address"] for r in ray_records}
    assert len(set(addresses.values())) == 2  # one hostname ("vm" twice), two addresses
    # the loose plugin reached the node that cannot see the driver's folder, verified by hash
    head_only = [r for r in ray_records if r["strategy"] == "head_only"]
    assert {r["plugins"]["strategy"]["file"] for r in head_only} == {str(site["plugins"] / "head_only.py")}
    assert len({r["plugins"]["strategy"]["sha256"] for r in head_only}) == 1
    # each node cached features in its own cache folder, not the driver's
    assert any(site["worker_cache"].rglob("*")) and any(site["head_cache"].rglob("*"))
    listing = here("runs", "--results", site["driver_only"] / "results", "--grid-name", "same")
    for address in addresses.values():
        assert address in listing.stdout


def test_a_node_with_other_data_runs_none_of_that_datasets_cells(cluster, site, here):
    extra = f'[dataset.folder]\npath = "{site["photos"]}"\n'
    path = grid(site, "data", ["logged"], datasets=["folder"], seeds=(0, 1, 2, 3), extra=extra)
    done = here(*on_ray(cluster, site, path))
    assert done.returncode == 0, done.stderr
    assert "has another copy of dataset 'folder' (81 images in 3 classes there, 90 in 3 on the driver)" \
        in done.stderr
    assert done.stderr.count("has another copy") == 1  # said once, however many cells it turned away
    ran = records(site, "data")
    assert len(ran) == 4 and {r["status"] for r in ran} == {"ok"}
    assert {r["node"]["id"] for r in ran} == {cluster.head_node_id}  # scored on the driver's data only
    assert {r["split_sizes"]["train"] + r["split_sizes"]["val"] + r["split_sizes"]["test"] for r in ran} == {90}


def test_a_node_without_the_data_folder_says_so_by_name(cluster, site, here):
    only_here = photos(site["driver_only"] / "only_here", per_class=10)
    extra = f'[dataset.folder]\npath = "{only_here}"\n'
    path = grid(site, "missing", ["logged"], datasets=["folder"], seeds=(0, 1, 2), extra=extra)
    done = here(*on_ray(cluster, site, path))
    assert done.returncode == 0, done.stderr
    worker = next(n for n in cluster.nodes if n["node_id"] == cluster.worker_node_id)
    assert (f"Ray node vm ({worker['address']}:{worker['port']}, id {cluster.worker_node_id[:8]}) cannot use "
            f"dataset 'folder' as the grid sets it up, which the driver can ([dataset.folder]: Image folder "
            f"'{only_here}' does not exist") in done.stderr
    assert {r["node"]["id"] for r in records(site, "missing")} == {cluster.head_node_id}


def test_a_node_without_a_plugin_the_driver_has_gets_none_of_its_cells(cluster, site, here):
    # a node checks every plugin of the grid whichever cell it is offered: a `logged` one here
    path = grid(site, "plugin", ["untrained", "logged"], seeds=(0, 1))
    done = here(*on_ray(cluster, site, path), path=site["package"])
    assert done.returncode == 0, done.stderr
    assert done.stderr.count("lacks the strategy plugin 'untrained', which the driver has "
                             "(tlbench-extra 1.0): install the driver's version on every node") == 1, done.stderr
    ran = records(site, "plugin")
    assert len(ran) == 4 and {r["node"]["id"] for r in ran} == {cluster.head_node_id}


def test_a_node_without_a_checkpoint_runs_none_of_the_cells_that_name_it(cluster, site, here):
    import timm
    import torch

    checkpoint = site["driver_only"] / "weights.pth"
    torch.save(timm.create_model("test_efficientnet", num_classes=3).state_dict(), checkpoint)
    extra = f'[backbone.test_efficientnet]\ncheckpoint = "{checkpoint}"\n'
    path = grid(site, "weights", ["logged"], seeds=(0, 1, 2), extra=extra)
    done = here(*on_ray(cluster, site, path))
    assert done.returncode == 0, done.stderr
    assert done.stderr.count(f"has no file {checkpoint}, which the grid's options name") == 1, done.stderr
    assert f"It gets no more cells that name {checkpoint} in this run" in done.stderr
    assert {r["node"]["id"] for r in records(site, "weights")} == {cluster.head_node_id}


def test_a_node_that_dies_mid_cell_costs_a_retry_and_ray_keeps_its_logs_to_itself(cluster, site):
    path = grid(site, "dies", ["sleepy"], seeds=(0, 1))
    started = site["worker_cache"] / "sleepy.started"
    started.unlink(missing_ok=True)
    run = tlbench(cluster, *on_ray(cluster, site, path), wait=False)
    deadline = time.monotonic() + 120
    while not started.exists():
        assert run.poll() is None and time.monotonic() < deadline, run.communicate()
        time.sleep(0.1)
    cluster.kill_worker_node()
    out, err = run.communicate(timeout=300)
    assert run.returncode == 0, err
    ran = records(site, "dies")
    assert {r["status"] for r in ran} == {"ok"} and {r["node"]["id"] for r in ran} == {cluster.head_node_id}
    ours = ("[", "Ray: ", "Results", "  ", "wrote")  # tlbench's own lines: progress, summary, paths
    stray = [line for line in err.splitlines() if line and not line.startswith(ours)]
    assert stray == [], err
    assert "(raylet)" not in out + err  # Ray prints a node's death and the retry on the driver's stdout
