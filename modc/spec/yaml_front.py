"""The YAML front end: a spec file in YAML to the spec AST, with line and column kept.

The text is read with yaml.compose (safe loader, no Python objects), and the node tree
is walked here so that every AST node gets the Span of the YAML text it came from.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import yaml
from yaml.constructor import SafeConstructor
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from modc.errors import ModcError, did_you_mean
from modc.source import Source, Span
from modc.spec import ast
from modc.spec.expr import parse_expr

TOP_KEYS = (
    "name",
    "params",
    "input",
    "output",
    "network",
    "defs",
    "train",
    "optimizer",
)
#: Construct keywords and the other keys each accepts besides its own.
CONSTRUCTS: dict[str, tuple[str, ...]] = {
    "repeat": ("body", "name"),
    "residual": ("body", "name"),
    "tare": ("body",),
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
_PLAIN_TAGS = ("str", "int", "float", "bool", "null")


def load_yaml(source: Source) -> ast.Spec:
    """Parse a YAML spec into the spec AST."""
    try:
        root = yaml.compose(source.text, Loader=yaml.SafeLoader)
    except yaml.MarkedYAMLError as err:
        raise _yaml_error(source, err) from None
    except yaml.reader.ReaderError as err:
        raise ModcError(f"invalid YAML: {err.reason}", _offset_span(source, err.position)) from None
    except RecursionError:
        raise ModcError("spec nested too deeply", Span(source, 1, 1)) from None
    try:
        return _Walker(source).spec(root)
    except RecursionError:
        raise ModcError("spec nested too deeply", Span(source, 1, 1)) from None


def _yaml_error(source: Source, err: yaml.MarkedYAMLError) -> ModcError:
    """A ModcError at the problem mark of a PyYAML error."""
    mark = err.problem_mark or err.context_mark
    span = Span(source, mark.line + 1, mark.column + 1) if mark else Span(source, 1, 1)
    problem, hint = err.problem or err.context or "syntax error", None
    if err.context and err.problem and problem.startswith("but "):
        problem = f"{err.context}, {problem}"  # "expected a single document ..., but found ..."
    elif err.context and err.context_mark and err.context_mark is not mark:
        ctx = err.context_mark
        hint = f"{err.context} at line {ctx.line + 1}, column {ctx.column + 1}"
    return ModcError(f"invalid YAML: {problem}", span, hint)


def _offset_span(source: Source, offset: int) -> Span:
    """The span of character `offset` of the source text."""
    before = source.text[:offset]
    return Span(source, before.count("\n") + 1, offset - (before.rfind("\n") + 1) + 1)


@dataclass
class _Entry:
    """One key: value pair of a YAML mapping."""

    key: str
    span: Span
    value: Node


class _Walker:
    """Walks a composed YAML node tree and builds the spec AST."""

    def __init__(self, source: Source):
        self.source = source
        self.visits = 0
        self.constructor = SafeConstructor()  # builds plain scalars only; never Python objects

    # ------------------------------------------------------------ positions and shapes

    def span(self, node: Node) -> Span:
        """The span of a node: its first character, as wide as its text on that line."""
        start, end = node.start_mark, node.end_mark
        width = (
            end.column - start.column
            if isinstance(node, ScalarNode) and end.line == start.line
            else 1
        )
        return Span(self.source, start.line + 1, start.column + 1, max(width, 1))

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

    # ------------------------------------------------------------ the whole spec

    def spec(self, root: Node | None) -> ast.Spec:
        if root is None:
            raise ModcError("empty spec; expected 'input' and 'network'", Span(self.source, 1, 1))
        start = self.span(root)
        if not isinstance(root, MappingNode):
            raise ModcError(
                f"a spec must be a mapping with 'input' and 'network', got {_kind(root)}",
                start,
            )
        found: dict[str, _Entry] = {}
        for entry in self.entries(root, "a spec"):
            if entry.key not in TOP_KEYS:
                raise ModcError(
                    f"unknown key '{entry.key}'",
                    entry.span,
                    did_you_mean(entry.key, TOP_KEYS) or "the keys are " + ", ".join(TOP_KEYS),
                )
            found[entry.key] = entry
        for needed in ("input", "network"):
            if needed not in found:
                article = "an" if needed == "input" else "a"
                raise ModcError(f"the spec needs {article} '{needed}'", start)
        name = Path(self.source.name).stem
        if "name" in found:
            name = self.string(found["name"].value, "the spec's 'name'")
        get = found.get
        return ast.Spec(
            name=name,
            params=self.params(get("params")),
            input=self.sizes(found["input"].value),
            network=self.term(found["network"].value),
            defs=self.defs(get("defs")),
            output=self.sizes(found["output"].value) if "output" in found else None,
            train=self.settings(get("train")),
            optimizer=self.settings(get("optimizer")),
            span=start,
        )

    def string(self, node: Node, what: str) -> str:
        if not isinstance(node, ScalarNode) or node.tag != _TAG + "str" or not node.value:
            got = node.value if isinstance(node, ScalarNode) else _kind(node)
            raise ModcError(f"{what} must be a string, got {got or 'nothing'}", self.span(node))
        return node.value

    def params(self, entry: _Entry | None) -> tuple[ast.Param, ...]:
        if entry is None or _is_null(entry.value):
            return ()
        return tuple(
            ast.Param(
                self.check_ident(e.key, e.span, "a parameter name"),
                self.expr(e.value),
                e.span,
            )
            for e in self.entries(entry.value, "'params'")
        )

    def sizes(self, node: Node) -> tuple[ast.Expr, ...]:
        """A size or a list of sizes (`input`, `output`)."""
        if isinstance(node, SequenceNode):
            if not node.value:
                raise ModcError("expected at least one size", self.span(node))
            return tuple(self.expr(n) for n in node.value)
        return (self.expr(node),)

    def defs(self, entry: _Entry | None) -> tuple[ast.Def, ...]:
        if entry is None or _is_null(entry.value):
            return ()
        out = []
        for e in self.entries(entry.value, "'defs'"):
            self.check_ident(e.key, e.span, "a definition name")
            if e.key in CONSTRUCTS:
                raise ModcError(f"'{e.key}' is a construct keyword; pick another name", e.span)
            parts = {p.key: p for p in self.entries(e.value, f"definition '{e.key}'")}
            for p in parts.values():
                if p.key not in ("params", "body"):
                    hint = (
                        did_you_mean(p.key, ("params", "body"))
                        or "a definition has 'params' and 'body'"
                    )
                    raise ModcError(f"unknown key '{p.key}' in definition '{e.key}'", p.span, hint)
            if "body" not in parts:
                raise ModcError(f"definition '{e.key}' needs a 'body'", e.span)
            out.append(
                ast.Def(
                    e.key,
                    self.def_params(parts.get("params")),
                    self.term(parts["body"].value),
                    e.span,
                )
            )
        return tuple(out)

    def def_params(self, entry: _Entry | None) -> tuple[str, ...]:
        if entry is None or _is_null(entry.value):
            return ()
        nodes = entry.value.value if isinstance(entry.value, SequenceNode) else [entry.value]
        names: list[str] = []
        for n in nodes:
            name = self.ident(n, "a definition parameter")
            if name in names:
                raise ModcError(f"duplicate parameter '{name}'", self.span(n))
            names.append(name)
        return tuple(names)

    def settings(self, entry: _Entry | None) -> tuple[ast.Setting, ...]:
        if entry is None or _is_null(entry.value):
            return ()
        return tuple(
            ast.Setting(
                self.check_ident(e.key, e.span, "a setting name"),
                self.setting(e.value),
                e.span,
            )
            for e in self.entries(entry.value, f"'{entry.key}'")
        )

    def setting(self, node: Node, in_list: bool = False) -> object:
        """A plain value: a number, string, boolean or null, or a list of those (a tuple)."""
        self.visit(node)
        if isinstance(node, SequenceNode) and not in_list:
            return tuple(self.setting(n, in_list=True) for n in node.value)
        if not isinstance(node, ScalarNode) or node.tag not in [_TAG + t for t in _PLAIN_TAGS]:
            got = node.value if isinstance(node, ScalarNode) else _kind(node)
            what = "a number, a string or true/false" + ("" if in_list else ", or a list of those")
            raise ModcError(f"expected {what}, got {got}", self.span(node))
        value = self.constructor.construct_object(node)
        if node.tag == _TAG + "str" and node.style is None and _FLOAT_TEXT.match(value):
            return float(value)  # YAML 1.1 reads 1e-3 as a string
        return value

    # ------------------------------------------------------------ network terms

    def term(self, node: Node) -> ast.Term:
        """An item: an operation name, a {Op: args} mapping, a construct, or a list (Seq)."""
        self.visit(node)
        span = self.span(node)
        if isinstance(node, SequenceNode):
            return ast.Seq(tuple(self.term(n) for n in node.value), span)
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
        first = entries[0]
        self.check_ident(first.key, first.span, "an operation name")
        if len(entries) > 1:
            extra = entries[1]
            hint = did_you_mean(first.key, CONSTRUCTS)
            if hint and extra.key in ("body", "name"):
                raise ModcError(f"unknown construct '{first.key}'", first.span, hint)
            raise ModcError(
                f"unexpected key '{extra.key}' beside operation '{first.key}'",
                extra.span,
                "an operation is a one-key mapping; put it inside: "
                f"{{{first.key}: {{{extra.key}: ...}}}}",
            )
        return self.call(first)

    def op_name(self, node: ScalarNode) -> str:
        """The operation named by a plain string item such as `ReLU`."""
        span, text = self.span(node), node.value
        if node.tag == _TAG + "str" and _IDENT.match(text):
            if text in CONSTRUCTS:
                raise ModcError(
                    f"'{text}' needs a value and a body: {{{text}: ..., body: [...]}}",
                    span,
                )
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
        if node.start_mark.line != node.end_mark.line:
            hint = "this text runs over several lines; is a '- ' item indented too far?"
        raise ModcError(f"expected an operation name or a mapping, got {text!r}", span, hint)

    def call(self, entry: _Entry) -> ast.Call:
        """`{Op: value}`: a scalar is one argument, a list positional ones, a mapping keywords."""
        node = entry.value
        if _is_null(node):
            return ast.Call(entry.key, span=entry.span)
        if isinstance(node, SequenceNode):
            return ast.Call(entry.key, tuple(self.arg(n) for n in node.value), span=entry.span)
        if isinstance(node, ScalarNode):
            return ast.Call(entry.key, (self.arg(node),), span=entry.span)
        name = None
        kwargs = []
        for e in self.entries(node, f"the arguments of '{entry.key}'"):
            if e.key == "name":
                name = self.ident(e.value, "a module name")
            else:
                kwargs.append(
                    (
                        self.check_ident(e.key, e.span, "an argument name"),
                        self.arg(e.value),
                    )
                )
        return ast.Call(entry.key, kwargs=tuple(kwargs), name=name, span=entry.span)

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
            branches = tuple(self.term(n) for n in head.value.value)
            return (ast.Sum if kw == "sum" else ast.Tuple)(branches, head.span)
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
            return parse_expr(text, span)
        if tag == "str":
            text, start, verbatim = self.scalar_text(node)
            return parse_expr(text, start, verbatim=verbatim)
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


def _is_null(node: Node) -> bool:
    return isinstance(node, ScalarNode) and node.tag == _TAG + "null"


def _kind(node: Node) -> str:
    """A node's kind in words, for error messages."""
    if isinstance(node, SequenceNode):
        return "a list"
    if isinstance(node, MappingNode):
        return "a mapping"
    return repr(node.value) if node.value else "nothing"
