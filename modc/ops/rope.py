"""Rotary position embedding: each position's vector rotated, pair by pair, by angles that
grow with the position. A rotation per position keeps every vector's RMS: sensitivity 1,
and the map is linear (γ = 0).
"""

from __future__ import annotations

from collections.abc import Sequence

import sympy

from modc.ops.base import RMS_AT_MOST_1, Arg, Bond, Layer, Shape, ShapeError, exact, show


class RoPE(Bond):
    """Rotary position embedding on (…, T, d) with d even; `base` sets the slowest angle."""

    name = "RoPE"
    args = (Arg("base", "number", sympy.Integer(10000)),)
    tables = Layer("Rotary")  # its cos/sin tables' nn.Module (modc.runtime.layers)

    @property
    def runtime(self) -> tuple[type, ...]:
        """The tables' nn.Module, copied into model.py (torch is imported when it is read)."""
        return (self.tables,)

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
