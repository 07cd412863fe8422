"""Mass, sensitivity and per-atom targets by the composition rules of DESIGN §2.

Masses and sensitivities are computed bottom-up once per node; targets flow top-down from
the network's target 1. A repeated body is analysed once whatever its count, so a free
depth costs no more than a fixed one.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from math import prod

import sympy

from modc.graph import ir
from modc.source import Span

ONE = sympy.Integer(1)
INDEX = sympy.Symbol("i", integer=True, nonnegative=True)  # copy index when depth is free


@dataclass
class AtomInfo:
    """One atom of the network: where it is, its mass after tares, and its target."""

    path: str
    kind: str
    shape: tuple[sympy.Expr, ...]
    mass: sympy.Expr
    target: sympy.Expr
    copies: sympy.Expr
    span: Span | None
    node: ir.Leaf = field(repr=False)


@dataclass
class Analysis:
    mass: sympy.Expr
    sensitivity: sympy.Expr
    atoms: list[AtomInfo]
    parameters: sympy.Expr


class Analyzer:
    """Memoised μ and ν per IR node, then the top-down walk that assigns targets."""

    def __init__(self) -> None:
        self._mass: dict[int, sympy.Expr] = {}
        self._sens: dict[int, sympy.Expr] = {}

    def mass(self, n: ir.Node) -> sympy.Expr:
        if id(n) not in self._mass:
            self._mass[id(n)] = self._compute_mass(n)
        return self._mass[id(n)]

    def sensitivity(self, n: ir.Node) -> sympy.Expr:
        if id(n) not in self._sens:
            self._sens[id(n)] = self._compute_sensitivity(n)
        return self._sens[id(n)]

    def _compute_mass(self, n: ir.Node) -> sympy.Expr:
        if isinstance(n, ir.Leaf):
            return n.mass if n.is_atom else sympy.Integer(0)
        if isinstance(n, ir.Repeat):
            return self.mass(n.first) + (n.count - 1) * self.mass(n.rest)
        if isinstance(n, ir.Tare):
            return n.mass if self.mass(n.body) != 0 else sympy.Integer(0)
        return sympy.Add(*(self.mass(c) for c in n.children()))

    def _compute_sensitivity(self, n: ir.Node) -> sympy.Expr:
        if isinstance(n, ir.Leaf):
            return n.op.sensitivity()
        if isinstance(n, ir.Compose):
            return sympy.Mul(*(self.sensitivity(c) for c in n.parts))
        if isinstance(n, ir.Tuple):
            return sympy.Add(*(self.sensitivity(c) for c in n.branches))
        if isinstance(n, ir.Repeat):
            return self.sensitivity(n.first) * self.sensitivity(n.rest) ** (n.count - 1)
        return self.sensitivity(n.body)

    def targets(
        self,
        n: ir.Node,
        t: sympy.Expr,
        path: str,
        scale: sympy.Expr,
        copies: sympy.Expr,
        out: list[AtomInfo],
    ) -> None:
        """Give node `n` the target `t`; `scale` is the product of enclosing tare factors."""
        if isinstance(n, ir.Leaf):
            if n.is_atom:
                out.append(
                    AtomInfo(
                        path + n.name,
                        n.op.name,
                        n.op.weight_shape(),
                        n.mass * scale,
                        t,
                        copies,
                        n.span,
                        n,
                    )
                )
            return
        mu = self.mass(n)
        if mu == 0:
            return
        if isinstance(n, ir.Compose):
            after = ONE
            shares = []
            for part in reversed(n.parts):
                shares.append((part, t * self.mass(part) / (mu * after)))
                after = after * self.sensitivity(part)
            for part, share in reversed(shares):
                self.targets(part, share, path, scale, copies, out)
        elif isinstance(n, ir.Tuple):
            for b in n.branches:
                self.targets(b, t * self.mass(b) / mu, path, scale, copies, out)
        elif isinstance(n, ir.Tare):
            self.targets(n.body, t, path, scale * n.mass / self.mass(n.body), copies, out)
        elif isinstance(n, ir.Repeat):
            self._repeat_targets(n, t, path, scale, copies, out)

    def _repeat_targets(
        self,
        n: ir.Repeat,
        t: sympy.Expr,
        path: str,
        scale: sympy.Expr,
        copies: sympy.Expr,
        out: list[AtomInfo],
    ) -> None:
        """Copy k of L gets t·μ_k/μ divided by the sensitivity of the copies after it."""
        mu, nu = self.mass(n), self.sensitivity(n.rest)
        L = n.count

        def share(k: sympy.Expr, body: ir.Node) -> sympy.Expr:
            value = t * self.mass(body) / (mu * nu ** (L - 1 - k))
            return value if value.is_number else sympy.simplify(value)

        if L.is_Integer:
            for k in range(int(L)):
                body = n.first if k == 0 else n.rest
                self.targets(
                    body,
                    share(sympy.Integer(k), body),
                    f"{path}{n.name}.{k}.",
                    scale,
                    copies,
                    out,
                )
            return
        start = 0
        if n.first is not n.rest:
            self.targets(
                n.first,
                share(sympy.Integer(0), n.first),
                f"{path}{n.name}.0.",
                scale,
                copies,
                out,
            )
            start = 1
        self.targets(
            n.rest,
            share(INDEX, n.rest),
            f"{path}{n.name}.{{i}}.",
            scale,
            copies * (L - start),
            out,
        )


def analyze(network: ir.Network) -> Analysis:
    """The theory of a network: its mass, sensitivity, and every atom's target."""
    a = Analyzer()
    atoms: list[AtomInfo] = []
    a.targets(network.root, ONE, "", ONE, ONE, atoms)
    parameters = sympy.Add(*(info.copies * prod(info.shape) for info in atoms))
    return Analysis(a.mass(network.root), a.sensitivity(network.root), atoms, parameters)
