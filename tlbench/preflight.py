"""Before a grid's first cell: whether each component it uses can run on this machine.

Every distinct configuration of a backbone, strategy and dataset of the grid (and each score of
``tlbench rank``) is asked once (``Component.unavailable``): files present, extra installed,
download site reachable. One that cannot run stops the command with exit 2, one line per
component with its fix, before any cell starts: otherwise every cell would fail on the same
missing file, slowly and one at a time. A Ray cluster's nodes ask the same question of their
own copies before each cell (tlbench.node_check).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Callable, Iterable, Iterator, Optional

from tlbench.errors import ConfigError
from tlbench.options import options_as_dict


@dataclass(frozen=True)
class Unavailable:
    """A component that cannot run here: its kind ("dataset"), name and the plugin's reason."""

    kind: str
    name: str
    why: str

    def line(self) -> str:
        return f"{self.kind} {self.name!r}: {self.why}"


def check_components(grid_name: str, cells: Iterable, registry, scores: Optional[dict] = None,
                     strategies: bool = True) -> None:
    """Raise ConfigError naming every component of ``cells`` (and every score of ``scores``,
    {name: options}) that cannot run on this machine."""
    found = unavailable_components(cells, registry, scores or {}, strategies)
    if found:
        lines = "\n".join(f"  {problem.line()}" for problem in found)
        raise ConfigError(f"Grid {grid_name!r} cannot run on this machine, so no cell was started; "
                          f"{_count(found)} cannot run here:\n{lines}")


def _count(found: list) -> str:
    return "1 component" if len(found) == 1 else f"{len(found)} components"


def unavailable_components(cells: Iterable, registry, scores: Optional[dict] = None,
                           strategies: bool = True) -> list[Unavailable]:
    """The components that cannot run here, each named once (its first reason), asking each
    distinct configuration once."""
    found: dict = {}
    asked: set = set()
    for kind, name, configuration, ask in _questions(cells, registry, scores or {}, strategies):
        if (kind, name) in found or configuration in asked:
            continue
        asked.add(configuration)
        why = answer(ask)
        if why:
            found[(kind, name)] = Unavailable(kind, name, why)
    return list(found.values())


def _questions(cells, registry, scores: dict, strategies: bool) -> Iterator[tuple[str, str, tuple, Callable]]:
    """(kind, name, what identifies the configuration, the question) for each component."""
    from tlbench.cell_record import starts_pretrained

    for cell in cells:
        strategy = registry.get("strategies", cell.plugin("strategy"))
        pretrained = starts_pretrained(cell, strategy)
        backbone = registry.get("backbones", cell.plugin("backbone"))
        yield ("backbone", cell.backbone, ("backbone", cell.backbone, _key(cell.backbone_options), pretrained),
               lambda b=backbone, c=cell, p=pretrained: b(c.backbone_options).unavailable(c.plugin("backbone"), pretrained=p))
        if strategies:
            for options in cell.strategy_candidates:
                yield ("strategy", cell.strategy, ("strategy", cell.strategy, _key(options)),
                       lambda s=strategy, o=options: s(o).unavailable())
        dataset = registry.get("datasets", cell.plugin("dataset"))
        yield ("dataset", cell.dataset, ("dataset", cell.dataset, _key(cell.dataset_options)),
               lambda d=dataset, o=cell.dataset_options: d(o).unavailable())
    for name, options in scores.items():
        score = registry.get("scores", name)
        yield "score", name, ("score", name, _key(options)), lambda s=score, o=options: s(o).unavailable()


def _key(options) -> str:
    return json.dumps(options_as_dict(options), sort_keys=True, default=str)


def answer(ask: Callable) -> Optional[str]:
    """The plugin's reason on one line, or None. A check that raises answers too: a ConfigError
    is its reason; anything else is a fault of the check, said as such."""
    try:
        why = ask()
    except ConfigError as exc:
        why = str(exc)
    except Exception as exc:
        why = (f"its availability check raised {type(exc).__name__}: {exc}. Fix: report it to the "
               "plugin's author")
    return " ".join(str(why).split()) if why else None
