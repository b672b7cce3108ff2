"""Files written whole or not at all: a temporary file beside the target, synced, then renamed
into place (one file, or a set renamed together), with the mode open() would give, so that
readers (other users, a web server) see an old file or a new one, never a part; and a folder
checked writable before anything is written there.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
import time
from pathlib import Path

from tlbench import records
from tlbench.errors import ConfigError


def umask() -> int:
    """The process's umask, read without changing it where Linux allows (os.umask sets it)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    current = os.umask(0o022)
    os.umask(current)
    return current


def shared_mode(fd: int) -> None:
    """Give a file made by mkstemp (always 0600) the mode open() would: 0666 less the umask,
    so that published leaderboards and shared results folders are readable by others."""
    os.fchmod(fd, 0o666 & ~umask())


def _write_temporary(path: Path, content: str | bytes) -> str:
    """``content`` in a complete, synced temporary file beside ``path`` (never a part of it:
    on any failure the temporary is removed); the caller renames it into place."""
    if isinstance(content, str):
        content = records.visible(content)  # a name that is not UTF-8 (a file's, a folder's) as "\\xff"
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        shared_mode(fd)
        with (os.fdopen(fd, "wb") if isinstance(content, bytes) else os.fdopen(fd, "w", encoding="utf-8")) as handle:
            handle.write(content)
            handle.flush()
            os.fsync(handle.fileno())
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    return tmp


def write_atomic(path: Path, content: str | bytes) -> None:
    """Write ``content`` to ``path`` so that readers see the old file or the new one, never a part."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _write_temporary(path, content)
    try:
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def write_set(folder: Path, files: dict[str, str | bytes]) -> list[Path]:
    """Write several files as one set: every file is written to a temporary first, and only when
    all are complete are they renamed into place (milliseconds), so an interruption or a full
    disk leaves the old set, never half of each, and no temporary behind. An unwritable folder
    is a ConfigError."""
    _remove_stale_temporaries(folder, files)
    pending = []
    try:
        for name, content in files.items():
            pending.append((_write_temporary(folder / name, content), folder / name))
        for tmp, path in pending:
            os.replace(tmp, path)
    except OSError as exc:
        raise ConfigError(f"Cannot write the leaderboard into {str(folder)!r} ({exc.strerror or exc}); "
                          "the files there are unchanged. Fix the folder's permissions or free space, "
                          "or copy the results to a writable folder.") from None
    finally:
        for tmp, _ in pending:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
    return [path for _, path in pending]


def _remove_stale_temporaries(folder: Path, names, older_than_s: float = 60.0) -> None:
    """Temporaries of this set left by a writer killed with -9 (a live writer's are seconds old)."""
    now = time.time()
    for name in names:
        for tmp in folder.glob(f".{name}.*.tmp"):
            with contextlib.suppress(OSError):
                if now - tmp.stat().st_mtime > older_than_s:
                    tmp.unlink()


def writable_folder(folder: Path) -> Path:
    """``folder``, created if needed, or a ConfigError saying why it cannot be written."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe = tempfile.NamedTemporaryFile(dir=folder, prefix=".probe-", delete=True)
        probe.close()
    except OSError as exc:
        raise ConfigError(
            f"Results folder {str(folder)!r} is not writable ({_why_not_writable(folder, exc)}). "
            "Choose another with --results DIR."
        ) from None
    return folder


def _why_not_writable(folder: Path, exc: OSError) -> str:
    """The OS's reason, or the dangling link on the way that makes mkdir say "File exists"."""
    for part in (folder, *folder.parents):
        if part.is_symlink() and not part.exists():
            return f"{str(part)!r} is a symbolic link to {os.readlink(part)!r}, which does not exist"
    return exc.strerror or str(exc)
