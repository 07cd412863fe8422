"""Binding a spec's parameters: defaults, command-line overrides, and free symbols."""

from __future__ import annotations

from collections.abc import Collection, Mapping

import sympy

from modc.errors import ModcError, did_you_mean
from modc.graph.evaluate import evaluate
from modc.source import Source, Span
from modc.spec import ast
from modc.spec.expr import parse_arithmetic


def parse_override(text: str) -> tuple[str, ast.Expr, Span]:
    """`width=512` from the command line, as (name, expression, span of the name)."""
    source = Source("<command line>", text)
    name, eq, value = text.partition("=")
    span = Span(source, 1, 1, max(len(name), 1))
    if not eq or not name.strip().isidentifier():
        raise ModcError(f"expected NAME=VALUE, got '{text}'", span)
    if not value.strip():
        raise ModcError(f"no value given for '{name}'", span.shift(len(name)))
    return name.strip(), parse_arithmetic(value, span.shift(len(name) + 1)), span


def bind_params(
    spec: ast.Spec,
    overrides: Mapping[str, tuple[ast.Expr, Span]] = {},
    free: Collection[str] = (),
) -> dict[str, sympy.Expr]:
    """Each parameter's value, in spec order: override, else default; free ones stay symbols.

    A default may use the parameters declared before it.
    """
    declared = [p.name for p in spec.params]
    for name, (_, span) in overrides.items():
        if name not in declared:
            raise ModcError(
                f"the spec has no parameter '{name}'",
                span,
                did_you_mean(name, declared),
            )
    for name in free:
        if name not in declared:
            raise ModcError(
                f"cannot keep '{name}' free: the spec has no such parameter",
                hint=did_you_mean(name, declared),
            )
    env: dict[str, sympy.Expr] = {}
    for param in spec.params:
        if param.name in free:
            env[param.name] = sympy.Symbol(param.name, positive=True, integer=True)
        elif param.name in overrides:
            env[param.name] = evaluate(overrides[param.name][0], {})
        else:
            env[param.name] = evaluate(param.default, env)
    return env
