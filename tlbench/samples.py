"""A lazy sequence of samples for dataset plugins: several parts end to end, read when indexed.

A dataset often comes as several parts (a train and a test split, each a sequence of its own)
whose images must not all be decoded to build ``Images.samples``. Nothing here imports torch.
"""

from __future__ import annotations

import bisect
import itertools
import operator
from collections.abc import Iterable, Sequence
from typing import Any


class ConcatenatedSamples(Sequence):
    """The samples of ``parts`` end to end; each is read from its part only when indexed.

    ``field`` picks the sample out of a part's item (an index or a key: ``0`` for the
    ``(image, label)`` pairs of torchvision datasets, the image column's name for the rows of a
    Hugging Face split); ``None`` takes the item itself. It pickles as its parts do, so
    DataLoader workers receive it as cheaply as the parts.
    """

    #: the index of each part's first sample, and the total last: part ``i`` holds
    #: ``starts[i]`` to ``starts[i + 1] - 1``
    starts: list[int]

    def __init__(self, parts: Iterable[Sequence], field: Any = None):
        self.parts = list(parts)
        self.field = field
        self.starts = list(itertools.accumulate((len(part) for part in self.parts), initial=0))

    def __len__(self) -> int:
        return self.starts[-1]

    def __getitem__(self, index):
        index = operator.index(index)  # numpy integers too; slices are not samples
        if index < 0:
            index += len(self)
        if not 0 <= index < len(self):
            raise IndexError(index)
        part = bisect.bisect_right(self.starts, index) - 1
        row = index - self.starts[part]
        try:
            item = self.parts[part][row]
        except Exception as exc:
            if not _unreadable_image(exc):
                raise
            # a part that decodes as it is read (a Hugging Face split) names no file: say which
            raise OSError(f"cannot read sample {index} (row {row} of part {part}): {exc}") from exc
        return item if self.field is None else item[self.field]


def _unreadable_image(exc: Exception) -> bool:
    """An image that cannot be decoded: a broken file, or one larger than PIL allows (a
    decompression bomb)."""
    return isinstance(exc, OSError) or type(exc).__name__ == "DecompressionBombError"
