"""The hard cap's certificate: a Cholesky of (c·I − WᵀW) that runs to completion proves
σ_max(W)² below c plus its rounding terms. Adversarial: every bound is checked against a
float64 SVD, on spectra built to fool the candidate (flat tops, a top barely above the rest,
warm starts that miss the top direction), in every weight dtype, at the ends of each dtype's
range, and with σ just above the candidate so that the Cholesky must fail."""

from __future__ import annotations

import math

import pytest
import torch

from modc.runtime.certify import (
    CHOLESKY_SLACK,
    DEVICE_RUNGS,
    KRYLOV,
    _gram,
    cholesky_sigma_upper,
    spectral_cap,
    spectral_sigma_upper,
)

pytestmark = pytest.mark.usefixtures("one_thread")
DTYPES = [torch.float32, torch.bfloat16, torch.float16, torch.float64]


def in_range(w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(w / 2^e, 2^e) in float64, e per matrix so that no norm of w / 2^e overflows: the
    division by a power of two is exact."""
    w = w.double()
    _, e = torch.frexp(w.abs().amax((-2, -1)))
    scale = torch.ldexp(torch.ones_like(e, dtype=torch.float64), e)
    return w / scale[..., None, None], scale


def exact_sigma(w: torch.Tensor) -> torch.Tensor:
    unit, scale = in_range(w)
    return torch.linalg.svdvals(unit).amax(-1) * scale


def frobenius_norm(w: torch.Tensor) -> torch.Tensor:
    unit, scale = in_range(w)
    return torch.linalg.matrix_norm(unit) * scale


def with_spectrum(s: torch.Tensor, m: int, n: int, seed: int = 0) -> torch.Tensor:
    """U diag(s) Vᵀ (m × n, float64) with Haar-random U, V."""
    gen = torch.Generator().manual_seed(seed)
    u = torch.linalg.qr(torch.randn(m, len(s), generator=gen, dtype=torch.float64)).Q
    v = torch.linalg.qr(torch.randn(n, len(s), generator=gen, dtype=torch.float64)).Q
    return (u * s) @ v.T


def family(kind: str, m: int, n: int, seed: int = 0) -> torch.Tensor:
    """A float64 matrix of unit-ish scale whose spectrum is hard for a candidate."""
    r = min(m, n)
    gen = torch.Generator().manual_seed(seed)
    if kind == "gaussian":  # a Marchenko–Pastur edge: no gap at the top
        return torch.randn(m, n, generator=gen, dtype=torch.float64) / math.sqrt(max(m, n))
    if kind == "flat":  # every σ equal
        return with_spectrum(torch.ones(r, dtype=torch.float64), m, n, seed)
    if kind == "barely":  # the top σ a hair above a flat rest
        s = torch.ones(r, dtype=torch.float64)
        s[0] = 1 + 1e-6
        return with_spectrum(s, m, n, seed)
    if kind == "rank1":
        a = torch.randn(m, 1, generator=gen, dtype=torch.float64)
        return a @ torch.randn(1, n, generator=gen, dtype=torch.float64) / math.sqrt(m * n)
    if kind == "ill":
        return with_spectrum(torch.logspace(0, -12, r, dtype=torch.float64), m, n, seed)
    if kind == "zero":
        return torch.zeros(m, n, dtype=torch.float64)
    raise ValueError(kind)


KINDS = ["gaussian", "flat", "barely", "rank1", "ill", "zero"]


def scales(dtype: torch.dtype, m: int, n: int) -> list[float]:
    """Unit scale, and scales near the dtype's overflow and underflow (into subnormals)."""
    info = torch.finfo(dtype)
    return [1.0, info.max / (4 * math.sqrt(m * n)), info.tiny * 8, info.tiny / 4]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize(
    "shape", [(2, 24, 40), (2, 64, 64), (1, 200, 9), (1, 130, 200), (1, 300, 257)]
)  # the Gram in one product, and from 2 and 4 column blocks (the last one narrower)
def test_the_bound_is_above_the_exact_sigma_for_every_family_scale_and_dtype(dtype, shape):
    b, m, n = shape
    for kind in KINDS:
        for scale in scales(dtype, m, n):
            w = torch.stack([family(kind, m, n, seed) for seed in range(b)])
            w = (w * scale).to(dtype)
            if not w.isfinite().all():
                continue
            state = {}
            for _ in range(2):  # a cold call, then a warm one
                bound, frobenius = spectral_sigma_upper(w, state)
                exact = exact_sigma(w)
                assert torch.all(bound >= exact), (kind, scale, dtype)
                assert torch.all(frobenius >= frobenius_norm(w)), kind
            tight = exact > torch.finfo(dtype).tiny * 1e6  # far from underflow: close
            assert torch.all(bound[tight] <= exact[tight] * 1.02), (kind, scale, dtype)


@pytest.mark.parametrize("n", [31, 64, 100, 127, 130, 257])
def test_the_gram_from_column_blocks_is_exactly_symmetric_and_within_its_rounding(n):
    """Each entry of the blocked Gram is one length-k dot product: exactly symmetric, and
    within γ_k·|H|ᵀ|H| of the exact HᵀH (docs/theory.md §8, step 2)."""
    k = 300
    h = torch.randn(2, k, n, generator=torch.Generator().manual_seed(n))
    g = _gram(h)
    assert torch.equal(g, g.mT)
    exact = h.double().mT @ h.double()
    u = torch.finfo(torch.float32).eps / 2
    magnitude = h.double().abs().mT @ h.double().abs()
    assert torch.all((g.double() - exact).abs() <= k * u / (1 - k * u) * magnitude)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("excess", [1e-6, 1e-4, 1e-3, 1e-2, 0.1])
def test_a_candidate_below_the_top_sigma_is_caught(dtype, excess):
    """The warm start lies in the invariant subspace orthogonal to the top direction, so the
    Krylov space never sees it and the candidate is at most σ₂²(1 + slack), while σ₁² is
    (1 + slack)(1 + excess) times σ₂²: the Cholesky must fail once the excess passes its
    rounding terms, and the bound must hold either way."""
    m, n = 96, 64
    s = torch.linspace(1, 0.3, n, dtype=torch.float64)
    s[0] = math.sqrt((1 + CHOLESKY_SLACK) * (1 + excess))
    gen = torch.Generator().manual_seed(1)
    u = torch.linalg.qr(torch.randn(m, n, generator=gen, dtype=torch.float64)).Q
    v = torch.linalg.qr(torch.randn(n, n, generator=gen, dtype=torch.float64)).Q
    w = ((u * s) @ v.T).to(dtype)
    p = KRYLOV[0]
    block = v[:, 1:] @ torch.randn(n - 1, p, generator=gen, dtype=torch.float64)
    state = {"block": block.to(dtype)[None]}
    bound, certified, _ = cholesky_sigma_upper(w[None], state)
    assert bound[0] >= exact_sigma(w)
    if excess >= 1e-2 or (dtype == torch.float64 and excess >= 1e-4):
        assert not certified[0]  # σ₁² is above c by more than the rounding can hide
    full, _ = spectral_sigma_upper(w[None], {"block": block.to(dtype)[None]})
    assert full[0] >= exact_sigma(w) and full[0] <= exact_sigma(w) * 1.02  # the fallback


def test_the_sync_free_rungs_certify_the_second_guess_or_fall_back_to_frobenius():
    """Off a CPU a second, larger guess goes into the same batched Cholesky; past it the
    Frobenius norm: every outcome is an upper bound."""
    n, second = 48, DEVICE_RUNGS[1]
    torch.manual_seed(0)
    for top in [1.02, 1.3]:  # within the second guess (σ₂ = 1 is seen, σ₁ never), and past it
        s = torch.linspace(1, 0.3, n, dtype=torch.float64)
        s[0] = top
        w = with_spectrum(s, 80, n, seed=2).float()
        v = torch.linalg.svd(w.double(), full_matrices=False).Vh.T
        rest = v[:, 2:] @ torch.randn(n - 2, KRYLOV[0] - 1, dtype=torch.float64)
        block = torch.cat([v[:, 1:2], rest], 1)  # sees σ₂ = 1, never σ₁
        state = {"block": block.float()[None]}
        bound, certified, frobenius = cholesky_sigma_upper(w[None], state, rungs=DEVICE_RUNGS)
        assert bound[0] >= exact_sigma(w)
        assert bool(certified[0]) == (top**2 < second)
        assert bound[0] <= (math.sqrt(second * 1.01) if certified[0] else frobenius[0])


@pytest.mark.parametrize("dtype", DTYPES)
def test_a_capped_bank_mixing_hard_matrices_is_within_its_cap(dtype):
    """One bank: matrices just above the cap, flat at the cap, rank one, tiny, far above;
    after `spectral_cap` each stored matrix's exact σ_max is at most the cap, and those
    within it are left alone."""
    m, n, cap = 40, 32, 0.5
    info = torch.finfo(dtype)
    rows = [
        family("flat", m, n) * cap * (1 + 1e-7),
        family("barely", m, n) * cap * 1.001,
        family("gaussian", m, n) * 1e3,
        family("rank1", m, n) * 10,
        family("flat", m, n) * info.tiny * 4,
        family("flat", m, n) * cap * 0.9,
    ]
    w = torch.stack(rows).to(dtype)
    before = w.clone()
    state = {}
    for _ in range(3):
        spectral_cap(w, cap, state)
        assert torch.all(exact_sigma(w) <= cap)
    assert torch.equal(w[-1], before[-1]) and torch.equal(w[-2], before[-2])


def test_a_bank_at_its_cap_stays_capped_under_steps_that_push_the_top_direction():
    """Training-like: each step adds a push along the current top singular pair (σ grows
    fastest there) and a random one; the warm start must follow, the bound must hold."""
    torch.manual_seed(0)
    w = torch.randn(6, 64, 48) * 0.2
    state, cap = {}, 1.0
    for step in range(12):
        u, _, vh = torch.linalg.svd(w.double(), full_matrices=False)
        push = u[..., :, :1] @ vh[..., :1, :] if step % 2 else torch.randn_like(w.double())
        w += (0.05 * push / torch.linalg.matrix_norm(push, ord=2)[..., None, None]).float()
        spectral_cap(w, cap, state)
        assert torch.all(exact_sigma(w) <= cap)
        assert torch.all(exact_sigma(w) >= cap * 0.98)  # and not far below it
    assert state.get("failed", 0) <= 6  # the certificate failed at most on the cold start


@pytest.mark.slow
def test_random_search_finds_no_bound_below_sigma(trials):
    """Random spectra (power laws, clusters at the top, random gaps), shapes, dtypes and
    scales, with warm starts taken from a perturbed earlier matrix."""
    gen = torch.Generator().manual_seed(3)
    for trial in range(trials or 200):
        # short sides up to 299: Grams of one product and of 2, 3 and 4 column blocks
        m, n = (int(x) for x in torch.randint(2, 300, (2,), generator=gen))
        r = min(m, n)
        dtype = DTYPES[trial % len(DTYPES)]
        s = torch.rand(r, generator=gen, dtype=torch.float64) ** float(
            torch.rand(1, generator=gen) * 20
        )
        s[: int(torch.randint(1, r + 1, (1,), generator=gen))] = 1.0  # a cluster at the top
        s[0] *= 1 + float(torch.rand(1, generator=gen)) * 10 ** -float(
            torch.randint(1, 8, (1,), generator=gen)
        )
        scale = scales(dtype, m, n)[trial % 4]
        w = (with_spectrum(s, m, n, seed=trial) * scale).to(dtype)[None]
        if not w.isfinite().all():
            continue
        state = {}
        spectral_sigma_upper((w.double() * 1.01).to(dtype), state)  # a nearby warm start
        bound, _ = spectral_sigma_upper(w, state)
        assert bound[0] >= exact_sigma(w)[0], (trial, m, n, dtype, scale)
