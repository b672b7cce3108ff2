"""--executor ray on clusters of their own (tests/ray_cluster.py) that refuse something: a node
without a plugin the driver has, or without a usable cache folder, gets no cells while the rest
runs; a cluster that refuses the driver's token is one line in Ray's words. Apart from
test_ray_cluster.py (one cluster for its tests) so that xdist runs the two files side by side."""

import os
from pathlib import Path

import pytest

pytest.importorskip("ray", reason="the test extra installs Ray")
if os.geteuid() != 0:
    pytest.skip("a second node in its own mount namespace needs root (unshare)", allow_module_level=True)

from ray_cluster import TwoNodeCluster  # noqa: E402  (tests/ is on sys.path)
from ray_grids import grid, make_site, on_ray, records, tlbench  # noqa: E402


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    return make_site(tmp_path_factory.mktemp("cluster"))


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


def test_a_node_without_a_plugin_or_a_usable_cache_gets_no_cells(site, tmp_path):
    package = installed_package(tmp_path / "site-packages")
    (tmp_path / "a-file").write_text("not a folder")
    with TwoNodeCluster(tmp_path, head_env={"PYTHONPATH": package, "TLBENCH_CACHE_DIR": tmp_path / "head-cache"},
                        worker_env={"TLBENCH_CACHE_DIR": tmp_path / "a-file" / "cache"}) as broken:
        driver_env = {"PYTHONPATH": str(package)}
        path = grid(site, "plugin", ["untrained"], seeds=(0, 1, 2))
        done = tlbench(broken, *on_ray(broken, site, path), env=driver_env)
        assert done.returncode == 0, done.stderr
        assert done.stderr.count("lacks the strategy plugin 'untrained', which the driver has "
                                 "(tlbench-extra 1.0): install the driver's version on every node") == 1, done.stderr
        ran = records(site, "plugin")
        assert len(ran) == 3 and {r["node"]["id"] for r in ran} == {broken.head_node_id}

        path = grid(site, "cache", ["linear_probe"], seeds=(0, 1, 2))
        done = tlbench(broken, *on_ray(broken, site, path))
        assert done.returncode == 0, done.stderr
        assert done.stderr.count(f"cannot run cells: The cache folder '{tmp_path / 'a-file' / 'cache'}' "
                                 "is not writable") == 1, done.stderr
        ran = records(site, "cache")
        assert len(ran) == 3 and {r["node"]["id"] for r in ran} == {broken.head_node_id}


def test_a_cluster_that_refuses_the_drivers_token_is_reported_in_rays_words(site, tmp_path):
    with TwoNodeCluster(tmp_path, auth_token="c0ffee" * 8) as guarded:
        path = grid(site, "token", ["linear_probe"])
        # a wrong token; Ray retries a refused connection for 20 s by default: 3 s here (1 s was
        # too short for one refusal to come back while the rest of the suite loads the CPUs)
        done = tlbench(guarded, *on_ray(guarded, site, path), env={
            "RAY_AUTH_TOKEN": "bad" * 16, "RAY_gcs_server_port_wait_time_s": "3"})
    assert done.returncode == 2
    assert done.stderr.startswith(f"error: Cannot join the Ray cluster at '{guarded.address}': it refused this driver (")
    assert "Authentication token is missing or incorrect" in done.stderr and "ray start --head" not in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1, done.stderr  # Ray's retries stayed in its log
