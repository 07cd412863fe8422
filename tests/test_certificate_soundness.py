"""Property test: the generated certificate is a true upper bound wherever its conditions hold.

Random networks of every family modc ships (attention, transformer, GPT from the embedding
output on, pre-norm blocks with LayerNorm > Gain > Bias, MLP, residual MLP, CNN, RMS
division and RMSClip networks, coupling blocks with frozen atoms) get adversarial weights
(all scaled, one layer blown up, low rank, some matrices zeroed, gains and biases of any
sign and size, or a few steps of the dualized optimizer at a large learning rate) and
adversarial inputs (random at many scales, or every position the same vector as in the
issue's reproduction). The fused CausalAttention runs at scale 1 and, in two blocks, at
scale 4. On every trial where the certificate's conditions hold on some inputs, its ℓ2
bound must be at least the best lower bound that adversarial search finds inside the
conditions (`lipschitz_lower`: power iteration on JᵀJ and secant ascent, both points
checked). `--trials N` sets the trials per family (default 8: well under a minute on two
cores).
"""

from __future__ import annotations

import math
import random

import pytest
import torch

import modc
from tests.conftest import SPECS

pytestmark = pytest.mark.usefixtures("one_thread")

GPT_BODY = """
name "gpt_body"
include "std/gpt.modc"
param width = 8
param depth = 2
param heads = 2
param context = 6
input (context, width)
network = tare(5) {
        repeat(depth, name=blocks) { transformer_block(width, heads, 1 / (2 * depth)) }
    } > Linear(11, name=head)
"""

CLIPPED_ATTENTION = """
input (6, 8)
def heads(width, n) = Linear(width) > SplitHeads(n) > RMSClip
def clipped_attention(width, n) =
    ((heads(width, n), (heads(width, n) > RoPE, heads(width, n) > RoPE)
       > AttentionQK > CausalMask > Softmax)
     > 1/3 * ApplyScores > MergeHeads > Linear(width))
"""

CLIPPED = (
    'name "clipped"\ninclude "std/gpt.modc"'
    + CLIPPED_ATTENTION
    + """
network = repeat(2, name=blocks) {
    3/4 * Identity + 1/4 * clipped_attention(8, 2)
    > 3/4 * Identity + 1/4 * gelu_mlp(8)
}
"""
)

# Pre-norm blocks (LayerNorm > Gain > Bias before each branch, std/prenorm.modc), with
# clipped attention so that attention's conditions can hold beside LayerNorm's.
PRENORM = (
    'name "prenorm"\ninclude "std/prenorm.modc"'
    + CLIPPED_ATTENTION
    + """
network = repeat(2, name=blocks) {
    3/4 * Identity + 1/4 * (layer_norm(1/10) > clipped_attention(8, 2))
    > 3/4 * Identity + 1/4 * (layer_norm(1/10) > gelu_mlp(8))
} > layer_norm(1/10) > Linear(11, name=head)
"""
)

# CausalAttention's joint ℓ2 constant, its condition (queries, keys, values of RMS ≤ 1)
# checked on data: one layer at scale 1, and two blocks at scale 4 (peaked softmax rows)
FUSED = """
name "fused"
include "std/gpt.modc"
param scale = 1
param depth = 1
input (6, 8)
def heads(width, n) = Linear(width) > SplitHeads(n)
def fused_attention(width, n, scale) =
    (heads(width, n), heads(width, n) > RoPE, heads(width, n) > RoPE)
    > 1/3 * CausalAttention(scale)
    > MergeHeads
    > Linear(width)
network = repeat(depth, name=blocks) {
    3/4 * Identity + 1/4 * fused_attention(8, 2, scale)
    > 3/4 * Identity + 1/4 * gelu_mlp(8)
}
"""

CNN = """
input: [2, 6, 6]
network:
  - Conv2D: {out: 4, kernel: 3, padding: 1}
  - ReLU
  - Conv2D: {out: 4, kernel: 3, stride: 2, padding: 2}
  - GELU
  - AvgPool: 2
  - Flatten
  - Linear: 5
"""

RMS_RESIDUAL = """
input: 6
network:
  - Linear: 8
  - residual: 2
    name: blocks
    body: [RMSDivide, Linear: 8, ReLU, Linear: 8]
  - LayerNorm
  - Linear: 4
"""

COUPLING = """
input (2, 3, 2)
def side(act) = Linear(8, frozen=true) > act > Linear(6) > Bias
network = Flatten
    > repeat(2, name=blocks) { coupling(side(ReLU), side(GELU)) }
    > Linear(4, frozen=true)
"""

# name -> (spec file or (text, file name), parameters)
FAMILIES = {
    "attention": (SPECS / "attention.modc", {"width": 8, "heads": 2, "context": 6}),
    "transformer": (
        SPECS / "transformer.modc",
        {"width": 8, "depth": 2, "heads": 2, "context": 6},
    ),
    "gpt_body": ((GPT_BODY, "gpt_body.modc"), {}),
    "clipped": ((CLIPPED, "clipped.modc"), {}),
    "fused": ((FUSED, "fused.modc"), {}),
    "fused_gpt": ((FUSED, "fused.modc"), {"scale": 4, "depth": 2}),
    "prenorm": ((PRENORM, "prenorm.modc"), {}),
    "mlp": (SPECS / "mlp.yaml", {"width": 8, "depth": 3}),
    "resmlp": (SPECS / "resmlp.yaml", {"width": 8, "depth": 2}),
    "cnn": ((CNN, "cnn.yaml"), {}),
    "rms": ((RMS_RESIDUAL, "rms.yaml"), {}),
    "coupling": ((COUPLING, "coupling.modc"), {}),
}
# Input scales (RMS) drawn from: the pre-norm stream must stay large enough for every
# LayerNorm's condition after the residual scalings, so its inputs start larger.
SCALES = {"prenorm": (1.0, 300.0)}
WEIGHTS = ("init", "scaled", "blown", "low_rank", "zeroed", "trained", "vectors")
_builds: dict[str, modc.Build] = {}


def build_of(family: str, root) -> modc.Build:
    if family not in _builds:
        spec, params = FAMILIES[family]
        if isinstance(spec, tuple):
            text, name = spec
            spec = root / f"{family}-{name}"
            spec.write_text(text)
        _builds[family] = modc.build(spec, params, out=root / f"build-{family}")
    return _builds[family]


def adversarial_weights(build: modc.Build, model, how: str, rng: random.Random) -> None:
    """Weights of the kind `how` names, in place."""
    params = [p for _, p in model.named_parameters()]
    with torch.no_grad():
        if how == "scaled":
            for p in params:
                p.mul_(math.exp(rng.uniform(math.log(0.1), math.log(4.0))))
        elif how == "blown":
            rng.choice(params).mul_(rng.uniform(5, 50))
        elif how == "low_rank":
            for p in params:
                if p.dim() >= 2:
                    m = p.reshape(p.shape[0], -1)
                    u, s, vh = torch.linalg.svd(m, full_matrices=False)
                    r = rng.randint(1, 2)
                    low = (u[:, :r] * s[:r] * rng.uniform(0.5, 3)) @ vh[:r]
                    p.copy_(low.reshape(p.shape))
        elif how == "vectors":  # gains and biases of any sign and size, some entries zero
            for p in params:
                if p.dim() == 1:
                    scale = math.exp(rng.uniform(math.log(0.01), math.log(20.0)))
                    p.copy_(scale * torch.randn_like(p) * (torch.rand_like(p) > 0.2))
        elif how == "zeroed":
            for p in rng.sample(params, k=max(1, len(params) // 3)):
                p.zero_()
    if how == "trained":
        lr = rng.uniform(0.3, 2.0)
        opt = build.optimizer.make_optimizer(model, lr, kind="dualized")
        gen = torch.Generator().manual_seed(rng.randint(0, 2**31))
        shape = build.model.INPUT_SHAPE
        x = torch.randn(8, *shape, generator=gen, dtype=torch.float64)
        for _ in range(3):
            opt.zero_grad()
            out = model(x)
            (out * torch.randn(out.shape, generator=gen, dtype=out.dtype)).sum().backward()
            opt.step()


def adversarial_inputs(
    shape: tuple[int, ...], rng: random.Random, scales: tuple[float, float] = (0.02, 30.0)
) -> torch.Tensor:
    """Random inputs at a random scale, or every position the same vector (the issue's)."""
    gen = torch.Generator().manual_seed(rng.randint(0, 2**31))
    scale = math.exp(rng.uniform(math.log(scales[0]), math.log(scales[1])))
    x = torch.randn(8, *shape, generator=gen, dtype=torch.float64)
    if len(shape) == 2 and rng.random() < 0.4:
        x = x[:, :1].expand(8, *shape).clone()
    return scale * x


def one_trial(
    build: modc.Build, rng: random.Random, scales: tuple[float, float] = (0.02, 30.0)
) -> tuple[bool, float, float, str]:
    """(conditions held somewhere, certified, measured, what was drawn)."""
    torch.manual_seed(rng.randint(0, 2**31))
    model = build.model.build_model().double()
    how = rng.choice(WEIGHTS)
    adversarial_weights(build, model, how, rng)
    model.zero_grad()
    x = adversarial_inputs(build.model.INPUT_SHAPE, rng, scales)
    cert = build.certificate
    ok = cert.inside(model, x)
    drawn = f"weights {how}, input RMS {x.pow(2).mean().sqrt().item():.3g}"
    if not ok.any():
        return False, 0.0, 0.0, drawn
    upper = cert.lipschitz_upper(model)
    lower = cert.lipschitz_lower(
        model, x[ok], iters=20, ascent=6, inside=lambda z: cert.inside(model, z)
    )
    return True, upper, lower, drawn


@pytest.mark.parametrize("family", list(FAMILIES))
def test_certificate_is_at_least_the_adversarial_lower_bound(family, trials, tmp_path_factory):
    build = build_of(family, tmp_path_factory.getbasetemp())
    rng = random.Random(f"{family}-soundness")
    count = trials or 8
    held = 0
    for trial in range(count):
        inside, upper, lower, drawn = one_trial(build, rng, SCALES.get(family, (0.02, 30.0)))
        held += inside
        assert upper >= lower, f"{family} trial {trial}: {drawn}: certified {upper} < {lower}"
    assert held >= count // 5, f"{family}: conditions held on only {held} of {count} trials"
