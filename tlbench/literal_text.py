"""Text from outside (names, records, file names) shown as text: on the terminal with no control
characters but tlbench's own bold, in a file on one line.

A file name, a record's error or a plugin's name can hold escape sequences (``\\x1b]0;title\\x07``
retitles the window, ``\\x1b[2J`` clears the screen, a carriage return hides the start of a line).
`tlbench` prints through ``PrintableStream`` (stdout and stderr, for every command) and the
progress lines through ``printable``, so they show as ``\\x1b`` instead of acting.
"""

from __future__ import annotations

import re

# C0 but newline and tab, DEL, C1, and the bidirectional overrides that reorder what is shown
_CONTROL = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u200e\u200f\u202a-\u202e\u2066-\u2069]")
_LINE_BREAKS = re.compile(r"\s*[\n\r\v\f\x1c-\x1e\x85\u2028\u2029]+\s*")
# the bold and reset of `tlbench run`'s summary (tlbench.report.markdown.terminal_summary)
_STYLE = re.compile("(\x1b\\[[01]m)")


def _visible(match: re.Match) -> str:
    code = ord(match.group())
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def printable(text: str) -> str:
    """``text`` with each control character but newline and tab as its escape (``\\x1b``)."""
    return _CONTROL.sub(_visible, text)


def one_line(text: str) -> str:
    """``printable`` text on one line: each run of line breaks (and the spaces around it) as a space,
    so that a name cannot start a line of its own in a table, a heading or a LaTeX file."""
    return printable(_LINE_BREAKS.sub(" ", text))


class PrintableStream:
    """A text stream that writes ``printable`` text to ``stream`` (the summary's bold kept); every
    other attribute is the stream's own."""

    def __init__(self, stream):
        self.stream = stream

    def write(self, text: str) -> int:
        self.stream.write("".join(part if i % 2 else printable(part) for i, part in enumerate(_STYLE.split(text))))
        return len(text)

    def writelines(self, lines) -> None:
        for line in lines:
            self.write(line)

    def __getattr__(self, name):
        return getattr(self.stream, name)


def terminal_stream(stream):
    """The stream under a ``PrintableStream`` (for progress bars, which draw with control characters)."""
    return stream.stream if isinstance(stream, PrintableStream) else stream
