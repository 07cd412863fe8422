"""Networks of the Python API: `ast.Term`s built by operators and combinators."""

from __future__ import annotations

import dataclasses
import functools
import inspect
from collections.abc import Callable, Iterable
from pathlib import Path

from modc.api.numbers import Expr, as_expr, here, merged, source_of
from modc.errors import did_you_mean
from modc.ops import OPS
from modc.source import Span
from modc.spec import ast, parse_file
from modc.spec.dsl_terms import RESERVED
from modc.spec.includes import locate, resolve


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
        return _chain(ast.Seq, self, as_net(other), here())

    def __rrshift__(self, other: object) -> Net:
        return _chain(ast.Seq, as_net(other), self, here())

    def __matmul__(self, other: object) -> Net:
        later, first = self, as_net(other)  # Modula's order: `self @ other` runs other first
        if not (later.chain and isinstance(later.node, ast.Seq)):
            return _chain(ast.Seq, first, later, here())
        items = (first.node, *later.node.items)
        return _joined(ast.Seq, items, (first, later), here())

    def __rmatmul__(self, other: object) -> Net:
        return as_net(other).__matmul__(self)

    def __add__(self, other: object) -> Net:
        return _chain(ast.Sum, self, as_net(other), here())

    def __radd__(self, other: object) -> Net:
        return _chain(ast.Sum, as_net(other), self, here())

    def __mul__(self, factor: object) -> Net:
        return NotImplemented if isinstance(factor, Net | tuple) else scale(factor, self)

    __rmul__ = __mul__

    def __truediv__(self, divisor: object) -> Net:
        return scale(1 / as_expr(divisor), self)

    def __pow__(self, count: object) -> Net:
        return repeat(count, self)

    def __gt__(self, other: object) -> bool:
        raise TypeError("in Python, write a >> b to compose (the .modc language's a > b), or b @ a")

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

    def __call__(
        self, *args: object, name: str | None = None, frozen: bool = False, **kwargs: object
    ) -> Net:
        """The operation with arguments; `frozen=True` keeps an atom's weight at its random
        initialisation (mass 0: no step, still in every bound)."""
        net = _call(self.name, args, kwargs, name, {})
        if frozen is not True and frozen is not False:
            raise ValueError(f"frozen= must be True or False, got {frozen!r}")
        if not frozen:
            return net
        return Net(dataclasses.replace(net.node, frozen=True), net.defs, net.params)


class Hole(Expr):
    """A definition's parameter while its body is built: a number, or a network (`f(block)`)."""

    def __init__(self, name: str):
        super().__init__(ast.Name(name, here()))
        self.name = name

    def net(self) -> Net:
        return Net(ast.Call(self.name, span=here()))

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
        names = list(inspect.signature(fn).parameters)
        for taken in (self.name, *names):
            if taken in OPS or taken in RESERVED or not taken.isidentifier():
                raise ValueError(f"'{taken}' is an operation, a keyword or not a name in a spec")
        body = as_net(fn(*(Hole(n) for n in names)))
        span = Span(source_of(fn.__code__.co_filename), fn.__code__.co_firstlineno, 1)
        self.definition = ast.Def(self.name, tuple(names), body.node, span)
        self.defs = merged([body.defs, {self.name: self.definition}])
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
    base = Path(here().source.name)
    target = locate(ast.Include(path, here()), base)
    parsed = parse_file(target, library=True, include=ast.Include(path, here()))
    resolved = resolve(parsed, target, lambda p, inc: parse_file(p, library=True, include=inc))
    return Library({d.name: d for d in resolved.defs})


def seq(*items: object) -> Net:
    """Composition in data-flow order, nested as written (`>>` chains extend one Seq)."""
    if not items:
        raise ValueError("seq() needs at least one network")
    nets = [as_net(i) for i in items]
    if len(nets) == 1:
        return nets[0]
    return _joined(ast.Seq, tuple(n.node for n in nets), nets, here(), chain=False)


def group(network: object) -> Net:
    """Parentheses: `group(a >> b) >> c` nests, where `a >> b >> c` is one chain of three."""
    net = as_net(network)
    return Net(net.node, net.defs, net.params)


def repeat(count: object, body: object, name: str | None = None) -> Net:
    """`count` composed copies of `body` with independent weights (`body ** count`)."""
    n, b = as_expr(count), as_net(body)
    return _wrap(ast.Repeat(n.node, b.node, name, here()), b, n)


def residual(depth: object, body: object, name: str | None = None) -> Net:
    """`((1 - 1/L)·x + (1/L)·body(x)) ** L`, L = depth: sensitivity 1 at any depth."""
    n, b = as_expr(depth), as_net(body)
    return _wrap(ast.Residual(n.node, b.node, name, here()), b, n)


def coupling(f: object, g: object, name: str | None = None) -> Net:
    """An additive coupling block on the feature halves: y1 = x1 + f(x2), y2 = x2 + g(y1),
    exactly invertible (model.inverse)."""
    if name is not None and not (isinstance(name, str) and name.isidentifier()):
        raise ValueError(f"name= must be an identifier, got {name!r}")
    a, b = as_net(f), as_net(g)
    return _joined(
        lambda items, span: ast.Coupling(*items, name, span),
        (a.node, b.node),
        (a, b),
        here(),
        chain=False,
    )


def tare(mass: object, body: object) -> Net:
    """`body` with its masses rescaled to total `mass`."""
    n, b = as_expr(mass), as_net(body)
    return _wrap(ast.Tare(n.node, b.node, here()), b, n)


def scale(factor: object, body: object) -> Net:
    """`factor · body(x)`: sensitivity times |factor|."""
    n, b = as_expr(factor), as_net(body)
    return _wrap(ast.Scale(n.node, b.node, here()), b, n)


def as_net(value: object) -> Net:
    """A network from a Net, a Python tuple of networks (branches) or a definition argument."""
    if isinstance(value, Net):
        return value
    if isinstance(value, Hole):
        return value.net()
    if isinstance(value, tuple) and value:
        nets = [as_net(v) for v in value]
        return _joined(ast.Tuple, tuple(n.node for n in nets), nets, here(), chain=False)
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
    defs = merged(p.defs for p in parts)
    params = merged(p.params for p in parts)
    return Net(kind(items, span), defs, params, chain)


def _wrap(node: ast.Term, body: Net, number: Expr) -> Net:
    return Net(node, body.defs, merged([number.params, body.params]))


def _arg(value: object) -> tuple[ast.Arg, dict, dict]:
    """A call argument: a number, or a network (for a definition that takes one)."""
    if isinstance(value, Net | tuple):
        net = as_net(value)
        return net.node, net.defs, net.params
    e = as_expr(value)
    return e.node, {}, e.params


def _call(
    op: str, args: tuple, kwargs: dict, name: str | None, defs: dict, params: dict | None = None
) -> Net:
    span = here()
    if name is not None and not (isinstance(name, str) and name.isidentifier()):
        raise ValueError(f"name= must be an identifier, got {name!r}")
    values = [_arg(a) for a in args]
    named = [(k, _arg(v)) for k, v in kwargs.items()]
    given = [*values, *(v for _, v in named)]
    defs = merged([defs, *(d for _, d, _ in given)])
    params = merged([params or {}, *(p for _, _, p in given)])
    node = ast.Call(op, tuple(v[0] for v in values), tuple((k, v[0]) for k, v in named), name, span)
    return Net(node, defs, params)
