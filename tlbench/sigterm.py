"""SIGTERM and SIGHUP as Ctrl-C: a scheduler that stops a job (preemption, the end of an
allocation), or a terminal that closes under a run (a dropped ssh session), stops the work running
in the main thread as cleanly as a person pressing Ctrl-C would."""

from __future__ import annotations

import contextlib
import signal
import threading


@contextlib.contextmanager
def sigterm_as_interrupt():
    """A scheduler's SIGTERM (preemption, end of an allocation), or the SIGHUP of a closed
    terminal, stops the grid as cleanly as Ctrl-C: the running cell is recorded as interrupted.
    Signals reach the main thread only."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def interrupt(signum, frame):
        raise KeyboardInterrupt(signal.Signals(signum).name)

    caught = [signal.SIGTERM]
    if signal.getsignal(signal.SIGHUP) is signal.SIG_DFL:  # `nohup tlbench run` keeps ignoring it
        caught.append(signal.SIGHUP)
    previous = {signum: signal.signal(signum, interrupt) for signum in caught}
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
