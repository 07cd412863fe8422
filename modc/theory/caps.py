"""Per-atom caps for `optimizer: {lipschitz: L}`: each weight-dependent atom's ℓ2 factor
gets its own cap, the caps as close as they can be to the atoms' well-normed sizes while the
certificate's bound at the caps is at most L (docs/theory.md §9).

In x = log(caps) the bound's log is convex (the fold builds a posynomial, `LogJet`), so the
caps are the one solution of a convex problem: the point nearest the reference sizes
a = log(r) in the metric Σ m_i (x_i − a_i)², m the atoms' masses, with log L(x) ≤ log L and
x_i ≤ log(max_norm). At its solution m_i·(a_i − x_i) = μ·∂log L/∂x_i: an atom yields by its
elasticity over its mass, so the embedding and the head, on the network's one path, keep
most of their size, and atoms inside residual branches, whose share of the bound is small
once they are small, give way. When the reference sizes already meet L, every cap grows by
one factor until the bound reaches L; the two rules agree where L(r) = L. Copies of a
repeated body are one leaf, so they share one cap (and their mass adds).

Solved by Newton's method (for each μ, x(μ) minimises ½Σm(x − a)² + μ·log L(x); μ by a
safeguarded Newton step on log L(x(μ)) = log L), then checked with the rounded-up float fold
(`capped_bound`): if rounding put the bound above L, every cap shrinks by the one factor
that brings it back, by bisection. Every loop is bounded.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np
import sympy

from modc.errors import ModcError
from modc.graph import ir
from modc.ops.base import L2
from modc.theory.analysis import Analyzer
from modc.theory.lipschitz import LogJet, capped_bound, fixed_bound, lipschitz

ONE = sympy.Integer(1)
STEPS = 100  # Newton steps (each loop), bisection halvings: far beyond what convergence needs
TOL = 1e-13  # in log L: relative 1e-13 on the bound
MARGIN = 1e-11  # aimed below log L, so that the rounded-up fold meets L as a rule
LARGEST = 700.0  # log of the largest cap: e^700 ≈ 1e304, still a float with room to spare


def atom_masses(root: ir.Node) -> dict[int, float]:
    """Each atom leaf's mass after tares (by id), summed over the copies it stands for."""
    walk, found = Analyzer(), []
    walk.targets(root, ONE, "", ONE, ONE, found)
    masses: dict[int, float] = {}
    for a in found:
        masses[id(a.node)] = masses.get(id(a.node), 0.0) + float(a.mass * a.copies)
    return masses


def capped_atoms(root: ir.Node) -> list[ir.Leaf]:
    """The atoms whose ℓ2 factor depends on their weight, once each (a repeated body's leaf
    stands for all its copies), in the order of the tree."""
    found = {id(n): n for n in ir.leaves(root) if n.is_atom and fixed_bound(n.op) is None}
    return list(found.values())


def atom_caps(
    root: ir.Node, lipschitz_bound: float, max_norm: float | None, masses: Mapping[int, float]
) -> dict[int, float]:
    """Each weight-dependent atom's cap (by id of its leaf): the nearest, in the mass-weighted
    log metric, to its reference size `op.l2_reference()` for which the certificate's ℓ2
    bound is at most `lipschitz_bound`; none above `max_norm`. `masses` per leaf, all copies
    together."""
    atoms = capped_atoms(root)
    floor = capped_bound(root, dict.fromkeys(map(id, atoms), 0.0))
    if floor > lipschitz_bound:
        raise ModcError(
            f"optimizer.lipschitz {lipschitz_bound:g} cannot be met: the bonds alone give a "
            f"bound of {floor:.6g}"
        )
    problem = _Problem(root, atoms, lipschitz_bound, max_norm, masses)
    x = np.minimum(problem.solve(), LARGEST)
    caps = {id(leaf): math.exp(v) for leaf, v in zip(atoms, x, strict=True)}
    if max_norm is not None:
        caps = {k: min(c, max_norm) for k, c in caps.items()}
    if capped_bound(root, caps) <= lipschitz_bound:
        return caps
    lo, hi = 0.0, 1.0  # rounding: the largest common factor that meets the bound
    for _ in range(STEPS):
        mid = (lo + hi) / 2
        if mid in (lo, hi):
            break
        fits = capped_bound(root, {k: c * mid for k, c in caps.items()}) <= lipschitz_bound
        lo, hi = (mid, hi) if fits else (lo, mid)
    return {k: c * lo for k, c in caps.items()}


class _Problem:
    """min ½Σ m_i (x_i − a_i)² subject to log L(x) ≤ log L and x ≤ log(max_norm)."""

    def __init__(self, root, atoms, bound, max_norm, masses) -> None:
        self.root, self.n = root, len(atoms)
        self.index = {id(leaf): i for i, leaf in enumerate(atoms)}
        self.a = np.array([math.log(float(leaf.op.l2_reference())) for leaf in atoms])
        mass = np.array([float(masses.get(id(leaf), 0.0)) for leaf in atoms])
        # an atom of mass 0 takes no step; it still needs a weight in the metric
        self.m = np.maximum(mass, 1e-3 * mass.max(initial=1.0)) if self.n else mass
        self.target = math.log(bound) - MARGIN
        self.upper = math.inf if max_norm is None else math.log(max_norm)

    def jet(self, x: np.ndarray):
        return lipschitz(self.root, LogJet(self.index, x), L2)

    def value(self, x: np.ndarray) -> float:
        return self.jet(x).value

    def solve(self) -> np.ndarray:
        if self.n == 0:
            raise ModcError("optimizer.lipschitz: no atom of the network changes its bound")
        start = np.minimum(self.a, self.upper)
        if self.value(start) <= self.target:
            return self.scaled_up(start)
        fixed = np.zeros(self.n, dtype=bool)
        for _ in range(self.n):  # active set: an atom over max_norm stays at it
            x = self.nearest(fixed)
            over = (x > self.upper) & ~fixed
            if not over.any():
                return x
            fixed |= over
        return np.minimum(x, self.upper)

    def scaled_up(self, start: np.ndarray) -> np.ndarray:
        """start + t (each at most log max_norm) for the t at which log L reaches the bound."""

        def at(t: float) -> np.ndarray:
            return np.minimum(start + t, self.upper)

        lo, hi = 0.0, 1.0
        while self.value(at(hi)) <= self.target:
            if np.all(at(hi) >= self.upper):
                return at(hi)  # every atom at max_norm, and the bound still met
            lo, hi = hi, 2 * hi
            if hi > 1e4:
                raise ModcError("optimizer.lipschitz: no atom of the network changes its bound")
        for _ in range(STEPS):
            mid = (lo + hi) / 2
            if mid in (lo, hi):
                break
            lo, hi = (mid, hi) if self.value(at(mid)) <= self.target else (lo, mid)
        return at(lo)

    def nearest(self, fixed: np.ndarray) -> np.ndarray:
        """The solution with the `fixed` atoms at log max_norm and log L at the bound."""
        free = ~fixed
        x = np.where(fixed, self.upper, self.a)
        if not free.any():
            return x
        mu, lo, hi = 0.0, 0.0, math.inf
        for _ in range(STEPS):
            x = self.minimise(x, mu, free)
            jet = self.jet(x)
            gap = jet.value - self.target
            if abs(gap) <= TOL:
                break
            lo, hi = (mu, hi) if gap > 0 else (lo, mu)
            g = jet.grad[free]
            hess = np.diag(self.m[free]) + mu * jet.hess[np.ix_(free, free)]
            slope = float(g @ np.linalg.solve(hess, g))  # −d log L(x(μ)) / dμ
            step = mu + gap / slope if slope > 0 else math.inf
            if not lo < step < hi:  # outside the bracket: bisect it, or grow
                step = (lo + hi) / 2 if hi < math.inf else 2 * max(mu, 1.0)
            if step in (lo, hi):
                break
            mu = step
        return x

    def minimise(self, x: np.ndarray, mu: float, free: np.ndarray) -> np.ndarray:
        """argmin over the free coordinates of F(x) = ½Σm(x − a)² + μ·log L(x), convex: damped
        Newton from `x`."""
        m, a = self.m, self.a

        def objective(y: np.ndarray) -> float:
            return 0.5 * float(m[free] @ (y - a)[free] ** 2) + mu * self.value(y)

        for _ in range(STEPS):
            jet = self.jet(x)
            grad = (m * (x - a) + mu * jet.grad)[free]
            hess = np.diag(m[free]) + mu * jet.hess[np.ix_(free, free)]
            step = np.zeros(self.n)
            step[free] = -np.linalg.solve(hess, grad)
            slope = float(grad @ step[free])  # −(Newton decrement)²
            if -slope <= 1e-26 * (1 + mu):  # converged to rounding
                break
            t = 1.0
            if -slope > 1e-4:  # far off: damped, by backtracking on F
                before = 0.5 * float(m[free] @ (x - a)[free] ** 2) + mu * jet.value
                while t > 1e-9 and objective(x + t * step) > before + 1e-4 * t * slope:
                    t /= 2
            x = x + t * step
        return x
