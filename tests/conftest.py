"""Fixtures shared by the test files. Test files take what they need from here as fixtures;
none imports this module (the module-level names below stay importable for files that still do).

Test-only plugins live in tests/plugins/, one definition each, as real plugin files: pass
``test_plugins_dir`` to ``--plugins-dir`` (or to ``load_registry``) to load them.
"""

import os
import subprocess
import sys
import textwrap
from pathlib import Path

from tlbench.cpus import quiet_threads

# As the CLI does, before anything imports torch (its OpenMP runtime reads this once): idle
# intra-op threads sleep instead of spinning. The suite shares a few cores with the processes it
# starts (isolated cells, concurrent runners, Ray workers), and spinning threads there made every
# forward pass many times slower. Inherited by those processes too.
quiet_threads()

import pytest  # noqa: E402

from tlbench.cli import main  # noqa: E402
from tlbench.plugins import load_registry  # noqa: E402

TEST_PLUGINS_DIR = Path(__file__).parent / "plugins"


# The test files that take longest, in the order xdist should start them (pyproject's addopts turn
# off its own reordering by test count). The Ray and Slurm cluster files spend a minute or two mostly
# waiting on daemons: started first, they overlap the CPU-bound files instead of running alone at
# the end of the suite. Order: their summed durations on 2026-12-06 (95, 70, 58, 42, 39, 24 s ...).
LONGEST_FILES_FIRST = ("test_executors.py", "test_ray_cluster.py", "test_resilience.py",
                       "test_ray_cluster_refusals.py", "test_slurm_cluster.py", "test_report.py", "test_run.py",
                       "test_race.py", "test_reproducible.py")


def pytest_xdist_auto_num_workers(config):
    """``-n auto``: one worker more than the usable CPUs. The cluster files spend much of their
    time waiting on daemons and subprocesses; the extra worker fills those waits (on 2 CPUs the
    suite took 239 s with 3 workers, 266 s with 2)."""
    return len(os.sched_getaffinity(0)) + 1


def pytest_collection_modifyitems(config, items):
    def rank(item):
        name = item.path.name
        return LONGEST_FILES_FIRST.index(name) if name in LONGEST_FILES_FIRST else len(LONGEST_FILES_FIRST)

    items.sort(key=rank)  # stable: within a file, and among the rest, collection order stays


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


@pytest.fixture(name="run_tlbench", scope="session")
def run_tlbench_fixture():
    """``run_tlbench(*argv, env=None, cwd=None)``: `tlbench` in a fresh interpreter (a
    CompletedProcess). Only for what needs one: start-up imports, entry points, exit paths."""
    return run_tlbench


# threads = 1: a tiny cell's tensors are too small for a second torch thread to pay for itself; two
# threads cost the suite a quarter more CPU time (its processes share two cores) and no wall time.
TINY_SETTINGS = """
[settings]
image_size = 32
epochs = 1
batch_size = 32
pretrained = false
threads = 1
"""


@pytest.fixture(scope="session")
def tiny_settings():
    """A grid's [settings] table for cells that take a second: 32 px, one epoch, random weights."""
    return TINY_SETTINGS


@pytest.fixture(scope="session")
def test_plugins_dir():
    """tests/plugins/: the test-only strategies and scores, as a --plugins-dir folder."""
    return TEST_PLUGINS_DIR


@pytest.fixture(autouse=True)
def private_cache_dir(tmp_path_factory, monkeypatch):
    """Feature caches go to a fresh folder per test, never to the user's ~/.cache; returns it."""
    folder = tmp_path_factory.mktemp("cache")
    monkeypatch.setenv("TLBENCH_CACHE_DIR", str(folder))
    return folder


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


@pytest.fixture(scope="session")
def cell_tools():
    """``fit(cell_setup)``, ``trainable_names(model)`` and ``changed(model, snapshot)`` for tests
    of a strategy's fit on a ``setup_cell`` (the same functions this module defines)."""
    from types import SimpleNamespace

    return SimpleNamespace(fit=fit, trainable_names=trainable_names, changed=changed)


# 100 of digits' 1,797 images (80 train, 20 val): enough for a few optimiser steps, so which
# parameters train and which path a fit takes show; tests that check an accuracy keep the whole
# dataset.
SMALL_DIGITS = "train_size = 100\n"


@pytest.fixture
def small_cell(setup_cell):
    """``setup_cell`` on 100 digits. The lines go into the grid's [settings] table: ``setup_cell``
    writes its ``options`` right after that table, before any ``[strategy.*]`` table."""
    def make(strategy, options="", **kwargs):
        return setup_cell(strategy, SMALL_DIGITS + options, **kwargs)

    return make


ONE_CELL = """
backbones = ["test_efficientnet"]
strategies = ["linear_probe"]
datasets = ["digits"]
[settings]
image_size = 16
train_size = 40
test_size = 20
pretrained = false
"""


@pytest.fixture(scope="session")
def one_cell_text():
    """A grid's text but its name (and what comes before [settings]) for one cell that takes
    about a second: a tiny random network's linear probe on 60 digits at 16 px."""
    return ONE_CELL


@pytest.fixture
def one_cell_grid(write_grid, registry):
    """``one_cell_text`` as a validated grid named "one"."""
    from tlbench.grid import load_grid

    return load_grid(str(write_grid('name = "one"\n' + ONE_CELL)), registry)
