"""SIGTERM as Ctrl-C: a scheduler that stops a job (preemption, the end of an allocation) stops
the work running in the main thread as cleanly as a person pressing Ctrl-C would."""

from __future__ import annotations

import contextlib
import signal
import threading


@contextlib.contextmanager
def sigterm_as_interrupt():
    """A scheduler's SIGTERM (preemption, end of an allocation) stops the grid as cleanly as
    Ctrl-C: the running cell is recorded as interrupted. Signals reach the main thread only."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def interrupt(signum, frame):
        raise KeyboardInterrupt(signal.Signals(signum).name)

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
