"""Errors a user can cause and fix: the CLI prints them as one line and exits 2."""

from __future__ import annotations

import difflib
from typing import Iterable


class ConfigError(Exception):
    """A mistake in a grid file, an option or a command line.

    Plugins raise it from option validation; the CLI prints the message alone (no traceback)
    and exits with status 2.
    """


class RunStopped(Exception):
    """The results folder stopped taking records mid-run (a full disk, say): the CLI prints the
    message alone and exits 1; every record stored before is intact."""


def closest(name: str, choices: Iterable[str], n: int = 3) -> list[str]:
    return difflib.get_close_matches(name, list(choices), n=n, cutoff=0.5)


def plugin_hint(skipped: Iterable[str] = ()) -> str:
    """How to get a component no loaded plugin registers: the plugins skipped at loading first
    (their warning says why), else how to load one."""
    load = ("install its package or load its file with --plugins-dir DIR (or TLBENCH_PLUGINS_DIR), "
            "for every command that reads this grid.")
    skipped = list(skipped)
    if skipped:
        return (f"Skipped at loading (the warning above says why): {', '.join(repr(p) for p in skipped)}; "
                f"if one of them registers it, fix that plugin, else {load}")
    return f"If a plugin provides it, {load}"


def unknown_name_error(kind: str, name: str, available: Iterable[str], where: str = "",
                       hint: str = "") -> ConfigError:
    """`Unknown strategy 'linar_probe'. Did you mean: linear_probe? Available: ...`; with no
    close name, ``hint`` (``plugin_hint``: how to load the plugin that registers it, a loose
    file named to `rank` but not to `run`, say)."""
    available = sorted(available)
    message = f"Unknown {kind} {name!r}{where}."
    suggestions = closest(name, available)
    if suggestions:
        message += " Did you mean: " + ", ".join(suggestions) + "?"
    if available:
        shown = ", ".join(available[:20]) + (", ..." if len(available) > 20 else "")
        message += f" Available: {shown}."
    if hint and not suggestions:
        message += " " + hint
    return ConfigError(message)
