"""DSL parse trees to AST expressions and network terms, decided by context.

Networks and arithmetic share one grammar (grammars/modc.lark), so `a + b` is a sum of
branches where a network is expected and an addition where a number is. An argument is a
number when its text is plain arithmetic (numbers, names, + - * / // % ^, sqrt/min/...)
and a network otherwise; a bare name there stays an ast.Name, exactly as the YAML front
end reads a scalar argument, and elaboration resolves it.
"""

from __future__ import annotations

import dataclasses

from lark import Token, Tree

from modc.errors import ModcError, did_you_mean
from modc.source import Source, Span
from modc.spec import ast
from modc.spec.expr import FUNCTIONS, check_arity

#: Constructs written `kw(value, name=...) { body }`, and the keywords each accepts.
BLOCKS: dict[str, tuple[str, ...]] = {"repeat": ("name",), "residual": ("name",), "tare": ()}
#: Construct keywords of either front end: no definition or argument takes these names.
KEYWORDS = (*BLOCKS, "coupling", "scale", "sum", "tuple")
#: Names a definition may not take: construct keywords and built-in functions.
RESERVED = (*KEYWORDS, *FUNCTIONS)
#: How deeply terms and expressions may nest; deeper text is refused, not overflowed.
MAX_DEPTH = 100

_ARITH = {"+", "-", "*", "/", "//", "%", "^", "**"}
_EXPRS = (ast.Num, ast.Name, ast.BinOp, ast.Neg, ast.Func)


class Builder:
    """Turns expression trees of one source file into ast nodes."""

    def __init__(self, source: Source):
        self.source = source
        self.depth = 0

    # ------------------------------------------------------------ positions

    def span(self, node: Tree | Token) -> Span:
        """The span of a token or a tree: its start, as wide as its text on that line."""
        if isinstance(node, Token):
            line, col, end_line, end_col = node.line, node.column, node.end_line, node.end_column
        else:
            m = node.meta
            line, col, end_line, end_col = m.line, m.column, m.end_line, m.end_column
        width = end_col - col if end_line == line else 1
        return Span(self.source, line, col, max(width, 1))

    def enter(self, node: Tree | Token) -> None:
        """Count one level of nesting, refusing text nested too deeply."""
        self.depth += 1
        if self.depth > MAX_DEPTH:
            raise ModcError(f"nested too deeply (more than {MAX_DEPTH} levels)", self.span(node))

    # ------------------------------------------------------------ classification

    def is_expr(self, t: Tree) -> bool:
        """Whether `t` is plain arithmetic (and so a number wherever it may be either)."""
        kind, kids = t.data, t.children
        if kind in ("num", "name"):
            return True
        if kind in ("paren", "neg"):
            return self.is_expr(kids[1])
        if kind == "binop":
            return str(kids[1]) in _ARITH and self.is_expr(kids[0]) and self.is_expr(kids[2])
        if kind == "call":
            name, _, args, _, block = kids
            if str(name) not in FUNCTIONS or block is not None:
                return False
            return args is None or all(
                isinstance(a, Tree) and a.data != "kwarg" and self.is_expr(a) for a in _args(args)
            )
        return False

    def arg(self, t: Tree) -> ast.Arg:
        """A call argument: a number if plain arithmetic, else a network."""
        return self.expr(t) if self.is_expr(t) else self.term(t)

    # ------------------------------------------------------------ expressions

    def expr(self, t: Tree) -> ast.Expr:
        """An arithmetic expression; a network here is an error."""
        self.enter(t)
        try:
            return self._expr(t)
        finally:
            self.depth -= 1

    def _expr(self, t: Tree) -> ast.Expr:
        kind, kids, span = t.data, t.children, self.span(t)
        if kind == "num":
            return ast.Num(str(kids[0]), span)
        if kind == "name":
            return ast.Name(str(kids[0]), span)
        if kind == "paren":
            return self.expr(kids[1])
        if kind == "neg":
            return ast.Neg(self.expr(kids[1]), span)
        if kind == "binop":
            op = str(kids[1])
            if op not in _ARITH:
                raise ModcError(
                    "expected a number here, but '>' composes networks", self.span(kids[1])
                )
            left, right = self.expr(kids[0]), self.expr(kids[2])
            return ast.BinOp("^" if op == "**" else op, left, right, span)
        if kind == "call":
            return self.function(t)
        raise ModcError(f"expected a number here, got {_what(t)}", span)

    def function(self, t: Tree) -> ast.Func:
        """A call of a built-in function inside an expression."""
        name_tok, _, args, _, block = t.children
        name, span = str(name_tok), self.span(name_tok)
        if name not in FUNCTIONS:
            if name[:1].isupper() or block is not None:
                raise ModcError(f"expected a number here, got the network '{name}'", span)
            hint = did_you_mean(name, FUNCTIONS) or "the functions are " + ", ".join(FUNCTIONS)
            raise ModcError(f"unknown function '{name}'", span, hint)
        if block is not None:
            raise ModcError(f"{name}() takes no {{ body }}", self.span(block))
        values = []
        for a in _args(args):
            if a.data == "kwarg":
                raise ModcError(f"{name}() takes no keyword arguments", self.span(a))
            values.append(self.expr(a))
        check_arity(name, len(values), span)
        return ast.Func(name, tuple(values), self.span(t))

    # ------------------------------------------------------------ network terms

    def term(self, t: Tree) -> ast.Term:
        """A network term; plain numbers here are an error."""
        self.enter(t)
        try:
            return self._term(t)
        finally:
            self.depth -= 1

    def _term(self, t: Tree) -> ast.Term:
        kind, kids = t.data, t.children
        if kind == "name":
            return ast.Call(str(kids[0]), span=self.span(t))
        if kind == "paren":
            return self.term(kids[1])
        if kind == "tuple":
            rest = [] if kids[3] is None else [k for k in kids[3].children if isinstance(k, Tree)]
            return ast.Tuple(tuple(self.term(k) for k in [kids[1], *rest]), self.span(kids[0]))
        if kind == "call":
            return self.call(t)
        if kind == "binop":
            return self.binop(t)
        if kind == "neg":
            raise ModcError("a network cannot be negated", self.span(kids[0]), "write -1 * network")
        raise ModcError(f"expected a network here, got {_what(t)}", self.span(t))

    def binop(self, t: Tree) -> ast.Term:
        """`>`, `+`, `*`, `/` and `**` between networks (and a factor or a count)."""
        left, op_tok, right = t.children
        op, at = str(op_tok), self.span(op_tok)
        if op in (">", "+"):
            items = [self.term(k) for k in self.chain(t, op)]
            return (ast.Seq if op == ">" else ast.Sum)(tuple(items), at)
        if op == "*":
            if self.is_expr(left):
                return ast.Scale(self.expr(left), self.term(right), at)
            if self.is_expr(right):
                return ast.Scale(self.expr(right), self.term(left), at)
            raise ModcError(
                "one side of '*' must be a number: a scalar multiple is `factor * network`", at
            )
        if op == "/" and not self.is_expr(left) and self.is_expr(right):
            one = ast.Num("1", at)
            return ast.Scale(ast.BinOp("/", one, self.expr(right), at), self.term(left), at)
        if op == "**":
            return ast.Repeat(self.expr(right), self.term(left), None, at)
        hints = {
            "-": "networks cannot be subtracted; write a + (-1) * b",
            "^": "write network ** count to repeat a network",
        }
        raise ModcError(
            f"'{op}' works on numbers, not networks",
            at,
            hints.get(op, "a network is expected here"),
        )

    def chain(self, t: Tree, op: str) -> list[Tree]:
        """The operands of `a op b op c` (not of parenthesised parts), left to right."""
        out: list[Tree] = []
        while t.data == "binop" and str(t.children[1]) == op:
            out.append(t.children[2])
            t = t.children[0]
        return [t, *reversed(out)]

    def call(self, t: Tree) -> ast.Term:
        """`Op(args)`, `def(args)` or a block construct `kw(value) { body }`."""
        name_tok, _, args, _, block = t.children
        name, span = str(name_tok), self.span(name_tok)
        if name in FUNCTIONS:
            raise ModcError(
                f"'{name}' is a built-in function: it computes a number, not a network", span
            )
        if block is None and name in BLOCKS:
            raise ModcError(f"'{name}' needs a body: {name}(...) {{ network }}", span)
        positional: list[ast.Arg] = []
        kwargs: dict[str, ast.Arg] = {}
        module: str | None = None
        frozen: bool | None = None
        for a in _args(args):
            if a.data != "kwarg":
                if kwargs or module is not None:
                    raise ModcError(
                        "an argument without a name cannot follow a named one", self.span(a)
                    )
                positional.append(self.arg(a))
                continue
            key_tok, _, value = a.children
            key = str(key_tok)
            if (
                key in kwargs
                or (key == "name" and module is not None)
                or (key == "frozen" and frozen is not None)
            ):
                raise ModcError(f"argument '{key}' is given twice", self.span(key_tok))
            if key == "name":
                module = self.module_name(value)
            elif key == "frozen":
                frozen = self.truth(value)
            elif key in KEYWORDS:
                raise ModcError(
                    f"'{key}' is a construct keyword and cannot name an argument",
                    self.span(key_tok),
                )
            else:
                kwargs[key] = self.arg(value)
        if name == "coupling":
            if block is not None or frozen is not None:
                raise ModcError("'coupling' takes two networks: coupling(f, g)", span)
            return self.coupling(span, positional, kwargs, module)
        if block is None:
            call = ast.Call(name, tuple(positional), tuple(kwargs.items()), module, span)
            return call if not frozen else dataclasses.replace(call, frozen=True)
        if frozen is not None:
            raise ModcError(f"'{name}' has no weights of its own to freeze", span)
        if name not in BLOCKS:
            hint = did_you_mean(name, BLOCKS) or "the constructs are " + ", ".join(BLOCKS)
            raise ModcError(f"only a construct takes a {{ body }}; '{name}' is not one", span, hint)
        return self.construct(name, span, positional, kwargs, module, block)

    def construct(
        self,
        kw: str,
        span: Span,
        positional: list[ast.Arg],
        kwargs: dict[str, ast.Arg],
        module: str | None,
        block: Tree,
    ) -> ast.Term:
        """repeat(count, name=n) { body }, residual(depth, name=n) { body }, tare(mass) { body }."""
        what = {"repeat": "a count", "residual": "a depth", "tare": "a mass"}[kw]
        if kwargs:
            key = next(iter(kwargs))
            raise ModcError(f"'{kw}' has no argument '{key}'", span)
        if module is not None and "name" not in BLOCKS[kw]:
            raise ModcError(f"'{kw}' takes no name", span)
        if len(positional) != 1 or not isinstance(positional[0], _EXPRS):
            raise ModcError(f"'{kw}' takes one number, {what}: {kw}(n) {{ network }}", span)
        (value,) = positional
        body = self.term(block.children[1])
        if kw == "repeat":
            return ast.Repeat(value, body, module, span)
        if kw == "residual":
            return ast.Residual(value, body, module, span)
        return ast.Tare(value, body, span)

    def coupling(
        self, span: Span, positional: list[ast.Arg], kwargs: dict, module: str | None
    ) -> ast.Coupling:
        """coupling(f, g, name=n): y1 = x1 + f(x2), y2 = x2 + g(y1) on the feature halves."""
        if kwargs:
            raise ModcError(f"'coupling' has no argument '{next(iter(kwargs))}'", span)
        positional = [  # a bare name is a network here: coupling(f, g) with definitions f, g
            ast.Call(a.id, span=a.span) if isinstance(a, ast.Name) else a for a in positional
        ]
        if len(positional) != 2 or any(isinstance(a, _EXPRS) for a in positional):
            raise ModcError(
                "'coupling' takes two networks, f and g: coupling(f, g)",
                span,
                "y1 = x1 + f(x2), y2 = x2 + g(y1) on the two halves of the features",
            )
        return ast.Coupling(positional[0], positional[1], module, span)

    def truth(self, value: Tree) -> bool:
        """`true` or `false`, as given to frozen=."""
        if value.data == "name" and str(value.children[0]) in ("true", "false"):
            return str(value.children[0]) == "true"
        raise ModcError("frozen= takes true or false", self.span(value))

    def module_name(self, value: Tree) -> str:
        """The identifier given as `name=`."""
        if value.data != "name":
            raise ModcError(
                "a module name must be an identifier (letters, digits and _)", self.span(value)
            )
        return str(value.children[0])


def _args(args: Tree | None) -> list[Tree]:
    """The argument trees of an `args` node (none when absent)."""
    return [] if args is None else [a for a in args.children if isinstance(a, Tree)]


def _what(t: Tree) -> str:
    """A parse tree's kind in words, for error messages."""
    kind = t.data
    if kind == "num":
        return f"the number {t.children[0]}"
    if kind == "tuple":
        return "a tuple"
    if kind == "call":
        return f"a call of '{t.children[0]}'"
    if kind == "neg":
        return "a negative number"
    return "an expression"
