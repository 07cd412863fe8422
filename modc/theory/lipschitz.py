"""The network's input-Lipschitz bound as an expression in its atoms' norms.

Each atom contributes its Lipschitz constant as a function of its weight's norm (for
Linear, the norm itself), each bond its sound constant on the inputs its conditions allow;
compositions multiply, tuples add (a tuple is measured by the sum of its parts' norms). A
repeated atom is one symbol, the largest norm over its copies: the bound is non-decreasing
in every norm, so L copies of a body give the body's bound to the power L, in closed form
whatever L is. With every norm 1 (well-normed weights) this is the network's sensitivity,
except where a bond's worst case exceeds its nominal sensitivity (SplitHeads).
"""

from __future__ import annotations

import sympy

from modc.graph import ir


def lipschitz(root: ir.Node, norms: dict[int, sympy.Symbol]) -> sympy.Expr:
    """Bound on ‖f(x) − f(x′)‖ / ‖x − x′‖ in the activation norms; `norms` maps id(atom)."""
    memo: dict[int, sympy.Expr] = {}

    def bound(n: ir.Node) -> sympy.Expr:
        if id(n) in memo:
            return memo[id(n)]
        if isinstance(n, ir.Leaf):
            value = n.op.lipschitz_bound(norms[id(n)]) if n.is_atom else n.op.lipschitz_bound()
        elif isinstance(n, ir.Compose):
            value = sympy.Mul(*(bound(p) for p in n.parts))
        elif isinstance(n, ir.Tuple):
            value = sympy.Add(*(bound(b) for b in n.branches))
        elif isinstance(n, ir.Tare):
            value = bound(n.body)
        elif isinstance(n, ir.Repeat):
            if n.first is n.rest:
                value = bound(n.rest) ** n.count
            elif n.count == 1:
                value = bound(n.first)
            else:
                value = bound(n.first) * bound(n.rest) ** (n.count - 1)
        else:
            raise TypeError(type(n).__name__)
        memo[id(n)] = value
        return value

    return bound(root)
