"""Benchmark 7: three `tlbench run` processes sharing the CPUs, against one alone.

Concurrent runners on one results folder, several Ray workers on a node, CI runners: torch's
intra-op threads of each process spin while they wait for work, and on a machine with fewer
cores than threads they burn each other's time. tlbench makes idle threads sleep
(``OMP_WAIT_POLICY=PASSIVE``, tlbench.cpus) and sizes them to the CPUs it really has.

Measured in one run: one process alone, then three at once, each a one-cell full_finetune grid
(efficientnet_lite0, digits, 64 px, one epoch). Ideal sharing of 2 cores by 3 processes is 1.5×
one alone; the target is at most 2.5×. The same three with ``OMP_WAIT_POLICY=ACTIVE`` (the
spinning that tlbench turns off) are measured too, for the record.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

GRID = """
name = "shared"
backbones = ["efficientnet_lite0"]
strategies = ["full_finetune"]
datasets = ["digits"]

[settings]
image_size = 64
epochs = 1
"""
TARGET = 2.5


def start(folder: Path, grid: Path, wait_policy: str | None) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    if wait_policy:
        env["OMP_WAIT_POLICY"] = wait_policy
    return subprocess.Popen([sys.executable, "-m", "tlbench.cli", "run", "--grid", str(grid),
                             "--results", str(folder), "-q"],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def run_together(tmp_path: Path, grid: Path, count: int, tag: str, wait_policy: str | None = None) -> dict:
    """Start ``count`` runs at once (each with its own results folder); their wall times and
    their cells' run_s."""
    started = time.perf_counter()
    runs = [(tmp_path / f"{tag}{i}", start(tmp_path / f"{tag}{i}", grid, wait_policy)) for i in range(count)]
    walls, cells = [], []
    for folder, process in runs:
        _, err = process.communicate(timeout=1800)
        assert process.returncode == 0, err
        walls.append(time.perf_counter() - started)
        (record,) = [json.loads(p.read_text()) for p in (folder / "shared" / "records").glob("*.json")]
        cells.append(record["run_s"])
    return {"wall_s": max(walls), "cell_s": sum(cells) / len(cells)}


def test_three_concurrent_runs_share_the_cpus(benchmark, tmp_path):
    grid = tmp_path / "grid.toml"
    grid.write_text(GRID, encoding="utf-8")
    run_together(tmp_path, grid, 1, "warm")  # page cache, dataset and weights files: both sides alike

    def measure():
        alone = run_together(tmp_path, grid, 1, "alone")
        three = run_together(tmp_path, grid, 3, "three")
        spinning = run_together(tmp_path, grid, 3, "spin", wait_policy="ACTIVE")
        return alone, three, spinning

    alone, three, spinning = benchmark.pedantic(measure, rounds=1, iterations=1)
    ratio = three["cell_s"] / alone["cell_s"]
    info = {"cpus": len(os.sched_getaffinity(0)), "alone_cell_s": alone["cell_s"],
            "three_cell_s": three["cell_s"], "ratio": ratio,
            "three_wall_s": three["wall_s"], "alone_wall_s": alone["wall_s"],
            "spinning_cell_s": spinning["cell_s"], "spinning_ratio": spinning["cell_s"] / alone["cell_s"]}
    benchmark.extra_info.update(info)
    print("\n[bench] shared CPU: " + ", ".join(f"{k} {v:.2f}" if isinstance(v, float) else f"{k} {v}"
                                               for k, v in info.items()))
    assert ratio <= TARGET, info
