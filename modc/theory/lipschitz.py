"""The network's input-Lipschitz bound: one fold over the IR, evaluated in a domain.

The rules are written once (docs/theory.md §4): an atom contributes its Lipschitz constant
as a function of its weight, a bond its constant on the inputs its conditions allow (both
in modc/ops/); compositions multiply, tuples add (a tuple is measured by the sum of its
parts' norms, so an operation on a tuple is bounded per unit of that sum), a tare changes
no constant, and the copies of a repeated body multiply (each combinator's
`lipschitz_of`, modc/graph/ir.py). Each bound is in one named norm
(`space`: ACTIVATION or L2, modc.ops.base). A `Domain` says what a value is:

- `Symbolic`: a sympy expression in the atoms' norms, for `modc bounds`; a repeated atom
  is one symbol, the largest norm over its copies, and the bound is non-decreasing in
  every norm, so L copies give the body's bound to the power L whatever L is;
- `Capped`: a float, every weight-dependent atom at its cap, for the cap solver;
- `modc.codegen.certificate.Source`: Python source evaluating it at live weights, for the
  generated certificate.

So `modc bounds`, the cap solver and the certificate agree by construction.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Generic, TypeVar

import sympy

from modc.graph import ir
from modc.ops.base import L2

V = TypeVar("V")


class Domain(Generic[V]):
    """How the fold makes and combines values."""

    def atom(self, leaf: ir.Leaf, space: str) -> V:
        raise NotImplementedError

    def constant(self, value: sympy.Expr) -> V:
        raise NotImplementedError

    def product(self, values: Sequence[V]) -> V:
        raise NotImplementedError

    def total(self, values: Sequence[V]) -> V:
        raise NotImplementedError

    def repeat(self, node: ir.Repeat, values: Sequence[V]) -> V:
        """The product over the copies, from the bound of the first copy and of the rest
        (one value when they are one body); by default every copy after the first is
        bounded alike, one value standing for all of them."""
        if len(values) == 1:
            return self.power(values[0], node.count)
        if node.count == 1:
            return values[0]
        return self.product([values[0], self.power(values[1], node.count - 1)])

    def power(self, value: V, count: sympy.Expr) -> V:
        raise NotImplementedError

    def coupling(self, node: ir.Coupling, values: Sequence[V]) -> V:
        """(1 + L_f)·(1 + L_g) from the bounds of f and g (modc.graph.ir.Coupling); a
        domain that writes a function per generated module overrides it."""
        one = self.constant(sympy.Integer(1))
        return self.product([self.total([one, values[0]]), self.total([one, values[1]])])


def lipschitz(root: ir.Node, domain: Domain[V], space: str) -> V:
    """The bound on ‖f(x) − f(x′)‖ / ‖x − x′‖ in the norm `space`, as a value of `domain`:
    the fold of each node's `lipschitz_of` rule (modc/graph/ir.py): an atom's constant as a
    function of its weight (`domain.atom`), a bond's constant, combined by the combinators."""
    return ir.fold(root, "lipschitz_of", domain, space)


class Symbolic(Domain[sympy.Expr]):
    """sympy expressions in the atoms' norm symbols (`norms` maps id(atom leaf))."""

    def __init__(self, norms: dict[int, sympy.Symbol]):
        self.norms = norms

    def atom(self, leaf: ir.Leaf, space: str) -> sympy.Expr:
        return leaf.op.lipschitz_bound(self.norms[id(leaf)], space)

    def constant(self, value: sympy.Expr) -> sympy.Expr:
        return value

    def product(self, values: Sequence[sympy.Expr]) -> sympy.Expr:
        return sympy.Mul(*values)

    def total(self, values: Sequence[sympy.Expr]) -> sympy.Expr:
        return sympy.Add(*values)

    def power(self, value: sympy.Expr, count: sympy.Expr) -> sympy.Expr:
        return value if count == 1 else value**count


def _up(value: sympy.Expr) -> float:
    """`value` as a float not below it."""
    x = float(value)
    return x if sympy.Float(x, 60) >= value else math.nextafter(x, math.inf)


class Capped(Domain[float]):
    """Floats: every atom whose ℓ2 bound depends on its weight at `cap`; the others (Bias:
    a translation, 1 for any weight) at their fixed constant. Rounded up."""

    def __init__(self, cap: float):
        self.cap = cap

    def atom(self, leaf: ir.Leaf, space: str) -> float:
        fixed = fixed_bound(leaf.op)
        return self.cap if fixed is None else fixed

    def constant(self, value: sympy.Expr) -> float:
        return _up(value)

    def product(self, values: Sequence[float]) -> float:
        return math.prod(values)

    def total(self, values: Sequence[float]) -> float:
        return math.fsum(values)

    def power(self, value: float, count: sympy.Expr) -> float:
        return value ** int(count)


def fixed_bound(op) -> float | None:
    """An atom's ℓ2 bound when no weight changes it (Bias: 1), else None."""
    probe = sympy.Symbol("probe", positive=True)
    value = op.lipschitz_bound(probe, L2)
    return None if value.has(probe) else _up(value)


def capped_bound(root: ir.Node, cap: float) -> float:
    """The certificate's ℓ2 bound when every weight-dependent atom's bound is `cap`."""
    return lipschitz(root, Capped(cap), L2) * (1 + 1e-12)


def inverse_lipschitz(root: ir.Node, domain: Domain[V], space: str = L2) -> V:
    """The bound on ‖f⁻¹(y) − f⁻¹(y′)‖ / ‖y − y′‖ in ℓ2 for an invertible `root`
    (modc.graph.reversible.invertible; docs/theory.md §12): the inverse of a composition is
    the composition of the inverses, so bounds multiply as forward; an operation gives its
    inverse's constant (`Op.inverse`); a coupling gives its rule from the *forward* bounds of
    f and g (`Coupling.inverse_lipschitz_of`)."""
    if space != L2:
        raise ValueError("the inverse's bound is stated in ℓ2 only")
    memo: dict[int, V] = {}

    def value(n: ir.Node) -> V:
        if id(n) in memo:
            return memo[id(n)]
        if isinstance(n, ir.Leaf):
            inverse = n.op.inverse("y")
            if inverse is None:
                raise ValueError(f"{n.op.describe()} has no inverse")
            out = domain.constant(inverse[1])
        elif isinstance(n, ir.Coupling):
            forward = [lipschitz(c, domain, space) for c in n.children()]
            out = n.inverse_lipschitz_of(forward, domain)
        elif isinstance(n, ir.Tuple):
            raise ValueError("a tuple has no inverse")
        else:  # compose, tare, repeat: their own rule, over the inverses' bounds
            out = n.lipschitz_of([value(c) for c in n.evaluated()], domain, space)
        memo[id(n)] = out
        return out

    return value(root)
