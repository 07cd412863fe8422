"""Networks written in Python: the spec AST that the YAML and `.modc` front ends build.

    from modc import api as m

    width, depth = m.param("width", 256), m.param("depth", 3)
    net = m.Flatten >> m.repeat(depth - 1, m.Linear(width) >> m.ReLU, name="hidden") \\
        >> m.Linear(out=10, name="head")
    build = m.build(m.spec(net, name="mlp", input=(1, 28, 28), output=10))

Every operation of the library is an attribute (`m.Linear`, `m.ReLU`; call it for
arguments, `name=` and `mass=`). Networks combine as in the `.modc` language: `a >> b`
composes in data-flow order (the language's `a > b`, and as loose against `+`, `*` and
`**`), `a @ b` in Modula's order (b first), `a + b` sums branches, `0.5 * a` and `a / 2`
scale, `a ** n` repeats, and a Python tuple `(a, b)` is a tuple of branches wherever a
network goes. `repeat`, `residual`, `tare` and `seq` are functions, `group` is
parentheses (`a >> b >> c` is one chain of three, as in the language), `@define` makes a
function a named definition, `include` brings in a spec file's definitions (the standard
library's too), and `param` declares a spec parameter. Numbers combine with
+ - * / // % ** and `sqrt`, `min`, `max`, `floor`, `ceil` into modc's arithmetic, never
evaluated here; Python computes `1/3` as a float before modc sees it, so write
`Fraction(1, 3)` or `m.num(1) / 3` for the exact third.

Each node carries a span at the Python line that made it, so elaboration errors point
there, and `spec`, `compile`, `build` and `load` go through the same elaboration, theory
and code generation as a spec file: there is no second implementation.
"""

from __future__ import annotations

import functools
import inspect
import linecache
import math
import sys
from collections.abc import Callable, Iterable, Mapping
from fractions import Fraction
from pathlib import Path
from types import FrameType

from modc import compiler
from modc.errors import did_you_mean
from modc.graph import ir
from modc.ops import OPS
from modc.source import Source, Span
from modc.spec import ast, parse_file
from modc.spec.expr import FUNCTIONS
from modc.spec.includes import locate, resolve
from modc.theory.analysis import Analysis

Number = int | float | Fraction

__all__ = [
    "Expr",
    "Net",
    "build",
    "compile",
    "define",
    "group",
    "include",
    "load",
    "num",
    "param",
    "repeat",
    "residual",
    "scale",
    "seq",
    "spec",
    "tare",
    *FUNCTIONS,
    *OPS,
]

# ---------------------------------------------------------------- spans at the call site


@functools.cache
def _source(filename: str) -> Source:
    return Source(filename, "".join(linecache.getlines(filename)))


def _here() -> Span:
    """The span of the innermost call outside this module: where the user wrote it."""
    frame: FrameType | None = sys._getframe(1)
    while frame is not None and frame.f_code.co_filename == __file__:
        frame = frame.f_back
    if frame is None:
        return Span(Source("<python>", ""), 1, 1)
    line, col, width = frame.f_lineno, 1, 1
    positions = getattr(frame.f_code, "co_positions", None)  # Python 3.11+
    if positions is not None:
        for i, (start, end, c0, c1) in enumerate(positions()):
            if i == frame.f_lasti // 2:
                if start is not None and c0 is not None:
                    line, col = start, c0 + 1
                    width = c1 - c0 if end == start and c1 is not None else 1
                break
    return Span(_source(frame.f_code.co_filename), line, col, max(width, 1))


# ---------------------------------------------------------------- numbers


class Expr:
    """A number as modc's arithmetic writes it: an `ast.Expr`, combined with + - * / // % **.

    `params` holds the spec parameters it uses, so a spec finds them without being told.
    """

    def __init__(self, node: ast.Expr, params: dict[str, ast.Param] | None = None):
        self.node = node
        self.params = dict(params or {})

    def __neg__(self) -> Expr:
        return Expr(ast.Neg(self.node, _here()), self.params)

    def __bool__(self) -> bool:
        raise TypeError("a modc number is symbolic: it has no truth value in Python")

    def __repr__(self) -> str:
        from modc.spec.expr import format_expr

        return f"Expr({format_expr(self.node)})"


def _arithmetic(op: str, reflected: bool) -> Callable[[Expr, object], Expr]:
    """An operator method of Expr: `self op other`, or `other op self` when reflected; a
    network on either side is left to Net (a scalar multiple, or a definition's argument)."""

    def method(self: Expr, other: object) -> Expr:
        if isinstance(other, Net | tuple):
            return NotImplemented
        a, b = (_expr(other), self) if reflected else (self, _expr(other))
        return Expr(ast.BinOp(op, a.node, b.node, _here()), {**a.params, **b.params})

    return method


for _name, _op in [("add", "+"), ("sub", "-"), ("mul", "*"), ("truediv", "/"),
                   ("floordiv", "//"), ("mod", "%"), ("pow", "^")]:  # fmt: skip
    setattr(Expr, f"__{_name}__", _arithmetic(_op, reflected=False))
    setattr(Expr, f"__r{_name}__", _arithmetic(_op, reflected=True))


def num(value: Number | Expr) -> Expr:
    """A number as an Expr: `num(1) / 3` is the exact third, as `1/3` in a spec."""
    return _expr(value)


def param(name: str, default: Number | Expr) -> Expr:
    """A spec parameter with its default (overridable with `params=` or `-p name=value`)."""
    if not name.isidentifier():
        raise ValueError(f"a parameter name must be an identifier, got {name!r}")
    value = _expr(default)
    declared = ast.Param(name, value.node, _here())
    return Expr(ast.Name(name, declared.span), {**value.params, name: declared})


def _expr(value: object) -> Expr:
    """A Python number (int, float, Fraction) or an Expr, as an Expr; a network is refused."""
    if isinstance(value, Expr):
        return value
    span = _here()
    if isinstance(value, bool) or not isinstance(value, Number):
        raise TypeError(f"expected a number, got {type(value).__name__}: {value!r}")
    if isinstance(value, Fraction) and value.denominator != 1:
        top, bottom = _expr(value.numerator), _expr(value.denominator)
        return Expr(ast.BinOp("/", top.node, bottom.node, span))
    if isinstance(value, float) and not math.isfinite(value):
        raise ValueError(f"a spec number must be finite, got {value}")
    if value < 0:
        return Expr(ast.Neg(_expr(-value).node, span))
    text = repr(value) if isinstance(value, float) else str(int(value))
    return Expr(ast.Num(text, span))


def _function(name: str) -> Callable[..., Expr]:
    def call(*args: Number | Expr) -> Expr:
        values = [_expr(a) for a in args]
        params = {k: v for e in values for k, v in e.params.items()}
        return Expr(ast.Func(name, tuple(e.node for e in values), _here()), params)

    call.__name__ = call.__qualname__ = name
    call.__doc__ = f"{name}(...) in a spec number (modc's arithmetic, never evaluated here)."
    return call


# ---------------------------------------------------------------- networks


class Net:
    """A network: an `ast.Term`, with the definitions and parameters it uses."""

    def __init__(
        self,
        node: ast.Term,
        defs: dict[str, ast.Def] | None = None,
        params: dict[str, ast.Param] | None = None,
        chain: bool = False,
    ):
        self.node = node
        self.defs = dict(defs or {})
        self.params = dict(params or {})
        self.chain = chain  # made by >>, @ or +: a following operator extends it

    def __rshift__(self, other: object) -> Net:
        return _chain(ast.Seq, self, _net(other), _here())

    def __rrshift__(self, other: object) -> Net:
        return _chain(ast.Seq, _net(other), self, _here())

    def __matmul__(self, other: object) -> Net:
        later, first = self, _net(other)  # Modula's order: `self @ other` runs other first
        if not (later.chain and isinstance(later.node, ast.Seq)):
            return _chain(ast.Seq, first, later, _here())
        items = (first.node, *later.node.items)
        return _joined(ast.Seq, items, (first, later), _here())

    def __rmatmul__(self, other: object) -> Net:
        return _net(other).__matmul__(self)

    def __add__(self, other: object) -> Net:
        return _chain(ast.Sum, self, _net(other), _here())

    def __radd__(self, other: object) -> Net:
        return _chain(ast.Sum, _net(other), self, _here())

    def __mul__(self, factor: object) -> Net:
        return scale(factor, self)

    __rmul__ = __mul__

    def __truediv__(self, divisor: object) -> Net:
        return scale(1 / _expr(divisor), self)

    def __pow__(self, count: object) -> Net:
        return repeat(count, self)

    def __gt__(self, other: object) -> bool:
        raise TypeError(
            "in Python, write a >> b to compose (the .modc language's a > b), or b @ a"
        )

    __lt__ = __ge__ = __le__ = __gt__

    def __bool__(self) -> bool:
        raise TypeError("a network has no truth value (did you chain comparisons? use >>)")

    def __repr__(self) -> str:
        from modc.spec.print_dsl import term

        return f"Net({term(self.node)})"


class Op(Net):
    """A library operation: a network as it stands (`m.ReLU`), or called with arguments."""

    def __init__(self, name: str, span: Span):
        super().__init__(ast.Call(name, span=span))
        self.name = name

    def __call__(self, *args: object, name: str | None = None, **kwargs: object) -> Net:
        return _call(self.name, args, kwargs, name, {})


class Hole(Expr):
    """A definition's parameter while its body is built: a number, or a network (`f(block)`)."""

    def __init__(self, name: str):
        super().__init__(ast.Name(name, _here()))
        self.name = name

    def net(self) -> Net:
        return Net(ast.Call(self.name, span=_here()))

    def __rshift__(self, other: object) -> Net:
        return self.net() >> other

    def __rrshift__(self, other: object) -> Net:
        return other >> self.net()

    def __matmul__(self, other: object) -> Net:
        return self.net() @ other

    def __rmatmul__(self, other: object) -> Net:
        return other @ self.net()


class Definition:
    """A named definition made by `@define`: calling it uses it, as `block(d)` in a spec."""

    def __init__(self, fn: Callable[..., object]):
        self.name = fn.__name__
        if self.name in OPS:
            raise ValueError(f"a definition cannot take the name of the operation {self.name}")
        names = list(inspect.signature(fn).parameters)
        body = _net(fn(*(Hole(n) for n in names)))
        span = Span(_source(fn.__code__.co_filename), fn.__code__.co_firstlineno, 1)
        self.definition = ast.Def(self.name, tuple(names), body.node, span)
        self.defs = {**body.defs, self.name: self.definition}
        self.params = body.params
        functools.update_wrapper(self, fn)

    def __call__(self, *args: object, name: str | None = None, **kwargs: object) -> Net:
        return _call(self.name, args, kwargs, name, self.defs, self.params)


def define(fn: Callable[..., object]) -> Definition:
    """Make a Python function a named definition, as `def block(d) = ...` in a spec.

    The body is built once, with each argument standing for itself; a call then writes
    `block(256)` into the spec, and the spec carries the definition.
    """
    return Definition(fn)


class Library:
    """The definitions of a spec file, callable from Python: `include("std/gpt.modc").gpt(...)`."""

    def __init__(self, defs: dict[str, ast.Def]):
        self._defs = defs

    def __getattr__(self, definition: str) -> Callable[..., Net]:
        if definition not in self._defs:
            hint = did_you_mean(definition, self._defs)
            note = f"; {hint}" if hint else ""
            raise AttributeError(f"the library has no definition {definition!r}{note}")

        def use(*args: object, name: str | None = None, **kwargs: object) -> Net:
            return _call(definition, args, kwargs, name, self._defs)

        use.__name__ = definition
        return use

    def __dir__(self) -> list[str]:
        return sorted(self._defs)


def include(path: str) -> Library:
    """The definitions of a spec file (and of the files it includes), as `include "path"`
    in a spec: `std/NAME.modc` is the standard library, other paths are relative to the
    Python file that includes them. A spec that uses one carries all of them."""
    base = Path(_here().source.name)
    target = locate(ast.Include(path, _here()), base)
    parsed = parse_file(target, library=True, include=ast.Include(path, _here()))
    resolved = resolve(parsed, target, lambda p, inc: parse_file(p, library=True, include=inc))
    return Library({d.name: d for d in resolved.defs})


def seq(*items: object) -> Net:
    """Composition in data-flow order, nested as written (`>>` chains extend one Seq)."""
    if not items:
        raise ValueError("seq() needs at least one network")
    nets = [_net(i) for i in items]
    if len(nets) == 1:
        return nets[0]
    return _joined(ast.Seq, tuple(n.node for n in nets), nets, _here(), chain=False)


def group(network: object) -> Net:
    """Parentheses: `group(a >> b) >> c` nests, where `a >> b >> c` is one chain of three."""
    net = _net(network)
    return Net(net.node, net.defs, net.params)


def repeat(count: object, body: object, name: str | None = None) -> Net:
    """`count` composed copies of `body` with independent weights (`body ** count`)."""
    n, b = _expr(count), _net(body)
    return _wrap(ast.Repeat(n.node, b.node, name, _here()), b, n)


def residual(depth: object, body: object, name: str | None = None) -> Net:
    """`((1 - 1/L)·x + (1/L)·body(x)) ** L`, L = depth: sensitivity 1 at any depth."""
    n, b = _expr(depth), _net(body)
    return _wrap(ast.Residual(n.node, b.node, name, _here()), b, n)


def tare(mass: object, body: object) -> Net:
    """`body` with its masses rescaled to total `mass`."""
    n, b = _expr(mass), _net(body)
    return _wrap(ast.Tare(n.node, b.node, _here()), b, n)


def scale(factor: object, body: object) -> Net:
    """`factor · body(x)`: sensitivity times |factor|."""
    if isinstance(factor, Net | tuple):
        return NotImplemented
    n, b = _expr(factor), _net(body)
    return _wrap(ast.Scale(n.node, b.node, _here()), b, n)


def _net(value: object) -> Net:
    """A network from a Net, a Python tuple of networks (branches) or a definition argument."""
    if isinstance(value, Net):
        return value
    if isinstance(value, Hole):
        return value.net()
    if isinstance(value, tuple) and value:
        nets = [_net(v) for v in value]
        return _joined(ast.Tuple, tuple(n.node for n in nets), nets, _here(), chain=False)
    if isinstance(value, Definition):
        raise TypeError(f"call the definition: {value.name}(...)")
    raise TypeError(f"expected a network, got {type(value).__name__}: {value!r}")


def _chain(kind: type, left: Net, right: Net, span: Span) -> Net:
    """`left op right`, extending `left` when it is an open chain of the same operator."""
    if left.chain and isinstance(left.node, kind):
        items = (*left.node.items, right.node)
    else:
        items = (left.node, right.node)
    return _joined(kind, items, (left, right), span)


def _joined(kind: type, items: tuple, parts: Iterable[Net], span: Span, chain: bool = True) -> Net:
    parts = list(parts)
    defs = {k: v for p in parts for k, v in p.defs.items()}
    params = {k: v for p in parts for k, v in p.params.items()}
    return Net(kind(items, span), defs, params, chain)


def _wrap(node: ast.Term, body: Net, number: Expr) -> Net:
    return Net(node, body.defs, {**number.params, **body.params})


def _arg(value: object) -> tuple[ast.Arg, dict, dict]:
    """A call argument: a number, or a network (for a definition that takes one)."""
    if isinstance(value, Net | tuple):
        net = _net(value)
        return net.node, net.defs, net.params
    e = _expr(value)
    return e.node, {}, e.params


def _call(
    op: str, args: tuple, kwargs: dict, name: str | None, defs: dict, params: dict | None = None
) -> Net:
    span = _here()
    if name is not None and not (isinstance(name, str) and name.isidentifier()):
        raise ValueError(f"name= must be an identifier, got {name!r}")
    values = [_arg(a) for a in args]
    named = [(k, _arg(v)) for k, v in kwargs.items()]
    defs = {**defs}
    params = dict(params or {})
    for _, d, p in [*values, *(v for _, v in named)]:
        defs.update(d)
        params.update(p)
    node = ast.Call(
        op, tuple(v[0] for v in values), tuple((k, v[0]) for k, v in named), name, span
    )
    return Net(node, defs, params)


# ---------------------------------------------------------------- whole specs


def spec(
    network: object,
    *,
    input: int | Expr | Iterable[int | Expr],
    name: str = "net",
    output: int | Expr | Iterable[int | Expr] | None = None,
    params: Iterable[Expr] | None = None,
    train: Mapping[str, object] | None = None,
    optimizer: Mapping[str, object] | None = None,
) -> ast.Spec:
    """A whole spec, as a spec file would give it: `compile`, `build` and `load` take it.

    `params` orders the parameters (they must all be `param`s); by default they are those
    the network, input and output use, in the order they were declared.
    """
    span = _here()
    net = _net(network)
    sizes = [_expr(e) for e in _sizes(input)]
    outs = None if output is None else [_expr(e) for e in _sizes(output)]
    used = {**net.params}
    for e in [*sizes, *(outs or [])]:
        used.update(e.params)
    if params is None:
        at = [(p.span.source.name, p.span.line, p.span.col) for p in used.values()]
        declared = [p for _, p in sorted(zip(at, used.values(), strict=True), key=lambda x: x[0])]
    else:
        declared = [_declared(p) for p in params]
        missing = sorted(set(used) - {p.name for p in declared})
        if missing:
            raise ValueError(f"params= leaves out {', '.join(missing)}, which the network uses")
    return ast.Spec(
        name=name,
        params=tuple(declared),
        input=tuple(e.node for e in sizes),
        network=net.node,
        defs=tuple(net.defs.values()),
        output=None if outs is None else tuple(e.node for e in outs),
        train=_settings(train, span),
        optimizer=_settings(optimizer, span),
        span=span,
    )


def _sizes(value: object) -> list:
    return list(value) if isinstance(value, Iterable) else [value]


def _declared(p: Expr) -> ast.Param:
    if not (isinstance(p, Expr) and isinstance(p.node, ast.Name) and p.node.id in p.params):
        raise TypeError(f"params= takes the values of param(...), got {p!r}")
    return p.params[p.node.id]


PLAIN = (str, int, float, bool, type(None))


def _settings(values: Mapping[str, object] | None, span: Span) -> tuple[ast.Setting, ...]:
    """`train=` or `optimizer=` as the front ends give them: plain values or lists of them."""
    out = []
    for key, value in (values or {}).items():
        items = value if isinstance(value, list | tuple) else [value]
        if not (isinstance(key, str) and all(isinstance(v, PLAIN) for v in items)):
            raise TypeError(f"a setting is a name and a plain value, got {key!r}: {value!r}")
        if any(isinstance(v, float) and not math.isfinite(v) for v in items):
            raise ValueError(f"setting {key!r} must be finite, got {value!r}")
        out.append(ast.Setting(key, tuple(value) if isinstance(value, list) else value, span))
    return tuple(out)


def _as_spec(network: object, fields: dict) -> ast.Spec:
    return network if isinstance(network, ast.Spec) else spec(network, **fields)


def load(
    network: object, params: Mapping[str, object] = {}, free: Iterable[str] = (), **fields
) -> tuple[ir.Network, Analysis]:
    """Elaborate and analyse a spec (or a network with `spec`'s fields): IR and theory."""
    return compiler.load(_as_spec(network, fields), params, tuple(free))


def compile(
    network: object, out: str | Path | None = None, params: Mapping[str, object] = {}, **fields
) -> Path:
    """Write the build of a spec (or a network with `spec`'s fields), as `modc compile`."""
    return compiler.compile_spec(_as_spec(network, fields), out, params)


def build(
    network: object, params: Mapping[str, object] = {}, out: str | Path | None = None, **fields
) -> compiler.Build:
    """Compile and import a spec (or a network with `spec`'s fields), as `modc.build`."""
    return compiler.build(_as_spec(network, fields), params, out)


# ---------------------------------------------------------------- module attributes


def __getattr__(name: str) -> object:
    """`m.Linear`, `m.ReLU`, ...: every operation of the library; `m.sqrt`, `m.max`, ..."""
    if name in OPS:
        return Op(name, _here())
    if name in FUNCTIONS:
        return _function(name)
    hint = did_you_mean(name, [*OPS, *FUNCTIONS])
    raise AttributeError(f"modc.api has no {name!r}" + (f"; {hint}" if hint else ""))


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})

