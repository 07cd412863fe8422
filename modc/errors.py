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
        """The message as a compiler prints it."""
        if self.span is None:
            out = [f"modc: error: {self.message}"]
        else:
            out = [f"{self.span}: error: {self.message}"]
            text = self.span.source.line(self.span.line)
            if text:
                caret = " " * (self.span.col - 1) + "^" + "~" * (self.span.width - 1)
                out += ["  " + text.expandtabs(1), "  " + caret]
        if self.hint:
            out.append(f"  note: {self.hint}")
        return "\n".join(out)


def did_you_mean(name: str, choices: Iterable[str]) -> str | None:
    """A 'did you mean' note naming the closest of `choices`, or None if none is close."""
    pool = sorted(set(choices))
    close = difflib.get_close_matches(name, pool, n=1, cutoff=0.6)
    if not close:
        lower = {c.lower(): c for c in pool}
        close = [lower[name.lower()]] if name.lower() in lower else []
    return f"did you mean '{close[0]}'?" if close else None
