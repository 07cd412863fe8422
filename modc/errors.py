"""User-facing errors: `file:line:col: error: message`, the offending line, and a caret."""

from __future__ import annotations

import difflib
from collections.abc import Iterable

from modc.source import Span


class ModcError(Exception):
    """An error in the user's input. The CLI prints it and exits with status 2."""

    def __init__(self, message: str, span: Span | None = None, hint: str | None = None):
        super().__init__(message)
        self.message = message
        self.span = span
        self.hint = hint

    def render(self) -> str:
        """The message as a compiler prints it. What the terminal would not show as text (a
        newline in a file name, an escape sequence in a spec) is shown escaped."""
        if self.span is None:
            out = [f"modc: error: {shown(self.message)}"]
        else:
            out = [f"{shown(str(self.span))}: error: {shown(self.message)}"]
            text = self.span.source.line(self.span.line)
            if text:
                line = text.expandtabs(1)
                before = len(shown(line[: self.span.col - 1]))
                caret = " " * before + "^" + "~" * (self.span.width - 1)
                out += ["  " + shown(line), "  " + caret]
        if self.hint:
            out.append(f"  note: {shown(self.hint)}")
        return "\n".join(out)


def shown(text: str) -> str:
    """`text` with every character that is not printable written as repr writes it."""
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


def did_you_mean(name: str, choices: Iterable[str]) -> str | None:
    """A 'did you mean' note naming the closest of `choices`, or None if none is close."""
    pool = sorted(set(choices))
    close = difflib.get_close_matches(name, pool, n=1, cutoff=0.6)
    if not close:
        lower = {c.lower(): c for c in pool}
        close = [lower[name.lower()]] if name.lower() in lower else []
    return f"did you mean '{close[0]}'?" if close else None
