"""Source text and positions: every spec node carries a Span back to the text it came from."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from modc.fileio import read_limited


@dataclass(frozen=True, eq=False)
class Source:
    """A named piece of text: a spec file, an included file, or the command line."""

    name: str
    text: str

    @classmethod
    def read(cls, path: str | Path) -> Source:
        """A spec file's UTF-8 text, newlines made \\n; bounded (see fileio.read_limited)."""
        text = read_limited(path).decode("utf-8")
        return cls(str(path), text.replace("\r\n", "\n").replace("\r", "\n"))

    def line(self, lineno: int) -> str:
        """The text of 1-based line `lineno`, without its newline ("" past the end)."""
        lines = self.text.splitlines()
        return lines[lineno - 1] if 1 <= lineno <= len(lines) else ""


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
