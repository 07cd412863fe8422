"""The YAML front end's network items: operations, constructs, arguments and numbers.

yaml_front.py walks the whole spec; this base class walks the parts that the DSL writes
as expressions and networks, keeping every node's position in the YAML text.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from yaml.constructor import SafeConstructor
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from modc.errors import ModcError, did_you_mean, unknown_argument
from modc.source import Source, Span
from modc.spec import ast
from modc.spec.dsl_terms import MAX_DEPTH
from modc.spec.expr import FUNCTIONS, parse_arithmetic

#: Construct keywords and the other keys each accepts besides its own.
CONSTRUCTS: dict[str, tuple[str, ...]] = {
    "repeat": ("body", "name"),
    "residual": ("body", "name"),
    "tare": ("body",),
    "coupling": ("name",),
    "scale": ("body",),
    "sum": (),
    "tuple": (),
}
#: How many YAML nodes one spec may visit; stops alias bombs (`&a [*b, *b, ...]`).
MAX_NODES = 100_000

_TAG = "tag:yaml.org,2002:"
_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")
_CALL_TEXT = re.compile(r"\s*([A-Za-z_][A-Za-z0-9_]*)\s*\((.*)\)\s*\Z", re.DOTALL)
_FLOAT_TEXT = re.compile(r"[-+]?([0-9]+\.?[0-9]*|\.[0-9]+)([eE][-+]?[0-9]+)?\Z")


@dataclass
class _Entry:
    """One key: value pair of a YAML mapping."""

    key: str
    span: Span
    value: Node


class TermWalker:
    """Walks the network items of a composed YAML node tree into the spec AST."""

    def __init__(self, source: Source):
        self.source = source
        self.visits = 0
        self.depth = 0
        self.constructor = SafeConstructor()  # builds plain scalars only; never Python objects

    # ------------------------------------------------------------ positions and shapes

    def span(self, node: Node) -> Span:
        """The span of a node: its first character, as wide as its text on that line."""
        start = self.source.span_at(node.start_mark.index)
        text = self.source.text[node.start_mark.index : node.end_mark.index]
        if isinstance(node, ScalarNode) and "\n" not in text:
            return start.shift(0, len(text))
        return start

    def visit(self, node: Node) -> None:
        """Count a node, refusing specs that expand to too many (through aliases)."""
        self.visits += 1
        if self.visits > MAX_NODES:
            raise ModcError(
                "spec is too large (are aliases nested inside aliases?)",
                self.span(node),
            )

    def entries(self, node: Node, what: str) -> list[_Entry]:
        """The key: value pairs of a mapping, checking that keys are names and unique."""
        if not isinstance(node, MappingNode):
            raise ModcError(
                f"{what} must be a mapping (key: value lines), got {_kind(node)}",
                self.span(node),
            )
        out: list[_Entry] = []
        seen: dict[str, Span] = {}
        for key_node, value in node.value:
            span = self.span(key_node)
            if not isinstance(key_node, ScalarNode) or not key_node.value:
                raise ModcError(f"expected a key name, got {_kind(key_node)}", span)
            key = key_node.value
            if key in seen:
                first = seen[key]
                raise ModcError(
                    f"duplicate key '{key}'",
                    span,
                    f"first given at line {first.line}, column {first.col}",
                )
            seen[key] = span
            out.append(_Entry(key, span, value))
        return out

    def ident(self, node: Node, what: str) -> str:
        """A scalar that must be an identifier (a module or parameter name)."""
        if (
            not isinstance(node, ScalarNode)
            or not _IDENT.match(node.value)
            or node.tag != _TAG + "str"
        ):
            got = node.value if isinstance(node, ScalarNode) else _kind(node)
            raise ModcError(
                f"{what} must be an identifier (letters, digits and _), got {got!r}",
                self.span(node),
            )
        return node.value

    def check_ident(self, name: str, span: Span, what: str) -> str:
        if not _IDENT.match(name):
            raise ModcError(
                f"{what} must be an identifier (letters, digits and _), got {name!r}",
                span,
            )
        return name

    # ------------------------------------------------------------ network terms

    def term(self, node: Node) -> ast.Term:
        """An item: an operation name, a {Op: args} mapping, a construct, or a list (Seq).

        A list of one item is that item, as in the DSL, where `(a)` is `a`.
        """
        self.visit(node)
        self.depth += 1
        try:
            if self.depth > MAX_DEPTH:
                raise ModcError(
                    f"nested too deeply (more than {MAX_DEPTH} levels)", self.span(node)
                )
            return self._term(node)
        finally:
            self.depth -= 1

    def _term(self, node: Node) -> ast.Term:
        span = self.span(node)
        if isinstance(node, SequenceNode):
            if not node.value:
                raise ModcError(
                    "an empty list; write Identity for a network that does nothing", span
                )
            items = tuple(self.term(n) for n in node.value)
            return items[0] if len(items) == 1 else ast.Seq(items, span)
        if isinstance(node, ScalarNode):
            return ast.Call(self.op_name(node), span=span)
        entries = self.entries(node, "an item")
        if not entries:
            raise ModcError("expected an item, got an empty mapping", span)
        constructs = [e for e in entries if e.key in CONSTRUCTS]
        if len(constructs) > 1:
            raise ModcError(
                f"an item can be only one construct; got '{constructs[0].key}' "
                f"and '{constructs[1].key}'",
                constructs[1].span,
            )
        if constructs:
            return self.construct(constructs[0], entries)
        first, extras = entries[0], entries[1:]
        self.check_ident(first.key, first.span, "an operation name")
        self.not_function(first.key, first.span)
        return self.call(first, extras)

    def not_function(self, op: str, span: Span) -> None:
        """Refuse a built-in function (sqrt, min, ...) where an operation is expected."""
        if op in FUNCTIONS:
            raise ModcError(
                f"'{op}' is a built-in function: it computes a number, not a network", span
            )

    def op_name(self, node: ScalarNode) -> str:
        """The operation named by a plain string item such as `ReLU`."""
        span, text = self.span(node), node.value
        if node.tag == _TAG + "str" and _IDENT.match(text):
            if text in CONSTRUCTS:
                raise ModcError(
                    f"'{text}' needs a value and a body: {{{text}: ..., body: [...]}}",
                    span,
                )
            self.not_function(text, span)
            return text
        call = _CALL_TEXT.match(text) if node.tag == _TAG + "str" else None
        if call:
            op, args = call.group(1), call.group(2).strip()
            value = f"[{args}]" if "," in args else args
            raise ModcError(
                f"an operation with arguments is written as a mapping, not '{text}'",
                span,
                f"write {{{op}: {value}}}",
            )
        hint = None
        if "\n" in self.source.text[node.start_mark.index : node.end_mark.index]:
            hint = "this text runs over several lines; is a '- ' item indented too far?"
        raise ModcError(f"expected an operation name or a mapping, got {text!r}", span, hint)

    def call(self, entry: _Entry, extras: list[_Entry] = ()) -> ast.Call:
        """`{Op: value}`: a scalar is one argument, a list positional ones, a mapping keywords.

        Keys beside the operation's (`- Linear: 10` then `name: head`) are keyword
        arguments too, so that positional and keyword arguments can go together.
        """
        node = entry.value
        args: tuple[ast.Arg, ...] = ()
        named = list(extras)
        if isinstance(node, SequenceNode):
            args = tuple(self.arg(n) for n in node.value)
        elif isinstance(node, ScalarNode) and not _is_null(node):
            args = (self.arg(node),)
        elif isinstance(node, MappingNode):
            named = self.entries(node, f"the arguments of '{entry.key}'") + named
        name = None
        frozen: bool | None = None
        kwargs: dict[str, ast.Arg] = {}
        for e in named:
            if (
                e.key in kwargs
                or (e.key == "name" and name is not None)
                or (e.key == "frozen" and frozen is not None)
            ):
                raise ModcError(f"argument '{e.key}' is given twice", e.span)
            if e.key == "name":
                name = self.ident(e.value, "a module name")
            elif e.key == "frozen":
                frozen = self.truth(e.value)
            else:
                self.check_ident(e.key, e.span, "an argument name")
                try:
                    kwargs[e.key] = self.arg(e.value)
                except ModcError as err:
                    raise _unknown_argument(entry.key, e) or err from None
        return ast.Call(entry.key, args, tuple(kwargs.items()), name, entry.span, bool(frozen))

    def truth(self, node: Node) -> bool:
        """A YAML boolean, as given to `frozen:`."""
        if isinstance(node, ScalarNode) and node.tag == _TAG + "bool":
            return node.value.lower() in ("true", "yes", "on")
        raise ModcError("frozen: takes true or false", self.span(node))

    def arg(self, node: Node) -> ast.Arg:
        """An argument: a scalar is an expression; a list or mapping is a network term."""
        return self.expr(node) if isinstance(node, ScalarNode) else self.term(node)

    def construct(self, head: _Entry, entries: list[_Entry]) -> ast.Term:
        """repeat / residual / tare / scale (with a body) or sum / tuple (with branches)."""
        kw, allowed = head.key, CONSTRUCTS[head.key]
        parts: dict[str, _Entry] = {}
        for e in entries:
            if e is head:
                continue
            if e.key not in allowed:
                hint = did_you_mean(e.key, allowed) or (
                    f"'{kw}' takes " + " and ".join(f"'{a}'" for a in allowed)
                    if allowed
                    else f"'{kw}' takes only a list of branches"
                )
                raise ModcError(f"unknown key '{e.key}' in '{kw}'", e.span, hint)
            parts[e.key] = e
        if kw in ("sum", "tuple"):
            if not isinstance(head.value, SequenceNode) or not head.value.value:
                got = _kind(head.value)
                raise ModcError(
                    f"'{kw}' takes a list of branches, got {got}", self.span(head.value)
                )
            if kw == "sum" and len(head.value.value) < 2:
                raise ModcError("'sum' needs at least two branches", self.span(head.value))
            branches = tuple(self.term(n) for n in head.value.value)
            return (ast.Sum if kw == "sum" else ast.Tuple)(branches, head.span)
        if kw == "coupling":
            if not isinstance(head.value, SequenceNode) or len(head.value.value) != 2:
                raise ModcError(
                    "'coupling' takes a list of two networks, [f, g]: "
                    "y1 = x1 + f(x2), y2 = x2 + g(y1)",
                    self.span(head.value),
                )
            f, g = (self.term(n) for n in head.value.value)
            name = self.ident(parts["name"].value, "a module name") if "name" in parts else None
            return ast.Coupling(f, g, name, head.span)
        if "body" not in parts:
            raise ModcError(f"'{kw}' needs a 'body'", head.span)
        value, body = self.expr(head.value), self.term(parts["body"].value)
        name = self.ident(parts["name"].value, "a module name") if "name" in parts else None
        if kw == "repeat":
            return ast.Repeat(value, body, name, head.span)
        if kw == "residual":
            return ast.Residual(value, body, name, head.span)
        if kw == "tare":
            return ast.Tare(value, body, head.span)
        return ast.Scale(value, body, head.span)

    # ------------------------------------------------------------ numbers and expressions

    def expr(self, node: Node) -> ast.Expr:
        """A number or an expression string, as an ast.Expr positioned in the source."""
        self.visit(node)
        span = self.span(node)
        if not isinstance(node, ScalarNode):
            raise ModcError(f"expected a number or an expression, got {_kind(node)}", span)
        tag = node.tag.removeprefix(_TAG)
        if tag == "int":
            value = self.constructor.construct_yaml_int(node)
            if value < 0:
                inner = span.shift(1, span.width - 1) if node.value.startswith("-") else span
                return ast.Neg(ast.Num(str(-value), inner), span)
            return ast.Num(str(value), span)
        if tag == "float":
            text = node.value.replace("_", "").lstrip("+")
            if not _FLOAT_TEXT.match(text):
                raise ModcError(f"expected a finite number, got {node.value}", span)
            return parse_arithmetic(text, span)
        if tag == "str":
            text, start, verbatim = self.scalar_text(node)
            return parse_arithmetic(text, start, verbatim=verbatim)
        got = node.value or "nothing"
        raise ModcError(f"expected a number or an expression, got {got}", span)

    def scalar_text(self, node: ScalarNode) -> tuple[str, Span, bool]:
        """The text of a string scalar, where it starts, and whether it is verbatim source.

        Plain and simply quoted scalars are read from the source so that every
        sub-expression gets its own column; escapes or block scalars fall back to the
        scalar's value positioned at its start.
        """
        start = self.span(node)
        raw = self.source.text[node.start_mark.index : node.end_mark.index]
        quote = node.style if node.style in ("'", '"') else ""
        if node.style is None and "\n" in raw and not raw.startswith("!"):
            return raw, start, True
        content = quote + node.value + quote
        if "\n" not in raw and raw.endswith(content):
            offset = len(raw) - len(content) + len(quote)
            return node.value, start.shift(offset, len(node.value)), True
        return node.value, start.shift(len(quote)), False


def _unknown_argument(op: str, e: _Entry) -> ModcError | None:
    """The error for a keyword that the library operation `op` does not take, if it is one:
    a wrong name is told as such, not as a wrong value."""
    from modc.ops import OPS, argument_names

    if op not in OPS or e.key in argument_names(OPS[op]):
        return None
    return unknown_argument(op, e.key, argument_names(OPS[op]), e.span)


def _is_null(node: Node) -> bool:
    return isinstance(node, ScalarNode) and node.tag == _TAG + "null"


def _kind(node: Node) -> str:
    """A node's kind in words, for error messages."""
    if isinstance(node, SequenceNode):
        return "a list"
    if isinstance(node, MappingNode):
        return "a mapping"
    return repr(node.value) if node.value else "nothing"
