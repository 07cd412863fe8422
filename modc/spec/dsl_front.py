"""The DSL front end: a .modc file to the spec AST, every node positioned in the text.

The grammar is grammars/modc.lark; dsl_terms.py builds expressions and networks, and
this module the statements around them. Nothing in the text is evaluated.
"""

from __future__ import annotations

import functools
import math
from pathlib import Path

from lark import Lark, Token, Tree, UnexpectedInput

from modc.errors import ModcError, did_you_mean
from modc.source import Source, Span
from modc.spec import ast
from modc.spec.dsl_errors import syntax_error
from modc.spec.dsl_terms import RESERVED, Builder
from modc.spec.expr import grammar_text
from modc.spec.settings import setting_number

_ESCAPES = {'"': '"', "\\": "\\", "n": "\n", "t": "\t", "r": "\r", "0": "\0"}
_WORDS = {"true": True, "false": False, "null": None}


@functools.cache
def parser() -> Lark:
    """The DSL parser, built once per process."""
    return Lark(
        grammar_text("modc.lark"),
        parser="lalr",
        propagate_positions=True,
        maybe_placeholders=True,
    )


def load_dsl(source: Source, library: bool = False) -> ast.Spec:
    """Parse a .modc text into the spec AST. A `library` file needs no input or network."""
    try:
        tree = parser().parse(source.text)
    except UnexpectedInput as err:
        raise syntax_error(err, source) from None
    try:
        return _Statements(source).spec(tree, library)
    except RecursionError:
        raise ModcError("spec nested too deeply", Span(source, 1, 1)) from None


class _Statements:
    """Collects the statements of one file into an ast.Spec."""

    def __init__(self, source: Source):
        self.source = source
        self.build = Builder(source)
        self.seen: dict[str, Span] = {}

    def once(self, key: str, span: Span, what: str) -> None:
        """Refuse a second statement (or name) that may appear only once."""
        if key in self.seen:
            first = self.seen[key]
            raise ModcError(
                f"{what} is given twice",
                span,
                f"first given at line {first.line}, column {first.col}",
            )
        self.seen[key] = span

    def spec(self, tree: Tree, library: bool) -> ast.Spec:
        span = self.build.span
        fields: dict[str, object] = {"params": [], "defs": [], "includes": []}
        first: Span | None = None
        for stmt in tree.children:
            kind, kids = stmt.data, stmt.children
            at = span(kids[0])
            first = first or at
            if kind == "include":
                fields["includes"].append(ast.Include(self.string(kids[1]), span(kids[1])))
            elif kind == "spec_name":
                self.once("name", at, "the spec's name")
                fields["name"] = self.string(kids[1])
                if not fields["name"]:
                    raise ModcError("the spec's name must not be empty", span(kids[1]))
            elif kind == "param":
                name = str(kids[1])
                self.once("param " + name, span(kids[1]), f"parameter '{name}'")
                fields["params"].append(ast.Param(name, self.build.expr(kids[3]), span(kids[1])))
            elif kind in ("input", "output"):
                self.once(kind, at, f"'{kind}'")
                fields[kind] = self.sizes(kids[1])
            elif kind == "def":
                fields["defs"].append(self.definition(kids))
            elif kind == "network":
                self.once("network", at, "'network'")
                fields["network"] = self.build.term(kids[2])
            else:
                self.once(str(kids[0]), at, f"section '{kids[0]}'")
                fields[str(kids[0])] = self.settings(kids)
        if not library:
            for needed in ("input", "network"):
                if needed not in fields:
                    article = "an" if needed == "input" else "a"
                    raise ModcError(
                        f"the spec needs {article} '{needed}'",
                        first or Span(self.source, 1, 1),
                        f"write: {needed} {'(1, 28, 28)' if needed == 'input' else '= ...'}",
                    )
        return ast.Spec(
            name=fields.get("name", Path(self.source.name).stem),
            params=tuple(fields["params"]),
            input=fields.get("input", ()),
            network=fields.get("network"),
            defs=tuple(fields["defs"]),
            output=fields.get("output"),
            train=fields.get("train", ()),
            optimizer=fields.get("optimizer", ()),
            span=first or Span(self.source, 1, 1),
            includes=tuple(fields["includes"]),
        )

    def sizes(self, tree: Tree) -> tuple[ast.Expr, ...]:
        """`784` or `(1, 28, 28)`: one size or a tuple of sizes."""
        if tree.data != "tuple":
            return (self.build.expr(tree),)
        rest = tree.children[3]
        more = [] if rest is None else [k for k in rest.children if isinstance(k, Tree)]
        return tuple(self.build.expr(k) for k in [tree.children[1], *more])

    def definition(self, kids: list) -> ast.Def:
        """`def name(a, b) = network`."""
        _, name_tok, formals, _, body = kids
        name, at = str(name_tok), self.build.span(name_tok)
        if name in RESERVED:
            raise ModcError(f"'{name}' is a keyword or built-in function; pick another name", at)
        self.once("def " + name, at, f"definition '{name}'")
        params: list[str] = []
        for tok in [] if formals is None else formals.children:
            if isinstance(tok, Token) and tok.type == "NAME":
                if str(tok) in params:
                    raise ModcError(f"duplicate parameter '{tok}'", self.build.span(tok))
                params.append(str(tok))
        return ast.Def(name, tuple(params), self.build.term(body), at)

    def settings(self, kids: list) -> tuple[ast.Setting, ...]:
        """`train { key = value ... }`: plain values, never evaluated."""
        out = []
        keys: dict[str, Span] = {}
        for s in kids:
            if not (isinstance(s, Tree) and s.data == "setting"):
                continue
            key_tok, _, value = s.children
            at = self.build.span(key_tok)
            if str(key_tok) in keys:
                first = keys[str(key_tok)]
                hint = f"first given at line {first.line}, column {first.col}"
                raise ModcError(f"setting '{key_tok}' is given twice", at, hint)
            keys[str(key_tok)] = at
            out.append(ast.Setting(str(key_tok), self.value(value), at))
        return tuple(out)

    def value(self, t: Tree) -> object:
        """A setting's value: a number, string, true/false/null, or a [list] of those."""
        if t.data == "list":
            return tuple(self.value(k) for k in t.children if isinstance(k, Tree))
        tok = t.children[-1]
        if t.data == "string":
            return self.string(tok)
        if t.data == "word":
            return _WORDS.get(str(tok), str(tok))
        text = str(tok)
        try:
            number = int(text) if text.isdigit() else float(text)
        except ValueError:  # an integer of over 4,300 digits
            number = math.inf
        number = setting_number(number, text, self.build.span(tok))
        return -number if t.data == "negnum" else number

    def string(self, tok: Token) -> str:
        """The text of a double-quoted string, its escapes decoded."""
        body, out, i = str(tok)[1:-1], [], 0
        while i < len(body):
            c = body[i]
            if c != "\\":
                out.append(c)
                i += 1
                continue
            nxt = body[i + 1]
            if nxt in _ESCAPES:
                out.append(_ESCAPES[nxt])
                i += 2
                continue
            size = {"x": 2, "u": 4, "U": 8}.get(nxt)
            digits = body[i + 2 : i + 2 + size] if size else ""
            if not size or len(digits) != size or not _is_hex(digits) or not _is_char(digits):
                at = self.build.span(tok).shift(i + 1, 2)
                hint = did_you_mean("\\" + nxt, ["\\" + e for e in _ESCAPES])
                raise ModcError(f"invalid escape '\\{nxt}' in a string", at, hint)
            out.append(chr(int(digits, 16)))
            i += 2 + size
        return "".join(out)


def _is_hex(text: str) -> bool:
    return all(c in "0123456789abcdefABCDEF" for c in text)


def _is_char(digits: str) -> bool:
    """Whether hex `digits` name a Unicode character (not a surrogate, not too large)."""
    code = int(digits, 16)
    return code <= 0x10FFFF and not 0xD800 <= code <= 0xDFFF
