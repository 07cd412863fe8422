"""User-facing errors: `file:line:col: error: message`, the offending line, and a caret."""

from __future__ import annotations

import difflib
from collections.abc import Iterable

from modc.source import Span

#: Longest source line an error quotes whole.
MAX_QUOTE = 160
#: Most call sites an error lists (the innermost and the outermost are kept).
MAX_TRACE = 12


class ModcError(Exception):
    """An error in the user's input. The CLI prints it and exits with status 2.

    `trace` lists where the text around the error was used, innermost first: each
    definition whose expansion the error happened in, with the span of its call.
    """

    def __init__(self, message: str, span: Span | None = None, hint: str | None = None):
        super().__init__(message)
        self.message = message
        self.span = span
        self.hint = hint
        self.trace: list[tuple[str, Span]] = []

    def render(self) -> str:
        """The message as a compiler prints it."""
        out = [f"{self.span or 'modc'}: error: {self.message}", *_quote(self.span, "  ")]
        if self.hint:
            out.append(f"  note: {self.hint}")
        trace = self.trace
        if len(trace) > MAX_TRACE:
            half = MAX_TRACE // 2
            skipped = ("", None)
            trace = [*trace[:half], skipped, *trace[-half:]]
        for what, span in trace:
            if span is None:
                out.append(f"  ... {len(self.trace) - MAX_TRACE} more calls")
                continue
            out.append(f"  in {what} called at {span}")
            out += _quote(span, "    ")
        return "\n".join(out)


def _quote(span: Span | None, indent: str) -> list[str]:
    """The line of `span` and a caret under it, or nothing when the text is unknown.

    A line longer than MAX_QUOTE is cut to the part around the caret, marked with '…'.
    """
    text = span.source.line(span.line).expandtabs(1) if span is not None else ""
    if not text:
        return []
    col, width = span.col, min(span.width, MAX_QUOTE // 2)
    if len(text) > MAX_QUOTE:
        start = max(0, min(col - 1 - MAX_QUOTE // 4, len(text) - MAX_QUOTE))
        head, tail = ("…" if start else ""), ("…" if start + MAX_QUOTE < len(text) else "")
        text = head + text[start : start + MAX_QUOTE] + tail
        col += len(head) - start
    return [indent + text, indent + " " * (col - 1) + "^" + "~" * (width - 1)]


def did_you_mean(name: str, choices: Iterable[str]) -> str | None:
    """A 'did you mean' note naming the closest of `choices`, or None if none is close."""
    pool = sorted(set(choices))
    close = difflib.get_close_matches(name, pool, n=1, cutoff=0.6)
    if not close:
        lower = {c.lower(): c for c in pool}
        close = [lower[name.lower()]] if name.lower() in lower else []
    return f"did you mean '{close[0]}'?" if close else None


def unknown_argument(owner: str, key: str, allowed: Iterable[str], span: Span | None) -> ModcError:
    """The error for an argument name that `owner` (an operation or definition) lacks."""
    allowed = list(allowed)
    hint = did_you_mean(key, allowed)
    if hint is None:
        hint = f"{owner} takes " + (", ".join(allowed) if allowed else "no arguments")
    return ModcError(f"{owner} has no argument '{key}'", span, hint)
