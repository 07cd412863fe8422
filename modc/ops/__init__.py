"""The operation library: the one place that knows what each operation is."""

from modc.ops.activations import GELU, ReLU
from modc.ops.base import Arg, Atom, Bond, Op, Shape, ShapeError, show
from modc.ops.linear import LinearOp
from modc.ops.structure import Add, Flatten, Identity, Mul

OPS: dict[str, type[Op]] = {
    op.name: op for op in (LinearOp, ReLU, GELU, Identity, Flatten, Mul, Add)
}

__all__ = ["OPS", "Arg", "Atom", "Bond", "Op", "Shape", "ShapeError", "show"]
