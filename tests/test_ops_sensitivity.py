"""Every operation's sensitivity, numerically: ‖f(x) − f(x′)‖ ≤ ν‖x − x′‖ in its norms.

Pairs of inputs come from random draws at several distances and from gradient ascent on
the ratio, kept inside the domain the operation's conditions state. The bound checked is
`lipschitz_bound` (the sensitivity itself for every operation but SplitHeads, whose worst
case √heads is checked, and shown to be reached, and RMS division, whose 1e-6 guard adds
1e-6), in the activation norms and in ℓ2 per example. Each case also shows that its bound is
nearly reached, so that the norms are not loose by construction.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace

import pytest
import sympy
import torch

from modc.ops import OPS
from modc.ops.base import L2
from tests.opkit import (
    clip_rms,
    emit,
    entries,
    img,
    lift_rms,
    make,
    rows_l1,
    tok,
)

pytestmark = pytest.mark.usefixtures("one_thread")

Tensors = list[torch.Tensor]


def _center_lift(x: torch.Tensor) -> torch.Tensor:
    m = x.mean(-1, keepdim=True)
    return m + lift_rms(x - m)


def _clip_rows(a: torch.Tensor) -> torch.Tensor:
    return a / a.abs().sum(-1, keepdim=True).clamp(min=1.0)


def _finite(x: torch.Tensor) -> torch.Tensor:
    return torch.where(x.isfinite(), x, torch.zeros_like(x))


@dataclass
class Case:
    """An operation, its input and output norms, and how to stay inside its domain."""

    name: str
    values: dict
    shapes: list[tuple]
    norms_in: tuple[Callable, ...]
    norm_out: Callable
    project: Callable[[Tensors], Tensors] = lambda xs: xs
    tight: float = 0.5  # the ratio found must reach this fraction of the bound
    diff: Callable = field(default=lambda u, v: u - v)
    id: str = ""


CASES = [
    Case("Linear", {"out": 7}, [(5, 6)], (tok,), tok, id="linear"),
    Case("Linear", {"out": 3}, [(8,)], (tok,), tok, id="linear-narrow"),
    Case(
        "Conv2D",
        {"out": 4, "kernel": 3, "padding": 1},
        [(3, 6, 6)],
        (img,),
        img,
        tight=0.25,
        id="conv",
    ),
    Case("Conv2D", {"out": 5, "kernel": 2, "stride": 2}, [(3, 6, 6)], (img,), img, id="patch"),
    Case(
        "Conv2D",
        {"out": 2, "kernel": 3, "stride": 2, "padding": 2},
        [(4, 7, 7)],
        (img,),
        img,
        tight=0.3,
        id="conv-strided",
    ),
    Case("Bias", {}, [(5, 6)], (tok,), tok, id="bias"),
    Case("Gain", {}, [(5, 6)], (tok,), tok, id="gain"),
    Case("Identity", {}, [(5, 6)], (tok,), tok),
    Case("Flatten", {}, [(3, 2, 4)], (tok,), tok, id="flatten-last-axis"),
    Case("Flatten", {}, [(3, 2, 4)], (img,), tok, id="flatten-channels"),
    Case("Mul", {"factor": "-3/2"}, [(5, 6)], (tok,), tok),
    Case("Add", {}, [(5, 6), (5, 6)], (tok, tok), tok),
    Case("ReLU", {}, [(5, 6)], (tok,), tok),
    Case("GELU", {}, [(5, 6)], (tok,), tok),
    Case("Abs", {}, [(5, 6)], (tok,), tok),
    Case("MeanSubtract", {}, [(5, 6)], (tok,), tok),
    Case("RMSDivide", {}, [(5, 6)], (tok,), tok, lambda xs: [lift_rms(xs[0])]),
    Case("LayerNorm", {}, [(5, 6)], (tok,), tok, lambda xs: [_center_lift(xs[0])]),
    Case("RMSClip", {}, [(5, 6)], (tok,), tok, tight=0.9),
    Case("Mean", {}, [(5, 6)], (tok,), tok, id="mean-positions"),
    Case("Mean", {"axis": 1}, [(5, 6)], (tok,), tok, id="mean-features"),
    Case("AvgPool", {"kernel": 2}, [(3, 6, 6)], (img,), img, id="avgpool"),
    Case("AvgPool", {"kernel": 3, "stride": 1}, [(3, 6, 6)], (img,), img, id="avgpool-overlap"),
    Case("SplitHeads", {"heads": 3}, [(5, 6)], (tok,), tok),
    Case("MergeHeads", {}, [(3, 5, 2)], (tok,), tok),
    Case(
        "AttentionQK",
        {},
        [(2, 5, 4), (2, 5, 4)],
        (tok, tok),
        entries,
        lambda xs: [clip_rms(x) for x in xs],
    ),
    Case(
        "CausalMask",
        {},
        [(2, 5, 5)],
        (entries,),
        entries,
        diff=lambda u, v: _finite(u) - _finite(v),
    ),
    Case("Softmax", {"scale": 2}, [(2, 5, 5)], (entries,), rows_l1, id="softmax"),
    Case("Softmax", {"scale": "-1/2"}, [(4,)], (entries,), rows_l1, id="softmax-negative"),
    Case(
        "ApplyScores",
        {},
        [(2, 5, 3), (2, 4, 5)],
        (tok, rows_l1),
        tok,
        lambda xs: [clip_rms(xs[0]), _clip_rows(xs[1])],
    ),
    Case(
        "CausalAttention",
        {"scale": 2},
        [(2, 5, 4)] * 3,
        (tok, tok, tok),
        tok,
        lambda xs: [clip_rms(x) for x in xs],
    ),
    Case("RoPE", {}, [(2, 5, 4)], (tok,), tok, id="rope-heads"),
    Case("RoPE", {"base": 100}, [(5, 6)], (tok,), tok, id="rope-tokens"),
]


def test_every_operation_is_checked():
    assert {c.name for c in CASES} | {"Embed"} == set(OPS)


def _ratio(case: Case, f: Callable, a: Tensors, b: Tensors) -> torch.Tensor:
    num = case.norm_out(case.diff(f(*a), f(*b)))
    den = sum(n(x - y) for n, x, y in zip(case.norms_in, a, b, strict=True))
    return num / den.clamp_min(1e-300)


def _worst(case: Case, f: Callable, gen: torch.Generator) -> float:
    """The largest ratio over random pairs and 30 steps of projected gradient ascent."""

    def draw(scale: float = 1.0) -> Tensors:
        return [
            scale * torch.randn(16, *s, generator=gen, dtype=torch.float64) for s in case.shapes
        ]

    best = 0.0
    for scale in (0.3, 1.0, 3.0):
        a = case.project(draw(scale))
        for dist in (1.0, 1e-2, 1e-4):
            b = case.project([x + dist * d for x, d in zip(a, draw(), strict=True)])
            best = max(best, _ratio(case, f, a, b).max().item())
    a, b = case.project(draw()), case.project(draw())
    b = case.project([x + 0.1 * (y - x) for x, y in zip(a, b, strict=True)])
    for _ in range(30):
        a = [x.detach().requires_grad_(True) for x in a]
        b = [x.detach().requires_grad_(True) for x in b]
        r = _ratio(case, f, a, b)
        best = max(best, r.max().item())
        grads = torch.autograd.grad(r.log().sum(), a + b, allow_unused=True)
        step = [
            torch.zeros_like(x) if g is None else g.nan_to_num()
            for x, g in zip(a + b, grads, strict=True)
        ]
        with torch.no_grad():
            moved = [
                x + 0.05 * g / (g.norm() + 1e-12) * (x.norm() + 1)
                for x, g in zip(a + b, step, strict=True)
            ]
        a, b = case.project(moved[: len(a)]), case.project(moved[len(a) :])
    return best


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id or c.name)
def test_sensitivity_bounds_the_secant_ratio(case):
    torch.manual_seed(0)
    gen = torch.Generator().manual_seed(1)
    op = make(case.name, case.values, *case.shapes)
    f = emit(op)
    if op.atom:
        with torch.no_grad():  # a weight far from unit norm, to see the bound follow it
            w = f.module.weight
            w.mul_(1.7).add_(0.3 * torch.randn(w.shape, generator=gen, dtype=w.dtype))
        bound = float(op.lipschitz_bound(sympy.Float(type(op).norm(f.module.weight))))
    else:
        bound = float(op.lipschitz_bound())
        if case.name not in ("SplitHeads", "RMSDivide", "LayerNorm"):
            assert op.lipschitz_bound() == op.sensitivity()
    worst = _worst(case, f, gen)
    assert worst <= bound * (1 + 1e-9)
    assert worst >= case.tight * bound


def _l2(x: torch.Tensor) -> torch.Tensor:
    return _finite(x).flatten(1).norm(dim=1)


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id or c.name)
def test_l2_constant_bounds_the_secant_ratio(case):
    """The same searches in ℓ2 per example (a tuple by the sum of its parts' norms) against
    each operation's ℓ2 constant, inside the domain its conditions allow."""
    torch.manual_seed(0)
    gen = torch.Generator().manual_seed(1)
    op = make(case.name, case.values, *case.shapes)
    f = emit(op)
    if op.atom:
        with torch.no_grad():
            w = f.module.weight
            w.mul_(1.7).add_(0.3 * torch.randn(w.shape, generator=gen, dtype=w.dtype))
        bound = float(op.lipschitz_bound(sympy.Float(type(op).norm(f.module.weight)), L2))
        live = type(op).lipschitz(f.module.weight)
        assert live <= bound * (1 + 1e-9)  # the live bound is at most the symbolic one
        if case.name == "Conv2D":  # the bound from the kernel's DFT on the padded grid
            live = type(op).lipschitz(f.module.weight, op.grid())
    else:
        bound = float(op.lipschitz_bound(space=L2))
        live = bound
    l2 = replace(case, norms_in=(_l2,) * len(case.norms_in), norm_out=_l2)
    assert _worst(l2, f, gen) <= live * (1 + 1e-9)


def test_split_heads_worst_case_is_root_heads_above_its_nominal_sensitivity():
    op = make("SplitHeads", {"heads": 4}, (3, 8))
    assert op.sensitivity() == 1 and op.lipschitz_bound() == 2
    x = torch.zeros(1, 3, 8, dtype=torch.float64)
    x[0, :, :2] = 1.0  # all of each token in the first head
    assert (tok(emit(op)(x)) / tok(x)).item() == pytest.approx(2.0)


def test_embed_moves_each_token_by_at_most_its_norm_per_unit_of_one_hot_distance():
    op = make("Embed", {"num": 11, "dim": 6}, (5,))
    f = emit(op)
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        f.module.weight.mul_(torch.rand(11, 1, generator=gen, dtype=torch.float64) * 2)
    norm = type(op).norm(f.module.weight)
    worst = 0.0
    for _ in range(50):
        a = torch.randint(0, 11, (32, 5), generator=gen)
        b = torch.where(
            torch.rand(32, 5, generator=gen) < 0.3, torch.randint(0, 11, (32, 5), generator=gen), a
        )
        distance = 2.0 * (a != b).any(1)  # largest ℓ1 distance of one-hot codes
        moved = tok(f(a) - f(b))
        ok = distance > 0
        worst = max(worst, (moved[ok] / distance[ok]).max().item())
    assert worst <= float(op.lipschitz_bound(sympy.Float(norm))) * (1 + 1e-12)
    assert worst >= 0.5 * norm
