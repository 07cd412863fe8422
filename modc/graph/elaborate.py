"""Elaboration: a spec AST and parameter values become the module IR, shapes inferred.

Sums, scalar multiples and residual blocks are rewritten into the combinators of DESIGN
§2 here, so that the theory and code generation see only Compose, Tuple, Repeat, Tare
and library operations.
"""

from __future__ import annotations

import contextlib
import dataclasses
import gc
from collections.abc import Collection, Iterator, Mapping
from dataclasses import dataclass, field

import sympy

from modc.codegen.source import attribute
from modc.errors import ModcError, did_you_mean, unknown_argument
from modc.graph import ir
from modc.graph.budget import Operations
from modc.graph.evaluate import brief, evaluate, require_finite, require_size
from modc.graph.params import bind_params
from modc.graph.settings import check_optimizer
from modc.ops import OPS, Op, Shape, ShapeError, argument_names, show
from modc.ops.base import REQUIRED
from modc.source import Span
from modc.spec import ast
from modc.spec.settings import check_settings


@dataclass
class Scope:
    """The attribute names of one generated class: the network, a repeated body, or a use
    of a definition. Names are per class, so that adding a layer in one class renames
    nothing in another."""

    used: set[str] = field(default_factory=set)
    counts: dict[str, int] = field(default_factory=dict)
    attributes: set[str] = field(default_factory=set)

    def claim(self, wanted: str | None, kind: str, span: Span | None) -> str:
        """A fresh attribute name: the name the spec gives, or kind + a number."""
        if wanted is None:
            n = self.counts.get(kind, 0) + 1
            while f"{kind}{n}" in self.used:
                n += 1
            self.counts[kind] = n
            wanted = f"{kind}{n}"
        if wanted in self.used:
            raise ModcError(f"the name '{wanted}' is used twice in the same block", span)
        return self._take(wanted, span)

    def claim_use(
        self, wanted: str | None, definition: str, span: Span | None, tag: str = ""
    ) -> str:
        """The attribute of a use of `definition`: the name the spec gives, else the
        definition's own, then definition2, definition3, ... for later unnamed uses;
        `tag` starts an unnamed one."""
        if wanted is not None:
            return self.claim(wanted, definition, span)
        base = tag + (definition.lstrip("_") or "block")  # `_x` is Python's and nn.Module's
        name, n = base, 1
        while name in self.used:
            n += 1
            name = f"{base}{n}"
        return self._take(name, span)

    def _take(self, wanted: str, span: Span | None) -> str:
        try:  # the attribute in generated code: the name, or renamed clear of nn.Module's
            name = attribute(wanted, self.attributes)
        except ValueError as e:
            raise ModcError(str(e), span) from None
        self.used.add(wanted)
        self.attributes.add(name)
        return name


@dataclass
class Context:
    """What a term is elaborated among: names in scope, the class it names its atoms in,
    the definitions it is inside (`stack`), and the operations counted so far.

    `prefix` is the path from the enclosing repeated body (or the network) to that class:
    `block(name=enc)` makes a submodule `enc`, so its atoms are enc.linear1, enc.out, ...
    `tag` starts the attributes a term names in that class: a coupling's f_ and g_.
    """

    env: dict[str, sympy.Expr]
    terms: dict[str, Closure]
    defs: dict[str, ast.Def]
    scope: Scope
    ops: Operations
    stack: tuple[str, ...] = ()
    prefix: str = ""
    tag: str = ""

    def within(self, **changes: object) -> Context:
        """This context with some fields replaced."""
        return dataclasses.replace(self, **changes)

    def claim(self, wanted: str | None, kind: str, span: Span | None) -> str:
        """The path of a new atom or repeat of this class: `prefix` + its attribute."""
        tagged = None if wanted is None else self.tag + wanted
        return self.prefix + self.scope.claim(tagged, self.tag + kind, span)

    def enter(
        self, name: str | None, definition: str, span: Span | None, **changes: object
    ) -> tuple[str, Context]:
        """The attribute of a use in this class (`name`, else the definition's name) and
        the context of the use's own class, that submodule."""
        tagged = None if name is None else self.tag + name
        attr = self.scope.claim_use(tagged, definition, span, self.tag)
        inner = self.within(scope=Scope(), prefix=f"{self.prefix}{attr}.", tag="", **changes)
        return attr, inner


@dataclass
class Closure:
    """A sub-network passed to a definition, with the names it was written among and the
    definitions it was written inside (a recursion is a cycle where it was written, not
    where it is expanded: `wrap(wrap(x))` is no recursion)."""

    term: ast.Term
    env: dict[str, sympy.Expr]
    terms: dict[str, Closure]
    stack: tuple[str, ...] = ()


_EXPRS = (ast.Num, ast.Name, ast.BinOp, ast.Neg, ast.Func)


def elaborate(
    spec: ast.Spec,
    overrides: Mapping[str, tuple[ast.Expr, Span]] = {},
    free: Collection[str] = (),
) -> ir.Network:
    """The module IR of `spec` with the given parameter overrides and free parameters."""
    check_settings(spec)
    env = bind_params(spec, overrides, free)
    input_shape = tuple(require_size(evaluate(e, env), e.span, "an input size") for e in spec.input)
    ctx = Context(env, {}, {d.name: d for d in spec.defs}, Scope(), Operations())
    with _collector_paused():
        root = whole(spec.network, input_shape, ctx)
    if root.out_shape and isinstance(root.out_shape[0], tuple):
        raise ModcError(
            f"the network's output must be one tensor, but it is a tuple of {len(root.out_shape)}",
            spec.network.span,
            "combine the branches, for example with > Add",
        )
    if spec.output is not None:
        declared = tuple(evaluate(e, env) for e in spec.output)
        if root.out_shape != declared:
            raise ModcError(
                f"the network's output has shape {show(root.out_shape)}, but the spec "
                f"declares {show(declared)}",
                spec.output[0].span if spec.output else spec.span,
            )
    network = ir.Network(
        name=spec.name,
        params=env,
        input_shape=input_shape,
        root=root,
        train={s.key: s.value for s in spec.train},
        optimizer={s.key: s.value for s in spec.optimizer},
        source_name=spec.span.source.name if spec.span else "<spec>",
    )
    if not free:
        check_optimizer(network, spec)
    return network


@contextlib.contextmanager
def _collector_paused() -> Iterator[None]:
    """Pause Python's cycle collector: elaboration makes up to MAX_OPERATIONS long-lived
    nodes and no cycles, and the collector would scan them again and again (half the time
    of a large network)."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


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
        add = leaf("Add", {}, branches.out_shape, t.span, ctx)
        return ir.Compose(shape, t.span, (branches, add))
    if isinstance(t, ast.Scale):
        factor = require_finite(evaluate(t.factor, ctx.env), t.factor.span, "a scalar factor")
        if factor.is_zero:  # docs/theory.md §3: a scalar multiple has a ≠ 0
            raise ModcError(
                "a scale of 0 makes the term's output 0 whatever its input: it contributes "
                "nothing, and any weights in or before it would get an infinite target (a step "
                "is divided by the sensitivity after it, here 0)",
                t.factor.span,
                "remove the term, or scale it by a nonzero factor",
            )
        return scaled(term(t.body, shape, ctx), factor, t.span, ctx)
    if isinstance(t, ast.Repeat):
        return repeat(t.count, t.body, t.name, "repeat", shape, ctx, t.span)
    if isinstance(t, ast.Residual):
        return repeat(t.depth, t.body, t.name, "residual", shape, ctx, t.span)
    if isinstance(t, ast.Coupling):
        return coupling(t, shape, ctx)
    if isinstance(t, ast.Tare):
        mass = require_finite(evaluate(t.mass, ctx.env), t.mass.span, "a tared mass")
        if mass.is_number and not mass > 0:
            raise ModcError(f"a tared mass must be positive, got {mass}", t.mass.span)
        return ir.Tare(shape, t.span, mass, term(t.body, shape, ctx))
    raise TypeError(f"unknown spec node {type(t).__name__}")


def leaf(
    op: str, values: dict, shapes: tuple[Shape, ...], span: Span | None, ctx: Context
) -> ir.Leaf:
    """A bond node inserted by elaboration (Add, Mul) rather than written by the user."""
    ctx.ops.add(1, span)
    try:
        return ir.Leaf(shapes[0] if len(shapes) == 1 else shapes, span, OPS[op](values, shapes))
    except ShapeError as e:
        raise ModcError(f"shape mismatch: {e}", span) from None


def scaled(node: ir.Node, factor: sympy.Expr, span: Span | None, ctx: Context) -> ir.Node:
    """`factor · node`; a tuple is scaled branch by branch: a·(x, y) = (a·x, a·y)."""
    out = node.out_shape
    if not (out and isinstance(out[0], tuple)):
        return ir.Compose(
            node.in_shape, span, (node, leaf("Mul", {"factor": factor}, (out,), span, ctx))
        )
    if isinstance(node, ir.Tuple):
        branches = tuple(scaled(b, factor, span, ctx) for b in node.branches)
        return ir.Tuple(node.in_shape, node.span, branches, use=node.use)
    if isinstance(node, ir.Compose):
        last = scaled(node.parts[-1], factor, span, ctx)
        return ir.Compose(node.in_shape, node.span, (*node.parts[:-1], last), use=node.use)
    if isinstance(node, ir.Tare):
        body = scaled(node.body, factor, span, ctx)
        return ir.Tare(node.in_shape, node.span, node.mass, body, use=node.use)
    raise ModcError(
        "cannot scale this tuple as a whole", span, "scale each branch inside the tuple"
    )


def repeat(
    count_expr: ast.Expr,
    body: ast.Term,
    name: str | None,
    kind: str,
    shape: Shape,
    ctx: Context,
    span: Span | None,
) -> ir.Repeat:
    """`body ** count`, or the residual form ((1 − 1/L)·x + (1/L)·body(x)) ** L.

    The body is elaborated once (twice if the first copy changes the shape) and its
    operations are counted once per copy, before anything else is elaborated.
    """
    count = require_size(evaluate(count_expr, ctx.env), count_expr.span, "a repeat count")
    copies = int(count) if count.is_Integer else 1
    attr = ctx.claim(name, kind, span)
    inner = ctx.within(scope=Scope(), prefix="", tag="")
    before = ctx.ops.used
    if kind == "residual":
        block = residual_block(body, shape, inner, count)
        ctx.ops.add((ctx.ops.used - before) * (copies - 1), span)
        return ir.Repeat(shape, span, count, block, block, attr)
    first = rest = whole(body, shape, inner)
    once = ctx.ops.used - before
    if first.out_shape != shape and count != 1:
        before = ctx.ops.used
        rest = whole(body, first.out_shape, ctx.within(scope=Scope(), prefix="", tag=""))
        once = ctx.ops.used - before
        if rest.out_shape != first.out_shape:
            raise ModcError(
                f"shape mismatch: repeated copies must keep the shape after the first, but "
                f"this body maps {show(first.out_shape)} to {show(rest.out_shape)}",
                span,
            )
        copies = max(copies - 1, 1)  # the first copy is counted already
    ctx.ops.add(once * (copies - 1), span)
    return ir.Repeat(shape, span, count, first, rest, attr)


def coupling(t: ast.Coupling, shape: Shape, ctx: Context) -> ir.Coupling:
    """coupling(f, g): f and g map one half of the features to the other's shape. The
    coupling is a module of its own; the atoms of f and g are named f_… and g_… in it."""
    d = shape[0] if len(shape) == 1 and not isinstance(shape[0], tuple) else None
    if d is None or (d.is_Integer and d % 2):
        raise ModcError(
            f"a coupling splits the features into two halves, so it needs a flat input with "
            f"an even number of features, got {show(shape)}",
            t.span,
            "flatten the input first (Flatten), or make the feature count even",
        )
    half = (d / 2,)
    attr = ctx.claim(t.name, "coupling", t.span)
    scope = Scope()
    f = term(t.f, half, ctx.within(scope=scope, prefix="", tag="f_"))
    g = term(t.g, half, ctx.within(scope=scope, prefix="", tag="g_"))
    for part, body, which in ((f, t.f, "f"), (g, t.g, "g")):
        if part.out_shape != half:
            raise ModcError(
                f"shape mismatch: a coupling's {which} must map a half {show(half)} to the "
                f"same shape, but it gives {show(part.out_shape)}",
                getattr(body, "span", None) or t.span,
            )
    return ir.Coupling(shape, t.span, f, g, attr)


def residual_block(body: ast.Term, shape: Shape, ctx: Context, depth: sympy.Expr) -> ir.Node:
    """(1 − 1/L)·x + (1/L)·body(x): a Tuple of two scaled branches, then Add."""
    block = whole(body, shape, ctx)
    if block.out_shape != shape:
        raise ModcError(
            f"shape mismatch: a residual block must keep the shape, but this one maps "
            f"{show(shape)} to {show(block.out_shape)}",
            body.span,
        )
    skip = leaf("Mul", {"factor": 1 - 1 / depth}, (shape,), body.span, ctx)
    scaled_block = leaf("Mul", {"factor": 1 / depth}, (shape,), body.span, ctx)
    branch = ir.Compose(shape, body.span, (block, scaled_block))
    both = ir.Tuple(shape, body.span, (skip, branch))
    return ir.Compose(shape, body.span, (both, leaf("Add", {}, both.out_shape, body.span, ctx)))


def whole(t: ast.Term, shape: Shape, ctx: Context) -> ir.Node:
    """The IR of a term that is the whole body of a generated class (the network, a
    repeated body, a definition): a use of a definition there, without name=, is that
    class itself rather than a submodule of it (`blocks.0.attention.q`, not
    `blocks.0.transformer_block.attention.q`)."""
    inner = t.items[0] if isinstance(t, ast.Seq) and len(t.items) == 1 else t
    if isinstance(inner, ast.Call) and inner.name is None:
        return call(inner, shape, ctx, in_place=True)
    return term(t, shape, ctx)


def call(c: ast.Call, shape: Shape, ctx: Context, in_place: bool = False) -> ir.Node:
    """An operation of the library, a definition, or a sub-network passed as an argument.
    A use of a definition, or a named use of a sub-network, gets its own class unless it
    is the whole body of the class it is in (`in_place`)."""
    if c.op in ctx.terms and not c.args and not c.kwargs:
        clo = ctx.terms[c.op]
        changes = {"env": clo.env, "terms": clo.terms, "stack": clo.stack}
        if c.name is None:
            return term(clo.term, shape, ctx.within(**changes))
        attr, inner = ctx.enter(c.name, c.name, c.span, **changes)
        node = term(clo.term, shape, inner)
        node.use = ir.Use(c.name, attr, span=c.span, definition_span=clo.term.span)
        return node
    if c.op in ctx.env and c.op not in ctx.defs:
        raise ModcError(f"'{c.op}' is a number here, not a network", c.span)
    if c.op in ctx.defs:
        return use_def(ctx.defs[c.op], c, shape, ctx, in_place)
    if c.op not in OPS:
        known = [*OPS, *ctx.defs, *ctx.terms, "repeat", "residual", "tare", "coupling", "sum"]
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
    if not cls.atom and c.frozen:
        raise ModcError(f"{cls.name} has no weights to freeze", c.span)
    if not cls.atom and c.name is not None:
        raise ModcError(
            f"{cls.name} has no weights to name",
            c.span,
            "name= names an operation with weights, a definition's use, or a repeat",
        )
    ctx.ops.add(1, c.span)
    try:
        op = cls(values, given)
    except ShapeError as e:
        raise ModcError(f"shape mismatch: {e}", c.span) from None
    if not op.atom:
        return ir.Leaf(shape, c.span, op)
    name = ctx.claim(c.name, c.op.lower(), c.span)
    if c.frozen:  # fixed random weights: no share of a step, still in every bound
        return ir.Leaf(shape, c.span, op, name, sympy.Integer(0), frozen=True)
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
    allowed = argument_names(cls)
    for key, value in c.kwargs:
        if key not in allowed:
            raise unknown_argument(cls.name, key, allowed, getattr(value, "span", c.span))
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
        values[arg.name] = number(given[arg.name], cls.name, arg.name, arg.kind, ctx)
    mass = sympy.Integer(1)
    if "mass" in given:
        mass = number(given["mass"], cls.name, "mass", "number", ctx)
        if mass.is_negative:  # docs/theory.md §1: μ ≥ 0
            raise ModcError(
                f"a mass must be 0 or more (an atom's share of a training step), got {brief(mass)}",
                given["mass"].span,
            )
    return values, mass


def number(value: ast.Arg, op: str, arg: str, kind: str, ctx: Context) -> sympy.Expr:
    """An argument that must be a number (or, for kind 'size', a positive integer)."""
    if not isinstance(value, _EXPRS):
        raise ModcError(f"{op} takes numbers, not a sub-network", value.span)
    if isinstance(value, ast.Name) and value.id in ctx.terms and value.id not in ctx.env:
        raise ModcError(f"'{value.id}' is a network here, not a number", value.span)
    v = evaluate(value, ctx.env)
    if kind == "size":
        return require_size(v, value.span, f"the size given to {op}")
    return require_finite(v, value.span, f"the argument '{arg}' of {op}")


def use_def(d: ast.Def, c: ast.Call, shape: Shape, ctx: Context, in_place: bool = False) -> ir.Node:
    """Expand a definition with its arguments bound, as a submodule of its own class (or,
    `in_place`, as the whole of the class it is in); refuse recursion.

    An error inside the expansion lists this call in its trace, so that an error in a
    library definition leads back to the user's text.
    """
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
            raise unknown_argument(f"'{d.name}'", key, d.params, getattr(value, "span", c.span))
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
            terms[key] = Closure(value, ctx.env, ctx.terms, ctx.stack)
    changes = {"env": env, "terms": terms, "stack": (*ctx.stack, d.name)}
    if in_place:
        attr, inner = None, ctx.within(**changes)
    else:
        attr, inner = ctx.enter(c.name, d.name, c.span, **changes)
    try:
        node = whole(d.body, shape, inner)
    except ModcError as err:
        err.trace.append((f"definition '{d.name}'", c.span))
        raise
    args = tuple((k, env[k]) for k in d.params if k in env)
    node.use = ir.Use(d.name, attr, args, c.span, d.span)
    return node


def names_network(name: str, ctx: Context) -> bool:
    """Whether a bare name passed as an argument means a network rather than a number."""
    return name in ctx.terms or name in ctx.defs or name in OPS
