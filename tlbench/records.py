"""What a record may hold: its statuses, each field's type and values JSON can hold; every record
read back from disk is checked against them.

No numpy or torch here: the command line reads the statuses before it imports anything heavy.
"""

from __future__ import annotations

import itertools
import math
from typing import Optional

from tlbench import predictions
from tlbench.error_kinds import ERROR_KINDS

STATUSES = ("ok", "failed", "interrupted")  # a stored record's (docs/records.md#statuses)
RUNNING = "running"  # a cell some live process holds the claim of: no record yet
QUEUED = "queued"  # a cell of a detached Slurm array whose task waits in Slurm's queue: no record yet
MISSING = "missing"  # a cell of the grid with no record at all (a leaderboard counts them)

REQUIRED = {"run_id": str, "grid": str, "backbone": str, "strategy": str, "dataset": str,
            "seed": int, "status": str}


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _share(value) -> bool:
    return _is_number(value) and 0.0 <= value <= 1.0


def _amount(value) -> bool:
    return value is None or (_is_number(value) and value >= 0)


def _count(value) -> bool:
    return value is None or (isinstance(value, int) and not isinstance(value, bool) and value >= 0)


def _cap(value) -> bool:
    """{"set": the grid's value, "used": the one the data allowed}, both whole numbers."""
    return isinstance(value, dict) and set(value) == {"set", "used"} and all(
        v is not None and _count(v) for v in value.values())


def _scalar(value) -> bool:
    return value is None or isinstance(value, (str, bool)) or _is_number(value)


# Every optional field the core reads, and what it must be when present: a record is data from
# disk, and one wrong field must not crash a report or be ranked (NaN compares false to all).
OPTIONAL = {
    "config_id": lambda v: isinstance(v, str),
    "started_at": lambda v: isinstance(v, str),
    "finished_at": lambda v: v is None or isinstance(v, str),
    "error": lambda v: v is None or isinstance(v, str),
    "error_kind": lambda v: v in ERROR_KINDS,
    "environment": lambda v: isinstance(v, dict) and all(_scalar(x) for x in v.values()),
    "sweep": lambda v: isinstance(v, dict) and all(_scalar(x) for x in v.values()),
    "warnings": lambda v: isinstance(v, list) and all(isinstance(x, str) for x in v),
    "top1": _share, "top5": _share, "mean_per_class_acc": _share,
    "train_s": _amount, "eval_s": _amount, "run_s": _amount, "selection_s": _amount,
    "train_samples_per_s": _amount, "peak_mem_mb": _amount,
    "trainable_params": _count, "total_params": _count, "num_classes": _count,
    "settings": lambda v: isinstance(v, dict), "options": lambda v: isinstance(v, dict),
    "strategy_info": lambda v: isinstance(v, dict), "split_sizes": lambda v: isinstance(v, dict),
    "pretrained": lambda v: isinstance(v, bool),
    "pixels": lambda v: isinstance(v, str),
    "scoring": lambda v: isinstance(v, dict) and all(_scalar(x) for x in v.values()),
    "capped": lambda v: isinstance(v, dict) and all(_cap(c) for c in v.values()),
    "predictions": lambda v: predictions.is_valid(v),
    "grid_seeds": lambda v: isinstance(v, list) and all(isinstance(x, int) and not isinstance(x, bool) for x in v),
    "race": lambda v: (isinstance(v, dict) and isinstance(v.get("round"), int) and isinstance(v.get("max_seeds"), int)
                       and isinstance(v.get("rule"), str)),
    "node": lambda v: isinstance(v, dict) and all(isinstance(x, str) for x in v.values()),
    "slurm": lambda v: isinstance(v, dict) and all(isinstance(x, str) for x in v.values()),
    "resources": lambda v: isinstance(v, dict) and all(_is_number(x) for x in v.values()),
    "variant_of": lambda v: isinstance(v, dict) and all(
        axis in ("backbone", "strategy", "dataset") and isinstance(x, str) and x for axis, x in v.items()),
    "plugins": lambda v: isinstance(v, dict) and all(
        isinstance(part, dict) and all(_scalar(x) for x in part.values()) for part in v.values()),
}


def problem(record, run_id: str) -> Optional[str]:
    """Why ``record``, parsed from the file of ``run_id``, cannot be trusted; None when it can."""
    return shape_problem(record) or value_problem(record) or name_problem(record, run_id)


def shape_problem(record) -> Optional[str]:
    """Why ``record`` is not a record at all (not an object, a field that names the cell missing)."""
    if not isinstance(record, dict):
        return "not a JSON object"
    for key, kind in REQUIRED.items():
        if not isinstance(record.get(key), kind) or isinstance(record.get(key), bool):
            return f"missing or invalid {key!r}"
    return None


def value_problem(record: dict) -> Optional[str]:
    """Why a value of a well-shaped record is not one this version knows: a wrong type, an
    impossible number, an unknown status (a newer version may write values this one does not)."""
    for key, valid in OPTIONAL.items():
        if key in record and not valid(record[key]):
            return f"invalid {key!r}: {record[key]!r:.60}"
    if record["status"] not in STATUSES:
        return f"unknown status {record['status']!r}"
    if record["status"] == "ok" and not isinstance(record.get("top1"), (int, float)):
        return "status ok without a top1 score"
    return None


def visible(text: str) -> str:
    """``text`` as UTF-8 can hold it. A file name that is not UTF-8 reaches Python with a lone
    surrogate for each such byte (``os.fsdecode(b"bad\\xff.png")`` is ``"bad\\udcff.png"``), which
    no UTF-8 file or terminal takes: each becomes the visible escape ``\\xff`` (any other lone
    surrogate: ``\\udXXX``); text without them comes back unchanged."""
    if text.isascii():
        return text
    try:
        text.encode("utf-8")
        return text
    except UnicodeEncodeError:
        return "".join(_escaped(char) for char in text)


def _escaped(char: str) -> str:
    code = ord(char)
    if 0xDC80 <= code <= 0xDCFF:  # a byte surrogateescape kept
        return f"\\x{code - 0xDC00:02x}"
    return f"\\u{code:04x}" if 0xD800 <= code <= 0xDFFF else char

def name_problem(record: dict, run_id: str) -> Optional[str]:
    """A record stored under another cell's name: a copied or renamed file (see ``one_per_cell``)."""
    if record["run_id"] != run_id:
        return f"run_id {record['run_id']!r} does not match the file name"
    return None


def this_version() -> str:
    from tlbench import __version__

    return __version__


def newer_version(record: dict) -> Optional[str]:
    """The version of tlbench that wrote ``record`` (its ``environment.tlbench``) when it is newer
    than this one, else None: such a record may hold values this version does not know."""
    environment = record.get("environment")
    version = environment.get("tlbench") if isinstance(environment, dict) else None
    if isinstance(version, str) and _version_key(version) > _version_key(this_version()):
        return version
    return None


def _version_key(version: str) -> tuple:
    """``1.2.10`` -> (1, 2, 10): the leading release numbers (a suffix such as ``.dev3`` is ignored)."""
    numbers = []
    for part in version.split("."):
        digits = "".join(itertools.takewhile(str.isdigit, part))
        if not digits:
            break
        numbers.append(int(digits))
        if len(digits) < len(part):
            break
    return tuple(numbers)


def cell_key(record: dict) -> tuple:
    """The cell a record measured, from its content: its configuration (``config_id``) and its
    seed; a record without a ``config_id`` (older than it) is its own cell."""
    config = record.get("config_id")
    if not isinstance(config, str):
        return (record["grid"], "run_id", record["run_id"])
    return (record["grid"], config, record["seed"])


def jsonable(value):
    """``value`` as JSON holds it, by one rule for every executor: non-finite floats become None
    (JSON has no NaN), tuples lists, text ``visible`` (UTF-8 everywhere), anything else JSON
    cannot hold its ``str()``."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, str):
        return visible(value)
    if value is None or isinstance(value, (bool, int)):
        return value
    if isinstance(value, dict):
        return {visible(str(k)): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if hasattr(value, "item") and getattr(value, "ndim", None) == 0:  # numpy and torch scalars
        return jsonable(value.item())
    return visible(str(value))


def plugin_of(record: dict, axis: str) -> str:
    """The registered plugin a (validated) record's cell ran on ``axis``: its name, or the plugin
    its variant configures (``variant_of``, tlbench.variants)."""
    return (record.get("variant_of") or {}).get(axis) or record[axis]
