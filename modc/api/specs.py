"""Whole specs from the Python API, and the pipeline's entry points that take them."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from pathlib import Path

from modc import compiler
from modc.api.networks import as_net
from modc.api.numbers import Expr, as_expr, here, merged
from modc.graph import ir
from modc.source import Span
from modc.spec import ast
from modc.theory.analysis import Analysis


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
    span = here()
    net = as_net(network)
    sizes = [as_expr(e) for e in _sizes(input)]
    outs = None if output is None else [as_expr(e) for e in _sizes(output)]
    used = merged([net.params, *(e.params for e in [*sizes, *(outs or [])])])
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
