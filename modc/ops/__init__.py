"""The operation library: the one place that knows what each operation is."""

from modc.ops.activations import GELU, Abs, ReLU
from modc.ops.affine import BiasOp, GainOp
from modc.ops.attention import (
    ApplyScores,
    AttentionQK,
    CausalMask,
    MergeHeads,
    Softmax,
    SplitHeads,
)
from modc.ops.base import Arg, Atom, Bond, Op, Shape, ShapeError, show
from modc.ops.conv import Conv2DOp
from modc.ops.embed import EmbedOp
from modc.ops.linear import LinearOp
from modc.ops.normalize import LayerNorm, MeanSubtract, RMSClip, RMSDivide
from modc.ops.pool import AvgPool, Mean
from modc.ops.rope import RoPE
from modc.ops.structure import Add, Flatten, Identity, Mul

ATOMS: tuple[type[Op], ...] = (LinearOp, EmbedOp, Conv2DOp, BiasOp, GainOp)
BONDS: tuple[type[Op], ...] = (
    Identity,
    Flatten,
    Mul,
    Add,
    ReLU,
    GELU,
    Abs,
    MeanSubtract,
    RMSDivide,
    LayerNorm,
    RMSClip,
    Mean,
    AvgPool,
    SplitHeads,
    MergeHeads,
    AttentionQK,
    CausalMask,
    Softmax,
    ApplyScores,
    RoPE,
)
OPS: dict[str, type[Op]] = {op.name: op for op in (*ATOMS, *BONDS)}

__all__ = ["OPS", "Arg", "Atom", "Bond", "Op", "Shape", "ShapeError", "show"]
