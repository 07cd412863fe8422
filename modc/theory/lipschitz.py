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
- `Capped`: a float, every weight-dependent atom at its cap, rounded up: the bound the
  cap solver promises;
- `LogJet`: log L with its gradient and Hessian in the atoms' log caps, for the cap
  solver's Newton steps (modc.theory.caps);
- `modc.codegen.certificate.Source`: Python source evaluating it at live weights, for the
  generated certificate.

So `modc bounds`, the cap solver and the certificate agree by construction.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar

import numpy as np
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

    def used(self, node: ir.Node, value: V) -> V:
        """The value of a use of a definition with its own class; by default `value`."""
        return value

    def coupling(self, node: ir.Coupling, values: Sequence[V]) -> V:
        """(1 + L_f)·(1 + L_g) from the bounds of f and g (modc.graph.ir.Coupling); a
        domain that writes a function per generated module overrides it."""
        one = self.constant(sympy.Integer(1))
        return self.product([self.total([one, values[0]]), self.total([one, values[1]])])


def lipschitz(root: ir.Node, domain: Domain[V], space: str) -> V:
    """The bound on ‖f(x) − f(x′)‖ / ‖x − x′‖ in the norm `space`, as a value of `domain`:
    the fold of each node's `lipschitz_of` rule (modc/graph/ir.py): an atom's constant as a
    function of its weight (`domain.atom`), a bond's constant, combined by the combinators."""
    return ir.fold(root, "lipschitz_of", domain, space, used=domain.used)


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
    """Floats: every atom whose ℓ2 bound depends on its weight at its cap (`caps`: one for
    all, or one per atom leaf, by id); the others (Bias: a translation, 1 for any weight)
    at their fixed constant. Rounded up."""

    def __init__(self, caps: float | Mapping[int, float]):
        self.caps = caps

    def atom(self, leaf: ir.Leaf, space: str) -> float:
        fixed = fixed_bound(leaf.op)
        if fixed is not None:
            return fixed
        return self.caps[id(leaf)] if isinstance(self.caps, Mapping) else self.caps

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


def capped_bound(root: ir.Node, caps: float | Mapping[int, float]) -> float:
    """The certificate's ℓ2 bound when every weight-dependent atom's bound is at its cap
    (one for all, or one per atom leaf, by id)."""
    return lipschitz(root, Capped(caps), L2) * (1 + 1e-12)


@functools.cache
def _float(value: sympy.Expr) -> float:
    """A constant of the fold as a float, evaluated once (sympy's evaluation is slow)."""
    return float(value)


@dataclass(frozen=True)
class Jet:
    """log L, its gradient and Hessian in x (the atoms' log caps); value −inf for L = 0."""

    value: float
    grad: np.ndarray
    hess: np.ndarray


class LogJet(Domain[Jet]):
    """log L as a function of x, the log of each weight-dependent atom's ℓ2 factor (`index`
    maps id(atom leaf) to its coordinate), with its gradient and Hessian, at `x`: products
    add, sums are log-sum-exps, powers scale. Every rule of the fold builds L from the
    atoms' factors and nonnegative constants by products, sums and integer powers (a
    posynomial), so log L is convex in x (docs/theory.md §9). Not rounded: for solving."""

    def __init__(self, index: Mapping[int, int], x: np.ndarray):
        self.index, self.x, self.n = index, x, len(x)

    def _const(self, value: float) -> Jet:
        zero = np.zeros(self.n)
        return Jet(math.log(value) if value > 0 else -math.inf, zero, np.zeros((self.n,) * 2))

    def atom(self, leaf: ir.Leaf, space: str) -> Jet:
        fixed = fixed_bound(leaf.op)
        if fixed is not None:
            return self._const(fixed)
        i = self.index[id(leaf)]
        return Jet(float(self.x[i]), np.eye(self.n)[i], np.zeros((self.n, self.n)))

    def constant(self, value: sympy.Expr) -> Jet:
        return self._const(_float(value))

    def product(self, values: Sequence[Jet]) -> Jet:
        if any(v.value == -math.inf for v in values):
            return self._const(0.0)
        return Jet(
            math.fsum(v.value for v in values),
            sum((v.grad for v in values), np.zeros(self.n)),
            sum((v.hess for v in values), np.zeros((self.n, self.n))),
        )

    def total(self, values: Sequence[Jet]) -> Jet:
        terms = [v for v in values if v.value > -math.inf]
        if not terms:
            return self._const(0.0)
        top = max(v.value for v in terms)
        weights = np.array([math.exp(v.value - top) for v in terms])
        value = top + math.log(weights.sum())
        weights /= weights.sum()
        pairs = list(zip(weights, terms, strict=True))
        grad = sum(w * v.grad for w, v in pairs)
        hess = sum(w * (v.hess + np.outer(v.grad, v.grad)) for w, v in pairs)
        return Jet(value, grad, hess - np.outer(grad, grad))

    def power(self, value: Jet, count: sympy.Expr) -> Jet:
        k = int(count)
        if k == 0:
            return self._const(1.0)
        if value.value == -math.inf:
            return value
        return Jet(k * value.value, k * value.grad, k * value.hess)


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
        if n.use is not None and n.use.attr is not None:  # as in the fold: `domain.used`
            out = domain.used(n, out)
        memo[id(n)] = out
        return out

    return value(root)
