"""Averaging bonds: Mean over one axis, and AvgPool over the spatial axes of (C, H, W).

Both are linear and average feature vectors, so by convexity of the RMS neither can grow
the activation norm (the RMS over features, maximised over positions): sensitivity 1.
In ℓ2, a mean of n entries has norm at most 1/√n of theirs (Cauchy–Schwarz); a k × k
window of stride s covers an input entry at most ⌈k/s⌉² times with weight 1/k², so the
pool's spectral norm is at most √(‖P‖₁‖P‖_∞) = ⌈k/s⌉/k.
"""

from __future__ import annotations

from collections.abc import Sequence

import sympy

from modc.ops.base import ACTIVATION, ONE, Arg, Bond, Shape, ShapeError, primary, show


class Mean(Bond):
    """The mean over `axis` of each example (0: over positions), which is dropped."""

    name = "Mean"
    args = (Arg("axis", "number", sympy.Integer(0)),)

    def shape(self, x: Shape) -> Shape:
        axis = self.values["axis"]
        if not (axis.is_Integer and 0 <= axis < len(x)):
            raise ShapeError(f"Mean's axis must be 0 to {len(x) - 1} for input {show(x)}")
        return x[: int(axis)] + x[int(axis) + 1 :]

    def lipschitz_bound(self, norm: sympy.Expr = ONE, space: str = ACTIVATION) -> sympy.Expr:
        if space == ACTIVATION:
            return ONE
        return 1 / sympy.sqrt(self.in_shapes[0][int(self.values["axis"])])

    def forward(self, inputs: Sequence[str], attr: str | None) -> str:
        return f"{primary(inputs[0])}.mean({int(self.values['axis']) + 1})"


class AvgPool(Bond):
    """2-D average pooling of (C, H, W) with a k × k window and stride (default k)."""

    name = "AvgPool"
    args = (Arg("kernel"), Arg("stride", "size", None))

    def shape(self, x: Shape) -> Shape:
        if len(x) != 3:
            raise ShapeError(f"AvgPool needs (channels, height, width), got {show(x)}")
        k = self.values["kernel"]
        s = self.values["stride"] or k
        out = []
        for size in x[1:]:
            if (size - k).is_negative:
                raise ShapeError(f"AvgPool's window {k} is larger than the input {show(x)}")
            out.append(sympy.floor((size - k) / s) + 1)
        return (x[0], *out)

    def lipschitz_bound(self, norm: sympy.Expr = ONE, space: str = ACTIVATION) -> sympy.Expr:
        if space == ACTIVATION:
            return ONE
        k = self.values["kernel"]
        return sympy.ceiling(k / (self.values["stride"] or k)) / k

    def forward(self, inputs: Sequence[str], attr: str | None) -> str:
        k = int(self.values["kernel"])
        s = int(self.values["stride"] or k)
        return f"F.avg_pool2d({inputs[0]}, {k}, {s})"
