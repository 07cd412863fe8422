"""Normalisation bonds on the feature axis: MeanSubtract, RMSDivide, LayerNorm and RMSClip.

MeanSubtract is an orthogonal projection, 1-Lipschitz everywhere. RMS division is not
globally Lipschitz: near a zero vector its output turns as fast as its input's direction.
On inputs of RMS at least 1 it is the metric projection onto the ball of RMS 1 (1-Lipschitz)
times φ(‖x‖) = ‖x‖/√(‖x‖² + dε), the 1e-6 guard ε; φ moves by at most ε/√d per unit of
‖x‖ there, so the constant is 1 + ε in ℓ2 and in RMS (docs/theory.md §6). Its sensitivity 1
holds under the condition that every input vector has RMS at least 1, which the
certificate checks on data; its second derivative is then at most 2/√3 (the largest of
‖−2(u·h)h − ‖h‖²u + 3(u·h)²u‖ over unit u, h). LayerNorm without weights is RMSDivide
after MeanSubtract. RMSClip, x / max(RMS(x), 1), is the projection onto that ball: it is
1-Lipschitz for every input, and its outputs have RMS at most 1, so it needs no condition.
"""

from __future__ import annotations

from collections.abc import Sequence

import sympy

from modc.lazy import LazyModule
from modc.ops.base import (
    ACTIVATION,
    ONE,
    RMS_AT_MOST_1,
    ZERO,
    Bond,
    Condition,
    Shape,
    ShapeError,
    primary,
)
from modc.runtime.certify import smallest_centred_rms, smallest_rms

torch = LazyModule("torch")
F = LazyModule("torch.nn.functional")

RMS_CURVATURE = 2 / sympy.sqrt(3)
#: The Lipschitz constant of RMS division with its 1e-6 guard, on inputs of RMS ≥ 1.
GUARDED = 1 + sympy.Rational(1, 10**6)


def rms_divide(x: torch.Tensor) -> torch.Tensor:
    """x / RMS(x) over the last axis; the 1e-6 guard keeps a zero vector at zero."""
    return F.rms_norm(x, x.shape[-1:], eps=1e-6)


def layer_norm(x: torch.Tensor) -> torch.Tensor:
    """(x − mean) / std over the last axis, without weights; 1e-6 guards a constant vector."""
    return F.layer_norm(x, x.shape[-1:], eps=1e-6)


def rms_clip(x: torch.Tensor) -> torch.Tensor:
    """x / max(RMS(x), 1) over the last axis: vectors of RMS above 1 scaled back to RMS 1."""
    return x / x.pow(2).mean(-1, keepdim=True).sqrt().clamp_min(1.0)


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

    def facts(self, inputs: Sequence[frozenset[str]]) -> frozenset[str]:
        return frozenset({RMS_AT_MOST_1})  # RMS √(r²/(r² + ε)) < 1

    def shape(self, x: Shape) -> Shape:
        _needs_axis(self.name, x)
        return x

    def conditions(self) -> tuple[Condition, ...]:
        return (
            Condition(
                "RMSDivide: its constants hold where every input vector has RMS norm at "
                "least 1 (at RMS r < 1 it is 1/r, unbounded near zero)",
                smallest_rms,
                0,
                1.0,
                True,
            ),
        )

    def lipschitz_bound(self, norm: sympy.Expr = ONE, space: str = ACTIVATION) -> sympy.Expr:
        return GUARDED

    def sharpness(self) -> tuple[sympy.Expr, sympy.Expr, sympy.Expr | None]:
        return (ZERO, ZERO, RMS_CURVATURE)

    def forward(self, inputs: Sequence[str], attr: str | None) -> str:
        return f"rms_divide({inputs[0]})"


class LayerNorm(Bond):
    """(x − mean) / std over the feature axis, no weights: RMSDivide ∘ MeanSubtract."""

    name = "LayerNorm"
    runtime = (layer_norm,)

    def facts(self, inputs: Sequence[frozenset[str]]) -> frozenset[str]:
        return frozenset({RMS_AT_MOST_1})

    def shape(self, x: Shape) -> Shape:
        _needs_axis(self.name, x)
        return x

    def conditions(self) -> tuple[Condition, ...]:
        return (
            Condition(
                "LayerNorm: its constants hold where every input vector, its mean removed, "
                "has RMS norm (standard deviation) at least 1 (at s < 1 it is 1/s, unbounded "
                "near constant vectors)",
                smallest_centred_rms,
                0,
                1.0,
                True,
            ),
        )

    def lipschitz_bound(self, norm: sympy.Expr = ONE, space: str = ACTIVATION) -> sympy.Expr:
        return GUARDED

    def sharpness(self) -> tuple[sympy.Expr, sympy.Expr, sympy.Expr | None]:
        return (ZERO, ZERO, RMS_CURVATURE)

    def forward(self, inputs: Sequence[str], attr: str | None) -> str:
        return f"layer_norm({inputs[0]})"


class RMSClip(Bond):
    """x / max(RMS(x), 1) over the feature axis: the projection onto the ball of RMS 1.

    A metric projection onto a convex set is 1-Lipschitz in ℓ2 for every input, so in RMS
    too: no condition. Its outputs have RMS at most 1, so placed before attention's
    queries, keys and values (per head) it makes their conditions hold by construction.
    It is not twice differentiable on the sphere: no smoothness constant.
    """

    name = "RMSClip"
    runtime = (rms_clip,)

    def facts(self, inputs: Sequence[frozenset[str]]) -> frozenset[str]:
        return frozenset({RMS_AT_MOST_1})

    def shape(self, x: Shape) -> Shape:
        _needs_axis(self.name, x)
        return x

    def sharpness(self) -> tuple[sympy.Expr, sympy.Expr, sympy.Expr | None]:
        return (ZERO, ZERO, None)

    def forward(self, inputs: Sequence[str], attr: str | None) -> str:
        return f"rms_clip({inputs[0]})"
