"""Bonds that move or combine tensors without weights: Identity, Flatten, Mul, Add."""

from __future__ import annotations

from collections.abc import Sequence
from functools import reduce
from operator import mul

import sympy

from modc.ops.base import Arg, Bond, Shape, ShapeError, exact, primary, show


class Identity(Bond):
    name = "Identity"

    def forward(self, inputs: Sequence[str], attr: str | None) -> str:
        return inputs[0]


class Flatten(Bond):
    """Flattens each example to one axis: (1, 28, 28) → (784,)."""

    name = "Flatten"

    def shape(self, x: Shape) -> Shape:
        return (reduce(mul, x, sympy.Integer(1)),)

    def forward(self, inputs: Sequence[str], attr: str | None) -> str:
        return f"{primary(inputs[0])}.flatten(1)"


class Mul(Bond):
    """Multiplication by a constant a: sensitivity |a|."""

    name = "Mul"
    args = (Arg("factor", "number"),)

    def sensitivity(self) -> sympy.Expr:
        return sympy.Abs(self.values["factor"])

    def forward(self, inputs: Sequence[str], attr: str | None) -> str:
        return f"{exact(self.values['factor'])} * {primary(inputs[0])}"


class Add(Bond):
    """Sum of a tuple of same-shape inputs. Its sensitivity is 1: the tuple carries the sum."""

    name = "Add"
    arity = 0

    def shape(self, *inputs: Shape) -> Shape:
        for other in inputs[1:]:
            if other != inputs[0]:
                raise ShapeError(
                    f"branches of a sum must have the same shape, got {show(inputs[0])} "
                    f"and {show(other)}"
                )
        return inputs[0]

    def forward(self, inputs: Sequence[str], attr: str | None) -> str:
        return " + ".join(inputs)
