"""Reading what a results folder holds (records, claims, the grid snapshot): anyone who can write
there can leave a FIFO, a device or a huge file under a record's name, and reading it must fail
like a corrupt file, not hang (a FIFO) or fill the memory (``/dev/zero``).

A symbolic link is followed when it ends at a regular file: records gathered from several runs by
linking them are records. What is checked is the file opened (its descriptor), not the name, so a
link swapped between a check and the read cannot slip a device in.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

RECORD_LIMIT = 16 * 2**20  # a record is a few KB (a few hundred with per-image predictions)
_KINDS = ((stat.S_ISDIR, "a folder"), (stat.S_ISFIFO, "a FIFO"), (stat.S_ISCHR, "a character device"),
          (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket"))


class NotARecordFile(OSError):
    """The file is no regular file, or larger than a record can be."""


def read_regular_file(path: Path, limit: int = RECORD_LIMIT) -> bytes:
    """The bytes of ``path`` when it is a regular file (or a link to one) of at most ``limit``
    bytes; NotARecordFile saying what it is otherwise, without blocking or reading it whole.
    FileNotFoundError and PermissionError as ``open`` raises them."""
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)  # a FIFO opens without a writer
    with os.fdopen(fd, "rb") as handle:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            kind = next((name for test, name in _KINDS if test(mode)), "not a regular file")
            raise NotARecordFile(f"{kind}, not a regular file")
        data = handle.read(limit + 1)  # at most this much, however large it is or grows
    if len(data) > limit:
        raise NotARecordFile(f"over {limit:,} bytes, larger than any such file")
    return data


def read_regular_text(path: Path, limit: int = RECORD_LIMIT) -> str:
    """``read_regular_file`` as UTF-8 text."""
    return read_regular_file(path, limit).decode("utf-8")
