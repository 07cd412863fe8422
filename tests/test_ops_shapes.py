"""Every operation's shape rule: the shapes it gives, symbolic sizes, and the shapes it refuses.

Each rule is also checked against the torch code the operation emits.
"""

from __future__ import annotations

import pytest
import sympy
import torch

from modc.ops import OPS, ShapeError
from tests.opkit import (
    emit,
    make,
)

pytestmark = pytest.mark.usefixtures("one_thread")

W = sympy.Symbol("width", positive=True, integer=True)

# (op, arguments, input shapes, output shape)
CASES = [
    ("Linear", {"out": 7}, [(5, 6)], (5, 7)),
    ("Linear", {"out": 3}, [(6,)], (3,)),
    ("Embed", {"num": 11, "dim": 6}, [(5,)], (5, 6)),
    ("Conv2D", {"out": 4, "kernel": 3, "padding": 1}, [(3, 8, 8)], (4, 8, 8)),
    ("Conv2D", {"out": 4, "kernel": 3, "stride": 2}, [(3, 9, 8)], (4, 4, 3)),
    ("Bias", {}, [(5, 6)], (5, 6)),
    ("Gain", {}, [(6,)], (6,)),
    ("Identity", {}, [(2, 3)], (2, 3)),
    ("Flatten", {}, [(2, 3, 4)], (24,)),
    ("Mul", {"factor": "-1/2"}, [(4,)], (4,)),
    ("Add", {}, [(5, 6), (5, 6)], (5, 6)),
    ("ReLU", {}, [(5, 6)], (5, 6)),
    ("GELU", {}, [(6,)], (6,)),
    ("Abs", {}, [(3, 4)], (3, 4)),
    ("MeanSubtract", {}, [(5, 6)], (5, 6)),
    ("RMSDivide", {}, [(5, 6)], (5, 6)),
    ("RMSClip", {}, [(5, 6)], (5, 6)),
    ("LayerNorm", {}, [(5, 6)], (5, 6)),
    ("Mean", {}, [(5, 6)], (6,)),
    ("Mean", {"axis": 1}, [(5, 6)], (5,)),
    ("AvgPool", {"kernel": 2}, [(3, 8, 7)], (3, 4, 3)),
    ("AvgPool", {"kernel": 3, "stride": 1}, [(3, 8, 8)], (3, 6, 6)),
    ("SplitHeads", {"heads": 3}, [(5, 6)], (3, 5, 2)),
    ("MergeHeads", {}, [(3, 5, 2)], (5, 6)),
    ("AttentionQK", {}, [(2, 5, 4), (2, 7, 4)], (2, 5, 7)),
    ("CausalMask", {}, [(2, 5, 5)], (2, 5, 5)),
    ("Softmax", {"scale": 2}, [(2, 5, 5)], (2, 5, 5)),
    ("ApplyScores", {}, [(2, 7, 3), (2, 5, 7)], (2, 5, 3)),
    ("RoPE", {}, [(2, 5, 4)], (2, 5, 4)),
    ("CausalAttention", {}, [(2, 5, 4)] * 3, (2, 5, 4)),
]

# (op, arguments, input shapes, words the error must contain)
REFUSED = [
    ("Linear", {"out": 3}, [()], "at least one axis"),
    ("Conv2D", {"out": 4, "kernel": 3}, [(8, 8)], "channels, height, width"),
    ("Conv2D", {"out": 4, "kernel": 5}, [(3, 4, 4)], "larger than the input"),
    ("Conv2D", {"out": 4, "kernel": 3, "padding": "1/2"}, [(3, 8, 8)], "padding"),
    ("Add", {}, [(5, 6), (5, 7)], "same shape"),
    ("Mean", {"axis": 2}, [(5, 6)], "axis"),
    ("AvgPool", {"kernel": 3}, [(8, 8)], "channels, height, width"),
    ("AvgPool", {"kernel": 9}, [(3, 8, 8)], "larger than the input"),
    ("SplitHeads", {"heads": 4}, [(5, 6)], "do not split"),
    ("SplitHeads", {"heads": 2}, [(6,)], "positions, features"),
    ("MergeHeads", {}, [(5, 6)], "heads, positions, features"),
    ("AttentionQK", {}, [(2, 5, 4), (2, 5, 3)], "do not match"),
    ("CausalMask", {}, [(2, 5, 4)], "square"),
    ("ApplyScores", {}, [(2, 7, 3), (2, 5, 6)], "do not match"),
    ("RoPE", {}, [(5, 5)], "odd"),
    ("CausalAttention", {}, [(2, 5, 4), (2, 5, 4), (2, 5, 3)], "do not match"),
    ("CausalAttention", {}, [(2, 5, 4), (2, 5, 4)], "(values, queries, keys)"),
    ("RMSDivide", {}, [()], "at least one axis"),
    ("RMSClip", {}, [()], "at least one axis"),
    ("Softmax", {}, [()], "at least one axis"),
]


def test_every_operation_has_a_shape_case():
    assert {c[0] for c in CASES} == set(OPS)


@pytest.mark.parametrize(("name", "values", "shapes", "out"), CASES, ids=[c[0] for c in CASES])
def test_shape_rule_and_emitted_code_agree(name, values, shapes, out):
    op = make(name, values, *shapes)
    assert op.out_shape == tuple(sympy.Integer(d) for d in out)
    torch.manual_seed(0)
    inputs = []
    for s in shapes:
        if name == "Embed":
            inputs.append(torch.randint(0, 11, (2, *s)))
        else:
            inputs.append(torch.randn(2, *s, dtype=torch.float64))
    assert tuple(emit(op)(*inputs).shape) == (2, *out)


@pytest.mark.parametrize(
    ("name", "values", "shapes", "words"), REFUSED, ids=[c[0] for c in REFUSED]
)
def test_shape_rule_refuses(name, values, shapes, words):
    with pytest.raises(ShapeError, match=words):
        make(name, values, *shapes)


def test_symbolic_sizes_flow_through():
    assert make("SplitHeads", {"heads": 4}, (64, W)).out_shape == (4, 64, W / 4)
    assert make("MergeHeads", {}, (4, 64, W / 4)).out_shape == (64, W)
    assert make("Linear", {"out": 2 * W}, (64, W)).out_shape == (64, 2 * W)
    assert make("Embed", {"num": 65, "dim": W}, (64,)).out_shape == (64, W)
    conv = make("Conv2D", {"out": W, "kernel": 3, "padding": 1}, (3, W, W))
    assert conv.out_shape == (W, W, W)
    assert conv.weight_shape() == (W, 3, 3, 3)


def test_weight_shapes_and_constructors():
    assert make("Embed", {"num": 11, "dim": 6}, (5,)).weight_shape() == (11, 6)
    assert make("Bias", {}, (5, 6)).weight_shape() == (6,)
    conv = make("Conv2D", {"out": 4, "kernel": 3, "stride": 2, "padding": 1}, (3, 8, 8))
    assert conv.constructor() == "Conv2D(3, 4, 3, 2, 1)"
    assert make("Gain", {}, (6,)).constructor() == "Gain(6)"


def test_describe_leaves_out_defaults_that_are_unset():
    assert make("AvgPool", {"kernel": 2}, (3, 8, 8)).describe() == "AvgPool(2)"
    assert make("SplitHeads", {"heads": 4}, (5, 8)).describe() == "SplitHeads(4)"
