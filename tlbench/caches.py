"""Where tlbench keeps what it computes once and reuses (public: ``tlbench.cache_dir``): feature
caches, pixel stores, and what plugins choose to keep there."""

from __future__ import annotations

import os
from pathlib import Path

CACHE_DIR_ENV = "TLBENCH_CACHE_DIR"


def cache_dir() -> str:
    """This process's cache folder: ``$TLBENCH_CACHE_DIR``, else ``~/.cache/tlbench``. It may not
    exist yet; whoever writes there makes it."""
    return os.environ.get(CACHE_DIR_ENV) or str(Path.home() / ".cache" / "tlbench")
