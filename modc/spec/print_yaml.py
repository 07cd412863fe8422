"""Print a spec AST as YAML that the YAML front end reads back to an equal AST.

The spec is first turned into a small tree of mappings, lists and scalars (each scalar
remembering what it is, so that it is quoted only when YAML would read it otherwise),
then written in block style, with short lists and mappings in flow style.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import yaml

from modc.spec import ast
from modc.spec.expr import format_expr

_RESOLVER = yaml.resolver.Resolver()
_STR = "tag:yaml.org,2002:str"
_PLAIN_EXPR = re.compile(r"[A-Za-z0-9_.()+\-*/^%, ]+\Z")
_PLAIN_WORD = re.compile(r"[A-Za-z_][A-Za-z0-9_./-]*\Z")
_INT = re.compile(r"-?[1-9][0-9]*\Z|0\Z")
_FLOW_WIDTH = 72


@dataclass(frozen=True)
class Scalar:
    """A scalar and its kind: expr, word (identifier), text (any string) or raw (as is)."""

    kind: str
    text: str


class Map(list):
    """A mapping: a list of (key, node) pairs, in order."""


class BlockMap(Map):
    """A mapping written in block style, one key per line (params, settings, defs)."""


class Block(list):
    """A list written in block style (a network's items), never in flow style."""


Node = Scalar | Map | list


def to_yaml(spec: ast.Spec) -> str:
    """The whole spec as YAML text."""
    top = Map([("name", Scalar("text", spec.name))])
    if spec.includes:
        top.append(("include", [Scalar("text", i.path) for i in spec.includes]))
    if spec.params:
        top.append(("params", BlockMap((p.name, _expr(p.default)) for p in spec.params)))
    if spec.input:
        top.append(("input", [_expr(e) for e in spec.input]))
    if spec.output is not None:
        top.append(("output", [_expr(e) for e in spec.output]))
    if spec.network is not None:
        top.append(("network", _items(spec.network)))
    if spec.defs:
        top.append(("defs", BlockMap((d.name, _definition(d)) for d in spec.defs)))
    for key, settings in (("train", spec.train), ("optimizer", spec.optimizer)):
        if settings:
            top.append((key, BlockMap((s.key, _setting(s.value)) for s in settings)))
    return "\n".join(_block_map(top, 0)) + "\n"


# ---------------------------------------------------------------- spec → nodes


def _expr(e: ast.Expr) -> Scalar:
    return Scalar("expr", format_expr(e))


def _definition(d: ast.Def) -> Map:
    out = Map()
    if d.params:
        out.append(("params", [Scalar("word", p) for p in d.params]))
    out.append(("body", _items(d.body)))
    return out


def _items(t: ast.Term) -> Block:
    """A network as a list of items: a sequence's items, or the one item."""
    return Block(_item(i) for i in t.items) if isinstance(t, ast.Seq) else Block([_item(t)])


def _item(t: ast.Term) -> Node:
    """One network term as a YAML item."""
    if isinstance(t, ast.Seq):
        return _items(t)
    if isinstance(t, ast.Call):
        return _call(t)
    if isinstance(t, (ast.Sum, ast.Tuple)):
        key = "sum" if isinstance(t, ast.Sum) else "tuple"
        return Map([(key, Block(_item(i) for i in t.items))])
    if isinstance(t, ast.Coupling):
        head = [("coupling", Block([_item(t.f), _item(t.g)]))]
        if t.name:
            head.append(("name", Scalar("word", t.name)))
        return Map(head)
    if isinstance(t, ast.Repeat):
        head = [("repeat", _expr(t.count))]
    elif isinstance(t, ast.Residual):
        head = [("residual", _expr(t.depth))]
    elif isinstance(t, ast.Tare):
        head = [("tare", _expr(t.mass))]
    elif isinstance(t, ast.Scale):
        head = [("scale", _expr(t.factor))]
    else:
        raise TypeError(f"not a network term: {t!r}")
    if getattr(t, "name", None):
        head.append(("name", Scalar("word", t.name)))
    return Map([*head, ("body", _items(t.body))])


def _call(c: ast.Call) -> Node:
    """`Op`, `{Op: arg}`, `{Op: [args]}`, `{Op: {key: arg}}`, or `{Op: args, key: arg}`."""
    named = [(k, _arg(v)) for k, v in c.kwargs]
    if c.name is not None:
        named.append(("name", Scalar("word", c.name)))
    if c.frozen:
        named.append(("frozen", Scalar("raw", "true")))
    if not c.args:
        return Map([(c.op, Map(named))]) if named else Scalar("word", c.op)
    args = [_arg(a) for a in c.args]
    value = args[0] if len(args) == 1 and isinstance(args[0], Scalar) else args
    return Map([(c.op, value), *named])


def _arg(a: ast.Arg) -> Node:
    """An expression is a scalar; a network is a list of items (so never read as a number)."""
    if isinstance(a, (ast.Num, ast.Name, ast.BinOp, ast.Neg, ast.Func)):
        return _expr(a)
    return _items(a)


def _setting(v: object) -> Node:
    if isinstance(v, tuple):
        return [_setting(x) for x in v]
    if v is True or v is False:
        return Scalar("raw", "true" if v else "false")
    if v is None:
        return Scalar("raw", "null")
    if isinstance(v, (int, float)):
        return Scalar("raw", repr(v))
    return Scalar("text", str(v))


# ---------------------------------------------------------------- nodes → text


def scalar(s: Scalar, flow: bool) -> str:
    """A scalar's text, quoted when YAML would read the plain text as something else."""
    if s.kind == "raw":
        return s.text
    tag = _RESOLVER.resolve(yaml.ScalarNode, s.text, (True, False))
    if s.kind == "expr":
        plain = _PLAIN_EXPR.match(s.text) and not (flow and "," in s.text)
        number = tag != _STR and (tag.endswith("float") or _INT.match(s.text))
        if plain and (tag == _STR or number):
            return s.text
        return "'" + s.text + "'"
    if tag == _STR and _PLAIN_WORD.match(s.text):
        return s.text
    return _double_quoted(s.text)


def _double_quoted(text: str) -> str:
    """A YAML double-quoted scalar; anything but plain printable text is escaped."""
    out = []
    for c in text:
        code = ord(c)
        if c in '"\\':
            out.append("\\" + c)
        elif 0x20 <= code < 0x7F or (0xA0 <= code <= 0xFFFD and code not in (0x2028, 0x2029)):
            out.append(c if not 0xD800 <= code <= 0xDFFF else f"\\u{code:04x}")
        elif code < 0x100:
            out.append(f"\\x{code:02x}")
        elif code < 0x10000:
            out.append(f"\\u{code:04x}")
        else:
            out.append(c if code <= 0x10FFFF and c.isprintable() else f"\\U{code:08x}")
    return '"' + "".join(out) + '"'


def _flow(node: Node) -> str:
    if isinstance(node, Scalar):
        return scalar(node, flow=True)
    if isinstance(node, Map):
        return "{" + ", ".join(f"{k}: {_flow(v)}" for k, v in node) + "}"
    return "[" + ", ".join(_flow(v) for v in node) + "]"


def _fits_flow(node: Node) -> bool:
    """Whether a list or mapping is short and simple enough to write on one line."""
    if isinstance(node, (Block, BlockMap)):
        return False
    inner = [v for _, v in node] if isinstance(node, Map) else list(node)
    if any(isinstance(v, (list, Map)) and not _fits_flow(v) for v in inner):
        return False
    return len(_flow(node)) <= _FLOW_WIDTH


def _block_map(m: Map, indent: int) -> list[str]:
    pad, lines = " " * indent, []
    for key, v in m:
        if isinstance(v, Scalar):
            lines.append(f"{pad}{key}: {scalar(v, flow=False)}")
        elif not v:
            lines.append(f"{pad}{key}: {'{}' if isinstance(v, Map) else '[]'}")
        elif _fits_flow(v):
            lines.append(f"{pad}{key}: {_flow(v)}")
        else:
            lines.append(f"{pad}{key}:")
            lines += _block(v, indent + 2)
    return lines


def _block(node: Map | list, indent: int) -> list[str]:
    if isinstance(node, Map):
        return _block_map(node, indent)
    pad, lines = " " * indent, []
    for v in node:
        if isinstance(v, Scalar):
            lines.append(f"{pad}- {scalar(v, flow=False)}")
        elif isinstance(v, Map):
            inner = _block_map(v, indent + 2)
            lines.append(f"{pad}- {inner[0][indent + 2 :]}")
            lines += inner[1:]
        elif _fits_flow(v):
            lines.append(f"{pad}- {_flow(v)}")
        else:
            lines.append(f"{pad}-")
            lines += _block(v, indent + 2)
    return lines
