"""How many bytes of decoded pixels a process may hold in memory (``TLBENCH_MATERIALIZE_MB``),
read and checked in one place: a dataset over it is decoded into a file instead
(tlbench.pixel_store). No torch here: the Runner checks the variable before any cell runs."""

from __future__ import annotations

import os

from tlbench.errors import ConfigError

MATERIALIZE_ENV = "TLBENCH_MATERIALIZE_MB"
DEFAULT_MB = 2048


def materialize_bytes() -> int:
    """``TLBENCH_MATERIALIZE_MB`` in bytes (default 2048 MB); a value that is not a whole number
    of megabytes, 0 or more, is a ConfigError naming the variable and what it takes."""
    text = os.environ.get(MATERIALIZE_ENV)
    if text is None:
        return DEFAULT_MB * 2**20
    value = text.strip()
    if not (value.isascii() and value.isdigit()):
        raise ConfigError(f"{MATERIALIZE_ENV}={text!r} is not a whole number of megabytes. Set it to one, 0 or more "
                          f"(e.g. {MATERIALIZE_ENV}=4096; 0 holds no dataset decoded in memory), or unset it for "
                          f"the default, {DEFAULT_MB}.")
    return int(value) * 2**20
