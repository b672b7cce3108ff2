import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from tlbench.cli import main
from tlbench.plugins import load_registry


@pytest.fixture(scope="session")
def registry():
    return load_registry()


@pytest.fixture
def write_grid(tmp_path):
    """Write a grid file from TOML text and return its path."""

    def write(text: str, name: str = "grid.toml") -> Path:
        path = tmp_path / name
        path.write_text(textwrap.dedent(text), encoding="utf-8")
        return path

    return write


@pytest.fixture
def cli(capsys):
    """Run the CLI in-process; returns (exit code, stdout, stderr)."""

    def run(*argv):
        code = main([str(a) for a in argv])
        out, err = capsys.readouterr()
        return code, out, err

    return run


def run_tlbench(*argv, env=None, cwd=None):
    """Run `tlbench` in a fresh interpreter, as a user would."""
    return subprocess.run([sys.executable, "-m", "tlbench.cli", *map(str, argv)],
                          capture_output=True, text=True, env=env, cwd=cwd, timeout=600)


TINY_SETTINGS = """
[settings]
image_size = 32
epochs = 1
batch_size = 32
pretrained = false
"""


@pytest.fixture(autouse=True)
def private_cache_dir(tmp_path_factory, monkeypatch):
    """Feature caches go to a fresh folder per test, never to the user's ~/.cache."""
    monkeypatch.setenv("TLBENCH_CACHE_DIR", str(tmp_path_factory.mktemp("cache")))


# -- one cell of a tiny model, set up for a strategy's fit (strategy tests) -----------------------


@pytest.fixture
def setup_cell(write_grid, registry, tmp_path):
    """(setup, snapshot of the initial weights) for one cell of a tiny timm model at 32 px."""
    from tlbench.grid import load_grid
    from tlbench.runner import Runner

    def make(strategy, options="", backbone="test_efficientnet", dataset="digits"):
        path = write_grid(f"""
            name = "s"
            backbones = ["{backbone}"]
            strategies = ["{strategy}"]
            datasets = ["{dataset}"]
            {TINY_SETTINGS}
            {options}
        """)
        cell = load_grid(str(path), registry).cells[0]
        cell_setup = Runner(registry, tmp_path).setup(cell)
        snapshot = {k: v.clone() for k, v in cell_setup.model.state_dict().items()}
        return cell_setup, snapshot

    return make


def fit(cell_setup):
    return cell_setup.strategy.fit(cell_setup.model, cell_setup.train, cell_setup.val, cell_setup.ctx)


def trainable_names(model):
    return {name for name, p in model.named_parameters() if p.requires_grad}


def changed(model, snapshot):
    """Keys of ``snapshot`` whose tensor changed (peft moves an adapted layer's own weight to
    ``LAYER.base_layer.weight``)."""
    import torch

    state = model.state_dict()

    def now(key):
        if key in state:
            return state[key]
        layer, _, leaf = key.rpartition(".")
        return state[f"{layer}.base_layer.{leaf}"]

    return {k for k, v in snapshot.items() if not torch.equal(now(k), v)}
