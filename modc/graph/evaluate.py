"""Evaluate spec expressions (ast.Expr) to exact sympy expressions.

Numbers become sympy Integers and Rationals, never floats, so 0.1 is exactly 1/10. Names
are looked up in an environment whose values may be sympy Symbols (free parameters), so
the result may be symbolic. User text is never handed to sympy: the tree is built here.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
from fractions import Fraction

import sympy

from modc.errors import ModcError, did_you_mean
from modc.source import Span
from modc.spec import ast

#: Largest exponent magnitude allowed in a number literal (1e400) or a numeric power.
MAX_EXPONENT = 4096
#: Most bits in the numerator or denominator of an exact value (10^4096 has 13,607).
MAX_BITS = 16_384
#: Most bits of a number under sqrt(): sympy looks for factors of it, slowly when long.
MAX_ROOT_BITS = 2048
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
        value = _FUNCTIONS[e.name](*args)
        return _checked(value, e, f"{e.name}() of these arguments")
    raise TypeError(f"not an expression: {e!r}")


def number(text: str, span: Span) -> sympy.Rational:
    """The exact value of a number literal: an Integer or a Rational."""
    value = _literal(text)
    if value is None:
        raise ModcError(f"invalid number '{text}'", span)
    if isinstance(value, str):
        raise ModcError(f"number {text} is {value}", span)
    return value


@functools.lru_cache(maxsize=4096)
def _literal(text: str) -> sympy.Rational | str | None:
    """The value of a literal; why it is refused (a str); None if it is not a number."""
    _, _, exponent = text.lower().partition("e")
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
    if op == "+":
        value = a + b
    elif op == "-":
        value = a - b
    elif op == "*":
        value = a * b
    elif op == "/":
        value = a / b
    elif op == "//":
        value = sympy.floor(a / b)
    elif op == "%":
        value = sympy.Mod(a, b)
    elif op in ("^", "**"):
        value = _power(e, a, b)
    else:
        raise ModcError(f"unknown operator '{op}'", _operator_span(e))
    return _checked(value, e, f"'{op}' of these operands")


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


def _checked(value: sympy.Expr, e: ast.BinOp | ast.Func, what: str) -> sympy.Expr:
    """`value`, unless it is infinite, undefined, a non-real number or too large.

    An error points at the operator of `e`, or at the call.
    """
    if value.is_Rational:
        if _bits(value) <= MAX_BITS:
            return value
        problem = f"is too large: exact numbers have at most {MAX_BITS:,} bits"
    elif value.has(*_BAD) or (value.is_number and value.is_real is False):
        problem = f"is not a finite real number: {brief(value)}"
    else:
        return value
    span = _operator_span(e) if isinstance(e, ast.BinOp) else e.span
    raise ModcError(f"{what} {problem}", span)


def _bits(value: sympy.Rational) -> int:
    """The size of an exact fraction: bits of its numerator or denominator, the larger."""
    return max(int(value.p).bit_length(), int(value.q).bit_length())


def brief(value: sympy.Expr) -> str:
    """A value for a message: a long number as 1.2e+400, anything else as sympy prints it."""
    text = str(value)
    if len(text) <= 24:
        return text
    if value.is_number and value.is_real:
        try:
            return str(sympy.Float(value, 3))
        except (TypeError, ValueError):
            pass
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
    if not value.is_number or value.is_zero:
        return value
    size = abs(value)
    if size > MAX_MAGNITUDE or size < sympy.Rational(1, MAX_MAGNITUDE):
        raise ModcError(
            f"{what} must be 0 or have a magnitude between 2^-53 and 2^53, got {brief(value)}",
            span,
        )
    return value
