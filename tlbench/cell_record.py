"""A cell's record put together: the fields that name the cell and the plugins that made it, then
how the cell ended when it did not end ok (interrupted, or failed with its error kind)."""

from __future__ import annotations

import traceback
from typing import Optional

from tlbench.error_kinds import error_kind
from tlbench.errors import ConfigError
from tlbench.grid import Cell
from tlbench.options import options_as_dict
from tlbench.plugins import Registry
from tlbench.records import RUNNING
from tlbench.results import utc_now


def starts_pretrained(cell: Cell, strategy_cls: type) -> bool:
    """The grid asks for pretrained weights and the strategy does not start from random ones."""
    return bool(cell.settings.pretrained and strategy_cls.pretrained)


def provenance(cell: Cell, registry: Registry) -> dict:
    """Whether the cell starts from pretrained weights (the grid's setting and the strategy's
    declaration together), and which plugin made each of its parts: a record made by
    another version of a plugin says so (it keeps its run_id; see docs/records.md)."""
    try:
        parts = {"backbone": registry.registration("backbones", cell.plugin("backbone")),
                 "strategy": registry.registration("strategies", cell.plugin("strategy")),
                 "dataset": registry.registration("datasets", cell.plugin("dataset"))}
    except ConfigError:  # a worker without the plugin: its failure says so
        return {}
    return {"pretrained": starts_pretrained(cell, parts["strategy"].component),
            "plugins": {part: {"plugin": reg.plugin, **reg.origin} for part, reg in parts.items()}}


def base(cell: Cell, registry: Registry) -> dict:
    """The record of a cell that has just started: what it is, nothing measured yet."""
    return {
        "run_id": cell.run_id,
        "config_id": cell.config_id,
        "grid": cell.grid,
        "backbone": cell.backbone,
        "strategy": cell.strategy,
        "dataset": cell.dataset,
        "seed": cell.seed,
        "sweep": dict(cell.sweep),
        "settings": options_as_dict(cell.settings),
        "options": options_as_dict(cell.strategy_options),
        "backbone_options": options_as_dict(cell.backbone_options),
        "dataset_options": options_as_dict(cell.dataset_options),
        # a variant's plugin beside its name (tlbench.variants); absent when every name is a plugin's
        **({"variant_of": dict(cell.variant_of)} if cell.variant_of else {}),
        **provenance(cell, registry),
        "status": RUNNING,
        "error": None,
        "started_at": utc_now(),
    }


def ended_by(exc: BaseException) -> dict:
    """The fields of a cell that ``exc`` stopped: Ctrl-C (or SIGTERM, which the CLI turns into
    one) interrupted it; anything else failed it. Call it where ``exc`` is being handled: a
    failure keeps its traceback."""
    if isinstance(exc, KeyboardInterrupt):
        return {"status": "interrupted", "error_kind": "interrupted",
                "error": f"interrupted ({exc.args[0] if exc.args else 'Ctrl-C'})"}
    return {"status": "failed", "error_kind": error_kind(exc), "error": f"{type(exc).__name__}: {exc}",
            "traceback": traceback.format_exc()}


def failed(record: dict, kind: str, error: str, environment: dict, started_at: Optional[str] = None,
           where: Optional[dict] = None) -> dict:
    """``record`` (a ``base`` one) completed for a cell that failed where no record could be made
    (a killed process). ``where``: the ``environment`` and ``node`` of the worker that failed
    it, when it said; otherwise ``environment``, this machine's, stands in."""
    status = "interrupted" if kind == "interrupted" else "failed"
    record.update(status=status, error_kind=kind, error=error, finished_at=utc_now(),
                  started_at=started_at or record["started_at"], environment=environment)
    record.update(where or {})
    return record
