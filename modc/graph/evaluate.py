"""Evaluate spec expressions (ast.Expr) to exact sympy expressions.

Numbers become sympy Integers and Rationals, never floats, so 0.1 is exactly 1/10. Names
are looked up in an environment whose values may be sympy Symbols (free parameters), so
the result may be symbolic. User text is never handed to sympy: the tree is built here.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Callable, Iterator, Mapping
from fractions import Fraction

import mpmath
import sympy
from sympy.core.evalf import PrecisionExhausted

from modc.errors import ModcError, did_you_mean
from modc.source import Span
from modc.spec import ast

#: Largest exponent magnitude allowed in a number literal (1e400) or a numeric power.
MAX_EXPONENT = 4096
#: Longest number literal: Python reads no integer of more digits.
MAX_LITERAL = 4300
#: Most bits in the numerator or denominator of an exact value (10^4096 has 13,607).
MAX_BITS = 16_384
#: Most bits of a number under sqrt(): sympy looks for factors of it, slowly when long.
MAX_ROOT_BITS = 2048
#: Most bits in the magnitude of a number that is not exact, like (1 + sqrt(2))^200, under
#: floor, ceil, // or %: sympy finds its integer part digit by digit.
MAX_INEXACT_BITS = 1024
#: Highest degree of an expression in the free parameters: sympy expands products and
#: powers of sums term by term. Real networks stay below 10.
MAX_DEGREE = 64
#: Largest size or count: shapes are int64 in torch.
MAX_SIZE = 2**62
#: Largest magnitude of a number that reaches generated code (a factor, a scale, a mass).
MAX_MAGNITUDE = 2**53

_FUNCTIONS: dict[str, Callable[..., sympy.Expr]] = {
    "sqrt": sympy.sqrt,
    "min": sympy.Min,
    "max": sympy.Max,
    "floor": sympy.floor,
    "ceil": sympy.ceiling,
}
_BAD = (sympy.zoo, sympy.nan, sympy.oo, -sympy.oo)
#: What sympy leaves unevaluated when it cannot decide a number: it then fails on every use.
_UNDECIDED = (sympy.floor, sympy.ceiling, sympy.Mod, sympy.Min, sympy.Max)
_TOO_CLOSE = "cannot be computed exactly: its numbers are too close to tell apart"


def evaluate(e: ast.Expr, env: Mapping[str, sympy.Expr]) -> sympy.Expr:
    """The exact value of `e` with names taken from `env`."""
    if isinstance(e, ast.Num):
        return number(e.text, e.span)
    if isinstance(e, ast.Name):
        if e.id not in env:
            raise ModcError(f"unknown name '{e.id}'", e.span, did_you_mean(e.id, env))
        return env[e.id]
    if isinstance(e, ast.Neg):
        return -evaluate(e.operand, env)
    if isinstance(e, ast.BinOp):
        return _binop(e, evaluate(e.left, env), evaluate(e.right, env))
    if isinstance(e, ast.Func):
        if e.name not in _FUNCTIONS:
            raise ModcError(
                f"unknown function '{e.name}'", e.span, did_you_mean(e.name, _FUNCTIONS)
            )
        args = [evaluate(a, env) for a in e.args]
        if e.name == "sqrt" and args[0].is_Rational and _bits(args[0]) > MAX_ROOT_BITS:
            raise ModcError(
                f"sqrt() takes numbers of at most {MAX_ROOT_BITS:,} bits, got {brief(args[0])}",
                e.span,
            )
        what = f"{e.name}() of these arguments"
        if e.name in ("floor", "ceil"):
            _require_roundable(args[0], e, what)
        return _checked(lambda: _FUNCTIONS[e.name](*args), e, what)
    raise TypeError(f"not an expression: {e!r}")


def number(text: str, span: Span) -> sympy.Rational:
    """The exact value of a number literal: an Integer or a Rational."""
    value = _literal(text)
    shown = text if len(text) <= 24 else text[:20] + "…"
    if value is None:
        raise ModcError(f"invalid number '{shown}'", span)
    if isinstance(value, str):
        raise ModcError(f"number {shown} is {value}", span)
    return value


@functools.lru_cache(maxsize=4096)
def _literal(text: str) -> sympy.Rational | str | None:
    """The value of a literal; why it is refused (a str); None if it is not a number."""
    _, _, exponent = text.lower().partition("e")
    if len(text) > MAX_LITERAL:
        return f"too large: a number is written in at most {MAX_LITERAL:,} characters"
    try:
        if exponent and abs(int(exponent)) > MAX_EXPONENT:
            return "out of range"
        value = Fraction(text)
    except ValueError:
        return None
    if max(value.numerator.bit_length(), value.denominator.bit_length()) > MAX_BITS:
        return f"too large: exact numbers have at most {MAX_BITS:,} bits"
    return sympy.Rational(value.numerator, value.denominator)


def _binop(e: ast.BinOp, a: sympy.Expr, b: sympy.Expr) -> sympy.Expr:
    """`a op b` exactly; errors point at the operator."""
    op = e.op
    if op in ("/", "//", "%") and b.is_zero:
        raise ModcError("division by zero", _operator_span(e))
    what = f"'{op}' of these operands"
    if op in ("//", "%"):
        _require_roundable(a / b, e, what)
    if op == "+":
        return _checked(lambda: a + b, e, what)
    if op == "-":
        return _checked(lambda: a - b, e, what)
    if op == "*":
        return _checked(lambda: a * b, e, what)
    if op == "/":
        return _checked(lambda: a / b, e, what)
    if op == "//":
        return _checked(lambda: sympy.floor(a / b), e, what)
    if op == "%":
        return _checked(lambda: sympy.Mod(a, b), e, what)
    if op in ("^", "**"):
        return _checked(lambda: _power(e, a, b), e, what)
    raise ModcError(f"unknown operator '{op}'", _operator_span(e))


def _power(e: ast.BinOp, a: sympy.Expr, b: sympy.Expr) -> sympy.Expr:
    """`a ^ b`, refusing numeric powers too large to compute."""
    if a.is_zero and b.is_negative:
        raise ModcError("division by zero (zero to a negative power)", _operator_span(e))
    if a.is_number and b.is_number and abs(a) not in (0, 1):
        if abs(b) > MAX_EXPONENT:
            raise ModcError(f"exponent {brief(b)} is too large", _operator_span(e))
        if a.is_Rational and b.is_Rational and _bits(a) * abs(b) > MAX_BITS:
            raise ModcError(
                f"{brief(a)} ^ {brief(b)} is too large: exact numbers have at most "
                f"{MAX_BITS:,} bits",
                _operator_span(e),
            )
    return a**b


def _require_roundable(x: sympy.Expr, e: ast.BinOp | ast.Func, what: str) -> None:
    """Refuses to round `x` if it is a long number that is not exact: sympy would find its
    integer part digit by digit (and give up on one as close to an integer as (1 + √2)^200)."""
    if x.is_number and not x.is_Rational:
        size = _log2(x)
        if size > MAX_INEXACT_BITS:
            raise ModcError(
                f"{what} cannot be computed: the number to round is about 2^{size:,}, and "
                f"numbers that are not exact are rounded only up to 2^{MAX_INEXACT_BITS:,}",
                _span(e),
            )


def _checked(make: Callable[[], sympy.Expr], e: ast.BinOp | ast.Func, what: str) -> sympy.Expr:
    """`make()`, unless it is infinite, undefined, a non-real number, too large, of too high
    a degree in the parameters, or a number sympy cannot settle.

    An error points at the operator of `e`, or at the call.
    """
    with decided(_span(e), what):
        value = make()
        problem = _problem(value)
    if problem is None:
        return value
    raise ModcError(f"{what} {problem}", _span(e))


def _problem(value: sympy.Expr) -> str | None:
    """What is wrong with `value` as the result of an operation, or None."""
    if value.is_Rational:
        if _bits(value) <= MAX_BITS:
            return None
        return f"is too large: exact numbers have at most {MAX_BITS:,} bits"
    if value.has(*_BAD):
        return f"is not a finite real number: {brief(value)}"
    if not value.is_number:
        degree = _degree(value)
        if degree <= MAX_DEGREE:
            return None
        return f"has degree {brief(degree)} in the parameters, more than {MAX_DEGREE}"
    if value.has(*_UNDECIDED):
        return _TOO_CLOSE
    if value.is_real is False:
        return f"is not a finite real number: {brief(value)}"
    size = _log2(value)
    if size > MAX_BITS:
        return f"is too large: about 2^{size:,}, and numbers are at most 2^{MAX_BITS:,}"
    if -MAX_BITS > size > -mpmath.inf:
        return f"is too small: about 2^{size:,}, and numbers are 0 or at least 2^-{MAX_BITS:,}"
    return None


@contextlib.contextmanager
def decided(span: Span, what: str) -> Iterator[None]:
    """Turns sympy failing to tell two numbers apart (PrecisionExhausted) into an error."""
    try:
        yield
    except PrecisionExhausted:
        raise ModcError(f"{what} {_TOO_CLOSE}", span) from None


def _log2(value: sympy.Expr) -> int:
    """About log2 |value| of a number (-inf for 0), from a 15-digit estimate: cheap at any
    size, since sympy's floats have unbounded exponents."""
    return mpmath.mag(abs(value.evalf(15)))


@functools.lru_cache(maxsize=4096)
def _degree(value: sympy.Expr) -> sympy.Expr:
    """The degree of `value` in the free parameters: how far expansions grow. A fraction
    counts as the higher of its numerator's and denominator's; a function or a power with a
    symbolic exponent as the highest among its arguments."""
    if value.is_number:
        return sympy.Integer(0)
    if value.is_Symbol:
        return sympy.Integer(1)
    if value.is_Pow and value.exp.is_number:
        return _degree(value.base) * abs(value.exp)
    if value.is_Mul:
        over = [f for f in value.args if not (f.is_Pow and f.exp.is_negative)]
        under = [f for f in value.args if f.is_Pow and f.exp.is_negative]
        return sympy.Max(*(sympy.Add(*map(_degree, part)) for part in (over, under)))
    return sympy.Max(*map(_degree, value.args))


def _span(e: ast.BinOp | ast.Func) -> Span:
    """Where an error in `e` points: at its operator, or at the call."""
    return _operator_span(e) if isinstance(e, ast.BinOp) else e.span


def _bits(value: sympy.Rational) -> int:
    """The size of an exact fraction: bits of its numerator or denominator, the larger."""
    return max(int(value.p).bit_length(), int(value.q).bit_length())


def brief(value: sympy.Expr) -> str:
    """A value for a message: a long number as 1.2e+400, anything else as sympy prints it.

    A long exact number is never printed whole: Python refuses to print an integer of over
    4,300 digits, and exact numbers here have up to 4,933.
    """
    if value.is_Rational and _bits(value) > 128:
        return str(value.evalf(3))
    try:
        text = str(value)
    except ValueError:  # an integer of over 4,300 digits inside an expression
        return "an expression with a number of over 4,300 digits"
    if len(text) <= 24:
        return text
    if value.is_number and value.is_real:
        return str(value.evalf(3))
    return text[:20] + "…"


def _operator_span(e: ast.BinOp) -> Span:
    """The span of the operator of `e`, found in the source text after its left operand.

    Falls back to the span of the whole expression when the text there is not the
    operator (an expression that did not come verbatim from the source).
    """
    left, whole = e.left.span, e.span
    if left is None or whole is None or left.line != whole.line:
        return whole
    text = whole.source.line(whole.line)
    i = left.col - 1 + left.width
    while i < len(text) and text[i] in " \t)":
        i += 1
    spelled = ("**", "^") if e.op in ("^", "**") else (e.op,)
    for op in spelled:
        if text.startswith(op, i) and not (op == "/" and text.startswith("//", i)):
            return Span(whole.source, whole.line, i + 1, len(op))
    return whole


def require_size(value: sympy.Expr | int, span: Span, what: str) -> sympy.Expr:
    """`value` if it can be a size or count: a positive integer up to MAX_SIZE, or symbolic."""
    if isinstance(value, int):
        value = sympy.Integer(value)
    if value.is_Integer and 0 < int(value) <= MAX_SIZE:
        return value
    with decided(span, what):
        if value.is_number and value.is_integer is None:
            value = sympy.simplify(value)
        if value.is_number and not (value.is_integer and value > 0):
            raise ModcError(f"{what} must be a positive integer, got {brief(value)}", span)
        if value.is_number and value > MAX_SIZE:
            raise ModcError(f"{what} must be at most 2^62, got {brief(value)}", span)
    return value


def require_finite(value: sympy.Expr, span: Span, what: str) -> sympy.Expr:
    """`value` if generated code can hold it as a float: 0, or a magnitude within
    [1/MAX_MAGNITUDE, MAX_MAGNITUDE]; symbolic values pass."""
    with decided(span, what):
        if not value.is_number or value.is_zero:
            return value
        size = abs(value)
        too_far = size > MAX_MAGNITUDE or size < sympy.Rational(1, MAX_MAGNITUDE)
    if too_far:
        raise ModcError(
            f"{what} must be 0 or have a magnitude between 2^-53 and 2^53, got {brief(value)}",
            span,
        )
    return value
