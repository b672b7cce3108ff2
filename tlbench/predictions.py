"""Per-image test predictions in a record: compact, and enough for paired tests over images.

A record's ``predictions`` holds, in the order the core scores the test split (its indices
sorted, the same for every cell of a grid that shares the split: see ``split_digest``):

- ``count``: the number of test images;
- ``predicted``: each image's predicted class, base64 of little-endian uint16;
- ``correct``: whether each prediction was right, base64 of the bits (``numpy.packbits``, little
  bit order), so that McNemar's test or a bootstrap over images needs no labels.

No torch here, and numpy only when a record's predictions are used: reading records is on the
path of commands that must start fast.
"""

from __future__ import annotations

import base64
import binascii
from typing import Optional

MAX_CLASSES = 2**16


def encode(predicted, correct) -> dict:
    import numpy as np

    predicted = np.asarray(predicted)
    correct = np.asarray(correct, dtype=bool)
    if predicted.shape != correct.shape or predicted.ndim != 1:
        raise ValueError("predicted and correct must be 1-D arrays of one length")
    if predicted.size and (predicted.min() < 0 or predicted.max() >= MAX_CLASSES):
        raise ValueError(f"predicted classes must lie in [0, {MAX_CLASSES})")
    return {
        "count": int(predicted.size),
        "predicted": base64.b64encode(predicted.astype("<u2").tobytes()).decode("ascii"),
        "correct": base64.b64encode(np.packbits(correct, bitorder="little").tobytes()).decode("ascii"),
    }


def decode(value: dict) -> tuple:
    """(predicted classes, correct flags) as numpy arrays of a record's ``predictions``;
    ValueError if malformed."""
    import numpy as np

    if not isinstance(value, dict) or set(value) != {"count", "predicted", "correct"}:
        raise ValueError("predictions must be an object with count, predicted and correct")
    count = value["count"]
    if not isinstance(count, int) or isinstance(count, bool) or count < 0:
        raise ValueError("predictions.count must be a non-negative integer")
    try:
        predicted = np.frombuffer(base64.b64decode(value["predicted"], validate=True), dtype="<u2")
        bits = np.frombuffer(base64.b64decode(value["correct"], validate=True), dtype=np.uint8)
    except (TypeError, binascii.Error) as exc:
        raise ValueError(f"predictions are not valid base64 ({exc})") from None
    if predicted.size != count or bits.size != (count + 7) // 8:
        raise ValueError(f"predictions hold another number of images than their count ({count})")
    correct = np.unpackbits(bits, count=count, bitorder="little").astype(bool)
    return predicted.astype(np.int64), correct


def is_valid(value) -> bool:
    try:
        decode(value)
    except ValueError:
        return False
    return True


def of_record(record: dict) -> Optional[tuple]:
    """A record's (predicted, correct), or None when it has none (records before the field,
    failed cells)."""
    value = record.get("predictions")
    return None if value is None else decode(value)
