"""The polar factor: singular-value bands by dtype and iteration, low-rank gradients, banks,
zero, Muon's plateau, FLOP counts."""

from __future__ import annotations

import math

import pytest
import torch

from modc.runtime.polar import fast_dtype, gram_flops, polar, standard_flops

pytestmark = pytest.mark.usefixtures("one_thread")

SHAPES = [(784, 256), (256, 256), (10, 256), (256, 10), (256, 1024), (1024, 256)]
KINDS = ["gauss", "ill", "rank1", "rank2", "rank5"]
# The stated bands: σ_max within TOP of 1 and every σ of a direction where σ(g) > RESOLVED·σ_max(g)
# in [LOW, 1 + TOP], (TOP, LOW, RESOLVED) by dtype. Polar Express, 8 steps. bfloat16 resolves
# less: its schedule starts at a design bound above its rounding floor (polar.BF16_START).
BANDS = {torch.float32: (1e-5, 0.99, 1e-3), torch.bfloat16: (0.02, 0.97, 0.1)}


def random_matrix(kind: str, m: int, n: int, seed: int = 0) -> torch.Tensor:
    """A float32 (m, n) matrix: Gaussian, condition number 1e4 (log-spaced σ), or rank r."""
    gen = torch.Generator().manual_seed(seed)
    if kind == "gauss":
        return torch.randn(m, n, generator=gen)
    k = min(m, n)
    u = torch.linalg.qr(torch.randn(m, k, generator=gen, dtype=torch.float64))[0]
    v = torch.linalg.qr(torch.randn(n, k, generator=gen, dtype=torch.float64))[0]
    if kind == "ill":
        s = torch.logspace(0, -4, k, dtype=torch.float64)
    else:
        r = min(int(kind.removeprefix("rank")), k)
        s = torch.zeros(k, dtype=torch.float64)
        s[:r] = 0.5 + torch.rand(r, generator=gen, dtype=torch.float64)
    return ((u * s) @ v.T).float()


def band(g: torch.Tensor, p: torch.Tensor, resolved: float) -> tuple[float, float, float]:
    """|σ_max(p) − 1| and the range of σ(p) over directions where σ(g) > resolved·σ_max(g)."""
    sg = torch.linalg.svdvals(g.double())
    sp = torch.linalg.svdvals(p.double())
    keep = sg > resolved * sg[..., :1]
    return (
        (sp[..., 0] - 1).abs().max().item(),
        sp[keep].min().item(),
        sp[keep].max().item(),
    )


@pytest.mark.parametrize("dtype", BANDS, ids=["float32", "bfloat16"])
@pytest.mark.parametrize("gram", [False, True], ids=["standard", "gram"])
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("kind", KINDS)
def test_singular_values_lie_in_the_stated_band(kind, shape, gram, dtype):
    g = random_matrix(kind, *shape)
    tolerance, low, resolved = BANDS[dtype]
    top, lo, hi = band(g, polar(g, dtype=dtype, gram=gram), resolved)
    assert top < tolerance
    assert lo > low
    assert hi < 1 + tolerance


@pytest.mark.parametrize("scale", [1e-20, 1e-6, 1e6])
def test_the_band_holds_at_any_scale(scale):
    g = scale * random_matrix("gauss", 64, 256)
    for dtype, (tolerance, low, resolved) in BANDS.items():
        top, lo, hi = band(g, polar(g, dtype=dtype), resolved)
        assert top < tolerance and lo > low and hi < 1 + tolerance


def test_gram_and_standard_iterations_agree_in_float32():
    g = random_matrix("ill", 96, 400, seed=3)
    a = polar(g, dtype=torch.float32, gram=False)
    b = polar(g, dtype=torch.float32, gram=True)
    assert torch.allclose(a, b, atol=1e-4)


def test_matches_the_svd_polar_factor():
    g = random_matrix("gauss", 64, 40, seed=1)
    u, _, vh = torch.linalg.svd(g.double(), full_matrices=False)
    assert torch.allclose(polar(g, dtype=torch.float32).double(), u @ vh, atol=1e-4)


def test_hard_spectrum_tightens_with_more_steps():
    k, gen = 256, torch.Generator().manual_seed(0)
    u = torch.linalg.qr(torch.randn(k, k, generator=gen, dtype=torch.float64))[0]
    v = torch.linalg.qr(torch.randn(k, k, generator=gen, dtype=torch.float64))[0]
    s = torch.ones(k, dtype=torch.float64)
    s[3 * k // 4 :] = torch.logspace(-1, -4, k // 4, dtype=torch.float64)
    g = ((u * s) @ v.T).float()
    _, lo8, _ = band(g, polar(g, dtype=torch.float32), 1e-3)
    top, lo10, hi10 = band(g, polar(g, steps=10, dtype=torch.float32), 1e-3)
    assert lo8 > 0.95
    assert top < 1e-5 and lo10 > 1 - 1e-5 and hi10 < 1 + 1e-5


def low_rank(m: int, n: int, rank: int, seed: int = 0) -> tuple[torch.Tensor, ...]:
    """g = A B with Gaussian A (m, rank), B (rank, n), and orthonormal bases U_r, V_r of its
    column and row spaces, from QRs of the factors and the SVD of the rank × rank core."""
    gen = torch.Generator().manual_seed(seed)
    a = torch.randn(m, rank, generator=gen, dtype=torch.float64)
    b = torch.randn(rank, n, generator=gen, dtype=torch.float64)
    qa, ra = torch.linalg.qr(a)
    qb, rb = torch.linalg.qr(b.T)
    uc, _, vch = torch.linalg.svd(ra @ rb.T)
    return (a @ b).float(), qa @ uc, qb @ vch.T


def spectral_upper_bound(e: torch.Tensor, squarings: int = 4) -> float:
    """An upper bound on σ_max(e): ‖(e eᵀ)^(2^k)‖_F^(1/2^(k+1)) ≥ σ_max, by k squarings of the
    short side's Gram (normalised as it goes), within rank^(1/2^(k+1)) of σ_max."""
    e = e if e.size(0) <= e.size(1) else e.T
    r, log = e @ e.T, 0.0
    for _ in range(squarings):
        size = r.norm()
        if size == 0:
            return 0.0
        r = (r / size) @ (r / size)
        log = 2 * (log + size.log().item())
    return math.exp((log + r.norm().log().item()) / 2 ** (squarings + 1))


LOW_RANK = [(shape, r) for shape in [(256, 784), (784, 256), (128, 128)] for r in (1, 4, 16, 64)]
LOW_RANK += [((768, 3072), 1), ((768, 3072), 64)]  # heavy on a CPU: two ranks


@pytest.mark.parametrize("dtype", BANDS, ids=["float32", "bfloat16"])
@pytest.mark.parametrize(("shape", "rank"), LOW_RANK)
def test_a_low_rank_gradient_gets_its_polar_factor_and_nothing_in_its_null_space(
    shape, rank, dtype
):
    """cos(polar(g), U_r V_rᵀ) ≥ 0.99 (float32) or 0.97 (bfloat16), and every singular value
    of the update outside g's support (a sound upper bound on it) below 0.05: rounding noise
    in the null space is not lifted towards 1."""
    g, u, v = low_rank(*shape, rank, seed=rank)
    p = polar(g, dtype=dtype).double()
    inside = u.T @ p @ v  # p's part on the support, in the bases U_r, V_r
    cosine = inside.diagonal().sum() / (p.norm() * rank**0.5)
    outside = p - u @ inside @ v.T
    assert cosine >= (0.99 if dtype == torch.float32 else 0.97)
    assert spectral_upper_bound(outside.float()) < 0.05


@pytest.mark.parametrize("shape", [(96, 48), (48, 96), (40, 200)])
def test_a_bank_gives_each_matrix_its_own_polar_factor(shape):
    kinds = ["gauss", "ill", "rank3"]
    g = torch.stack([random_matrix(k, *shape, seed=i) for i, k in enumerate(kinds)])
    g = g.view(3, 1, *shape)
    p = polar(g, dtype=torch.float32)
    assert p.shape == g.shape
    for i in range(3):
        assert torch.allclose(p[i, 0], polar(g[i, 0], dtype=torch.float32), atol=1e-5)


@pytest.mark.parametrize("shape", [(5, 7), (7, 5), (2, 3, 4, 4), (3, 8, 40)])
@pytest.mark.parametrize("method", ["polar_express", "muon"])
@pytest.mark.parametrize("dtype", BANDS, ids=["float32", "bfloat16"])
def test_zero_gives_exact_zero(shape, method, dtype):
    for gram in (False, True):
        p = polar(torch.zeros(shape), method=method, dtype=dtype, gram=gram)
        assert p.shape == shape
        assert torch.equal(p, torch.zeros(shape))


# sup of Muon's quintic iterated 5 times over [0, 1] (g / ‖g‖_F has σ in [0, 1]), by a grid of
# 2·10⁶ points: the exact-arithmetic bound on σ_max(polar(g, method="muon", steps=5)).
MUON_5_MAX = 1.2024


@pytest.mark.parametrize("kind", ["gauss", "ill", "rank1", "rank5"])
def test_muon_iteration_plateaus_near_one_and_stays_under_its_bound(kind):
    """Muon's quintic: resolved σ in [0.6, MUON_5_MAX], σ_max at most MUON_5_MAX plus bfloat16
    rounding (the statement in Dualized's docstring)."""
    g = random_matrix(kind, 128, 64)
    sg = torch.linalg.svdvals(g.double())
    for dtype in BANDS:
        sp = torch.linalg.svdvals(polar(g, steps=5, method="muon", dtype=dtype).double())
        assert torch.isfinite(sp).all()
        assert sp[sg > 0.05 * sg[0]].min() > 0.6
        assert sp.max() < MUON_5_MAX * (1.01 if dtype == torch.bfloat16 else 1 + 1e-5)


def test_muon_bound_is_the_quintics_supremum():
    x = torch.linspace(0, 1, 2_000_001, dtype=torch.float64)
    for _ in range(5):
        x = 3.4445 * x - 4.775 * x**3 + 2.0315 * x**5
    assert MUON_5_MAX - 1e-4 < x.max() <= MUON_5_MAX


def test_keeps_the_input_dtype_and_rejects_unknown_methods():
    g = random_matrix("gauss", 32, 16)
    assert polar(g, dtype=torch.bfloat16).dtype == torch.float32
    assert polar(g.bfloat16()).dtype == torch.bfloat16
    with pytest.raises(ValueError, match="unknown polar method"):
        polar(g, method="newton")
    with pytest.raises(ValueError, match="float32, float64 or bfloat16"):
        polar(g, dtype=torch.float16)
    assert polar(g, steps=0, gram=True).isfinite().all()  # no step: g scaled, nothing else


def test_fast_dtype_is_bfloat16_only_where_matmuls_are_native():
    assert fast_dtype(torch.device("cuda")) == torch.bfloat16
    assert fast_dtype(torch.device("cpu")) in (torch.bfloat16, torch.float32)
    assert fast_dtype(torch.device("meta")) == torch.float32


@pytest.mark.parametrize(("ratio", "cheaper"), [(1, False), (1.5, False), (2, True), (4, True)])
def test_gram_is_chosen_where_it_saves_flops(ratio, cheaper):
    short = 128
    long = int(ratio * short)
    assert (gram_flops(short, long, 8) < standard_flops(short, long, 8)) is cheaper


def test_gram_flops_count_the_products_the_iteration_runs(monkeypatch):
    """Count multiply-adds of every matmul the Gram iteration calls, against gram_flops."""
    counted = 0
    real = torch.Tensor.__matmul__
    real_bmm, real_baddbmm = torch.bmm, torch.baddbmm

    def matmul(a, b):
        nonlocal counted
        counted += a.shape[-2] * a.shape[-1] * b.shape[-1]
        return real(a, b)

    def bmm(a, b, **kw):
        nonlocal counted
        counted += a.shape[-2] * a.shape[-1] * b.shape[-1]
        return real_bmm(a, b, **kw)

    def baddbmm(c, a, b, **kw):
        nonlocal counted
        counted += a.shape[-2] * a.shape[-1] * b.shape[-1]
        return real_baddbmm(c, a, b, **kw)

    monkeypatch.setattr(torch.Tensor, "__matmul__", matmul)
    monkeypatch.setattr(torch, "bmm", bmm)
    monkeypatch.setattr(torch, "baddbmm", baddbmm)
    polar(torch.randn(16, 64), dtype=torch.float32, gram=True)
    gram_count = counted
    counted = 0
    polar(torch.randn(16, 64), dtype=torch.float32, gram=False)
    assert (gram_count, counted) == (gram_flops(16, 64, 8), standard_flops(16, 64, 8))
