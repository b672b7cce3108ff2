"""`--executor slurm`'s usage errors: each one line, exit 2, before anything is submitted or
stored. No Slurm cluster needed (tests/test_slurm_cluster.py runs the executor on a real one)."""

import sys

import pytest

from tlbench.results import records_dir

GRID = """
name = "flags"
backbones = ["test_efficientnet"]
strategies = ["linear_probe"]
datasets = ["digits"]
[settings]
image_size = 16
pretrained = false
device = "cpu"
"""


@pytest.mark.parametrize("argv, message", [
    (["--slurm-time", "5"], "--slurm-time only apply to --executor slurm"),
    (["--executor", "ray", "--cells-per-task", "2"], "--cells-per-task only apply to --executor slurm"),
    (["--detach"], "--detach only apply to --executor slurm"),
    (["--cpus-per-cell", "2"], "--cpus-per-cell only applies to --executor ray or slurm"),
    (["--executor", "slurm", "--slurm-time", "2h"], "--slurm-time '2h': give minutes (90) or [D-]HH:MM:SS"),
    (["--executor", "slurm", "--cpus-per-cell", "1.5"], "--cpus-per-cell must be a whole number, 1 or more"),
    (["--executor", "slurm", "--cells-per-task", "0"], "--cells-per-task must be a whole number, 1 or more"),
    (["--executor", "slurm", "--slurm-gpus", "-1"], "--slurm-gpus must be a whole number, 0 or more"),
    (["--executor", "slurm", "--slurm-sbatch", "=x"], "--slurm-sbatch: '=x' is not an sbatch flag"),
    (["--executor", "slurm", "--cell-timeout", "5"], "--cell-timeout does not apply to --executor slurm"),
    (["--executor", "slurm", "--race-seeds", "3"], "--race-seeds runs with --executor local or subprocess"),
])
def test_slurm_usage_errors_are_one_line(cli, write_grid, tmp_path, argv, message):
    code, out, err = cli("run", "--grid", write_grid(GRID), "--results", tmp_path, *argv)
    assert code == 2
    assert message in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1
    assert not records_dir(tmp_path, "flags").exists() or not list(records_dir(tmp_path, "flags").glob("*.json"))


@pytest.mark.parametrize("table, message", [
    ('partiton = "gpu"', "Unknown key 'partiton' in [executor.slurm]"),
    ('time = "2h"', "[executor.slurm] time in"),
    ("cells_per_task = 0", "[executor.slurm] cells_per_task in"),
    ('sbatch = "constraint=a100"', "must be a list of sbatch flags"),
])
def test_a_bad_executor_slurm_table_is_one_line_whatever_the_executor(cli, write_grid, tmp_path, table, message):
    code, out, err = cli("run", "--grid", write_grid(GRID + f"[executor.slurm]\n{table}\n"), "--results", tmp_path)
    assert code == 2
    assert message in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1


def test_missing_submitit_is_one_clear_message(cli, write_grid, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "submitit", None)  # as if it were not installed
    code, out, err = cli("run", "--grid", write_grid(GRID), "--results", tmp_path, "--executor", "slurm")
    assert code == 2
    assert 'pip install "tlbench[slurm]"' in err and "Traceback" not in err


def test_a_machine_without_slurm_is_told_where_to_run(cli, write_grid, tmp_path, monkeypatch):
    pytest.importorskip("submitit")
    monkeypatch.setenv("PATH", str(tmp_path))  # no sbatch, sinfo or scontrol here
    code, out, err = cli("run", "--grid", write_grid(GRID), "--results", tmp_path, "--executor", "slurm")
    assert code == 2
    assert "needs Slurm's commands" in err and "login node" in err and "Traceback" not in err


def test_the_help_imports_neither_submitit_nor_torch():
    import subprocess

    code = ("import sys; from tlbench.cli import main\ntry: main(['run', '--help'])\nexcept SystemExit: pass\n"
            "print('submitit' in sys.modules, 'torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip().splitlines()[-1] == "False False"
