"""Pointwise bonds: ReLU, GELU (scaled to slope at most 1) and Abs, all 1-Lipschitz.

Each acts entry by entry and never grows an entry's size (|φ(x)| ≤ |x|), so an input of
RMS at most 1 gives an output of RMS at most 1. In the activation norm (the RMS over
features, maximised over positions) its sensitivity is its largest slope. Only GELU is
twice differentiable: its curvature bound γ = max|φ''|·√d grows with the feature size d
because an RMS of squares can exceed the square of an RMS by √d.
"""

from __future__ import annotations

from collections.abc import Sequence

import sympy

from modc.lazy import LazyModule
from modc.ops.base import RMS_AT_MOST_1, ZERO, Bond, features, primary

torch = LazyModule("torch")
F = LazyModule("torch.nn.functional")

#: GELU's largest |second derivative|, 2φ(0) = √(2/π), over its scale 1.1289042 (the
#: largest slope, Φ(√2) + √2·φ(√2) = 1.1289041452, rounded up): 0.7067779, rounded up.
GELU_CURVATURE = sympy.Rational(707, 1000)


def gelu(x: torch.Tensor) -> torch.Tensor:
    """GELU divided by its largest slope (1.1289041 at x = √2), so that it is 1-Lipschitz."""
    return F.gelu(x) / 1.1289042


class ReLU(Bond):
    name = "ReLU"

    def facts(self, inputs: Sequence[frozenset[str]]) -> frozenset[str]:
        return inputs[0] & {RMS_AT_MOST_1}

    def sharpness(self) -> tuple[sympy.Expr, sympy.Expr, sympy.Expr | None]:
        return (ZERO, ZERO, None)  # a kink at 0

    def forward(self, inputs: Sequence[str], attr: str | None) -> str:
        return f"F.relu({inputs[0]})"


class GELU(Bond):
    """x·Φ(x)/1.1289042; its second derivative φ(x)(2 − x²)/1.1289042 peaks at x = 0."""

    name = "GELU"
    runtime = (gelu,)

    def facts(self, inputs: Sequence[frozenset[str]]) -> frozenset[str]:
        return inputs[0] & {RMS_AT_MOST_1}

    def sharpness(self) -> tuple[sympy.Expr, sympy.Expr, sympy.Expr | None]:
        return (ZERO, ZERO, GELU_CURVATURE * sympy.sqrt(features(self.in_shapes[0])))

    def forward(self, inputs: Sequence[str], attr: str | None) -> str:
        return f"gelu({inputs[0]})"


class Abs(Bond):
    name = "Abs"

    def facts(self, inputs: Sequence[frozenset[str]]) -> frozenset[str]:
        return inputs[0] & {RMS_AT_MOST_1}

    def sharpness(self) -> tuple[sympy.Expr, sympy.Expr, sympy.Expr | None]:
        return (ZERO, ZERO, None)  # a kink at 0

    def forward(self, inputs: Sequence[str], attr: str | None) -> str:
        return f"{primary(inputs[0])}.abs()"
