"""The hard cap and its bounds at the edges: weights whose norms underflow, stores that land
in a dtype's subnormal range, a model cast after its hook was made, torch's per-backend
float32 precision settings, and matrices that are not finite. Each case is checked against
the exact σ_max (rational arithmetic or a float64 SVD of an exactly scaled copy)."""

from __future__ import annotations

from fractions import Fraction

import pytest
import torch

from modc.runtime.certify import (
    _bound_dtype,
    gram_sigma_upper,
    spectral_cap,
    spectral_norm_upper,
    spectral_sigma_upper,
    svd_sigma,
)
from modc.runtime.optim import Constrain

pytestmark = pytest.mark.usefixtures("one_thread")


def sigma(w: torch.Tensor) -> float:
    """The exact σ_max of w (a float64 SVD of w scaled by a power of two into range)."""
    w = w.double()
    scale = 2.0 ** torch.frexp(w.abs().max())[1].item()
    return torch.linalg.svdvals(w / scale).max().item() * scale


def rank_one(scale_exponent: int, k: int = 4096, n: int = 32) -> tuple[torch.Tensor, Fraction]:
    """A float32 k × n matrix of rank one whose column's first entry is 2^12 times the rest,
    all times 2^scale_exponent (exact), and its σ_max² as a fraction: float32 dot products
    of it lose every small term (2^24 + 1 rounds to 2^24), so only a counted rounding error
    keeps a bound above σ_max."""
    column = torch.ones(k, dtype=torch.float64)
    column[0] = 2.0**12
    w = torch.zeros(k, n, dtype=torch.float64)
    w[:, 0] = column * 2.0**scale_exponent
    exact = (2**24 + k - 1) * Fraction(2) ** (2 * scale_exponent)
    return w.float(), exact


@pytest.mark.parametrize("exponent", [-115, -60, 0, 80])
def test_the_gram_bound_holds_where_the_frobenius_norm_underflows(exponent):
    w, exact = rank_one(exponent)
    assert torch.linalg.matrix_norm(w).item() > 0 or exponent < -75  # the case at issue
    bound = Fraction(gram_sigma_upper(w).item())
    assert bound**2 >= exact
    assert bound**2 <= exact * Fraction(1001, 1000)  # and not loose for it
    state = {"block": torch.eye(32)[None, :, 1:9].contiguous()}  # misses the top: fails
    bound, _ = spectral_sigma_upper(w[None], state)
    assert state["failed"] == 1 and Fraction(bound.item()) ** 2 >= exact


@pytest.mark.parametrize(
    "dtype, value, cap",
    [
        (torch.float16, 30000.0, 1.0),  # the scale is below float16's normal range
        (torch.float16, 30000.0, 0.3),
        (torch.float16, 2.0**-10, 1.2497915304265914e-04),  # W·s lands in subnormals
        (torch.bfloat16, 1.5e-40, 1e-40),  # the weight itself is subnormal
        (torch.float32, 1.5e-40, 6e-43),
        (torch.bfloat16, 1.5e-40, 1e-45),  # a cap within the dtype's underflow: W = 0
    ],
)
def test_the_cap_holds_where_the_stored_weight_is_subnormal(dtype, value, cap):
    for size in (8, 64):
        w = torch.full((size, size), value, dtype=dtype)
        spectral_cap(w, cap)
        assert sigma(w) <= cap * (1 - 1e-6)


def test_the_cap_holds_over_a_sweep_of_float16_weights_far_over_it():
    for value in torch.linspace(1000, 60000, 200).tolist():
        w = torch.full((64, 64), value, dtype=torch.float16)
        spectral_cap(w, 0.5)
        assert sigma(w) <= 0.5 * (1 - 1e-6)


def test_a_model_cast_after_its_hook_is_capped_in_its_new_dtype():
    layer = torch.nn.Linear(64, 64, bias=False)
    hook = Constrain([(layer.weight, 1.02004, spectral_norm_upper, spectral_cap)])
    layer.half()
    with torch.no_grad():
        layer.weight.fill_(1.0)  # σ = 64
    hook()
    assert layer.weight.dtype == torch.float16
    assert sigma(layer.weight) <= 1.02004 * (1 - 1e-6)


@pytest.mark.parametrize(
    "backend, value",
    [
        (lambda: torch.backends.mkldnn.matmul, "bf16"),
        (lambda: torch.backends.mkldnn, "tf32"),
        (lambda: torch.backends, "tf32"),
    ],
    ids=["mkldnn.matmul", "mkldnn", "root"],
)
def test_float32_matmuls_that_may_round_lower_send_the_bound_to_float64(backend, value):
    if not hasattr(torch.backends, "fp32_precision"):
        pytest.skip("torch before 2.9 has only the global setting")
    backend = backend()
    try:
        backend.fp32_precision = value
        w = torch.randn(2, 64, 32)
        assert _bound_dtype(w) == torch.float64
        spectral_cap(w, 1.0, {})  # the legacy getter would raise in this state
        assert all(sigma(m) <= 1.0 for m in w)
    finally:
        backend.fp32_precision = "none"
    assert _bound_dtype(torch.randn(2, 2)) == torch.float32


def test_one_non_finite_call_does_not_spoil_the_warm_start_for_good():
    w = torch.randn(3, 256, 128, generator=torch.Generator().manual_seed(0)) / 16
    bad = w.clone()
    bad[1, 0, 0] = float("nan")
    state: dict = {}
    spectral_sigma_upper(w, state)
    spectral_sigma_upper(bad, state)
    assert torch.isfinite(state["block"]).all()
    failed = []
    for _ in range(20):
        before = state.get("failed", 0)
        spectral_sigma_upper(w, state)
        failed.append(state.get("failed", 0) - before)
    assert failed[-5:] == [0] * 5  # the guess recovered


def test_a_matrix_that_is_not_finite_has_no_finite_bound():
    w = torch.randn(3, 16, 8)
    w[1, 0, 0], w[2, 3, 3] = float("inf"), float("nan")
    assert svd_sigma(w)[0].isfinite() and svd_sigma(w)[1:].isinf().all()
    assert spectral_norm_upper(w[2]) == float("inf")
    bound, _ = spectral_sigma_upper(w)
    assert bound[0] >= sigma(w[0]) and bound[1:].isinf().all()
    spectral_cap(w, 1.0)  # the others capped; these stay not finite, for the loop to report
    assert sigma(w[0]) <= 1.0 and not w[1:].isfinite().all((-2, -1)).any()
