"""The module IR: a tree of atoms, bonds and combinators with every shape known.

Combinators follow docs/theory.md §3: Compose (data-flow order), Tuple (branches on one input),
Repeat (composed copies with independent weights), Tare (mass allocation) and Coupling
(an additive coupling block, invertible; docs/theory.md §12). Sums,
scalar multiples and residual blocks are written with these during elaboration.

Every node states its own rules here, once: the analysis, the cap solver, `modc check`,
the parameter count and the views call them and never ask a node's class (the emitters of
model.py and certificate.py in modc/codegen/ still do, for now). A new combinator is one
subclass of `Node` (plus its front-end syntax in the elaborator) that defines:

- `children()`: its sub-networks, in data-flow order; `evaluated()` when some are unused;
- `mass_of(values)`, `sensitivity_of(values)`: μ and ν from its children's (docs/theory.md §3);
- `lipschitz_of(values, domain, space)`: its Lipschitz bound in the norm `space` from its
  children's, built with the domain's algebra (`domain.product`, `.total`, `.power`,
  modc.theory.lipschitz): one rule serves `modc bounds`, the cap solver and the certificate;
- `sharpness_of(values, algebra)`: its second-derivative constants from its children's,
  with the algebra of modc.theory.sharpness (`compose`, `concatenate`, `power`, `tared`);
- `split(t, mass, sensitivity, index)`: each child's `Share` of a target `t`;
- `flow(facts, through)`: which facts about values (RMS ≤ 1, ...) its output carries,
  and `conditions()` if its own constants assume some of its input;
- `uses()`: how many times it applies each child (parameter counts), `mass_scale` if it
  rescales the masses inside it (a tare);
- `heads(path, recurse)`: the atoms whose output is its output through bonds alone;
- and, for people, `label()`, `attributes()` and `shown()` (`modc check`, spec.json, DOT).

The defaults suit a combinator that applies each child once and has no rule of its own for
a quantity (it then raises). `fold` evaluates a rule over a tree, children first; a leaf's
rules are its operation's (modc/ops/).
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


@dataclass(frozen=True)
class Share:
    """A child's part of its parent's target `t` (`Node.split`).

    `path` and `site` extend the names of the atoms inside (a repeat's copy: path
    `blocks.3.`, site `blocks.`: one site for every copy); `scale` multiplies their masses
    (a tare's factor); `copies` is how many copies of the child the share stands for, and
    `index` = (symbol, first, last) the range of the copy index its target depends on
    (a repeat with a free count).
    """

    node: Node
    target: Any
    path: str = ""
    site: str = ""
    scale: Any = sympy.Integer(1)
    copies: Any = sympy.Integer(1)
    index: tuple | None = None


@dataclass(eq=False)
class Node:
    in_shape: Shape
    span: Span | None = field(repr=False)

    @property
    def out_shape(self) -> Shape | tuple[Shape, ...]:
        raise NotImplementedError

    @property
    def is_atom(self) -> bool:
        """Whether this node holds a weight of its own (an atom leaf)."""
        return False

    def children(self) -> tuple[Node, ...]:
        return ()

    def evaluated(self) -> tuple[Node, ...]:
        """The children whose values the rules below take: all of them but a Repeat's
        unused `rest` when it has one copy."""
        return self.children()

    def uses(self) -> tuple[tuple[Node, sympy.Expr], ...]:
        """Each child and how many times this node applies it (once, by default)."""
        return tuple((c, ONE) for c in self.children())

    def mass_of(self, values: Sequence[sympy.Expr]) -> sympy.Expr:
        raise NotImplementedError

    def sensitivity_of(self, values: Sequence[Any]) -> Any:
        raise NotImplementedError

    def lipschitz_of(self, values: Sequence[Any], domain: Any, space: str) -> Any:
        """The bound in the norm `space` from the children's, in `domain`
        (modc.theory.lipschitz.Domain)."""
        raise NotImplementedError

    def sharpness_of(self, values: Sequence[Any], algebra: Any) -> Any:
        """The second-derivative constants from the children's (modc.theory.sharpness)."""
        raise NotImplementedError

    def split(
        self, t: Any, mass: Callable, sensitivity: Callable, index: sympy.Symbol
    ) -> list[Share]:
        """Each child's share of a target `t` of this node; `index` names the copy index of
        a repeat whose count is free."""
        raise NotImplementedError

    def flow(self, facts: Any, through: Callable[[Node, Any], Any]) -> Any:
        """The facts of the output given the input's, `through` each child."""
        raise NotImplementedError

    def conditions(self) -> tuple:
        """What this node's own constants assume of its inputs (an operation's)."""
        return ()

    def sharpness_note(self) -> str | None:
        """Why this node has no smoothness constants, where its class derives none."""
        return None

    def heads(
        self, path: str, recurse: Callable[[Node, str], tuple[set[str], bool]]
    ) -> tuple[set[str], bool]:
        """The paths of the atoms whose output reaches this node's output through bonds
        alone, and whether some route through it meets no atom (`recurse` on a child)."""
        raise NotImplementedError

    def mass_scale(self, mass: Callable) -> sympy.Expr:
        """The factor this node applies to the masses inside it (a tare's)."""
        return ONE

    def label(self) -> str:
        """The node's kind as a user reads it: `Linear(256)`, `Repeat(2)`, `Compose`."""
        return type(self).__name__

    def attributes(self) -> dict[str, Any]:
        """What a user named or set on this node (an atom's name and mass, a repeat's name)."""
        return {}

    def shown(self) -> list[tuple[Node, str]]:
        """The children as `modc check` lists them, each with a prefix."""
        return [(c, "") for c in self.children()]


@dataclass(eq=False)
class Leaf(Node):
    """An operation of the library. `name` is its attribute in generated code (atoms).
    Its rules are its operation's: an atom's mass is the spec's, a bond's 0."""

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

    def mass_of(self, values: Sequence[sympy.Expr]) -> sympy.Expr:
        return self.mass if self.is_atom else sympy.Integer(0)

    def sensitivity_of(self, values: Sequence[Any]) -> Any:
        return self.op.sensitivity()

    def lipschitz_of(self, values: Sequence[Any], domain: Any, space: str) -> Any:
        if self.is_atom:  # a function of its weight
            return domain.atom(self, space)
        return domain.constant(self.op.lipschitz_bound(space=space))

    def sharpness_of(self, values: Sequence[Any], algebra: Any) -> Any:
        return algebra.leaf(self)

    def split(
        self, t: Any, mass: Callable, sensitivity: Callable, index: sympy.Symbol
    ) -> list[Share]:
        return []

    def flow(self, facts: Any, through: Callable[[Node, Any], Any]) -> Any:
        return self.op.facts(facts if isinstance(facts, tuple) else (facts,))

    def conditions(self) -> tuple:
        return self.op.conditions()

    def heads(
        self, path: str, recurse: Callable[[Node, str], tuple[set[str], bool]]
    ) -> tuple[set[str], bool]:
        return ({path + self.name}, False) if self.is_atom else (set(), True)

    def parameters(self) -> sympy.Expr:
        """The size of its weight (0 for a bond)."""
        return math.prod(self.op.weight_shape(), start=ONE) if self.is_atom else sympy.Integer(0)

    def label(self) -> str:
        return self.op.describe()

    def attributes(self) -> dict[str, Any]:
        if not self.is_atom:
            return {}
        return {"name": self.name, "mass": self.mass, **({"frozen": True} if self.frozen else {})}


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

    def lipschitz_of(self, values: Sequence[Any], domain: Any, space: str) -> Any:
        return domain.product(values)

    def sharpness_of(self, values: Sequence[Any], algebra: Any) -> Any:
        value = values[0]
        for later in values[1:]:
            value = algebra.compose(value, later)
        return value

    def split(
        self, t: Any, mass: Callable, sensitivity: Callable, index: sympy.Symbol
    ) -> list[Share]:
        total, after, shares = mass(self), ONE, []
        for part in reversed(self.parts):
            shares.append(Share(part, t * mass(part) / (total * after)))
            after = after * sensitivity(part)
        return shares[::-1]

    def flow(self, facts: Any, through: Callable[[Node, Any], Any]) -> Any:
        for part in self.parts:
            facts = through(part, facts)
        return facts

    def heads(
        self, path: str, recurse: Callable[[Node, str], tuple[set[str], bool]]
    ) -> tuple[set[str], bool]:
        return _heads_back([(part, path) for part in self.parts], recurse)


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

    def lipschitz_of(self, values: Sequence[Any], domain: Any, space: str) -> Any:
        return domain.total(values)

    def sharpness_of(self, values: Sequence[Any], algebra: Any) -> Any:
        return algebra.concatenate(list(values))

    def split(
        self, t: Any, mass: Callable, sensitivity: Callable, index: sympy.Symbol
    ) -> list[Share]:
        return [Share(b, t * mass(b) / mass(self)) for b in self.branches]

    def flow(self, facts: Any, through: Callable[[Node, Any], Any]) -> Any:
        return tuple(through(b, facts) for b in self.branches)

    def heads(
        self, path: str, recurse: Callable[[Node, str], tuple[set[str], bool]]
    ) -> tuple[set[str], bool]:
        found = [recurse(b, path) for b in self.branches]
        return set().union(*(f[0] for f in found)), any(f[1] for f in found)


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

    def uses(self) -> tuple[tuple[Node, sympy.Expr], ...]:
        if self.rest is self.first:
            return ((self.first, self.count),)
        return ((self.first, ONE), (self.rest, self.count - 1))

    def mass_of(self, values: Sequence[sympy.Expr]) -> sympy.Expr:
        return values[0] + (self.count - 1) * values[-1]

    def sensitivity_of(self, values: Sequence[Any]) -> Any:
        if len(values) == 1:
            return values[0] if self.count == 1 else values[0] ** self.count
        return values[0] if self.count == 1 else values[0] * values[1] ** (self.count - 1)

    def lipschitz_of(self, values: Sequence[Any], domain: Any, space: str) -> Any:
        """The product over the copies: the domain says how it stands for them."""
        return domain.repeat(self, values)

    def sharpness_of(self, values: Sequence[Any], algebra: Any) -> Any:
        if self.first is self.rest:
            return algebra.power(self, values[0], self.count)
        if self.count == 1:
            return values[0]
        return algebra.compose(values[0], algebra.power(self, values[1], self.count - 1))

    def split(
        self, t: Any, mass: Callable, sensitivity: Callable, index: sympy.Symbol
    ) -> list[Share]:
        """Copy k of L gets t·μ_k/μ divided by the sensitivity of the copies after it. The
        copies share their sites; with a free count, one share stands for the copies after
        the first, its target a function of the copy index `index`."""
        mu, nu, count, name = mass(self), sensitivity(self.rest), self.count, self.name
        shared = self.first is self.rest

        def share(k: sympy.Expr, body: Node) -> sympy.Expr:
            after = ONE if nu == 1 else nu ** (count - 1 - k)  # ν = 1: no symbolic power
            return t * mass(body) / (mu * after)

        first_site = f"{name}." if shared else f"{name}.0."
        if count.is_Integer:
            return [
                Share(body, share(sympy.Integer(k), body), f"{name}.{k}.", site)
                for k in range(int(count))
                for body, site in [(self.rest, f"{name}.") if k else (self.first, first_site)]
            ]
        shares, start = [], 0
        if not shared:
            zero = sympy.Integer(0)
            shares.append(Share(self.first, share(zero, self.first), f"{name}.0.", first_site))
            start = 1
        rest = Share(
            self.rest,
            share(index, self.rest),
            f"{name}.{{{index}}}.",
            f"{name}.",
            copies=count - start,
            index=(index, sympy.Integer(start), count - 1),
        )
        return [*shares, rest]

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

    def heads(
        self, path: str, recurse: Callable[[Node, str], tuple[set[str], bool]]
    ) -> tuple[set[str], bool]:
        copies = [
            (self.rest if k else self.first, f"{path}{self.name}.{k}.")
            for k in range(int(self.count))
        ]
        return _heads_back(copies, recurse)

    def label(self) -> str:
        return f"Repeat({self.count})"

    def attributes(self) -> dict[str, Any]:
        return {"name": self.name}

    def shown(self) -> list[tuple[Node, str]]:
        if self.rest is self.first:
            return [(self.first, "")]
        return [(self.first, "copy 1: "), (self.rest, f"copies 2..{self.count}: ")]


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

    def lipschitz_of(self, values: Sequence[Any], domain: Any, space: str) -> Any:
        return values[0]

    def sharpness_of(self, values: Sequence[Any], algebra: Any) -> Any:
        return algebra.tared(values[0], self)

    def split(
        self, t: Any, mass: Callable, sensitivity: Callable, index: sympy.Symbol
    ) -> list[Share]:
        # the masses inside are rescaled, not the target
        return [Share(self.body, t, scale=self.mass_scale(mass))]

    def flow(self, facts: Any, through: Callable[[Node, Any], Any]) -> Any:
        return through(self.body, facts)

    def heads(
        self, path: str, recurse: Callable[[Node, str], tuple[set[str], bool]]
    ) -> tuple[set[str], bool]:
        return recurse(self.body, path)

    def mass_scale(self, mass: Callable) -> sympy.Expr:
        inside = mass(self.body)
        return self.mass / inside if inside != 0 else ONE

    def label(self) -> str:
        return f"Tare({self.mass})"


@dataclass(eq=False)
class Coupling(Node):
    """y1 = x1 + f(x2), y2 = x2 + g(y1) on the two halves of the features; exactly
    invertible: x2 = y2 − g(y1), x1 = y1 − f(x2) (docs/theory.md §12). A module of its own
    in model.py: the atoms of f and g are named inside it (`name.f_linear1`).

    It is the composition S_g ∘ S_f of two shears, S_f(x1, x2) = (x1 + f(x2), x2), and its
    rules are those of that composition: μ = μ_f + μ_g; a shear's constant is at most one
    plus its branch's, so ν and the Lipschitz bound in each norm are (1 + ν_f)(1 + ν_g) and
    (1 + L_f)(1 + L_g), and so is the inverse's Lipschitz bound (S_f⁻¹ shears by −f); f's
    target is divided by the sensitivity of S_g after it: t·μ_f/(μ·(1 + ν_g)), g gets
    t·μ_g/μ. No fact about the input survives the halving, so none flows through; no
    smoothness rule is derived for it yet.
    """

    f: Node = None
    g: Node = None
    name: str = ""

    @property
    def out_shape(self) -> Shape:
        return self.in_shape

    def children(self) -> tuple[Node, ...]:
        return (self.f, self.g)

    def mass_of(self, values: Sequence[sympy.Expr]) -> sympy.Expr:
        return values[0] + values[1]

    def sensitivity_of(self, values: Sequence[Any]) -> Any:
        return (1 + values[0]) * (1 + values[1])

    def lipschitz_of(self, values: Sequence[Any], domain: Any, space: str) -> Any:
        return domain.coupling(self, values)

    def inverse_lipschitz_of(self, values: Sequence[Any], domain: Any) -> Any:
        """The inverse's bound from the *forward* bounds of f and g: the same rule."""
        return domain.coupling(self, values)

    def sharpness_of(self, values: Sequence[Any], algebra: Any) -> Any:
        return algebra.underived(
            self,
            self.sensitivity_of([v.nu for v in values]),
            self.sensitivity_of([v.nuh for v in values]),
        )

    def sharpness_note(self) -> str | None:
        return f"{self.name} (a coupling: no smoothness rule)"

    def split(
        self, t: Any, mass: Callable, sensitivity: Callable, index: sympy.Symbol
    ) -> list[Share]:
        total, here = mass(self), f"{self.name}."
        return [
            Share(self.f, t * mass(self.f) / (total * (1 + sensitivity(self.g))), here, here),
            Share(self.g, t * mass(self.g) / total, here, here),
        ]

    def flow(self, facts: Any, through: Callable[[Node, Any], Any]) -> Any:
        through(self.f, frozenset())
        through(self.g, frozenset())
        return frozenset()

    def heads(
        self, path: str, recurse: Callable[[Node, str], tuple[set[str], bool]]
    ) -> tuple[set[str], bool]:
        """y = (x1 + f, x2 + g): both reach the output, and x2 through no atom."""
        found = [recurse(c, f"{path}{self.name}.") for c in self.children()]
        return set().union(*(f[0] for f in found)), True

    def attributes(self) -> dict[str, Any]:
        return {"name": self.name}


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


def fold(root: Node, rule: str, *extra: Any) -> Any:
    """Evaluate the rule `rule` ("mass_of", "sensitivity_of", "lipschitz_of",
    "sharpness_of") over the tree: every node combines its children's values by its rule
    (with `extra` arguments: a domain, a norm), a leaf by its operation's. Memoised per node."""
    memo: dict[int, Any] = {}

    def value(n: Node) -> Any:
        if id(n) not in memo:
            memo[id(n)] = getattr(n, rule)([value(c) for c in n.evaluated()], *extra)
        return memo[id(n)]

    return value(root)


def _heads_back(
    parts: Sequence[tuple[Node, str]], recurse: Callable[[Node, str], tuple[set[str], bool]]
) -> tuple[set[str], bool]:
    """`heads` of (part, path) applied in order: from the output back, until every route
    met an atom."""
    found: set[str] = set()
    for part, path in reversed(parts):
        heads, open_route = recurse(part, path)
        found |= heads
        if not open_route:
            return found, False
    return found, True


def walk(node: Node) -> Iterator[Node]:
    """Every node of the tree, parents before children."""
    yield node
    for child in node.children():
        yield from walk(child)


def leaves(node: Node) -> Iterator[Leaf]:
    """Every operation of the tree, in order."""
    return (n for n in walk(node) if isinstance(n, Leaf))
