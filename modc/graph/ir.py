"""The module IR: a tree of atoms, bonds and combinators with every shape known.

Combinators follow docs/theory.md §3: Compose (data-flow order), Tuple (branches on one input),
Repeat (composed copies with independent weights), Tare (mass allocation) and Coupling
(an additive coupling block, invertible; docs/theory.md §11). Sums,
scalar multiples and residual blocks are written with these during elaboration.

Each combinator states its own rules here, once: how its mass, sensitivity and Lipschitz
bound follow from its children's (`mass`, `sensitivity`, `lipschitz`, given the children's
values in `children()` order), how a target splits among its children (`split`), and how
facts about values flow through it (`flow`). `fold` evaluates any of the first three over
a tree; an operation's own rules are its Op's (modc/ops/).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import sympy

from modc.ops import Op, Shape
from modc.source import Span

ONE = sympy.Integer(1)


@dataclass(eq=False)
class Node:
    in_shape: Shape
    span: Span | None = field(repr=False)

    @property
    def out_shape(self) -> Shape | tuple[Shape, ...]:
        raise NotImplementedError

    def children(self) -> tuple[Node, ...]:
        return ()

    @property
    def scope(self) -> str:
        """What the path of an atom inside gains here: `name.` for a node generated as a
        module of its own (a coupling), else nothing (a repeat adds its copy index too)."""
        return ""

    def evaluated(self) -> tuple[Node, ...]:
        """The children whose values the rules below take: all of them but a Repeat's
        unused `rest` when it has one copy."""
        return self.children()

    def mass_of(self, values: Sequence[sympy.Expr]) -> sympy.Expr:
        raise NotImplementedError

    def sensitivity_of(self, values: Sequence[Any]) -> Any:
        raise NotImplementedError

    def lipschitz_of(self, values: Sequence[Any], domain: Any) -> Any:
        """The bound from the children's, in `domain` (modc.theory.lipschitz.Domain)."""
        raise NotImplementedError

    def split(self, t: Any, mass: Callable, sensitivity: Callable) -> list[tuple[Node, Any]]:
        """(child, its target) for a target `t` of this node (not for Repeat: its copies'
        targets depend on the copy index, modc.theory.analysis)."""
        raise NotImplementedError

    def flow(self, facts: Any, through: Callable[[Node, Any], Any]) -> Any:
        """The facts of the output given the input's, `through` each child."""
        raise NotImplementedError


@dataclass(eq=False)
class Leaf(Node):
    """An operation of the library. `name` is its attribute in generated code (atoms)."""

    op: Op = None
    name: str | None = None
    mass: sympy.Expr = sympy.Integer(0)
    frozen: bool = False  # an atom whose weight keeps its random initialisation: mass 0

    @property
    def out_shape(self) -> Shape:
        return self.op.out_shape

    @property
    def is_atom(self) -> bool:
        return self.op.atom


@dataclass(eq=False)
class Compose(Node):
    """parts[0] first, then parts[1], ...: μ adds, ν multiplies, Lipschitz bounds multiply;
    a part's target is t·μ_part/μ over the sensitivity of the parts after it."""

    parts: tuple[Node, ...] = ()

    @property
    def out_shape(self) -> Shape | tuple[Shape, ...]:
        return self.parts[-1].out_shape if self.parts else self.in_shape

    def children(self) -> tuple[Node, ...]:
        return self.parts

    def mass_of(self, values: Sequence[sympy.Expr]) -> sympy.Expr:
        return sympy.Add(*values)

    def sensitivity_of(self, values: Sequence[Any]) -> Any:
        return _product(values)

    def lipschitz_of(self, values: Sequence[Any], domain: Any) -> Any:
        return domain.product(values)

    def split(self, t: Any, mass: Callable, sensitivity: Callable) -> list[tuple[Node, Any]]:
        total, after, shares = mass(self), ONE, []
        for part in reversed(self.parts):
            shares.append((part, t * mass(part) / (total * after)))
            after = after * sensitivity(part)
        return shares[::-1]

    def flow(self, facts: Any, through: Callable[[Node, Any], Any]) -> Any:
        for part in self.parts:
            facts = through(part, facts)
        return facts


@dataclass(eq=False)
class Tuple(Node):
    """Branches applied to the same input; the output is the tuple of their outputs."""

    branches: tuple[Node, ...] = ()

    @property
    def out_shape(self) -> tuple[Shape, ...]:
        return tuple(b.out_shape for b in self.branches)

    def children(self) -> tuple[Node, ...]:
        return self.branches

    def mass_of(self, values: Sequence[sympy.Expr]) -> sympy.Expr:
        return sympy.Add(*values)

    def sensitivity_of(self, values: Sequence[Any]) -> Any:
        return sum(values[1:], values[0])

    def lipschitz_of(self, values: Sequence[Any], domain: Any) -> Any:
        return domain.total(values)

    def split(self, t: Any, mass: Callable, sensitivity: Callable) -> list[tuple[Node, Any]]:
        return [(b, t * mass(b) / mass(self)) for b in self.branches]

    def flow(self, facts: Any, through: Callable[[Node, Any], Any]) -> Any:
        return tuple(through(b, facts) for b in self.branches)


@dataclass(eq=False)
class Repeat(Node):
    """`count` composed copies. The first copy may change the shape (`first`); the others
    all map `rest.in_shape` to itself. When the first copy keeps the shape, rest is first.
    """

    count: sympy.Expr = sympy.Integer(1)
    first: Node = None
    rest: Node = None
    name: str = ""

    @property
    def out_shape(self) -> Shape:
        return self.rest.out_shape

    def children(self) -> tuple[Node, ...]:
        return (self.first,) if self.rest is self.first else (self.first, self.rest)

    def evaluated(self) -> tuple[Node, ...]:
        return (self.first,) if self.count == 1 else self.children()

    def mass_of(self, values: Sequence[sympy.Expr]) -> sympy.Expr:
        return values[0] + (self.count - 1) * values[-1]

    def sensitivity_of(self, values: Sequence[Any]) -> Any:
        if len(values) == 1:
            return values[0] if self.count == 1 else values[0] ** self.count
        return values[0] if self.count == 1 else values[0] * values[1] ** (self.count - 1)

    def lipschitz_of(self, values: Sequence[Any], domain: Any) -> Any:
        """The product over the copies: the domain says how it stands for them."""
        return domain.repeat(self, values)

    def flow(self, facts: Any, through: Callable[[Node, Any], Any]) -> Any:
        """The copies after the first get the facts that hold after the first and after
        every later copy: a fixed point, reached by shrinking (facts are few)."""
        out = through(self.first, facts)
        if self.count == 1:
            return out
        ins = out
        while (after := meet(ins, through(self.rest, ins))) != ins:
            ins = after
        return through(self.rest, ins)


@dataclass(eq=False)
class Tare(Node):
    """Mass allocation: the masses inside `body` are rescaled to total `mass`."""

    mass: sympy.Expr = sympy.Integer(1)
    body: Node = None

    @property
    def out_shape(self) -> Shape | tuple[Shape, ...]:
        return self.body.out_shape

    def children(self) -> tuple[Node, ...]:
        return (self.body,)

    def mass_of(self, values: Sequence[sympy.Expr]) -> sympy.Expr:
        return self.mass if values[0] != 0 else sympy.Integer(0)

    def sensitivity_of(self, values: Sequence[Any]) -> Any:
        return values[0]

    def lipschitz_of(self, values: Sequence[Any], domain: Any) -> Any:
        return values[0]

    def split(self, t: Any, mass: Callable, sensitivity: Callable) -> list[tuple[Node, Any]]:
        return [(self.body, t)]  # the masses inside are rescaled, not the target

    def flow(self, facts: Any, through: Callable[[Node, Any], Any]) -> Any:
        return through(self.body, facts)


@dataclass(eq=False)
class Coupling(Node):
    """y1 = x1 + f(x2), y2 = x2 + g(y1) on the two halves of the features; exactly
    invertible: x2 = y2 − g(y1), x1 = y1 − f(x2) (docs/theory.md §11).

    It is the composition S_g ∘ S_f of two shears, S_f(x1, x2) = (x1 + f(x2), x2), and its
    rules are those of that composition: μ = μ_f + μ_g; a shear's constant is at most one
    plus its branch's, so ν and the Lipschitz bound in each norm are (1 + ν_f)(1 + ν_g) and
    (1 + L_f)(1 + L_g), and so is the inverse's Lipschitz bound (S_f⁻¹ shears by −f); f's
    target is divided by the sensitivity of S_g after it: t·μ_f/(μ·(1 + ν_g)), g gets
    t·μ_g/μ. No fact about the input survives the halving, so none flows through.
    """

    f: Node = None
    g: Node = None
    name: str = ""

    @property
    def out_shape(self) -> Shape:
        return self.in_shape

    @property
    def scope(self) -> str:
        return f"{self.name}."

    def children(self) -> tuple[Node, ...]:
        return (self.f, self.g)

    def mass_of(self, values: Sequence[sympy.Expr]) -> sympy.Expr:
        return values[0] + values[1]

    def sensitivity_of(self, values: Sequence[Any]) -> Any:
        return (1 + values[0]) * (1 + values[1])

    def lipschitz_of(self, values: Sequence[Any], domain: Any) -> Any:
        return domain.coupling(self, values)

    def inverse_lipschitz_of(self, values: Sequence[Any], domain: Any) -> Any:
        """The inverse's bound from the *forward* bounds of f and g: the same rule."""
        return domain.coupling(self, values)

    def split(self, t: Any, mass: Callable, sensitivity: Callable) -> list[tuple[Node, Any]]:
        total = mass(self)
        return [(self.f, t * mass(self.f) / (total * (1 + sensitivity(self.g)))),
                (self.g, t * mass(self.g) / total)]

    def flow(self, facts: Any, through: Callable[[Node, Any], Any]) -> Any:
        through(self.f, frozenset())
        through(self.g, frozenset())
        return frozenset()


@dataclass
class Network:
    """An elaborated spec: parameter values, shapes and the module tree."""

    name: str
    params: dict[str, sympy.Expr]
    input_shape: Shape
    root: Node
    train: dict[str, object]
    optimizer: dict[str, object]
    source_name: str

    @property
    def output_shape(self) -> Shape:
        return self.root.out_shape


def _product(values: Sequence[Any]) -> Any:
    return math.prod(values[1:], start=values[0]) if values else ONE


def meet(a: Any, b: Any) -> Any:
    """The facts that hold in both a and b (a tuple's per branch)."""
    if isinstance(a, tuple) and isinstance(b, tuple) and len(a) == len(b):
        return tuple(meet(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, tuple) or isinstance(b, tuple):
        return frozenset()
    return a & b


def fold(root: Node, rule: str, leaf: Callable[[Leaf], Any], *extra: Any) -> Any:
    """Evaluate the combinator rule `rule` ("mass_of", "sensitivity_of", "lipschitz_of")
    over the tree: `leaf` gives each leaf's value, each combinator combines its children's by its
    rule (with `extra` arguments, the Lipschitz domain). Memoised per node."""
    memo: dict[int, Any] = {}

    def value(n: Node) -> Any:
        if id(n) not in memo:
            if isinstance(n, Leaf):
                memo[id(n)] = leaf(n)
            else:
                memo[id(n)] = getattr(n, rule)([value(c) for c in n.evaluated()], *extra)
        return memo[id(n)]

    return value(root)


def walk(node: Node) -> Iterator[Node]:
    """Every node of the tree, parents before children."""
    yield node
    for child in node.children():
        yield from walk(child)
