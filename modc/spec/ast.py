"""The spec AST: what a spec says, before any parameter is bound.

Both front ends (YAML and the text language) build these nodes. Every node carries the
Span of the text it came from; spans never take part in equality, so two specs that say
the same thing compare equal whatever their layout.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from modc.source import Span

# ---------------------------------------------------------------- arithmetic expressions


@dataclass(frozen=True)
class Num:
    """A number literal, kept as its text so that 0.1 stays exactly 1/10."""

    text: str
    span: Span = field(compare=False, repr=False)


@dataclass(frozen=True)
class Name:
    """A parameter or definition argument, resolved during elaboration."""

    id: str
    span: Span = field(compare=False, repr=False)


@dataclass(frozen=True)
class BinOp:
    """`left op right` for op in + - * / // % ^."""

    op: str
    left: Expr
    right: Expr
    span: Span = field(compare=False, repr=False)


@dataclass(frozen=True)
class Neg:
    """`-operand`."""

    operand: Expr
    span: Span = field(compare=False, repr=False)


@dataclass(frozen=True)
class Func:
    """A call of a built-in function: sqrt, min, max, floor, ceil."""

    name: str
    args: tuple[Expr, ...]
    span: Span = field(compare=False, repr=False)


Expr = Num | Name | BinOp | Neg | Func

# ---------------------------------------------------------------- network terms


@dataclass(frozen=True)
class Call:
    """An operation (`Linear(width)`, `ReLU`) or a use of a definition (`block(d)`).

    `name` optionally names the module in generated code (`Linear(10, name=head)`);
    `frozen` keeps an atom's weight at its random initialisation (`frozen=true`).
    """

    op: str
    args: tuple[Arg, ...] = ()
    kwargs: tuple[tuple[str, Arg], ...] = ()
    name: str | None = None
    span: Span = field(compare=False, repr=False, default=None)
    frozen: bool = False


@dataclass(frozen=True)
class Seq:
    """Sequential composition in data-flow order: items[0] is applied first."""

    items: tuple[Term, ...]
    span: Span = field(compare=False, repr=False, default=None)


@dataclass(frozen=True)
class Sum:
    """Branches applied to the same input and added: `a + b`."""

    items: tuple[Term, ...]
    span: Span = field(compare=False, repr=False, default=None)


@dataclass(frozen=True)
class Tuple:
    """Branches applied to the same input, outputs kept as a tuple: `(a, b)`."""

    items: tuple[Term, ...]
    span: Span = field(compare=False, repr=False, default=None)


@dataclass(frozen=True)
class Scale:
    """A scalar multiple `factor * body`."""

    factor: Expr
    body: Term
    span: Span = field(compare=False, repr=False, default=None)


@dataclass(frozen=True)
class Repeat:
    """`body ** count`: count composed copies with independent weights."""

    count: Expr
    body: Term
    name: str | None = None
    span: Span = field(compare=False, repr=False, default=None)


@dataclass(frozen=True)
class Residual:
    """`((1 - 1/L)·x + (1/L)·body(x)) ** L` with L = depth: sensitivity 1 at any depth."""

    depth: Expr
    body: Term
    name: str | None = None
    span: Span = field(compare=False, repr=False, default=None)


@dataclass(frozen=True)
class Tare:
    """Mass allocation: rescale the masses inside `body` so that they total `mass`."""

    mass: Expr
    body: Term
    span: Span = field(compare=False, repr=False, default=None)


@dataclass(frozen=True)
class Coupling:
    """An additive coupling block on the two halves of the features:
    y1 = x1 + f(x2), y2 = x2 + g(y1); invertible whatever f and g are."""

    f: Term
    g: Term
    name: str | None = None
    span: Span = field(compare=False, repr=False, default=None)


Term = Call | Seq | Sum | Tuple | Scale | Repeat | Residual | Tare | Coupling
Arg = Expr | Term

# ---------------------------------------------------------------- whole specs


@dataclass(frozen=True)
class Param:
    """A spec parameter with its default, overridable with `-p name=value`."""

    name: str
    default: Expr
    span: Span = field(compare=False, repr=False, default=None)


@dataclass(frozen=True)
class Def:
    """A named definition with arguments: `def block(d) = ...`."""

    name: str
    params: tuple[str, ...]
    body: Term
    span: Span = field(compare=False, repr=False, default=None)


@dataclass(frozen=True)
class Setting:
    """A plain key: value setting from the `train:` or `optimizer:` section."""

    key: str
    value: object
    span: Span = field(compare=False, repr=False, default=None)


@dataclass(frozen=True)
class Include:
    """`include "path"`: the definitions of another spec file (`std/...`: the library)."""

    path: str
    span: Span = field(compare=False, repr=False, default=None)


@dataclass(frozen=True)
class Spec:
    """A whole spec file. A library file (one that is only included) may have no
    input (empty) and no network (None)."""

    name: str
    params: tuple[Param, ...]
    input: tuple[Expr, ...]
    network: Term | None
    defs: tuple[Def, ...] = ()
    output: tuple[Expr, ...] | None = None
    train: tuple[Setting, ...] = ()
    optimizer: tuple[Setting, ...] = ()
    span: Span = field(compare=False, repr=False, default=None)
    includes: tuple[Include, ...] = ()
