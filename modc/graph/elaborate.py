"""Elaboration: a spec AST and parameter values become the module IR, shapes inferred.

Sums, scalar multiples and residual blocks are rewritten into the combinators of DESIGN
§2 here, so that the theory and code generation see only Compose, Tuple, Repeat, Tare
and library operations.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass, field

import sympy

from modc.codegen.source import attribute
from modc.errors import ModcError, did_you_mean
from modc.graph import ir
from modc.graph.evaluate import evaluate, require_size
from modc.graph.params import bind_params
from modc.ops import OPS, Op, Shape, ShapeError, show
from modc.ops.base import REQUIRED
from modc.source import Span
from modc.spec import ast


@dataclass
class Scope:
    """The names of one generated class (the network, or a repeated body)."""

    used: set[str] = field(default_factory=set)
    counts: dict[str, int] = field(default_factory=dict)
    attributes: set[str] = field(default_factory=set)

    def claim(self, wanted: str | None, kind: str, span: Span | None) -> str:
        if wanted is None:
            n = self.counts.get(kind, 0) + 1
            while f"{kind}{n}" in self.used:
                n += 1
            self.counts[kind] = n
            wanted = f"{kind}{n}"
        elif wanted in self.used:
            raise ModcError(f"the name '{wanted}' is used twice in the same block", span)
        try:  # the attribute in generated code: the name, or renamed clear of nn.Module's
            name = attribute(wanted, self.attributes)
        except ValueError as e:
            raise ModcError(str(e), span) from None
        self.used.add(wanted)
        self.attributes.add(name)
        return name


@dataclass
class Context:
    env: dict[str, sympy.Expr]
    terms: dict[str, Closure]
    defs: dict[str, ast.Def]
    scope: Scope
    stack: tuple[str, ...] = ()


@dataclass
class Closure:
    """A sub-network passed to a definition, with the names it was written among."""

    term: ast.Term
    env: dict[str, sympy.Expr]
    terms: dict[str, Closure]


_EXPRS = (ast.Num, ast.Name, ast.BinOp, ast.Neg, ast.Func)


def elaborate(
    spec: ast.Spec,
    overrides: Mapping[str, tuple[ast.Expr, Span]] = {},
    free: Collection[str] = (),
) -> ir.Network:
    """The module IR of `spec` with the given parameter overrides and free parameters."""
    env = bind_params(spec, overrides, free)
    input_shape = tuple(require_size(evaluate(e, env), e.span, "an input size") for e in spec.input)
    ctx = Context(env, {}, {d.name: d for d in spec.defs}, Scope())
    root = term(spec.network, input_shape, ctx)
    if spec.output is not None:
        declared = tuple(evaluate(e, env) for e in spec.output)
        if root.out_shape != declared:
            raise ModcError(
                f"the network's output has shape {show(root.out_shape)}, but the spec "
                f"declares {show(declared)}",
                spec.output[0].span if spec.output else spec.span,
            )
    return ir.Network(
        name=spec.name,
        params=env,
        input_shape=input_shape,
        root=root,
        train={s.key: s.value for s in spec.train},
        optimizer={s.key: s.value for s in spec.optimizer},
        source_name=spec.span.source.name if spec.span else "<spec>",
    )


def term(t: ast.Term, shape: Shape, ctx: Context) -> ir.Node:
    """The IR of one network term applied to inputs of `shape`."""
    if isinstance(t, ast.Seq):
        if not t.items:
            raise ModcError(
                "an empty sequence; write Identity for a network that does nothing", t.span
            )
        parts = []
        for item in t.items:
            parts.append(term(item, shape, ctx))
            shape = parts[-1].out_shape
        return parts[0] if len(parts) == 1 else ir.Compose(parts[0].in_shape, t.span, tuple(parts))
    if isinstance(t, ast.Call):
        return call(t, shape, ctx)
    if isinstance(t, ast.Tuple):
        return ir.Tuple(shape, t.span, tuple(term(b, shape, ctx) for b in t.items))
    if isinstance(t, ast.Sum):
        branches = ir.Tuple(shape, t.span, tuple(term(b, shape, ctx) for b in t.items))
        return ir.Compose(shape, t.span, (branches, leaf("Add", {}, branches.out_shape, t.span)))
    if isinstance(t, ast.Scale):
        body = term(t.body, shape, ctx)
        factor = leaf("Mul", {"factor": evaluate(t.factor, ctx.env)}, (body.out_shape,), t.span)
        return ir.Compose(shape, t.span, (body, factor))
    if isinstance(t, ast.Repeat):
        return repeat(t.count, t.body, t.name, "repeat", shape, ctx, t.span)
    if isinstance(t, ast.Residual):
        return repeat(t.depth, t.body, t.name, "residual", shape, ctx, t.span)
    if isinstance(t, ast.Tare):
        mass = evaluate(t.mass, ctx.env)
        if mass.is_number and not mass > 0:
            raise ModcError(f"a tared mass must be positive, got {mass}", t.mass.span)
        return ir.Tare(shape, t.span, mass, term(t.body, shape, ctx))
    raise TypeError(f"unknown spec node {type(t).__name__}")


def leaf(op: str, values: dict, shapes: tuple[Shape, ...], span: Span | None) -> ir.Leaf:
    """A bond node inserted by elaboration (Add, Mul) rather than written by the user."""
    try:
        return ir.Leaf(shapes[0] if len(shapes) == 1 else shapes, span, OPS[op](values, shapes))
    except ShapeError as e:
        raise ModcError(f"shape mismatch: {e}", span) from None


def repeat(
    count_expr: ast.Expr,
    body: ast.Term,
    name: str | None,
    kind: str,
    shape: Shape,
    ctx: Context,
    span: Span | None,
) -> ir.Repeat:
    """`body ** count`, or the residual form ((1 − 1/L)·x + (1/L)·body(x)) ** L."""
    count = require_size(evaluate(count_expr, ctx.env), count_expr.span, "a repeat count")
    attr = ctx.scope.claim(name, kind, span)
    inner = Context(ctx.env, ctx.terms, ctx.defs, Scope(), ctx.stack)
    if kind == "residual":
        block = residual_block(body, shape, inner, count)
        return ir.Repeat(shape, span, count, block, block, attr)
    first = rest = term(body, shape, inner)
    if first.out_shape != shape:
        inner = Context(ctx.env, ctx.terms, ctx.defs, Scope(), ctx.stack)
        rest = term(body, first.out_shape, inner)
        if rest.out_shape != first.out_shape:
            raise ModcError(
                f"shape mismatch: repeated copies must keep the shape after the first, but "
                f"this body maps {show(first.out_shape)} to {show(rest.out_shape)}",
                span,
            )
    return ir.Repeat(shape, span, count, first, rest, attr)


def residual_block(body: ast.Term, shape: Shape, ctx: Context, depth: sympy.Expr) -> ir.Node:
    """(1 − 1/L)·x + (1/L)·body(x): a Tuple of two scaled branches, then Add."""
    block = term(body, shape, ctx)
    if block.out_shape != shape:
        raise ModcError(
            f"shape mismatch: a residual block must keep the shape, but this one maps "
            f"{show(shape)} to {show(block.out_shape)}",
            body.span,
        )
    skip = leaf("Mul", {"factor": 1 - 1 / depth}, (shape,), body.span)
    scaled = leaf("Mul", {"factor": 1 / depth}, (shape,), body.span)
    branch = ir.Compose(shape, body.span, (block, scaled))
    both = ir.Tuple(shape, body.span, (skip, branch))
    return ir.Compose(shape, body.span, (both, leaf("Add", {}, both.out_shape, body.span)))


def call(c: ast.Call, shape: Shape, ctx: Context) -> ir.Node:
    """An operation of the library, a definition, or a sub-network passed as an argument."""
    if c.op in ctx.terms and not c.args and not c.kwargs:
        clo = ctx.terms[c.op]
        return term(clo.term, shape, Context(clo.env, clo.terms, ctx.defs, ctx.scope, ctx.stack))
    if c.op in ctx.env and c.op not in ctx.defs:
        raise ModcError(f"'{c.op}' is a number here, not a network", c.span)
    if c.op in ctx.defs:
        return use_def(ctx.defs[c.op], c, shape, ctx)
    if c.op not in OPS:
        known = [*OPS, *ctx.defs, *ctx.terms, "repeat", "residual", "tare", "scale", "sum"]
        raise ModcError(f"unknown operation '{c.op}'", c.span, did_you_mean(c.op, known))
    cls = OPS[c.op]
    values, mass = bind_args(cls, c, ctx)
    given = inputs(shape)
    if cls.arity == 1 and len(given) != 1:
        raise ModcError(
            f"{cls.name} takes one input, but gets a tuple of {len(given)}",
            c.span,
            "apply it to each branch inside the tuple, or combine the branches first",
        )
    if cls.arity == 0 and len(given) < 2:
        raise ModcError(f"{cls.name} takes a tuple of inputs, such as (a, b) > {c.op}", c.span)
    try:
        op = cls(values, given)
    except ShapeError as e:
        raise ModcError(f"shape mismatch: {e}", c.span) from None
    if not op.atom:
        return ir.Leaf(shape, c.span, op)
    name = ctx.scope.claim(c.name, c.op.lower(), c.span)
    return ir.Leaf(shape, c.span, op, name, mass)


def inputs(shape: Shape | tuple[Shape, ...]) -> tuple[Shape, ...]:
    """The input shapes an operation receives: several after a tuple, else one."""
    return shape if shape and isinstance(shape[0], tuple) else (shape,)


def bind_args(cls: type[Op], c: ast.Call, ctx: Context) -> tuple[dict, sympy.Expr]:
    """Check a call's arguments against the operation's and evaluate them."""
    names = [a.name for a in cls.args]
    given: dict[str, ast.Arg] = {}
    if len(c.args) > len(names):
        extra = c.args[len(names)]
        raise ModcError(
            f"{cls.name} takes {len(names)} argument{'s' * (len(names) != 1)}, got {len(c.args)}",
            getattr(extra, "span", c.span),
        )
    given.update(zip(names, c.args, strict=False))
    allowed = names + (["mass"] if cls.atom else [])
    for key, value in c.kwargs:
        if key not in allowed:
            raise ModcError(
                f"{cls.name} has no argument '{key}'",
                getattr(value, "span", c.span),
                did_you_mean(key, allowed),
            )
        if key in given:
            raise ModcError(
                f"argument '{key}' of {cls.name} is given twice",
                getattr(value, "span", c.span),
            )
        given[key] = value
    values = {}
    for arg in cls.args:
        if arg.name not in given:
            if arg.default is REQUIRED:
                raise ModcError(f"{cls.name} needs the argument '{arg.name}'", c.span)
            values[arg.name] = arg.default
            continue
        values[arg.name] = number(given[arg.name], cls.name, arg.kind, ctx)
    mass = number(given["mass"], cls.name, "number", ctx) if "mass" in given else sympy.Integer(1)
    return values, mass


def number(value: ast.Arg, op: str, kind: str, ctx: Context) -> sympy.Expr:
    """An argument that must be a number (or, for kind 'size', a positive integer)."""
    if not isinstance(value, _EXPRS):
        raise ModcError(f"{op} takes numbers, not a sub-network", value.span)
    if isinstance(value, ast.Name) and value.id in ctx.terms and value.id not in ctx.env:
        raise ModcError(f"'{value.id}' is a network here, not a number", value.span)
    v = evaluate(value, ctx.env)
    return require_size(v, value.span, f"the size given to {op}") if kind == "size" else v


def use_def(d: ast.Def, c: ast.Call, shape: Shape, ctx: Context) -> ir.Node:
    """Expand a definition with its arguments bound; refuse recursion."""
    if d.name in ctx.stack:
        chain = " → ".join([*ctx.stack[ctx.stack.index(d.name) :], d.name])
        raise ModcError(f"recursive definition: {chain}", c.span)
    if len(c.args) + len(c.kwargs) != len(d.params):
        raise ModcError(
            f"'{d.name}' takes {len(d.params)} argument{'s' * (len(d.params) != 1)}, "
            f"got {len(c.args) + len(c.kwargs)}",
            c.span,
        )
    bound = dict(zip(d.params, c.args, strict=False))
    for key, value in c.kwargs:
        if key not in d.params:
            raise ModcError(
                f"'{d.name}' has no argument '{key}'",
                getattr(value, "span", c.span),
                did_you_mean(key, d.params),
            )
        bound[key] = value
    env, terms = dict(ctx.env), dict(ctx.terms)
    for key, value in bound.items():
        env.pop(key, None)
        terms.pop(key, None)
        if isinstance(value, ast.Name) and value.id not in ctx.env and names_network(value.id, ctx):
            value = ast.Call(value.id, span=value.span)  # `f(ReLU)`: a bare name of a network
        if isinstance(value, _EXPRS):
            env[key] = evaluate(value, ctx.env)
        else:
            terms[key] = Closure(value, ctx.env, ctx.terms)
    inner = Context(env, terms, ctx.defs, ctx.scope, (*ctx.stack, d.name))
    return term(d.body, shape, inner)


def names_network(name: str, ctx: Context) -> bool:
    """Whether a bare name passed as an argument means a network rather than a number."""
    return name in ctx.terms or name in ctx.defs or name in OPS
