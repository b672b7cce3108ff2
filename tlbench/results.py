"""Records on disk: one JSON file per cell, written whole or not at all.

Layout::

    RESULTS/GRID/records/RUN_ID.json   one record per cell
    RESULTS/GRID/leaderboard.{md,csv}  written by report.py from the records alone
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Iterator

from tlbench.errors import ConfigError


def grid_dir(results_dir: str | Path, grid_name: str) -> Path:
    return Path(results_dir) / grid_name


def records_dir(results_dir: str | Path, grid_name: str) -> Path:
    return grid_dir(results_dir, grid_name) / "records"


def ensure_writable(results_dir: str | Path, grid_name: str) -> Path:
    """Create the records folder or explain why it cannot be used."""
    folder = records_dir(results_dir, grid_name)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe = tempfile.NamedTemporaryFile(dir=folder, prefix=".probe-", delete=True)
        probe.close()
    except OSError as exc:
        raise ConfigError(
            f"Results folder {str(folder)!r} is not writable ({exc.strerror or exc}). "
            "Choose another with --results DIR."
        ) from None
    return folder


def write_atomic(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` so that readers see the old file or the new one, never a part."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def write_record(results_dir: str | Path, record: dict) -> Path:
    path = records_dir(results_dir, record["grid"]) / f"{record['run_id']}.json"
    write_atomic(path, json.dumps(record, indent=2, sort_keys=True, default=str) + "\n")
    return path


def iter_records(results_dir: str | Path, grid_name: str) -> Iterator[dict]:
    """Every readable record of a grid; unreadable files are skipped (the cell reruns)."""
    folder = records_dir(results_dir, grid_name)
    if not folder.is_dir():
        return
    for path in sorted(folder.glob("*.json")):
        try:
            record = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        if isinstance(record, dict) and "run_id" in record:
            yield record


def records_by_run_id(results_dir: str | Path, grid_name: str) -> dict[str, dict]:
    return {r["run_id"]: r for r in iter_records(results_dir, grid_name)}


def grid_names(results_dir: str | Path) -> list[str]:
    root = Path(results_dir)
    if not root.is_dir():
        return []
    return sorted(p.name for p in root.iterdir() if (p / "records").is_dir())
