"""Print a spec AST as .modc text that the DSL front end reads back to an equal AST."""

from __future__ import annotations

from modc.spec import ast
from modc.spec.expr import _format as _format_expr
from modc.spec.expr import format_expr

#: Binding levels of network operators, loosest first (grammars/modc.lark).
SEQ, SUM, SCALE, REPEAT, ATOM = 1, 2, 3, 5, 6
WIDTH = 88
_INDENT = "    "
_WORDS = ("true", "false", "null")


def to_dsl(spec: ast.Spec) -> str:
    """The whole spec as .modc text, one statement per line."""
    out = [f"name {quote(spec.name)}"]
    out += [f"include {quote(i.path)}" for i in spec.includes]
    out += [f"param {p.name} = {format_expr(p.default)}" for p in spec.params]
    if spec.input:
        out.append(f"input {_sizes(spec.input)}")
    if spec.output is not None:
        out.append(f"output {_sizes(spec.output)}")
    for d in spec.defs:
        head = f"def {d.name}({', '.join(d.params)})" if d.params else f"def {d.name}"
        out.append(f"{head} = {layout(d.body, 0, len(head) + 3)}")
    if spec.network is not None:
        out.append(f"network = {layout(spec.network, 0, 10)}")
    for section, settings in (("train", spec.train), ("optimizer", spec.optimizer)):
        if settings:
            body = "".join(f"\n{_INDENT}{s.key} = {value(s.value)}" for s in settings)
            out.append(f"{section} {{{body}\n}}")
    return "\n".join(out) + "\n"


def _sizes(sizes: tuple[ast.Expr, ...]) -> str:
    if len(sizes) == 1 and isinstance(sizes[0], (ast.Num, ast.Name)):
        return format_expr(sizes[0])
    return "(" + ", ".join(format_expr(e) for e in sizes) + ")"


# ---------------------------------------------------------------- network terms


def layout(t: ast.Term, indent: int, used: int) -> str:
    """`t` on one line if it fits after `used` columns, else broken at its operators."""
    text = term(t)
    if used + len(text) <= WIDTH or "\n" in text:
        return text
    pad = " " * (indent + len(_INDENT))
    if isinstance(t, (ast.Seq, ast.Sum)):
        op, level = (">", SEQ) if isinstance(t, ast.Seq) else ("+", SUM)
        parts = [_wrap_layout(i, level, indent + len(_INDENT)) for i in t.items]
        return f"\n{pad}{op} ".join(parts)
    if isinstance(t, (ast.Repeat, ast.Residual, ast.Tare)) and _is_block(t):
        head, body = _block_head(t), t.body
        inner = layout(body, indent + len(_INDENT), indent + len(_INDENT))
        return f"{head} {{\n{pad}{inner}\n{' ' * indent}}}"
    return text


def _wrap_layout(t: ast.Term, level: int, indent: int) -> str:
    """An operand laid out, in parentheses if it binds no tighter than `level`."""
    text = layout(t, indent, indent + 2)
    return f"({text})" if _level(t) <= level else text


def term(t: ast.Term, explicit: bool = False) -> str:
    """`t` on one line. `explicit` writes `f()` for a bare name, where a number could be read."""
    return _term(t, explicit)[0]


def _level(t: ast.Term) -> int:
    return _term(t)[1]


def _term(t: ast.Term, explicit: bool = False) -> tuple[str, int]:
    """The text of `t` and how tightly its outermost operator binds."""
    if isinstance(t, ast.Call):
        return _call(t, explicit), ATOM
    if isinstance(t, ast.Seq):
        return " > ".join(_wrap(i, SEQ, explicit) for i in t.items), SEQ
    if isinstance(t, ast.Sum):
        return " + ".join(_wrap(i, SUM, explicit) for i in t.items), SUM
    if isinstance(t, ast.Tuple):
        items = [term(i, explicit) for i in t.items]
        return "(" + ", ".join(items) + ("," if len(items) == 1 else "") + ")", ATOM
    if isinstance(t, ast.Coupling):
        name = f", name={t.name}" if t.name else ""
        return f"coupling({arg(t.f)}, {arg(t.g)}{name})", ATOM
    if isinstance(t, ast.Scale):
        factor = _expr_at(t.factor, 2)
        return f"{factor} * {_wrap(t.body, SCALE, explicit)}", SCALE
    if _is_block(t):
        return f"{_block_head(t)} {{ {term(t.body, explicit)} }}", ATOM
    if isinstance(t, ast.Repeat):
        return f"{_wrap(t.body, REPEAT, explicit)} ** {_expr_at(t.count, 3)}", REPEAT
    raise TypeError(f"not a network term: {t!r}")


def _is_block(t: ast.Term) -> bool:
    """Whether `t` is written `kw(value) { body }` (a named repeat, a residual, a tare)."""
    return isinstance(t, (ast.Residual, ast.Tare)) or (isinstance(t, ast.Repeat) and bool(t.name))


def _block_head(t: ast.Repeat | ast.Residual | ast.Tare) -> str:
    if isinstance(t, ast.Tare):
        return f"tare({format_expr(t.mass)})"
    kw = "repeat" if isinstance(t, ast.Repeat) else "residual"
    value = t.count if isinstance(t, ast.Repeat) else t.depth
    name = f", name={t.name}" if t.name else ""
    return f"{kw}({format_expr(value)}{name})"


def _wrap(t: ast.Term, level: int, explicit: bool) -> str:
    """`t` in parentheses if it binds no tighter than `level`."""
    text, own = _term(t, explicit)
    return f"({text})" if own <= level else text


def _expr_at(e: ast.Expr, least: int) -> str:
    """An expression, in parentheses unless it binds at least as tightly as `least`."""
    text, prec = _format_expr(e)
    return text if prec >= least else f"({text})"


def _call(c: ast.Call, explicit: bool) -> str:
    """`Op`, or `Op(args, key=value, name=n)`."""
    parts = [arg(a) for a in c.args]
    parts += [f"{k}={arg(v)}" for k, v in c.kwargs]
    if c.name is not None:
        parts.append(f"name={c.name}")
    if c.frozen:
        parts.append("frozen=true")
    if not parts and not explicit:
        return c.op
    return f"{c.op}({', '.join(parts)})"


def arg(a: ast.Arg) -> str:
    """An argument: an expression, or a network written so that it cannot read as one."""
    if isinstance(a, (ast.Num, ast.Name, ast.BinOp, ast.Neg, ast.Func)):
        return format_expr(a)
    return term(a, explicit=_reads_as_number(a))


def _reads_as_number(t: ast.Term) -> bool:
    """Whether `t`, printed plainly, would be plain arithmetic (`a + b`, `2 * f`)."""
    if isinstance(t, ast.Call):
        return not (t.args or t.kwargs or t.name is not None or t.frozen)
    if isinstance(t, ast.Sum):
        return all(_reads_as_number(i) for i in t.items)
    if isinstance(t, ast.Scale) or (isinstance(t, ast.Repeat) and not t.name):
        return _reads_as_number(t.body)
    return False


# ---------------------------------------------------------------- settings


def value(v: object) -> str:
    """A setting's value as DSL text."""
    if v is True or v is False:
        return "true" if v else "false"
    if v is None:
        return "null"
    if isinstance(v, tuple):
        return "[" + ", ".join(value(x) for x in v) + "]"
    if isinstance(v, (int, float)):
        return repr(v)
    text = str(v)
    if text.isidentifier() and text.isascii() and text not in _WORDS:
        return text
    return quote(text)


def quote(text: str) -> str:
    """A double-quoted DSL string; every character that is not plain is escaped."""
    out = []
    for c in text:
        if c in '"\\':
            out.append("\\" + c)
        elif c == "\n":
            out.append("\\n")
        elif c == "\t":
            out.append("\\t")
        elif c.isprintable() or (c == " "):
            out.append(c)
        elif ord(c) < 0x100:
            out.append(f"\\x{ord(c):02x}")
        elif ord(c) < 0x10000:
            out.append(f"\\u{ord(c):04x}")
        else:
            out.append(f"\\U{ord(c):08x}")
    return '"' + "".join(out) + '"'
