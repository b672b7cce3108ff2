"""The results folder: one record file per cell, written whole or not at all under the cell's
claim, read back, and set aside when corrupt (what a sound record holds: tlbench.records).

Layout::

    RESULTS/GRID/records/RUN_ID.json   one record per cell
    RESULTS/GRID/records/RUN_ID.lock   the claim of the process running that cell right now
    RESULTS/GRID/records/corrupt/      unreadable records, set aside (never deleted)
    RESULTS/GRID/leaderboard.*         written by `tlbench report` from the records alone
    RESULTS/GRID/grid.json             the grid snapshot `tlbench run` keeps (tlbench.grid_snapshot)

Every write of a record happens while its writer holds the cell's claim, so whoever holds a
claim may read, replace or set aside that cell's record without racing anyone.
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
import stat
import sys
import time
from datetime import datetime, timezone
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Optional

from tlbench import records
from tlbench.atomic_files import writable_folder, write_atomic
from tlbench.errors import ConfigError
from tlbench.regular_files import NotARecordFile, read_regular_text

STALE_TEMP_S = 6 * 3600  # a temporary file this old was left by a killed writer


def utc_now() -> str:
    """The current time as records and claims store it (UTC, ISO 8601, seconds)."""
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def grid_dir(results_dir: str | Path, grid_name: str) -> Path:
    return Path(results_dir) / grid_name


def records_dir(results_dir: str | Path, grid_name: str) -> Path:
    return grid_dir(results_dir, grid_name) / "records"


def record_path(results_dir: str | Path, grid_name: str, run_id: str) -> Path:
    return records_dir(results_dir, grid_name) / f"{run_id}.json"


def ensure_writable(results_dir: str | Path, grid_name: str) -> Path:
    """Create the records folder or explain why it cannot be used."""
    return writable_folder(records_dir(results_dir, grid_name))


def write_record(results_dir: str | Path, record: dict) -> Path:
    """Store a cell's record; the caller holds the cell's claim."""
    path = record_path(results_dir, record["grid"], record["run_id"])
    write_atomic(path, json.dumps(records.jsonable(record), indent=2, sort_keys=True, allow_nan=False) + "\n")
    return path


# -- reading ---------------------------------------------------------------------------------


class UnreadableRecord(ConfigError):
    """A record this user may not read: not corrupt, so never set aside (it may be fine)."""


def _reject_constant(name: str):
    raise ValueError(f"{name} is not a JSON number")


@dataclass
class RecordFile:
    """One record file as read: a record to count (``record``), a corrupt one (``why``), or one
    a newer tlbench wrote with values this version does not know (``newer``: its version;
    never corrupt, never moved). ``misnamed``: a sound record under another cell's name."""

    path: Path
    record: Optional[dict] = None
    why: Optional[str] = None
    newer: Optional[str] = None
    misnamed: Optional[str] = None


def inspect_record_file(path: Path) -> RecordFile:
    """What ``path`` holds (see RecordFile); FileNotFoundError when it is gone."""
    try:
        # a FIFO, a device or a huge file under a record's name is unreadable, never a hang
        record = json.loads(read_regular_text(path), parse_constant=_reject_constant)
    except FileNotFoundError:
        raise
    except PermissionError as exc:
        raise UnreadableRecord(
            f"Record {path} is not readable by this user ({exc.strerror or exc}); it was left as it "
            "is. Fix: ask its owner to make it readable (chmod a+r), or use another --results folder."
        ) from None
    except (OSError, ValueError) as exc:  # UnicodeDecodeError is a ValueError
        return RecordFile(path, why=f"unreadable: {exc}")
    record = records.jsonable(record)  # one stored before names were made visible: "\\udcff" in its text
    why = records.shape_problem(record)
    if why:
        return RecordFile(path, why=why)
    why = records.value_problem(record)
    if why:
        newer = records.newer_version(record)
        return RecordFile(path, why=why, newer=newer) if newer else RecordFile(path, why=why)
    return RecordFile(path, record=record, misnamed=records.name_problem(record, path.stem))


def check_record_file(path: Path) -> tuple[Optional[dict], Optional[str]]:
    """(record, None) for a sound record file, (None, why) for one that cannot be trusted as
    the record of the cell its name gives (corrupt, misnamed, or a newer version's)."""
    found = inspect_record_file(path)
    if found.newer:
        return None, f"written by tlbench {found.newer}, newer than this {records.this_version()}: {found.why}"
    why = found.why or found.misnamed
    return (None, why) if why else (found.record, None)


def read_record(path: Path, claimed: bool = False) -> Optional[dict]:
    """The record in ``path``, or None when there is none to trust (`tlbench run`'s reader).

    A corrupt or misnamed file is reported on stderr and moved to ``corrupt/`` so its cell runs
    again. That needs the cell's claim (``claimed``: the caller holds it); without it, the claim
    is taken here, and a cell claimed by a running process is left alone (it is being rewritten).
    A newer version's record is never moved: it is reported and None is returned (the driver
    leaves its cell alone: ``newer_record``).
    """
    try:
        found = inspect_record_file(path)
    except FileNotFoundError:
        return None
    if found.newer:
        _warn_newer(found)
        return None
    why = found.why or found.misnamed
    if why is None:
        return found.record
    if claimed:
        _set_aside(path, why)
        return None
    try:
        cell_claim = _claim(path.parent, path.stem)
    except OSError as exc:  # a read-only results folder: report, leave it, ignore it
        _warn(path, why, f"cannot set it aside ({exc.strerror or exc}); it is ignored")
        return None
    if cell_claim is None:
        return None
    with cell_claim:
        return read_record(path, claimed=True)  # read again: it may have been replaced meanwhile


def newer_record(path: Path) -> Optional[str]:
    """The version of the newer tlbench whose record ``path`` holds, else None: `tlbench run`
    leaves such a cell alone rather than replace what a newer version stored."""
    try:
        return inspect_record_file(path).newer
    except (FileNotFoundError, ConfigError):
        return None


def _set_aside(path: Path, why: str) -> None:
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S.%fZ")
    target = path.parent / "corrupt" / f"{path.name}.{stamp}"
    try:
        target.parent.mkdir(exist_ok=True)
        os.rename(path, target)
        what = f"moved to {target}; its cell will run again"
    except FileNotFoundError:
        return  # another process set it aside first and reported it
    except OSError as exc:
        what = f"cannot set it aside ({exc.strerror or exc}); it is ignored"
    _warn(path, why, what)


def _warn(path: Path, why: str, what: str) -> None:
    print(f"warning: corrupt record {path} ({why}); {what}.", file=sys.stderr, flush=True)


_SAID: set = set()  # (file, version) of newer records already reported by this process


def _warn_newer(found: RecordFile) -> None:
    """Once a process (a run reads its records again for its leaderboard)."""
    if (found.path, found.newer) in _SAID:
        return
    _SAID.add((found.path, found.newer))
    print(f"warning: record {found.path} was written by tlbench {found.newer}, newer than this "
          f"{records.this_version()} ({found.why}); it is skipped and left as it is. Read it with tlbench "
          f"{found.newer} or later.", file=sys.stderr, flush=True)


def iter_records(results_dir: str | Path, grid_name: str, set_aside: bool = False) -> Iterator[dict]:
    """Every sound record of a grid, one per cell (``one_per_cell``).

    Read-only: a corrupt file is reported and left where it is, and a newer version's record is
    reported and skipped. With ``set_aside`` (`tlbench run`, which reruns their cells), corrupt
    and misnamed files are moved to ``corrupt/`` as ``read_record`` does.
    """
    folder = records_dir(results_dir, grid_name)
    if not folder.is_dir():
        return
    found = []
    for path in sorted(folder.glob("*.json")):
        if set_aside:
            record = read_record(path)
            if record is not None:
                found.append(RecordFile(path, record=record))
            continue
        try:
            item = inspect_record_file(path)
        except FileNotFoundError:
            continue
        if item.newer:
            _warn_newer(item)
        elif item.why:
            _warn(path, item.why, "left as it is and not counted (`tlbench run` of its grid sets it aside "
                  "and runs its cell again)")
        else:
            found.append(item)
    yield from one_per_cell(found)


def one_per_cell(found: list[RecordFile]) -> list[dict]:
    """The records of ``found``, each cell counted once.

    A cell is what a record's content names (``records.cell_key``: its configuration and seed),
    whatever the file is called. When several files name one cell (a copy under another name,
    a record edited by hand), one counts: a file named after its own ``run_id`` before one that
    is not, then the smallest ``run_id``, then the first file name. Each one left out is said
    on stderr, with the file that counts instead.
    """
    by_cell: dict = {}
    for item in found:
        by_cell.setdefault(records.cell_key(item.record), []).append(item)
    chosen = []
    for items in by_cell.values():
        items.sort(key=lambda item: (item.misnamed is not None, item.record["run_id"], item.path.name))
        first, rec = items[0], items[0].record
        chosen.append(rec)
        for other in items[1:]:
            print(f"warning: record {other.path} is of the same cell as {first.path} ({rec['backbone']} / "
                  f"{rec['strategy']} / {rec['dataset']} / seed {rec['seed']}); only {first.path.name} is counted "
                  "(docs/records.md#one-record-per-cell).", file=sys.stderr, flush=True)
        if first.misnamed:
            print(f"warning: record {first.path} is named after another cell ({first.misnamed}); it is counted as "
                  f"the cell it records. Rename it to {rec['run_id']}.json (`tlbench run` sets it aside and runs "
                  "the cell its name gives).", file=sys.stderr, flush=True)
    return sorted(chosen, key=lambda r: r["run_id"])


def records_by_run_id(results_dir: str | Path, grid_name: str, set_aside: bool = False) -> dict[str, dict]:
    return {r["run_id"]: r for r in iter_records(results_dir, grid_name, set_aside)}


def grid_names(results_dir: str | Path) -> list[str]:
    root = Path(results_dir)
    if not root.is_dir():
        return []
    return sorted(p.name for p in root.iterdir() if (p / "records").is_dir())


def remove_leftovers(results_dir: str | Path, grid_name: str, older_than_s: float = STALE_TEMP_S) -> None:
    """Delete what killed processes left in a records folder: their temporary records (never
    read as records; only old ones, since a young one may belong to a live writer) and lock
    files nobody holds (harmless: the kernel dropped the lock with its holder, but clutter)."""
    folder = records_dir(results_dir, grid_name)
    cutoff = time.time() - older_than_s
    for path in folder.glob(".*.tmp"):
        try:
            if path.stat().st_mtime < cutoff:
                path.unlink()
        except OSError:
            pass
    for path in folder.glob("*.lock"):
        try:
            claim = _claim(folder, path.stem)
        except OSError:
            continue
        if claim is not None:
            claim.release()  # removes the file


# -- claims: at most one process runs a cell at a time -------------------------------------------


class Claim:
    """This process runs the cell: an exclusive ``flock`` on ``RUN_ID.lock``.

    The kernel drops the lock when the holder exits, however it exits (kill -9, a lost node on
    a local disk), so a dead driver never blocks a cell; the file itself is only a name for the
    lock plus who holds it, for messages. Over NFS, Linux maps flock to NFS byte-range locks.
    """

    def __init__(self, path: Path, fd: int):
        self.path = path
        self._fd: Optional[int] = fd

    def release(self) -> None:
        if self._fd is None:
            return
        try:
            self.path.unlink()  # while still locked, so nobody locks a file about to vanish
        except FileNotFoundError:
            pass
        os.close(self._fd)  # closing the last descriptor drops the lock
        self._fd = None

    def __enter__(self) -> "Claim":
        return self

    def __exit__(self, *exc) -> None:
        self.release()


def _claim(folder: Path, run_id: str, about: Optional[dict] = None) -> Optional[Claim]:
    path = folder / f"{run_id}.lock"
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NONBLOCK, 0o644)
        if not stat.S_ISREG(os.fstat(fd).st_mode):  # a FIFO or a device left under a claim's name
            os.close(fd)
            raise NotARecordFile(f"{path} is not a regular file, so no claim can be kept there: remove it")
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return None
        # the previous holder may have removed the file between our open and our lock: then
        # we locked a file nobody else will see, so take the one now at ``path`` instead
        try:
            current = os.stat(path)
            opened = os.fstat(fd)
            if (current.st_ino, current.st_dev) == (opened.st_ino, opened.st_dev):
                break
        except FileNotFoundError:
            pass
        os.close(fd)
    holder = {"pid": os.getpid(), "host": socket.gethostname(),
              "since": utc_now(), **(about or {})}
    os.ftruncate(fd, 0)
    os.write(fd, json.dumps(holder).encode())
    return Claim(path, fd)


def claim_cell(results_dir: str | Path, grid_name: str, run_id: str,
               about: Optional[dict] = None) -> Optional[Claim]:
    """Claim a cell for this process, or None when another live process holds it.

    ``about`` (e.g. the cell's backbone/strategy/dataset/seed) is stored with the claim, so
    ``tlbench runs`` and other drivers can say what is running where. Release the claim only
    after the cell's record is written.
    """
    folder = records_dir(results_dir, grid_name)
    folder.mkdir(parents=True, exist_ok=True)
    return _claim(folder, run_id, about)


def _holder(path: Path) -> dict:
    try:
        return json.loads(read_regular_text(path, limit=2**16))
    except (OSError, ValueError):
        return {}  # written right after locking: a reader may see it empty


def claim_holder(results_dir: str | Path, grid_name: str, run_id: str) -> dict:
    """Who holds a cell's claim (pid, host, since, ...), as far as its lock file says."""
    return _holder(records_dir(results_dir, grid_name) / f"{run_id}.lock")


def active_claims(results_dir: str | Path, grid_name: str) -> list[dict]:
    """The cells some live process is running now, each with ``run_id`` and its holder."""
    active = []
    for path in sorted(records_dir(results_dir, grid_name).glob("*.lock")):
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)  # a FIFO named *.lock must not block
        except OSError:
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)  # granted only when nobody holds it
        except BlockingIOError:
            active.append({**_holder(path), "run_id": path.stem})
        finally:
            os.close(fd)
    return active
