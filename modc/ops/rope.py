"""Rotary position embedding: each position's vector rotated, pair by pair, by angles that
grow with the position. A rotation per position keeps every vector's RMS: sensitivity 1,
and the map is linear (γ = 0).
"""

from __future__ import annotations

from collections.abc import Sequence

import sympy
import torch
from torch import nn

from modc.ops.base import RMS_AT_MOST_1, Arg, Bond, Shape, ShapeError, exact, show


class Rotary(nn.Module):
    """RoPE on (…, T, d) for T up to `positions`: (x_j, x_{j+d/2}) at position t rotated by
    t·base^(−j/(d/2)). The cos/sin tables are computed once, in float64, and kept as
    buffers outside the state_dict (they follow the model's device; checkpoints do not
    carry them)."""

    def __init__(self, positions: int, dim: int, base: float):
        super().__init__()
        half = dim // 2
        freq = base ** (-torch.arange(half, dtype=torch.float64) / half)
        angle = torch.arange(positions, dtype=torch.float64)[:, None] * freq
        self.register_buffer("cos", angle.cos(), persistent=False)
        self.register_buffer("sin", angle.sin(), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        t, half = x.shape[-2], x.shape[-1] // 2
        cos, sin = self.cos[:t].to(x.dtype), self.sin[:t].to(x.dtype)
        x1, x2 = x[..., :half], x[..., half:]
        return torch.cat((x1 * cos - x2 * sin, x1 * sin + x2 * cos), dim=-1)


class RoPE(Bond):
    """Rotary position embedding on (…, T, d) with d even; `base` sets the slowest angle."""

    name = "RoPE"
    args = (Arg("base", "number", sympy.Integer(10000)),)
    runtime = (Rotary,)

    def facts(self, inputs: Sequence[frozenset[str]]) -> frozenset[str]:
        return inputs[0] & {RMS_AT_MOST_1}

    def shape(self, x: Shape) -> Shape:
        if len(x) < 2:
            raise ShapeError(f"RoPE needs (…, positions, features), got {show(x)}")
        d = x[-1]
        if d.is_number and d % 2:
            raise ShapeError(f"RoPE rotates pairs of features, but {d} is odd")
        return x

    def state(self) -> str:
        *_, positions, dim = self.in_shapes[0]
        return f"Rotary({int(positions)}, {int(dim)}, {exact(self.values['base'])})"

    def forward(self, inputs: Sequence[str], attr: str | None) -> str:
        return f"self.{attr}({inputs[0]})"
