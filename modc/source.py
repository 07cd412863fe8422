"""Source text and positions: every spec node carries a Span back to the text it came from.

Lines are what an editor shows: text between "\\n" characters (a "\\r" before one is
dropped), so U+2028 or a form feed inside a comment does not start a line. A UTF-8
byte-order mark is not part of the text.
"""

from __future__ import annotations

import bisect
import functools
from dataclasses import dataclass
from pathlib import Path

#: Largest spec file modc reads, in bytes; longer files are refused before they are parsed.
MAX_SOURCE_BYTES = 256 * 1024


class TooLarge(OSError):
    """A file is larger than MAX_SOURCE_BYTES (or never ends, like /dev/zero)."""


@dataclass(frozen=True, eq=False)
class Source:
    """A named piece of text: a spec file, an included file, or the command line."""

    name: str
    text: str

    @classmethod
    def read(cls, path: str | Path) -> Source:
        """The text of the file at `path`: UTF-8, at most MAX_SOURCE_BYTES.

        Raises TooLarge for a longer file, UnicodeDecodeError for one that is not UTF-8,
        and OSError when it cannot be read.
        """
        with open(path, "rb") as f:
            data = f.read(MAX_SOURCE_BYTES + 1)
        if len(data) > MAX_SOURCE_BYTES:
            raise TooLarge(f"larger than {MAX_SOURCE_BYTES // 1024} KiB, the limit for a spec")
        return cls(printable(str(path)), data.decode("utf-8-sig"))

    @functools.cached_property
    def _starts(self) -> list[int]:
        """The offset at which each line begins."""
        return [0] + [i + 1 for i, c in enumerate(self.text) if c == "\n"]

    def line(self, lineno: int) -> str:
        """The text of 1-based line `lineno`, without its line break ("" past the end)."""
        starts = self._starts
        if not 1 <= lineno <= len(starts):
            return ""
        end = starts[lineno] - 1 if lineno < len(starts) else len(self.text)
        return self.text[starts[lineno - 1] : end].removesuffix("\r")

    def span_at(self, offset: int, width: int = 1) -> Span:
        """The span of the character at `offset` (0-based) in the text."""
        line = bisect.bisect_right(self._starts, offset)
        return Span(self, line, offset - self._starts[line - 1] + 1, max(width, 1))


def printable(name: str) -> str:
    """A file name as text: bytes that are not UTF-8 (surrogates in a str) become U+FFFD."""
    return name.encode("utf-8", "surrogateescape").decode("utf-8", "replace")


@dataclass(frozen=True)
class Span:
    """A 1-based (line, column) position in a Source, with an optional width for the caret."""

    source: Source
    line: int
    col: int
    width: int = 1

    def shift(self, columns: int, width: int = 1) -> Span:
        """The span `columns` characters to the right on the same line."""
        return Span(self.source, self.line, self.col + columns, max(width, 1))

    def __str__(self) -> str:
        return f"{self.source.name}:{self.line}:{self.col}"

    def __repr__(self) -> str:
        return f"Span({self})"
