"""How each trained strategy's default recipe was chosen (docs/strategies.md, "Recipes").

Runs one strategy with several option sets on the default grid's cells (efficientnet_lite0,
fashion_mnist and animal_shape, seeds 0-2, 300 labelled images at 48 px, 3 epochs at batch 16),
once with one torch thread and once with two, and prints for each option set the mean top-1
per dataset at each thread count and the largest move of a seed's top-1 between the two:
a recipe is stable when that move is at most 2 points (the project's target).

    python benchmarks/recipe_sweep.py full_finetune \\
        '{"old": {"lr": 1e-3}, "new": {"lr": 1e-4, "head_lr_scale": 10, "norm_statistics": "keep"}}'

Each option set is a grid of its own under RESULTS (default: a temporary folder), so a rerun
with the same folder skips what ran. Not a pytest-benchmark suite: it measures accuracy, not
speed, and takes about 3 minutes an option set on 2 cores.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path
from statistics import mean

GRID = """name = "{name}"
backbones = ["efficientnet_lite0"]
strategies = ["{strategy}"]
datasets = ["fashion_mnist", "animal_shape"]
seeds = [0, 1, 2]
[settings]
image_size = 48
epochs = 3
batch_size = 16
train_size = 300
test_size = 500
threads = {threads}
[strategy.{strategy}]
{options}
"""


def run(strategy: str, name: str, options: dict, threads: int, results: Path) -> dict:
    """{(dataset, seed): top-1} of one option set at one thread count."""
    grid = results / f"{name}-t{threads}.toml"
    lines = "\n".join(f"{key} = {json.dumps(value)}" for key, value in options.items())
    grid.write_text(GRID.format(name=f"{name}-t{threads}", strategy=strategy, threads=threads, options=lines))
    subprocess.run([sys.executable, "-m", "tlbench.cli", "run", "--grid", str(grid), "--results", str(results), "-q"],
                   check=False, capture_output=True)
    scores = {}
    for path in (results / f"{name}-t{threads}" / "records").glob("*.json"):
        record = json.loads(path.read_text())
        if record.get("status") == "ok":
            scores[(record["dataset"], record["seed"])] = record["top1"]
    return scores


def summary(name: str, by_threads: dict) -> str:
    parts = [name]
    for threads, scores in sorted(by_threads.items()):
        per_dataset = {}
        for (dataset, _), top1 in scores.items():
            per_dataset.setdefault(dataset, []).append(top1)
        parts.append(f"{threads} thread(s): " + ", ".join(f"{d} {mean(v):.3f}" for d, v in sorted(per_dataset.items())))
    one, two = by_threads.get(1, {}), by_threads.get(2, {})
    moves = [abs(one[key] - two[key]) for key in one.keys() & two.keys()]
    if moves:
        parts.append(f"largest move of a seed {max(moves) * 100:.1f} points")
    return "; ".join(parts)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("strategy")
    parser.add_argument("option_sets", help='JSON: {"name": {"option": value, ...}, ...}')
    parser.add_argument("--results", type=Path, help="folder for the grids' records (default: temporary)")
    args = parser.parse_args()
    results = args.results or Path(tempfile.mkdtemp(prefix="recipe-sweep-"))
    results.mkdir(parents=True, exist_ok=True)
    for name, options in json.loads(args.option_sets).items():
        by_threads = {threads: run(args.strategy, name, options, threads, results) for threads in (1, 2)}
        print(summary(name, by_threads), flush=True)


if __name__ == "__main__":
    main()
