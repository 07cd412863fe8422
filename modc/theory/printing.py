"""Expressions as text and as LaTeX, fast: sympy's printers sort the terms of every sum by
an expensive key; these keep sympy's canonical order, with plain numbers last, and print a
sub-expression shared by several quantities once per printer.
"""

from __future__ import annotations

import sympy
from sympy.printing.latex import LatexPrinter
from sympy.printing.str import StrPrinter


def _terms(expr: sympy.Expr, order: str | None = None) -> list[sympy.Expr]:
    """The terms of a sum in sympy's stored order, but those with a minus sign after the
    others and plain numbers last: x - y - 1, not -1 - y + x."""
    return sorted(expr.args, key=lambda t: (t.is_Number, t.as_coeff_Mul()[0].is_negative))


#: Longest exact number printed whole, in bits (about 1,000 digits): a longer one prints as
#: a float of 3 digits (Python prints no integer of over 4,300 digits).
LONG_BITS = 3_322


class _Memo:
    """Remembers what it printed, by object: closed forms share many sub-expressions. The
    object is kept with its text, so that its id cannot be reused while the printer lives.
    A long exact number is printed by its size."""

    def _print(self, expr, **kwargs) -> str:
        if isinstance(expr, sympy.Rational) and max(abs(expr.p), expr.q).bit_length() > LONG_BITS:
            expr = expr.evalf(3)
        if kwargs:
            return super()._print(expr, **kwargs)
        memo = self.__dict__.setdefault("_memo", {})
        hit = memo.get(id(expr))
        if hit is None or hit[0] is not expr:
            hit = memo[id(expr)] = (expr, super()._print(expr))
        return hit[1]


class TextPrinter(_Memo, StrPrinter):
    """sympy's str, up to the order of terms; reuse one for all of a report."""

    _as_ordered_terms = staticmethod(_terms)


class TexPrinter(_Memo, LatexPrinter):
    """sympy's latex with `symbol_names`, up to the order of terms."""

    _as_ordered_terms = staticmethod(_terms)


def text(e: sympy.Expr) -> str:
    """`e` as sympy's str would print it, up to the order of terms."""
    return TextPrinter().doprint(e)


def tex(e: sympy.Expr, names: dict[sympy.Symbol, str]) -> str:
    """`e` in LaTeX, each symbol in `names` printed as given."""
    return TexPrinter({"symbol_names": names}).doprint(e)
