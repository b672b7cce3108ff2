"""Loading files never runs code from them: checkpoints and caches load as tensors only."""

import re
from pathlib import Path

ROOT = Path(__file__).parent.parent
SOURCES = sorted(p for folder in ("tlbench", "plugins") for p in (ROOT / folder).rglob("*.py"))


def calls(pattern: str):
    """(file, call text) for every call matching ``pattern`` in the package sources."""
    for path in SOURCES:
        text = path.read_text(encoding="utf-8")
        for match in re.finditer(pattern + r"\((?:[^()]|\([^()]*\))*\)", text):
            yield path.relative_to(ROOT), match.group(0)


def test_every_torch_load_is_weights_only():
    loads = list(calls(r"torch\.load"))
    assert loads, "expected at least the checkpoint loader"
    for path, call in loads:
        assert "weights_only=True" in call, f"{path}: {call}"


def test_nothing_unpickles_or_evaluates():
    for pattern in (r"pickle\.loads?", r"(?<![.\w])eval", r"(?<![.\w])exec", r"yaml\.load"):
        assert not list(calls(pattern)), pattern
    for path, call in calls(r"(?:np|numpy)\.load"):
        assert "allow_pickle=True" not in call, f"{path}: {call}"
