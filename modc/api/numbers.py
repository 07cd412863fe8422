"""Numbers of the Python API: modc's arithmetic as `ast.Expr`s, and spans at the call site."""

from __future__ import annotations

import functools
import linecache
import math
import os
import sys
from collections.abc import Callable, Iterable
from fractions import Fraction
from types import FrameType

from modc.source import Source, Span
from modc.spec import ast

Number = int | float | Fraction
PACKAGE = os.path.dirname(os.path.abspath(__file__))


@functools.cache
def source_of(filename: str) -> Source:
    """A Python file as a Source, read once, for error messages that show its lines."""
    return Source(filename, "".join(linecache.getlines(filename)))


def here() -> Span:
    """The span of the innermost call outside this package: where the user wrote it."""
    frame: FrameType | None = sys._getframe(1)
    while frame is not None and _inside(frame.f_code.co_filename):
        frame = frame.f_back
    if frame is None:
        return Span(Source("<python>", ""), 1, 1)
    line, col, width = frame.f_lineno, 1, 1
    positions = getattr(frame.f_code, "co_positions", None)  # Python 3.11+
    if positions is not None:
        for i, (start, end, c0, c1) in enumerate(positions()):
            if i == frame.f_lasti // 2:
                if start is not None and c0 is not None:
                    line, col = start, c0 + 1
                    width = c1 - c0 if end == start and c1 is not None else 1
                break
    return Span(source_of(frame.f_code.co_filename), line, col, max(width, 1))


def merged(tables: Iterable[dict]) -> dict:
    """Definitions (or parameters) by name, from several parts; one name, one meaning."""
    out: dict = {}
    for table in tables:
        for key, value in table.items():
            if key in out and out[key] != value:
                raise ValueError(
                    f"two different definitions of '{key}', at {out[key].span} and {value.span}"
                )
            out[key] = value
    return out


def _inside(filename: str) -> bool:
    return os.path.dirname(os.path.abspath(filename)) == PACKAGE


class Expr:
    """A number as modc's arithmetic writes it: an `ast.Expr`, combined with + - * / // % **.

    `params` holds the spec parameters it uses, so a spec finds them without being told.
    """

    def __init__(self, node: ast.Expr, params: dict[str, ast.Param] | None = None):
        self.node = node
        self.params = dict(params or {})

    def __neg__(self) -> Expr:
        return Expr(ast.Neg(self.node, here()), self.params)

    def __bool__(self) -> bool:
        raise TypeError("a modc number is symbolic: it has no truth value in Python")

    def __repr__(self) -> str:
        from modc.spec.expr import format_expr

        return f"Expr({format_expr(self.node)})"


def _arithmetic(op: str, reflected: bool) -> Callable[[Expr, object], Expr]:
    """An operator method of Expr: `self op other`, or `other op self` when reflected;
    anything but a number is left to the other side (Net makes `0.5 * net` a multiple)."""

    def method(self: Expr, other: object) -> Expr:
        if not isinstance(other, Number | Expr):  # a network: a scalar multiple, say
            return NotImplemented
        a, b = (as_expr(other), self) if reflected else (self, as_expr(other))
        return Expr(ast.BinOp(op, a.node, b.node, here()), merged([a.params, b.params]))

    return method


for _name, _op in [("add", "+"), ("sub", "-"), ("mul", "*"), ("truediv", "/"),
                   ("floordiv", "//"), ("mod", "%"), ("pow", "^")]:  # fmt: skip
    setattr(Expr, f"__{_name}__", _arithmetic(_op, reflected=False))
    setattr(Expr, f"__r{_name}__", _arithmetic(_op, reflected=True))


def num(value: Number | Expr) -> Expr:
    """A number as an Expr: `num(1) / 3` is the exact third, as `1/3` in a spec."""
    return as_expr(value)


def param(name: str, default: Number | Expr) -> Expr:
    """A spec parameter with its default (overridable with `params=` or `-p name=value`)."""
    if not name.isidentifier():
        raise ValueError(f"a parameter name must be an identifier, got {name!r}")
    value = as_expr(default)
    declared = ast.Param(name, value.node, here())
    return Expr(ast.Name(name, declared.span), merged([value.params, {name: declared}]))


def as_expr(value: object) -> Expr:
    """A Python number (int, float, Fraction) or an Expr, as an Expr; a network is refused."""
    if isinstance(value, Expr):
        return value
    span = here()
    if isinstance(value, bool) or not isinstance(value, Number):
        raise TypeError(f"expected a number, got {type(value).__name__}: {value!r}")
    if isinstance(value, Fraction) and value.denominator != 1:
        top, bottom = as_expr(value.numerator), as_expr(value.denominator)
        return Expr(ast.BinOp("/", top.node, bottom.node, span))
    if isinstance(value, float) and not math.isfinite(value):
        raise ValueError(f"a spec number must be finite, got {value}")
    if value < 0:
        return Expr(ast.Neg(as_expr(-value).node, span))
    text = repr(value) if isinstance(value, float) else str(int(value))
    return Expr(ast.Num(text, span))


def function(name: str) -> Callable[..., Expr]:
    def call(*args: Number | Expr) -> Expr:
        values = [as_expr(a) for a in args]
        params = merged(e.params for e in values)
        return Expr(ast.Func(name, tuple(e.node for e in values), here()), params)

    call.__name__ = call.__qualname__ = name
    call.__doc__ = f"{name}(...) in a spec number (modc's arithmetic, never evaluated here)."
    return call
