"""Bonds that move or combine tensors without weights: Identity, Flatten, Mul, Add."""

from __future__ import annotations

from collections.abc import Sequence
from functools import cache, reduce
from operator import mul

import sympy

from modc.ops.base import RMS_AT_MOST_1, Arg, Bond, Shape, ShapeError, exact, primary, show


@cache
def magnitude(a: sympy.Expr) -> sympy.Expr:
    """|a|, written without Abs when its sign is the same for every value of the free
    parameters (positive integers): 1 − 1/depth stays 1 − 1/depth."""
    if a.is_number or not a.free_symbols:
        return sympy.Abs(a)
    shifted = sympy.together(
        a.xreplace({s: sympy.Dummy(integer=True, nonnegative=True) + 1 for s in a.free_symbols})
    )
    if shifted.is_nonnegative:
        return a
    if shifted.is_nonpositive:
        return -a
    return sympy.Abs(a)


class Identity(Bond):
    name = "Identity"

    def facts(self, inputs: Sequence[frozenset[str]]) -> frozenset[str]:
        return inputs[0]

    def forward(self, inputs: Sequence[str], attr: str | None) -> str:
        return inputs[0]

    def inverse(self, output: str) -> tuple[str, sympy.Expr]:
        return output, sympy.Integer(1)


class Flatten(Bond):
    """Flattens each example to one axis: (1, 28, 28) → (784,)."""

    name = "Flatten"

    def shape(self, x: Shape) -> Shape:
        return (reduce(mul, x, sympy.Integer(1)),)

    def forward(self, inputs: Sequence[str], attr: str | None) -> str:
        return f"{primary(inputs[0])}.flatten(1)"

    def inverse(self, output: str) -> tuple[str, sympy.Expr]:
        """A reshape back: an isometry in ℓ2."""
        shape = ", ".join(str(d) for d in self.in_shapes[0])
        return f"{primary(output)}.reshape(-1, {shape})", sympy.Integer(1)


class Mul(Bond):
    """Multiplication by a constant a: sensitivity |a|."""

    name = "Mul"
    args = (Arg("factor", "number"),)

    def sensitivity(self) -> sympy.Expr:
        return magnitude(self.values["factor"])

    def facts(self, inputs: Sequence[frozenset[str]]) -> frozenset[str]:
        small = (sympy.Abs(self.values["factor"]) <= 1) == sympy.true
        return inputs[0] & {RMS_AT_MOST_1} if small else frozenset()

    def forward(self, inputs: Sequence[str], attr: str | None) -> str:
        return f"{exact(self.values['factor'])} * {primary(inputs[0])}"

    def inverse(self, output: str) -> tuple[str, sympy.Expr] | None:
        a = self.values["factor"]
        if not a.is_number or a == 0:
            return None
        return f"{primary(output)} / {primary(exact(a))}", 1 / sympy.Abs(a)


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
