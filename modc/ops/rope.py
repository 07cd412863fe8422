"""Rotary position embedding: each position's vector rotated, pair by pair, by angles that
grow with the position. A rotation per position keeps every vector's RMS: sensitivity 1,
and the map is linear (γ = 0).
"""

from __future__ import annotations

from collections.abc import Sequence

import sympy

from modc.lazy import LazyModule
from modc.ops.base import RMS_AT_MOST_1, Arg, Bond, Shape, ShapeError, exact, show

torch = LazyModule("torch")


def rope(x: torch.Tensor, base: float) -> torch.Tensor:
    """Rotate (x_j, x_{j+d/2}) at position t by t·base^(−j/(d/2)), on x of shape (…, T, d)."""
    t, d = x.shape[-2:]
    half = d // 2
    dtype = torch.promote_types(x.dtype, torch.float32)  # angles in at least float32
    freq = base ** (-torch.arange(half, device=x.device, dtype=dtype) / half)
    angle = torch.arange(t, device=x.device, dtype=dtype)[:, None] * freq
    cos, sin = angle.cos().to(x.dtype), angle.sin().to(x.dtype)
    x1, x2 = x[..., :half], x[..., half:]
    return torch.cat((x1 * cos - x2 * sin, x1 * sin + x2 * cos), dim=-1)


class RoPE(Bond):
    """Rotary position embedding on (…, T, d) with d even; `base` sets the slowest angle."""

    name = "RoPE"
    args = (Arg("base", "number", sympy.Integer(10000)),)
    runtime = (rope,)

    def facts(self, inputs: Sequence[frozenset[str]]) -> frozenset[str]:
        return inputs[0] & {RMS_AT_MOST_1}

    def shape(self, x: Shape) -> Shape:
        if len(x) < 2:
            raise ShapeError(f"RoPE needs (…, positions, features), got {show(x)}")
        d = x[-1]
        if d.is_number and d % 2:
            raise ShapeError(f"RoPE rotates pairs of features, but {d} is odd")
        return x

    def forward(self, inputs: Sequence[str], attr: str | None) -> str:
        return f"rope({inputs[0]}, {exact(self.values['base'])})"
