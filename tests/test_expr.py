"""Spec expressions: parsing, precedence, printing back, exact evaluation, and errors."""

from __future__ import annotations

import pytest
import sympy
from hypothesis import given
from hypothesis import strategies as st

from modc.errors import ModcError
from modc.graph.evaluate import evaluate, require_size
from modc.source import Source, Span
from modc.spec import ast
from modc.spec.expr import FUNCTIONS, format_expr, parse_arithmetic

SRC = Source("net.yaml", "")
AT = Span(SRC, 1, 1)


def parse(text: str) -> ast.Expr:
    return parse_arithmetic(text, AT)


def num(text: str) -> ast.Num:
    return ast.Num(text, AT)


def name(id: str) -> ast.Name:
    return ast.Name(id, AT)


def binop(op: str, left: ast.Expr, right: ast.Expr) -> ast.BinOp:
    return ast.BinOp(op, left, right, AT)


def neg(operand: ast.Expr) -> ast.Neg:
    return ast.Neg(operand, AT)


def value(text: str, **env: sympy.Expr) -> sympy.Expr:
    return evaluate(parse(text), env)


def error_at(line_text: str, column: int, text: str) -> ModcError:
    """The error from parsing `text` placed at `column` of a one-line source."""
    src = Source("net.yaml", "params:\n" + line_text + "\n")
    with pytest.raises(ModcError) as info:
        parse_arithmetic(text, Span(src, 2, column))
    return info.value


# ---------------------------------------------------------------- precedence


def test_unary_minus_binds_looser_than_power():
    assert parse("-x^2") == neg(binop("^", name("x"), num("2")))


def test_power_takes_a_signed_exponent():
    assert parse("2^-8") == binop("^", num("2"), neg(num("8")))
    assert value("2^-8") == sympy.Rational(1, 256)


def test_minus_is_left_associative():
    assert parse("a-b-c") == binop("-", binop("-", name("a"), name("b")), name("c"))


def test_power_is_right_associative_and_double_star_is_power():
    expected = binop("^", name("a"), binop("^", name("b"), name("c")))
    assert parse("a^b^c") == expected
    assert parse("a ** b ** c") == expected


def test_products_bind_tighter_than_sums():
    assert parse("a + b * c") == binop("+", name("a"), binop("*", name("b"), name("c")))
    assert parse("a * b // c % d") == binop(
        "%", binop("//", binop("*", name("a"), name("b")), name("c")), name("d")
    )
    assert parse("-a * b") == binop("*", neg(name("a")), name("b"))
    assert parse("(a + b) * c") == binop("*", binop("+", name("a"), name("b")), name("c"))


def test_function_calls():
    assert parse("max(1, width, 2)") == ast.Func("max", (num("1"), name("width"), num("2")), AT)
    assert parse("sqrt(x)") == ast.Func("sqrt", (name("x"),), AT)


def test_spans_point_at_each_sub_expression():
    src = Source("net.yaml", "    - repeat: depth - sqrt(width)\n")
    e = parse_arithmetic("depth - sqrt(width)", Span(src, 1, 15))
    assert (e.span.line, e.span.col, e.span.width) == (1, 15, 19)
    assert (e.left.span.col, e.left.span.width) == (15, 5)
    assert (e.right.span.col, e.right.span.width) == (23, 11)
    assert (e.right.args[0].span.col, e.right.args[0].span.width) == (28, 5)


def test_multi_line_text_keeps_the_start_span_unless_verbatim():
    src = Source("net.yaml", "a: depth -\n  width\n")
    start = Span(src, 1, 4)
    assert parse_arithmetic("depth -\n  width", start).right.span == start
    right = parse_arithmetic("depth -\n  width", start, verbatim=True).right
    assert (right.span.line, right.span.col) == (2, 3)


# ---------------------------------------------------------------- exact values


def test_decimals_are_exact_rationals():
    assert value("0.1") == sympy.Rational(1, 10)
    assert value("1e-3") == sympy.Rational(1, 1000)
    assert value("2.5e2") == 250
    assert value(".5") == sympy.Rational(1, 2)
    assert isinstance(value("0.1"), sympy.Rational)
    assert not value("0.1 + 0.2").has(sympy.Float)


def test_operators_and_functions():
    assert value("7 / 2") == sympy.Rational(7, 2)
    assert value("7 // 2") == 3
    assert value("-7 // 2") == -4
    assert value("7 % 3") == 1
    assert value("2^10") == 1024
    assert value("sqrt(16)") == 4
    assert value("sqrt(2)") == sympy.sqrt(2)
    assert value("min(3, 1, 2)") == 1
    assert value("max(3, 1, 2)") == 3
    assert value("floor(7 / 2)") == 3
    assert value("ceil(7 / 2)") == 4


def test_names_and_symbols():
    width = sympy.Symbol("width", positive=True, integer=True)
    assert value("2 * width + 1", width=width) == 2 * width + 1
    assert value("width / 4", width=sympy.Integer(256)) == 64
    assert value("max(width, 1)", width=width) == width
    assert value("depth - 1", depth=sympy.Integer(3)) == 2


def test_require_size():
    span = Span(SRC, 1, 1)
    assert require_size(sympy.Integer(3), span, "a width") == 3
    assert require_size(5, span, "a width") == 5
    width = sympy.Symbol("width", positive=True, integer=True)
    assert require_size(width - 1, span, "a width") == width - 1


# ---------------------------------------------------------------- printing back


@pytest.mark.parametrize(
    "text, printed",
    [
        ("-(x^2)", "-x^2"),
        ("(-x)^2", "(-x)^2"),
        ("(a^b)^c", "(a^b)^c"),
        ("a^(b^c)", "a^b^c"),
        ("a - (b - c)", "a - (b - c)"),
        ("(a - b) - c", "a - b - c"),
        ("2 ** -8", "2^-8"),
        ("-(a*b)", "-(a * b)"),
        ("a * -b", "a * -b"),
        ("min(a,b+1)", "min(a, b + 1)"),
        ("((width))", "width"),
    ],
)
def test_format_expr_uses_minimal_parentheses(text: str, printed: str):
    assert format_expr(parse(text)) == printed


_NUMBERS = st.one_of(
    st.integers(0, 10**6).map(str),
    st.from_regex(r"[0-9]{1,3}\.[0-9]{0,3}", fullmatch=True),
    st.from_regex(r"\.[0-9]{1,3}", fullmatch=True),
    st.from_regex(r"[0-9]{1,2}(\.[0-9]{1,2})?[eE][+-]?[0-9]{1,2}", fullmatch=True),
)
_NAMES = st.from_regex(r"[A-Za-z_][A-Za-z0-9_]{0,6}", fullmatch=True)
_OPS = st.sampled_from(["+", "-", "*", "/", "//", "%", "^"])


def _func(args: st.SearchStrategy[ast.Expr]) -> st.SearchStrategy[ast.Expr]:
    def build(fname: str) -> st.SearchStrategy[ast.Expr]:
        fewest, most = FUNCTIONS[fname]
        return st.lists(args, min_size=fewest, max_size=most or 3).map(
            lambda a: ast.Func(fname, tuple(a), AT)
        )

    return st.sampled_from(sorted(FUNCTIONS)).flatmap(build)


EXPRS = st.recursive(
    st.one_of(_NUMBERS.map(num), _NAMES.map(name)),
    lambda inner: st.one_of(
        st.builds(binop, _OPS, inner, inner),
        inner.map(neg),
        _func(inner),
    ),
    max_leaves=12,
)


@given(EXPRS)
def test_format_expr_round_trips(e: ast.Expr):
    assert parse(format_expr(e)) == e


# ---------------------------------------------------------------- errors


def test_syntax_error_names_what_was_expected():
    err = error_at("  width: 2 * (a + )", 10, "2 * (a + )")
    assert err.message == "unexpected ')'; expected a number, a name or '('"
    assert (err.span.line, err.span.col) == (2, 19)


def test_end_of_expression():
    err = error_at("  width: depth -", 10, "depth -")
    assert err.message == "unexpected end of expression; expected a number, a name or '('"
    assert (err.span.line, err.span.col) == (2, 17)
    err = error_at("  width: (depth", 10, "(depth")
    assert err.message == "unexpected end of expression; expected an operator or ')'"


def test_missing_operator_and_stray_characters():
    err = error_at("  width: 2 depth", 10, "2 depth")
    assert err.message == "unexpected name 'depth'; expected an operator"
    assert (err.span.col, err.hint) == (12, "use '*' to multiply")
    err = error_at("  width: 2 $ 3", 10, "2 $ 3")
    assert (err.message, err.span.col) == ("unexpected character '$'", 12)
    err = error_at("  width: 2)", 10, "2)")
    assert (err.message, err.span.col) == ("unexpected ')' without a matching '('", 11)


def test_unknown_function_suggests_a_known_one():
    err = error_at("  width: 2 * sqr(x)", 10, "2 * sqr(x)")
    assert err.message == "unknown function 'sqr'"
    assert err.hint == "did you mean 'sqrt'?"
    assert (err.span.line, err.span.col, err.span.width) == (2, 14, 3)


def test_wrong_number_of_arguments():
    assert error_at("  w: sqrt(1, 2)", 6, "sqrt(1, 2)").message == (
        "sqrt() takes 1 argument, got 2"
    )
    assert error_at("  w: min()", 6, "min()").message == "min() takes at least 1 argument, got 0"


def test_unknown_name_suggests_a_parameter():
    src = Source("net.yaml", "  - Linear: 2 * widht\n")
    e = parse_arithmetic("2 * widht", Span(src, 1, 13))
    with pytest.raises(ModcError) as info:
        evaluate(e, {"width": sympy.Integer(8), "depth": sympy.Integer(2)})
    err = info.value
    assert err.message == "unknown name 'widht'"
    assert err.hint == "did you mean 'width'?"
    assert (err.span.line, err.span.col, err.span.width) == (1, 17, 5)
    assert err.render() == (
        "net.yaml:1:17: error: unknown name 'widht'\n"
        "    - Linear: 2 * widht\n"
        "                  ^~~~~\n"
        "  note: did you mean 'width'?"
    )


def test_division_by_zero_points_at_the_operator():
    src = Source("net.yaml", "  - Linear: (width) // (depth - 2)\n")
    e = parse_arithmetic("(width) // (depth - 2)", Span(src, 1, 13))
    with pytest.raises(ModcError) as info:
        evaluate(e, {"width": sympy.Integer(8), "depth": sympy.Integer(2)})
    assert info.value.message == "division by zero"
    assert (info.value.span.col, info.value.span.width) == (21, 2)


def test_huge_numbers_are_refused():
    with pytest.raises(ModcError, match="too large"):
        value("10^10^10")
    with pytest.raises(ModcError, match="out of range"):
        value("1e999999999")


def test_degree_in_free_parameters_is_capped():
    w, d = sympy.Symbol("w", positive=True), sympy.Symbol("d", positive=True)
    with pytest.raises(ModcError, match="has degree 4096 in the parameters, more than 64"):
        value("(w^4096 + 1)^4096", w=w)
    with pytest.raises(ModcError, match="has degree 80"):
        value("(w + d)^40 * (w - d)^40", w=w, d=d)
    with pytest.raises(ModcError, match="has degree 65"):
        value("floor(w^64 / 3) * max(w, d)", w=w, d=d)
    # a fraction counts its numerator's and denominator's degrees apart
    assert value("((w + 1)^64 - (w - 1)^64) / w^64", w=w).free_symbols == {w}
    assert value("2^(2^(2^(2^w)))", w=w).free_symbols == {w}


def test_numbers_that_are_not_exact_are_bounded():
    with pytest.raises(ModcError, match="is too large: about 2\\^21,333,125"):
        value("((1 + sqrt(2))^4096)^4096")
    with pytest.raises(ModcError, match="is too small: about 2\\^-21,333,1"):
        value("((sqrt(2) - 1)^4096)^4096")
    with pytest.raises(ModcError, match="rounded only up to 2\\^1,024"):
        value("(1 + sqrt(3))^2000 % 7")
    with pytest.raises(ModcError, match="too close to tell apart"):
        value("ceil((1 + sqrt(2))^200)")
    assert value("floor((1 + sqrt(2))^20)") == 45239073


def test_require_size_prints_a_huge_number_briefly():
    with pytest.raises(ModcError, match="must be at most 2\\^62, got 1.00e\\+4396$"):
        require_size(sympy.Integer(10) ** 4396, AT, "a size")


@pytest.mark.parametrize(
    "given, shown", [(sympy.Integer(0), "0"), (sympy.Rational(5, 2), "5/2"), (-3, "-3")]
)
def test_require_size_rejects_non_positive_integers(given: sympy.Expr, shown: str):
    span = Span(Source("net.yaml", "input: [0]\n"), 1, 9)
    with pytest.raises(ModcError) as info:
        require_size(given, span, "an input size")
    assert info.value.message == f"an input size must be a positive integer, got {shown}"
    assert (info.value.span.line, info.value.span.col) == (1, 9)
