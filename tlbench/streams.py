"""stdout and stderr as a command writes them, whatever they are: a closed descriptor reads as
/dev/null, text the stream cannot encode ("±" on an ASCII terminal, a file name that is not
UTF-8) goes out with backslash escapes, and a stream that fails (a full disk, a terminal gone)
is given up instead of stopping the command. The work (records, leaderboard files) matters more
than the messages about it; only a reader that closed stdout's pipe still ends the command
(BrokenPipeError, exit 141)."""

from __future__ import annotations

import contextlib
import os
import sys
from typing import Iterator, Optional


class LenientStream:
    """A text stream whose writes never raise, but for a closed pipe on stdout; ``lost`` is the
    error that made it give up the rest of its output (None while it writes)."""

    def __init__(self, stream, raise_broken_pipe: bool):
        self.stream, self.raise_broken_pipe = stream, raise_broken_pipe
        self.lost: Optional[Exception] = None

    def write(self, text: str) -> int:
        if self.lost is None:
            self._guard(self._write, text)
        return len(text)

    def flush(self) -> None:
        if self.lost is None:
            self._guard(self.stream.flush)

    def _write(self, text: str) -> None:
        try:
            self.stream.write(text)
        except UnicodeEncodeError:  # nothing was written: the whole text again, escaped
            encoding = getattr(self.stream, "encoding", None) or "utf-8"
            self.stream.write(text.encode(encoding, "backslashreplace").decode(encoding))

    def _guard(self, action, *args) -> None:
        try:
            action(*args)
        except BrokenPipeError:
            if self.raise_broken_pipe:
                raise
            self._give_up(sys.exc_info()[1])
        except (OSError, ValueError) as exc:  # ValueError: the stream was closed
            self._give_up(exc)

    def _give_up(self, exc: Exception) -> None:
        """Keep ``exc``, and point the descriptor at /dev/null: the interpreter flushes the
        stream once more at exit, and that must not fail again."""
        self.lost = exc
        with contextlib.suppress(OSError, ValueError):
            null_onto(self.stream.fileno())

    def __getattr__(self, name):
        return getattr(self.stream, name)


def null_onto(fd: int) -> None:
    """/dev/null in place of descriptor ``fd``."""
    null = os.open(os.devnull, os.O_RDWR)
    if null != fd:
        os.dup2(null, fd)
        os.close(null)


def _open_closed_descriptors() -> None:
    """A command started with stdin, stdout or stderr closed (``tlbench run >&-``) gets /dev/null
    there, so that no file it opens later takes that number and receives another's output (a
    cell's process inherits 1 and 2)."""
    for fd in (0, 1, 2):
        try:
            os.fstat(fd)
        except OSError:
            null_onto(fd)


@contextlib.contextmanager
def lenient_streams() -> Iterator[tuple[LenientStream, LenientStream]]:
    """sys.stdout and sys.stderr as LenientStreams while the block runs (a stream the
    interpreter had none for, its descriptor being closed, writes to /dev/null); the streams
    before it are put back after."""
    _open_closed_descriptors()
    before = sys.stdout, sys.stderr
    stdout = LenientStream(_unwrapped(sys.stdout), raise_broken_pipe=True)
    stderr = LenientStream(_unwrapped(sys.stderr), raise_broken_pipe=False)
    sys.stdout, sys.stderr = stdout, stderr
    try:
        yield stdout, stderr
    finally:
        sys.stdout, sys.stderr = before


def _unwrapped(stream):
    if isinstance(stream, LenientStream):
        return stream.stream
    return stream if stream is not None else open(os.devnull, "w", encoding="utf-8")
