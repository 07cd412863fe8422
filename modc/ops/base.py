"""What every operation of the library provides: arguments, shape rule, mass, sensitivity,
its Lipschitz constant in each norm modc certifies and the conditions it needs, and the
torch code it emits. Atoms (operations with weights) add a norm, a dual map, an
initialisation and sound Lipschitz bounds, all as runtime functions that codegen copies
verbatim into the generated files. The theory is docs/theory.md.
"""

from __future__ import annotations

import importlib
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import ClassVar

import sympy

from modc.graph.evaluate import brief

Shape = tuple[sympy.Expr, ...]

REQUIRED = object()
ZERO, ONE = sympy.Integer(0), sympy.Integer(1)

#: The two norms modc certifies in (docs/theory.md §5). ACTIVATION: the modular norm's own
#: activation norm (RMS over features, the largest over positions; a tuple by the sum of its
#: parts). L2: the ℓ2 (Frobenius) norm of one example's tensor; a tuple by the sum of its
#: parts' ℓ2 norms.
ACTIVATION, L2 = "activation", "l2"
NORMS = (ACTIVATION, L2)


@dataclass(frozen=True)
class Condition:
    """A restriction on an operation's inputs under which its Lipschitz constants hold.

    `measure` is a runtime function (copied into certificate.py) from the input tensor
    number `input` (batch first) to one value per example; the condition holds on an
    example when that value is at least `limit` (`at_least`) or at most `limit`.
    """

    text: str
    measure: Callable
    input: int
    limit: float
    at_least: bool
    fact: str | None = None  # an input known to have this fact meets the condition


#: Facts about an operation's output that conditions can rest on (docs/theory.md §7).
RMS_AT_MOST_1 = "every feature vector has RMS at most 1"
ROWS_L1_AT_MOST_1 = "every row has ℓ1 norm at most 1"


class ShapeError(Exception):
    """An operation cannot take inputs of the shape it was given; elaboration adds the span."""


@dataclass(frozen=True)
class Arg:
    """One argument of an operation: `size` (positive integer) or `number` (any real).

    A default, when there is one, is a sympy number.
    """

    name: str
    kind: str = "size"
    default: object = REQUIRED


def show(shape: Shape) -> str:
    """A shape as a user writes it: (784,) or (1, 28, 28); a long number as 1.00e+400."""
    inner = ", ".join(brief(d) if isinstance(d, sympy.Rational) else str(d) for d in shape)
    return f"({inner},)" if len(shape) == 1 else f"({inner})"


_PRIMARY = re.compile(r"[\w.]+(\(.*\))?")


def primary(e: str) -> str:
    """`e` ready for `.method()` or `*`: parenthesised unless a name, attribute or call."""
    return e if _PRIMARY.fullmatch(e) else f"({e})"


def exact(e: sympy.Expr) -> str:
    """A number as Python source that keeps simple fractions readable: 3, 2 / 3, 0.1."""
    if e.is_Integer:
        return str(int(e))
    if e.is_Rational and e.q < 1000:
        return f"{e.p} / {e.q}"
    return repr(float(e))


def features(shape: Shape) -> sympy.Expr:
    """How many entries each RMS of the activation norm spans: the last axis; for a 3-axis
    tensor, images (C, H, W) or heads (H, T, d), the larger of the first and the last."""
    if not shape:
        return ONE
    if len(shape) == 3:
        return sympy.Max(shape[0], shape[-1])
    return shape[-1]


class Op:
    """An operation. Subclasses set `name` and `args` and override the rules they change."""

    name: ClassVar[str]
    args: ClassVar[tuple[Arg, ...]] = ()
    arity: ClassVar[int] = 1  # inputs taken; 0 means "a tuple of two or more"
    atom: ClassVar[bool] = False
    runtime: ClassVar[tuple[Callable | type, ...]] = ()  # copied into model.py
    # What the output holds, to name a variable in model.py (`scores`); None: as its input.
    holds: ClassVar[str | None] = None

    def __init__(self, values: dict[str, sympy.Expr], in_shapes: Sequence[Shape]):
        self.values = values
        self.in_shapes = tuple(in_shapes)
        self.out_shape = self.shape(*self.in_shapes)

    def shape(self, *inputs: Shape) -> Shape:
        """Output shape for the given input shapes; raises ShapeError if they do not fit."""
        return inputs[0]

    def sensitivity(self) -> sympy.Expr:
        """ν: how much the output can move per unit move of the input, at unit-norm weights."""
        return sympy.Integer(1)

    def conditions(self) -> tuple[Condition, ...]:
        """What the sensitivity and the Lipschitz constants assume (a bound on input norms);
        empty if they hold for every input."""
        return ()

    def lipschitz_bound(self, norm: sympy.Expr = ONE, space: str = ACTIVATION) -> sympy.Expr:
        """A sound Lipschitz constant in the norm `space` (ACTIVATION or L2), on the inputs
        `conditions` allows.

        The default, the sensitivity in both norms, fits an operation that acts on each
        feature vector alone with the same constant in ℓ2 and RMS (ReLU, Linear's bound is
        its own). An atom's depends on the norm of its weight, `norm`; a bond ignores it.
        """
        return self.sensitivity()

    def inverse(self, output: str) -> tuple[str, sympy.Expr] | None:
        """For an invertible operation: a Python expression of its input from the `output`
        expression, and the ℓ2 Lipschitz constant of that inverse; else None."""
        return None

    def facts(self, inputs: Sequence[frozenset[str]]) -> frozenset[str]:
        """What holds of every output, for every input, given what holds of the inputs:
        the facts (RMS_AT_MOST_1, ...) that meet later operations' conditions. None by
        default; an operation that keeps or makes one says so."""
        return frozenset()

    def sharpness(self) -> tuple[sympy.Expr, sympy.Expr, sympy.Expr | None]:
        """(α, β, γ): bounds on the second derivative of f(x, w) in weight-weight,
        weight-input and input-input directions at unit-norm weights, in this op's norms.

        γ is None where f is not twice differentiable (ReLU): no smoothness constant then.
        """
        return (ZERO, ZERO, ZERO)

    def state(self) -> str | None:
        """A Python expression building the nn.Module of fixed tables the operation reads
        (RoPE's cos and sin), made once per generated class that uses it; `forward` then
        gets its attribute as `attr`. None for an operation without one."""
        return None

    def forward(self, inputs: Sequence[str], attr: str | None) -> str:
        """A Python expression computing the output from the input expressions; `attr` is
        the attribute of an atom's module, or of the module `state` builds."""
        raise NotImplementedError

    def describe(self) -> str:
        """`Linear(256)`: the op with its arguments, for tables and comments."""
        shown = [str(v) for v in self.values.values() if v is not None]
        return f"{self.name}({', '.join(shown)})" if shown else self.name


class Layer:
    """An atom's nn.Module class, by its name in modc.runtime.layers, imported (with torch)
    when first read: the stages before code generation never read it."""

    def __init__(self, name: str) -> None:
        self.name = name

    def __get__(self, obj: object, owner: type | None = None) -> type:
        return getattr(importlib.import_module("modc.runtime.layers"), self.name)


class Atom(Op):
    """An operation with a weight tensor: mass 1 unless the spec says otherwise."""

    atom = True
    module: ClassVar[type]  # the nn.Module class copied into model.py: Layer("Name")
    # (grad, target, **polar_options) -> update of norm target; optimizer.py. grad may be a
    # bank (k, *weight_shape) of k same-shape weights with target of shape (k, 1, ..., 1):
    # each is dualized alone. Options such as method="muon" go to polar(); a dual map
    # without polar() may omit **polar_options.
    dualize: ClassVar[Callable]
    norm: ClassVar[Callable]  # weight -> its norm in this atom's norm; certificate.py
    lipschitz: ClassVar[Callable]  # weight -> sound ℓ2 Lipschitz upper bound; certificate.py
    # weight -> sound upper bound on the Lipschitz constant in the activation norm
    lipschitz_activation: ClassVar[Callable]
    cap: ClassVar[Callable | None] = None  # (weight, c) -> in place, lipschitz ≤ c; optional

    def weight_shape(self) -> Shape:
        """Shape of the weight tensor."""
        raise NotImplementedError

    def constructor(self) -> str:
        """Python expression that builds this atom's nn.Module."""
        raise NotImplementedError

    def forward(self, inputs: Sequence[str], attr: str | None) -> str:
        return f"self.{attr}({inputs[0]})"

    def lipschitz_bound(self, norm: sympy.Expr = ONE, space: str = ACTIVATION) -> sympy.Expr:
        """Linear in the input: in the activation norm the constant is the weight's norm;
        in ℓ2 the atom states its own in terms of that norm (`l2_factor`)."""
        return norm if space == ACTIVATION else self.l2_factor() * norm

    def l2_factor(self) -> sympy.Expr:
        """c such that the ℓ2 Lipschitz constant is at most c·‖W‖ (its norm)."""
        return ONE

    def l2_reference(self) -> sympy.Expr:
        """The ℓ2 factor of a well-normed weight (norm 1): the size the cap solver measures
        this atom's cap against (docs/theory.md §9). By default the sound factor at norm 1,
        which every weight of norm 1 attains for Linear (σ_max = √(out/in))."""
        return self.lipschitz_bound(ONE, L2)

    def lipschitz_call(self, weight: str, space: str) -> str:
        """Source of a sound bound at live weights in norm `space`; `weight` is an expression."""
        fn = self.lipschitz if space == L2 else self.lipschitz_activation
        return f"{fn.__name__}({weight})"

    def sharpness(self) -> tuple[sympy.Expr, sympy.Expr, sympy.Expr | None]:
        """Linear in the weight and in the input: only the mixed derivative, of norm ≤ 1."""
        return (ZERO, ONE, ZERO)


class Bond(Op):
    """An operation without weights: mass 0."""
