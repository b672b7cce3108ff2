"""The peak resident memory (RSS) of this process over a window (a cell), measured without
resetting the kernel's high-water mark.

Resetting it (writing 5 to ``/proc/self/clear_refs``) would make every outside tool that reads
it (``/usr/bin/time -v``, a batch system's accounting) report the last cell's peak as the
process's. Instead, a window's peak is the process's high-water mark when that rose during the
window (then it is exact), else the largest RSS a sampling thread saw (every ``INTERVAL_S``;
a spike shorter than that, below the process's earlier peak, can be missed). Linux only; elsewhere
the peak since the process started. Standard library only.
"""

from __future__ import annotations

import os
import resource
import threading
import time
from typing import Optional

INTERVAL_S = 0.01
_PAGE_KB = os.sysconf("SC_PAGE_SIZE") // 1024 if hasattr(os, "sysconf") else 4


class _Window:
    def __init__(self):
        self.lock = threading.Lock()
        self.sampled_kb = 0  # the largest RSS seen since the window started
        self.mark_kb: Optional[int] = None  # the process's high-water mark when it started
        self.thread: Optional[threading.Thread] = None


_window = _Window()


def start() -> None:
    """Start a new window: its peak so far is the RSS now."""
    rss, mark = current_kb(), high_water_mark_kb()
    with _window.lock:
        _window.sampled_kb, _window.mark_kb = rss or 0, mark
        if rss is not None and (_window.thread is None or not _window.thread.is_alive()):
            _window.thread = threading.Thread(target=_sample, name="tlbench-rss-peak", daemon=True)
            _window.thread.start()


def peak_mb() -> float:
    """The window's peak RSS in MB (the process's peak when no window was started, or off Linux)."""
    rss, mark = current_kb(), high_water_mark_kb()
    with _window.lock:
        if _window.mark_kb is None or mark is None:
            return (mark if mark is not None else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) / 1024
        if mark > _window.mark_kb:  # the process's peak rose during the window: the window's, exactly
            return mark / 1024
        return max(_window.sampled_kb, rss or 0) / 1024


def _sample() -> None:
    while True:
        rss = current_kb()
        if rss is None:
            return
        with _window.lock:
            _window.sampled_kb = max(_window.sampled_kb, rss)
        time.sleep(INTERVAL_S)


def current_kb() -> Optional[int]:
    """The process's resident memory now (kB), or None off Linux."""
    try:
        with open("/proc/self/statm", "rb") as statm:
            return int(statm.read().split()[1]) * _PAGE_KB
    except (OSError, ValueError, IndexError):
        return None


def high_water_mark_kb() -> Optional[int]:
    """The process's peak resident memory since it started (kB; ``VmHWM``), or None off Linux."""
    try:
        with open("/proc/self/status", "rb") as status:
            for line in status:
                if line.startswith(b"VmHWM:"):
                    return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        return None
    return None


def _forget_thread_in_child() -> None:
    """A forked child has no sampling thread; its first window starts one of its own."""
    _window.lock = threading.Lock()
    _window.thread = None


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_thread_in_child)
