"""Orthogonal polar factor U Vᵀ by an odd polynomial (Newton–Schulz style) iteration."""

from __future__ import annotations

import math

import torch

from modc.runtime.scratch import Scratch

# Polar Express degree-5 coefficients (a, b, c) of p(σ) = aσ + bσ³ + cσ⁵, one per step
# (Amsel, Persson, Musco, Gower 2025, arXiv:2505.16932, Alg. 1), before the safety factor.
POLAR_EXPRESS = [
    (8.28721201814563, -23.595886519098837, 17.300387312530933),
    (4.107059111542203, -2.9478499167379106, 0.5448431082926601),
    (3.9486908534822946, -2.908902115962949, 0.5518191394370137),
    (3.3184196573706015, -2.488488024314874, 0.51004894012372),
    (2.300652019954817, -1.6689039845747493, 0.4188073119525673),
    (1.891301407787398, -1.2679958271945868, 0.37680408948524835),
    (1.8750014808534479, -1.2500016453999487, 0.3750001645474248),
    (1.875, -1.25, 0.375),
]
MUON = [(3.4445, -4.7750, 2.0315)]  # Muon's fixed quintic (Jordan et al. 2024)
# Safety factors f: every polynomial but the last is evaluated at σ/f, so σ that rounding
# pushed up to f·(the design bound) still converge. Polar Express's own 1.01 suffices for
# the standard iteration and for the Gram iteration in float32; in bfloat16 the Gram
# iteration's R drifts further from the Gram of X, and 1.1 keeps it convergent (checked on
# 1,500 random matrices by bench/polar_stress.py).
SAFETY = 1.01
GRAM_SAFETY_BF16 = 1.1
GRAM_RESTARTS = (2, 4, 6)  # Gram steps that form X again first: bfloat16 drifts otherwise
# bfloat16 rounds X and every product to 2⁻⁸ relative, which leaves noise of about 1e-3·σ_max
# in the null space of a low-rank g. Polar Express's steps 0 and 1 are designed to lift σ
# from ℓ = 1e-3 (step 2's design bound is 0.033, four bfloat16 epsilons), so they would lift
# that noise to 1 with the signal: in bfloat16 the schedule starts at step BF16_START, and
# its last step is replaced by CLEANUP, p(σ) = (5σ³ − 3σ⁵)/2 (p(0) = p'(0) = 0, p(1) = 1,
# p'(1) = 0), which sends what noise is left to 0 and keeps σ near 1 at 1
# (bench/polar_lowrank.py measures both).
BF16_START = 2
CLEANUP = (0.0, 2.5, -1.5)


def coefficients(
    method: str, steps: int, safety: float, bf16: bool = False
) -> list[tuple[float, float, float]]:
    """(a, b, c) for each step of a `steps`-step schedule; the last polynomial repeats past
    the list. bf16: the schedule from step BF16_START, its last step CLEANUP."""
    if method == "muon":
        return MUON * steps
    if method != "polar_express":
        raise ValueError(f"unknown polar method {method!r}; expected 'polar_express' or 'muon'")
    f = safety
    scaled = [(a / f, b / f**3, c / f**5) for a, b, c in POLAR_EXPRESS[:-1]] + POLAR_EXPRESS[-1:]
    schedule = (scaled + scaled[-1:] * steps)[:steps]
    if bf16 and steps > BF16_START:
        return schedule[BF16_START:-1] + [CLEANUP]
    return schedule


def cpu_has_bf16() -> bool:
    """Whether this CPU multiplies bfloat16 natively (AVX512-BF16 or AMX): there, bfloat16
    matmuls run about twice as fast as float32 ones (bench/optimizer_step.py)."""
    cpu = getattr(torch.backends, "cpu", None)
    capability = cpu.get_cpu_capability() if cpu is not None else ""
    native = getattr(torch.cpu, "_is_avx512_bf16_supported", lambda: False)()
    amx = getattr(torch.cpu, "_is_amx_tile_supported", lambda: False)()
    return capability.startswith("AVX512") and (native or amx)


CPU_BF16 = cpu_has_bf16()  # asked once, at import: a compiled step cannot ask


def fast_dtype(device: torch.device) -> torch.dtype:
    """The dtype of polar()'s matmuls: bfloat16 on CUDA and CPUs with native bfloat16."""
    if device.type == "cuda" or (device.type == "cpu" and CPU_BF16):
        return torch.bfloat16
    return torch.float32


def polar(
    g: torch.Tensor,
    steps: int = 8,
    method: str = "polar_express",
    dtype: torch.dtype | None = None,
    gram: bool | None = None,
) -> torch.Tensor:
    """Approximate the polar factor U Vᵀ of g, shape (m, n) or a bank (..., m, n), by matmuls.
    g is a plain tensor: FSDP2's sharded banks reach it gathered (modc/runtime/distributed.py).

    It is the spectral norm's dual map. method "polar_express" (default): Polar Express, g
    first scaled by ‖g‖_F and then by (Σσ⁴)^¼ ≥ σ_max, read off the first Gram, to lift
    small σ; in bfloat16 the schedule is matched to the dtype's rounding (BF16_START,
    CLEANUP: steps=8 runs 6 polynomials), so the null space of a low-rank g stays at rounding
    level; "muon": Muon's quintic and scaling (g / max(‖g‖_F, 1e-7)), which plateaus near,
    not at, 1 (about 0.7 to 1.2). The last polynomial repeats past the list.
    dtype: of the matmuls (float32, float64 or bfloat16), default fast_dtype(g.device); pass
    torch.bfloat16 to force the bfloat16 path anywhere (a dual map's **polar_options, or
    Dualized's `polar` option, carry it).
    gram: iterate on the Gram matrix of the short side (Gram Newton–Schulz, Zhang, Amsel,
    Chen, Dao 2026), X formed again at GRAM_RESTARTS; default: for Polar Express in float32
    and float64 where it needs fewer multiply-adds (aspect ratio above 1.5 at 8 steps); not
    in bfloat16, where the Gram's rounding (2⁻⁸·‖R‖, a σ of √(2⁻⁸·…)) leaves up to 0.05
    outside a low-rank g's support. Bands reached, by dtype: tests/test_polar.py. Zero g
    gives exact zeros, never NaN. Returns g's dtype; tall g is iterated as its transpose.
    Within `with scratch:` (a `Scratch`, as Dualized steps) its buffers and its result come
    from that scratch: the result is overwritten by the next call there.
    """
    dtype = dtype or fast_dtype(g.device)
    if dtype not in (torch.float32, torch.float64, torch.bfloat16):
        raise ValueError(f"polar() multiplies in float32, float64 or bfloat16, not {dtype}")
    tall = g.size(-2) > g.size(-1)  # iterate with the short side first: X Xᵀ is then
    source = g.mT if tall else g  # the small Gram
    batch, (short, long) = source.shape[:-2], source.shape[-2:]
    bf16 = dtype == torch.bfloat16
    if gram is None:
        cheaper = gram_flops(short, long, steps) < standard_flops(short, long, steps)
        gram = method == "polar_express" and cheaper and not bf16
    coeffs = coefficients(method, steps, GRAM_SAFETY_BF16 if gram and bf16 else SAFETY, bf16)
    # X: polar's own contiguous copy (from the current scratch, if any), scaled in place
    x = Scratch.empty("polar.x", (math.prod(batch), short, long), dtype, g.device)
    x.view(source.shape).copy_(source)
    r = Scratch.empty("polar.r", (len(x), short, short), dtype, g.device)
    if method == "muon":
        x.div_(x.norm(dim=(-2, -1), keepdim=True).clamp_min(1e-7))
        torch.bmm(x, x.mT, out=r)
    else:
        x.div_(x.norm(dim=(-2, -1), keepdim=True) + 1e-30)  # ‖x‖_F ≤ 1, 0 only if g is 0
        torch.bmm(x, x.mT, out=r)
        scale = r.norm(dim=(-2, -1), keepdim=True).sqrt() * 1.01 + 1e-15
        x.div_(scale)
        r.div_(scale**2)
    x = (_gram_iteration if gram else _standard_iteration)(x, r, coeffs)
    x = x.reshape(*batch, short, long)
    x = x.mT if tall else x
    if x.dtype == g.dtype:
        return x
    return Scratch.empty("polar.out", g.shape, g.dtype, g.device).copy_(x)


def _standard_iteration(x: torch.Tensor, r: torch.Tensor, coeffs: list) -> torch.Tensor:
    """X ← aX + (bR + cR²)X with R = X Xᵀ: 2·short²·long + short³ per step, each product
    written over a buffer the last step is done with (X over the one before it)."""
    spare = Scratch.empty("polar.spare", x.shape, x.dtype, x.device)
    m = Scratch.empty("polar.m", r.shape, r.dtype, r.device)
    for i, (a, b, c) in enumerate(coeffs):
        if i > 0:
            torch.bmm(x, x.mT, out=r)
        torch.baddbmm(r, r, r, beta=b, alpha=c, out=m)
        x, spare = torch.baddbmm(x, m, x, beta=a, out=spare), x
    return x


def _gram_iteration(x: torch.Tensor, r: torch.Tensor, coeffs: list) -> torch.Tensor:
    """The same polynomials on the Gram matrix: X_k = Q_k X, R_{k+1} = H R H with
    H = aI + bR + cR², which all commute; X is formed only at restarts and at the end."""
    eye = torch.eye(r.size(-1), dtype=r.dtype, device=r.device)
    q = None
    for i, (a, b, c) in enumerate(coeffs):
        if q is not None and i in GRAM_RESTARTS:
            x, q = q @ x, None
            r = x @ x.mT
        h = torch.baddbmm(r, r, r, beta=b, alpha=c).add_(eye, alpha=a)
        q = h if q is None else h @ q
        if i + 1 < len(coeffs) and i + 1 not in GRAM_RESTARTS:
            r = h @ r @ h
    return x if q is None else q @ x


def standard_flops(short: int, long: int, steps: int) -> int:
    """Multiply-adds of the standard iteration on one short × long matrix."""
    return steps * (2 * short * short * long + short**3)


def gram_flops(short: int, long: int, steps: int) -> int:
    """Multiply-adds of the Gram iteration on one short × long matrix, step by step as run."""
    cube, slab = short**3, short * short * long
    total = 2 * slab  # the first Gram, and forming X at the end
    for i in range(steps):
        restart = i in GRAM_RESTARTS
        total += 2 * slab * restart + cube  # X ← Q X and its Gram; R²
        total += cube * (i > 0 and not restart)  # Q ← H Q
        total += 2 * cube * (i + 1 < steps and i + 1 not in GRAM_RESTARTS)  # R ← H R H
    return total
