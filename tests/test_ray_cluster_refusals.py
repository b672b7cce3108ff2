"""--executor ray on a cluster of its own (tests/ray_cluster.py) that refuses something: a node
without a usable cache folder gets no cells while the rest runs; a cluster that refuses the
driver's token is one line in Ray's words. Apart from test_ray_cluster.py (one cluster for its
tests) so that xdist runs the two files side by side."""

import os
import pytest

pytest.importorskip("ray", reason="the test extra installs Ray")
if os.geteuid() != 0:
    pytest.skip("a second node in its own mount namespace needs root (unshare)", allow_module_level=True)

from ray_cluster import TwoNodeCluster  # noqa: E402  (tests/ is on sys.path)
from ray_grids import grid, make_site, on_ray, records, tlbench  # noqa: E402


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    return make_site(tmp_path_factory.mktemp("cluster"))


def test_a_node_without_a_usable_cache_gets_no_cells_and_a_wrong_token_is_refused_in_rays_words(site, tmp_path):
    (tmp_path / "a-file").write_text("not a folder")
    with TwoNodeCluster(tmp_path, auth_token="c0ffee" * 8, head_env={"TLBENCH_CACHE_DIR": tmp_path / "head-cache"},
                        worker_env={"TLBENCH_CACHE_DIR": tmp_path / "a-file" / "cache"}) as guarded:
        path = grid(site, "cache", ["linear_probe"], seeds=(0, 1, 2))
        done = tlbench(guarded, *on_ray(guarded, site, path))  # with the cluster's token
        assert done.returncode == 0, done.stderr
        assert done.stderr.count(f"cannot run cells: The cache folder '{tmp_path / 'a-file' / 'cache'}' "
                                 "is not writable") == 1, done.stderr
        ran = records(site, "cache")
        assert len(ran) == 3 and {r["node"]["id"] for r in ran} == {guarded.head_node_id}

        path = grid(site, "token", ["linear_probe"])
        # a wrong token; Ray retries a refused connection for 20 s by default: 3 s here (1 s was
        # too short for one refusal to come back while the rest of the suite loads the CPUs)
        refused = tlbench(guarded, *on_ray(guarded, site, path), env={
            "RAY_AUTH_TOKEN": "bad" * 16, "RAY_gcs_server_port_wait_time_s": "3"})
    assert refused.returncode == 2
    assert refused.stderr.startswith(f"error: Cannot join the Ray cluster at '{guarded.address}': it refused this "
                                     "driver (")
    assert "Authentication token is missing or incorrect" in refused.stderr
    assert "ray start --head" not in refused.stderr
    assert len(refused.stderr.strip().splitlines()) == 1, refused.stderr  # Ray's retries stayed in its log
