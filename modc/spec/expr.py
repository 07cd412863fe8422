"""Arithmetic expressions over spec parameters: parse text into ast.Expr and print it back.

The grammar lives in grammars/expr.lark. Parsing never evaluates anything; the result is
a tree of ast nodes, each with the Span of its text, for the graph stage to evaluate.
"""

from __future__ import annotations

import functools
import importlib.resources
from dataclasses import dataclass
from pathlib import Path

from lark import (
    Lark,
    Token,
    Tree,
    UnexpectedCharacters,
    UnexpectedInput,
    UnexpectedToken,
)

from modc.errors import ModcError, did_you_mean
from modc.source import Span
from modc.spec import ast

#: The built-in functions: name -> (fewest, most) arguments; None means no upper limit.
FUNCTIONS: dict[str, tuple[int, int | None]] = {
    "sqrt": (1, 1),
    "min": (1, None),
    "max": (1, None),
    "floor": (1, 1),
    "ceil": (1, 1),
}

#: Most arguments of one call of a built-in function (min, max).
MAX_ARGS = 64

_OPERATORS = {"PLUS", "MINUS", "STAR", "DSTAR", "SLASH", "DSLASH", "PERCENT", "CARET"}
_PUNCT_WORDS = {"LPAR": "'('", "RPAR": "')'", "COMMA": "','"}


def grammar_text(filename: str) -> str:
    """The text of a grammar shipped in package `modc.grammars` (the repo's grammars/).

    Falls back to the grammars/ folder next to the modc package in a checkout that is
    not pip-installed, where `modc.grammars` is not importable.
    """
    try:
        return importlib.resources.files("modc.grammars").joinpath(filename).read_text("utf-8")
    except (ModuleNotFoundError, FileNotFoundError):
        path = Path(__file__).resolve().parents[2] / "grammars" / filename
        return path.read_text(encoding="utf-8")


@functools.cache
def _parser() -> Lark:
    """The expression parser, built once."""
    return Lark(
        grammar_text("expr.lark"),
        parser="lalr",
        propagate_positions=True,
        maybe_placeholders=True,
    )


def parse_arithmetic(text: str, span: Span, *, verbatim: bool = False) -> ast.Expr:
    """Parse `text`, whose first character sits at `span`, into an ast.Expr.

    Single-line text: every node's span is shifted to its own column. Text with newlines
    keeps `span` for every node, unless `verbatim` says that the text is an exact slice
    of span.source starting at `span`; then later lines map to their own source lines.
    """
    positions = _Positions(text, span, verbatim)
    if not text.strip():
        raise ModcError("empty expression; expected a number, a name or '('", span)
    try:
        tree = _parser().parse(text)
    except UnexpectedInput as err:
        raise _syntax_error(err, positions) from None
    try:
        return _build(tree, positions)
    except RecursionError:
        raise ModcError("expression nested too deeply", span) from None


@dataclass(frozen=True)
class _Positions:
    """Maps 1-based (line, column) positions inside the text to Spans in the source."""

    text: str
    start: Span
    verbatim: bool

    def at(
        self,
        line: int,
        col: int,
        end_line: int | None = None,
        end_col: int | None = None,
    ) -> Span:
        """The span of text starting at (line, col) and ending before (end_line, end_col)."""
        width = end_col - col if end_line == line and end_col is not None else 1
        if "\n" not in self.text:
            return self.start.shift(col - 1, width)
        if not self.verbatim:
            return self.start
        if line == 1:
            return self.start.shift(col - 1, width)
        return Span(self.start.source, self.start.line + line - 1, col, max(width, 1))

    def of_token(self, tok: Token) -> Span:
        return self.at(tok.line, tok.column, tok.end_line, tok.end_column)

    def of_tree(self, tree: Tree) -> Span:
        m = tree.meta
        return self.at(m.line, m.column, m.end_line, m.end_column)

    def end(self) -> Span:
        """The position just after the last non-blank character."""
        body = self.text.rstrip()
        line = body.count("\n") + 1
        col = len(body) - (body.rfind("\n") + 1) + 1
        return self.at(line, col)


def _build(tree: Tree | Token, pos: _Positions) -> ast.Expr:
    """The ast.Expr for a parse tree of grammars/expr.lark."""
    assert isinstance(tree, Tree), tree
    kind, kids = tree.data, tree.children
    span = pos.of_tree(tree)
    if kind == "num":
        return ast.Num(str(kids[0]), span)
    if kind == "name":
        return ast.Name(str(kids[0]), span)
    if kind == "paren":
        return _build(kids[1], pos)
    if kind == "neg":
        return ast.Neg(_build(kids[1], pos), span)
    if kind == "binop":
        op = "^" if kids[1] == "**" else str(kids[1])
        return ast.BinOp(op, _build(kids[0], pos), _build(kids[2], pos), span)
    if kind == "func":
        name_tok, _, arglist, _ = kids
        name, name_span = str(name_tok), pos.of_token(name_tok)
        if name not in FUNCTIONS:
            hint = did_you_mean(name, FUNCTIONS) or "the functions are " + ", ".join(FUNCTIONS)
            raise ModcError(f"unknown function '{name}'", name_span, hint)
        args = (
            ()
            if arglist is None
            else tuple(_build(a, pos) for a in arglist.children if isinstance(a, Tree))
        )
        check_arity(name, len(args), name_span)
        return ast.Func(name, args, span)
    raise AssertionError(f"unexpected parse tree {kind!r}")


def check_arity(name: str, nargs: int, span: Span) -> None:
    """Reject a call of a built-in function with the wrong number of arguments."""
    fewest, most = FUNCTIONS[name]
    if most is None and nargs > MAX_ARGS:
        raise ModcError(f"{name}() takes at most {MAX_ARGS} arguments, got {nargs:,}", span)
    if most is not None and nargs != most:
        plural = "" if most == 1 else "s"
        raise ModcError(f"{name}() takes {most} argument{plural}, got {nargs}", span)
    if nargs < fewest:
        raise ModcError(f"{name}() takes at least {fewest} argument, got {nargs}", span)


def _syntax_error(err: UnexpectedInput, pos: _Positions) -> ModcError:
    """A ModcError in plain words for a lark syntax error."""
    if isinstance(err, UnexpectedCharacters):
        char = pos.text[err.pos_in_stream] if err.pos_in_stream < len(pos.text) else "?"
        return ModcError(f"unexpected character {char!r}", pos.at(err.line, err.column))
    if not isinstance(err, UnexpectedToken):
        return ModcError("invalid expression", pos.start)
    tok, accepts = err.token, set(err.accepts or err.expected)
    if tok.type == "$END":
        what, span = "end of expression", pos.end()
    else:
        what, span = _describe(tok), pos.of_token(tok)
    if "NUMBER" in accepts:
        return ModcError(f"unexpected {what}; expected a number, a name or '('", span)
    if tok.type == "RPAR" and "RPAR" not in accepts:
        return ModcError("unexpected ')' without a matching '('", span)
    wanted = (["an operator"] if accepts & _OPERATORS else []) + [
        _PUNCT_WORDS[t] for t in ("RPAR", "COMMA") if t in accepts
    ]
    if not wanted:
        return ModcError(f"unexpected {what}", span)
    expected = wanted[0] if len(wanted) == 1 else ", ".join(wanted[:-1]) + " or " + wanted[-1]
    hint = "use '*' to multiply" if tok.type in ("NAME", "NUMBER", "LPAR") else None
    return ModcError(f"unexpected {what}; expected {expected}", span, hint)


def _describe(tok: Token) -> str:
    """A token in words: "name 'x'", "number '3'", "'+'"."""
    if tok.type == "NAME":
        return f"name '{tok}'"
    if tok.type == "NUMBER":
        return f"number '{tok}'"
    return f"'{tok}'"


# ---------------------------------------------------------------- printing

_PREC = {"+": 1, "-": 1, "*": 2, "/": 2, "//": 2, "%": 2, "^": 4}
_NEG, _ATOM = 3, 5


def format_expr(e: ast.Expr) -> str:
    """`e` as text that parse_arithmetic reads back to an equal Expr, with minimal parentheses.

    Num texts are printed as they are, so they must be unsigned literals (as parse_arithmetic
    makes them); a negative number is Neg(Num).
    """
    return _format(e)[0]


def _format(e: ast.Expr) -> tuple[str, int]:
    """The text of `e` and the precedence level of its outermost operator."""
    if isinstance(e, ast.Num):
        return e.text, _ATOM
    if isinstance(e, ast.Name):
        return e.id, _ATOM
    if isinstance(e, ast.Func):
        return f"{e.name}({', '.join(_format(a)[0] for a in e.args)})", _ATOM
    if isinstance(e, ast.Neg):
        return "-" + _wrap(e.operand, _NEG), _NEG
    if isinstance(e, ast.BinOp):
        prec = _PREC[e.op]
        if e.op == "^":  # atom ^ unary: right-associative, signed exponent allowed
            return f"{_wrap(e.left, _ATOM)}^{_wrap(e.right, _NEG)}", prec
        return f"{_wrap(e.left, prec)} {e.op} {_wrap(e.right, prec + 1)}", prec
    raise TypeError(f"not an expression: {e!r}")


def _wrap(e: ast.Expr, least: int) -> str:
    """The text of `e`, parenthesised if its operator binds looser than `least`."""
    text, prec = _format(e)
    return text if prec >= least else f"({text})"
