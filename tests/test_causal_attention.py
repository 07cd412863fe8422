"""CausalAttention, the fused (v, q, k) ↦ softmax(scale·q·kᵀ/d_head, causal)·v: it computes
the composition it replaces, and its Lipschitz constants (docs/theory.md §6) are upper
bounds on queries, keys and values of RMS ≤ 1, searched adversarially: pairs of inputs
pushed up the secant ratio by gradient ascent, both kept inside the condition, from starts
at the boundary (every row of RMS 1), with equal rows, with softmax rows peaked on one
key, with keys in two opposite clusters, at scales up to 8.
"""

from __future__ import annotations

import math

import pytest
import sympy
import torch

from modc.ops.attention import (
    CausalAttention,
    apply_scores,
    attend,
    attention_qk,
    causal_mask,
    scaled_softmax,
)
from modc.ops.base import ACTIVATION, L2
from modc.runtime.certify import largest_rms

pytestmark = pytest.mark.usefixtures("one_thread")

HEADS, D = 2, 4


def fused(t: int, scale: float) -> CausalAttention:
    shape = (sympy.Integer(HEADS), sympy.Integer(t), sympy.Integer(D))
    return CausalAttention({"scale": sympy.nsimplify(scale)}, [shape] * 3)


def bound(t: int, scale: float, space: str, part: int | None = None) -> float:
    """The op's constant in `space`, or its ℓ2 constant for input `part` (v, q, k) alone."""
    op = fused(t, scale)
    return float(op.lipschitz_bound(space=space) if part is None else op.l2_parts()[part])


def clip(x: torch.Tensor) -> torch.Tensor:
    """Every row onto the ball of RMS 1: the condition's domain."""
    rms = x.pow(2).mean(-1, keepdim=True).sqrt()
    return x / rms.clamp(min=1)


def start(kind: str, t: int, gen: torch.Generator) -> torch.Tensor:
    """(3, HEADS, t, D): values, queries, keys, every row of RMS 1 (the boundary)."""
    x = torch.randn(3, HEADS, t, D, generator=gen, dtype=torch.float64)
    u = torch.randn(D, generator=gen, dtype=torch.float64)
    w = torch.randn(D, generator=gen, dtype=torch.float64)
    w = w - (w @ u) / (u @ u) * u
    if kind == "equal":
        x = x[:, :, :1].expand_as(x).clone()
    elif kind == "peaked":  # every query on key 0, the others opposite: softmax peaks
        x[1], x[2] = u, -u
        x[2, :, 0] = u
    elif kind == "clusters":  # keys ±u, values ±w alike, queries ⊥ u: uniform softmax
        sign = torch.tensor([(-1.0) ** j for j in range(t)], dtype=torch.float64)
        x[2] = sign[:, None] * u
        x[0] = sign[:, None] * w
        x[1] = w
    return x / x.pow(2).mean(-1, keepdim=True).sqrt()


def size(x: torch.Tensor, space: str) -> torch.Tensor:
    """A (3, …) tuple's norm: the sum of its parts', each ℓ2 or largest RMS of a row."""
    if space == L2:
        return x.flatten(1).norm(dim=1).sum()
    return x.pow(2).mean(-1).sqrt().flatten(1).amax(1).sum()


def secant_ascent(
    kind: str, t: int, scale: float, space: str, seed: int, part: int | None = None
) -> float:
    """The largest secant ratio found by Adam on both points of a pair, both in the domain;
    with `part`, the pair differs in that input (v, q, k) alone."""
    gen = torch.Generator().manual_seed(seed)
    a = start(kind, t, gen).requires_grad_()
    gap = 1e-2 * torch.randn(a.shape, generator=gen, dtype=torch.float64)
    b = (a.detach() + gap).requires_grad_()
    opt = torch.optim.Adam([a, b], lr=2e-2)
    best = 0.0
    for _ in range(150):
        pa, pb = clip(a), clip(b)
        if part is not None:
            pb = torch.stack([pb[i] if i == part else pa[i] for i in range(3)])
        out = attend(*pb, scale) - attend(*pa, scale)
        ratio = size(out[None], space) / size(pb - pa, space)
        best = max(best, ratio.item())
        opt.zero_grad()
        (-ratio).backward()
        opt.step()
    return best


def test_fused_op_computes_the_composition():
    gen = torch.Generator().manual_seed(0)
    for scale in (1.0, 0.5, 3.0):
        v, q, k = torch.randn(3, 5, HEADS, 7, D, generator=gen, dtype=torch.float64)
        scores = scaled_softmax(causal_mask(attention_qk(q, k)), scale)
        expected = apply_scores(v, scores)
        got = attend(v, q, k, scale)
        assert (got - expected).abs().max().item() <= 1e-5
        got32 = attend(v.float(), q.float(), k.float(), scale)
        assert (got32.double() - expected).abs().max().item() <= 1e-5


@pytest.mark.parametrize("space", [L2, ACTIVATION])
@pytest.mark.parametrize("kind", ["boundary", "equal", "peaked", "clusters"])
@pytest.mark.parametrize("scale", [1.0, 8.0])
def test_constants_bound_adversarial_secants(space, kind, scale):
    for t in (2, 12):
        certified = bound(t, scale, space)
        found = max(secant_ascent(kind, t, scale, space, seed) for seed in range(2))
        assert found <= certified, f"{kind}, T {t}, scale {scale}: {found} > {certified}"


@pytest.mark.parametrize("part", [0, 1, 2])
@pytest.mark.parametrize("kind", ["boundary", "peaked", "clusters"])
def test_each_inputs_constant_bounds_adversarial_secants(part, kind):
    """Each of the three ℓ2 terms on its own, where its bound's every piece is in play
    (T = 24 at scale 1 and 0.5: weights at most 1/4 from position 3e^{2β} on)."""
    for t, scale in ((24, 1.0), (24, 0.5), (6, 3.0)):
        certified = bound(t, scale, L2, part)
        found = secant_ascent(kind, t, scale, L2, 0, part)
        assert found <= certified, f"part {part}, {kind}, T {t}, β {scale}: {found} > {certified}"


def test_l2_constant_is_within_a_small_factor_of_what_ascent_finds():
    """Not vacuous: on keys in two clusters the query term β is nearly reached."""
    found = secant_ascent("clusters", 12, 1.0, L2, 0)
    assert bound(12, 1.0, L2) < 4 * found


def test_the_condition_is_the_rms_of_each_input():
    op = CausalAttention({"scale": sympy.Integer(1)}, [(2, 6, 4)] * 3)
    assert [c.input for c in op.conditions()] == [0, 1, 2]
    assert all(c.measure is largest_rms and c.limit == 1.0 for c in op.conditions())
    h = math.e**2 * (3 / 4 + math.log((1 + 63 * math.e**-2) / 4))  # T = 64, β = 1: keys'
    assert bound(64, 1.0, L2) == pytest.approx(math.sqrt(2 * h))  # term is the largest
    assert bound(1, 1.0, L2) == 1.0  # one position: the output is its value
