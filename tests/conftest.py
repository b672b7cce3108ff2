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
