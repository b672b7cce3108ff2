"""The only extension surface: five hooks handed a ``register`` callback, and ``default_grid``.

Implementations may accept a subset of a spec's arguments, so specs can grow keyword
arguments later without breaking any plugin.
"""

import pluggy

hookspec = pluggy.HookspecMarker("tlbench")
hookimpl = pluggy.HookimplMarker("tlbench")


@hookspec
def register_backbones(register):
    """Register backbone classes: ``register(MyBackbone)``."""


@hookspec
def register_strategies(register):
    """Register transfer strategy classes: ``register(MyStrategy)``."""


@hookspec
def register_datasets(register):
    """Register dataset classes: ``register(MyDataset)``."""


@hookspec
def register_scores(register):
    """Register transferability score classes for ``tlbench rank``: ``register(MyScore)``."""


@hookspec
def register_sinks(register):
    """Register sink classes (where records and leaderboards also go, e.g. an experiment
    tracker): ``register(MySink)``."""


@hookspec
def default_grid():
    """The path of the grid file ``tlbench run --grid`` runs when given no file (a ``str`` or
    ``pathlib.Path``), or None. Two plugins providing one is an error naming both."""
