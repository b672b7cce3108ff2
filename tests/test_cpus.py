"""tlbench sizes torch's threads to the CPUs the process really has and keeps idle threads from
spinning (the speed-up itself is measured in benchmarks/test_shared_cpu.py)."""

import os
import subprocess
import sys

import pytest

from tlbench.cpus import cgroup_cpu_quota, cpu_quota_v1, cpu_quota_v2


def test_cgroup_quota_lines():
    assert cpu_quota_v2("200000 100000\n") == 2.0
    assert cpu_quota_v2("150000 100000") == 1.5
    assert cpu_quota_v2("max 100000") is None
    assert cpu_quota_v1("-1", "100000") is None
    assert cpu_quota_v1("50000", "100000") == 0.5


def test_the_tightest_quota_on_the_cgroup_path_counts(tmp_path):
    """cgroup v2: a job's cgroup inside a container's: the parent's limit binds."""
    root = tmp_path / "cgroup"
    (root / "kubepods" / "pod1").mkdir(parents=True)
    (root / "cpu.max").write_text("max 100000\n")
    (root / "kubepods" / "cpu.max").write_text("300000 100000\n")
    (root / "kubepods" / "pod1" / "cpu.max").write_text("max 100000\n")
    proc = tmp_path / "proc-cgroup"
    proc.write_text("0::/kubepods/pod1\n")
    assert cgroup_cpu_quota(root, proc) == 3.0
    proc.write_text("0::/\n")
    assert cgroup_cpu_quota(root, proc) is None


def test_a_cgroup_v1_quota_is_read(tmp_path):
    root = tmp_path / "cgroup"
    (root / "cpu" / "docker" / "abc").mkdir(parents=True)
    (root / "cpu" / "docker" / "abc" / "cpu.cfs_quota_us").write_text("200000\n")
    (root / "cpu" / "docker" / "abc" / "cpu.cfs_period_us").write_text("100000\n")
    proc = tmp_path / "proc-cgroup"
    proc.write_text("4:memory:/docker/abc\n3:cpu,cpuacct:/docker/abc\n")
    assert cgroup_cpu_quota(root, proc) == 2.0
    assert cgroup_cpu_quota(root, tmp_path / "missing") is None  # unreadable: no limit


@pytest.mark.skipif(not hasattr(os, "sched_setaffinity") or len(os.sched_getaffinity(0)) < 2,
                    reason="needs two CPUs to pin a process to one")
def test_a_process_pinned_to_one_cpu_gets_one_torch_thread():
    code = ("import os\n"
            "os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[0]})\n"
            "from tlbench.cpus import size_threads, usable_cpus\n"
            "import torch\n"
            "assert usable_cpus() == 1, usable_cpus()\n"
            "assert size_threads() == 1 and torch.get_num_threads() == 1, torch.get_num_threads()\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize("given, expected", [(None, "PASSIVE"), ("ACTIVE", "ACTIVE")])
def test_the_cli_makes_idle_threads_sleep_unless_told_otherwise(given, expected):
    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    if given:
        env["OMP_WAIT_POLICY"] = given
    code = ("import os, sys\n"
            "from tlbench.cli import main\n"
            "main(['ls', 'scores'])\n"
            "print(os.environ.get('OMP_WAIT_POLICY'))\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[-1] == expected


def test_a_runner_shares_the_cpus_with_the_runners_beside_it(tmp_path):
    """Concurrent runners on one results folder: each cell's torch threads are the usable CPUs
    divided among the processes of this host running cells of the grid now."""
    from tlbench.cpus import usable_cpus
    from tlbench.executors import threads_beside

    assert threads_beside(tmp_path, "g") == usable_cpus()  # alone
    holder = subprocess.Popen(
        [sys.executable, "-c",
         "import sys\n"
         "from tlbench.results import claim_cell\n"
         f"claim = claim_cell({str(tmp_path)!r}, 'g', 'a' * 16, {{'grid': 'g'}})\n"
         "print('held', flush=True)\n"
         "sys.stdin.read()\n"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        assert threads_beside(tmp_path, "g") == max(1, usable_cpus() // 2)
        assert threads_beside(tmp_path, "other-grid") == usable_cpus()
    finally:
        holder.stdin.close()
        holder.wait(timeout=60)
    assert threads_beside(tmp_path, "g") == usable_cpus()  # its claim went with it
