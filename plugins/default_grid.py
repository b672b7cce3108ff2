"""The grid ``tlbench run --grid`` runs when given no file: the first-party plugins' offline
default (default_grid.toml beside this file). It needs the ``offline`` extra's packages:
``pip install "tlbench[offline]"``."""

from pathlib import Path

import tlbench


@tlbench.hookimpl
def default_grid():
    return Path(__file__).with_name("default_grid.toml")
