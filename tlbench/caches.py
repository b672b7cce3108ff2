"""Where tlbench keeps what it computes once and reuses (public: ``tlbench.cache_dir``): feature
caches, pixel stores, and what plugins choose to keep there; and what keys them to the files
they were computed from (public: ``tlbench.files_digest``)."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

CACHE_DIR_ENV = "TLBENCH_CACHE_DIR"


def cache_dir() -> str:
    """This process's cache folder: ``$TLBENCH_CACHE_DIR``, else ``~/.cache/tlbench``. It may not
    exist yet; whoever writes there makes it."""
    return os.environ.get(CACHE_DIR_ENV) or str(Path.home() / ".cache" / "tlbench")


def files_digest(paths) -> str:
    """Identifies the content of ``paths`` cheaply: each one's name, size and modification time
    (one ``stat`` each, no file read), in their order. A dataset whose images are files gives it as
    ``Images.content``, so that replacing an image (same name, same count) is not served from
    caches of the old one. A path that cannot be stat-ed counts as absent."""
    digest = hashlib.sha256()
    for path in paths:
        name = os.fsencode(path)
        try:
            stat = os.stat(path)
            digest.update(b"%s\0%d\0%d\n" % (name, stat.st_size, stat.st_mtime_ns))
        except OSError:
            digest.update(b"%s\0absent\n" % name)
    return digest.hexdigest()[:16]
