"""Grids for the tests on a real Ray cluster (tests/ray_cluster.py), and the driver's side of
them: a helper module, not a test file. ``make_site`` lays out the driver's machine: what only it
has sits under driver_only/ (hide it on the second node), plus what each node has of its own."""

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
from PIL import Image

from tlbench.results import iter_records

SETTINGS = """
[settings]
image_size = 32
epochs = 1
batch_size = 32
pretrained = false
device = "cpu"
"""


def photos(folder: Path, per_class: int, seed: int = 0) -> Path:
    """A `folder` dataset: three classes of tiny PNGs."""
    rng = np.random.default_rng(seed)
    for c, name in enumerate(["ant", "bee", "cat"]):
        (folder / name).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            pixels = (rng.random((8, 8, 3)) * 80 + 60 * c).astype(np.uint8)
            Image.fromarray(pixels).save(folder / name / f"{i}.png")
    return folder


def make_site(base: Path) -> dict:
    """The driver's machine under ``base``: its plugin folder (four test plugins) and photos
    (90 images), the second node's other photos (81 images), a cache folder for each node."""
    driver_only = base / "driver_only"
    plugins = driver_only / "my-plugins"
    plugins.mkdir(parents=True)
    for name in ("head_only.py", "lost_processes.py", "broken_results.py", "logged.py"):
        (plugins / name).write_bytes((Path(__file__).parent / "plugins" / name).read_bytes())
    return {
        "base": base,
        "driver_only": driver_only,
        "plugins": plugins,
        "photos": photos(driver_only / "photos", per_class=30),  # 90 images here...
        "other_photos": photos(base / "other_photos", per_class=27, seed=1),  # ...81 on the second node
        "head_cache": base / "head_cache",
        "worker_cache": base / "worker_cache",
    }


def grid(site, name: str, strategies, datasets=("faces",), seeds=(0, 1), extra: str = "") -> Path:
    path = site["driver_only"] / f"{name}.toml"
    path.write_text(textwrap.dedent(f"""
        name = "{name}"
        backbones = ["test_efficientnet"]
        strategies = {json.dumps(list(strategies))}
        datasets = {json.dumps(list(datasets))}
        seeds = {list(seeds)}
        {extra}
        """) + SETTINGS, encoding="utf-8")
    return path


def tlbench(cluster, *argv, timeout=300, wait=True, env=None):
    command = [sys.executable, "-m", "tlbench.cli", *map(str, argv)]
    env = cluster.driver_env({"TLBENCH_CACHE_DIR": str(cluster.temp_dir / "driver_cache"), **(env or {})})
    if not wait:
        return subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    return subprocess.run(command, capture_output=True, text=True, env=env, timeout=timeout)


def on_ray(cluster, site, grid_path, *more):
    return ("run", "--grid", grid_path, "--results", site["driver_only"] / "results", "--executor", "ray",
            "--ray-address", cluster.address, "--plugins-dir", site["plugins"], *more)


def records(site, name: str) -> list:
    return sorted(iter_records(site["driver_only"] / "results", name), key=lambda r: (r["strategy"], r["seed"]))
