"""Normalisation bonds on the feature axis: MeanSubtract, RMSDivide and LayerNorm.

MeanSubtract is an orthogonal projection, 1-Lipschitz everywhere. RMS division is not
globally Lipschitz: near a zero vector its output turns as fast as its input's direction.
On inputs whose RMS is at least r it is 1/r-Lipschitz (for r = 1 it is the projection
onto the outside of a ball, scaled, with a 1e-6 guard that only shrinks it), so its
sensitivity 1 holds under the condition that every input vector has RMS at least 1; its
second derivative is then at most 2/√3 (the largest of ‖−2(u·h)h − ‖h‖²u + 3(u·h)²u‖
over unit u, h). LayerNorm without weights is RMSDivide after MeanSubtract.
"""

from __future__ import annotations

from collections.abc import Sequence

import sympy
import torch
import torch.nn.functional as F

from modc.ops.base import ZERO, Bond, Shape, ShapeError, primary

RMS_CURVATURE = 2 / sympy.sqrt(3)


def rms_divide(x: torch.Tensor) -> torch.Tensor:
    """x / RMS(x) over the last axis; the 1e-6 guard keeps a zero vector at zero."""
    return F.rms_norm(x, x.shape[-1:], eps=1e-6)


def layer_norm(x: torch.Tensor) -> torch.Tensor:
    """(x − mean) / std over the last axis, without weights; 1e-6 guards a constant vector."""
    return F.layer_norm(x, x.shape[-1:], eps=1e-6)


def _needs_axis(name: str, x: Shape) -> None:
    if not x:
        raise ShapeError(f"{name} needs an input with at least one axis")


class MeanSubtract(Bond):
    """x − mean(x) over the feature axis: a projection, so 1-Lipschitz and linear."""

    name = "MeanSubtract"

    def shape(self, x: Shape) -> Shape:
        _needs_axis(self.name, x)
        return x

    def forward(self, inputs: Sequence[str], attr: str | None) -> str:
        x = primary(inputs[0])
        return f"{x} - {x}.mean(-1, keepdim=True)"


class RMSDivide(Bond):
    """x / RMS(x) over the feature axis: output RMS 1; 1-Lipschitz where RMS(x) ≥ 1."""

    name = "RMSDivide"
    runtime = (rms_divide,)

    def shape(self, x: Shape) -> Shape:
        _needs_axis(self.name, x)
        return x

    def conditions(self) -> tuple[str, ...]:
        return (
            "RMSDivide: sensitivity 1 holds where every input vector has RMS norm at least 1 "
            "(at RMS r < 1 it is 1/r, unbounded near zero)",
        )

    def sharpness(self) -> tuple[sympy.Expr, sympy.Expr, sympy.Expr | None]:
        return (ZERO, ZERO, RMS_CURVATURE)

    def forward(self, inputs: Sequence[str], attr: str | None) -> str:
        return f"rms_divide({inputs[0]})"


class LayerNorm(Bond):
    """(x − mean) / std over the feature axis, no weights: RMSDivide ∘ MeanSubtract."""

    name = "LayerNorm"
    runtime = (layer_norm,)

    def shape(self, x: Shape) -> Shape:
        _needs_axis(self.name, x)
        return x

    def conditions(self) -> tuple[str, ...]:
        return (
            "LayerNorm: sensitivity 1 holds where every input vector, its mean removed, has "
            "RMS norm (standard deviation) at least 1 (at s < 1 it is 1/s, unbounded near "
            "constant vectors)",
        )

    def sharpness(self) -> tuple[sympy.Expr, sympy.Expr, sympy.Expr | None]:
        return (ZERO, ZERO, RMS_CURVATURE)

    def forward(self, inputs: Sequence[str], attr: str | None) -> str:
        return f"layer_norm({inputs[0]})"
