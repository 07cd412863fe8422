"""Atoms: each dual map returns an update of norm equal to the target that is the steepest
descent direction for the atom's norm; norms, initialisations and ℓ2 bounds are right.

Steepest: ⟨G, U⟩ equals target × the dual norm of G (the most any update of that norm can
reach), and beats random updates of the same norm and small perturbations of U itself.
"""

from __future__ import annotations

import inspect
import math

import pytest
import torch
import torch.nn.functional as F

from tests.opkit import (
    emit,
    make,
)

pytestmark = pytest.mark.usefixtures("one_thread")

TARGET = 0.37


def _nuclear(m: torch.Tensor) -> torch.Tensor:
    return torch.linalg.svdvals(m.double()).sum(-1)


# name, arguments, input shape, weight shape, dual norm of G (the best ⟨G, U⟩ at norm 1)
ATOMS = [
    ("Linear", {"out": 24}, (40,), lambda g: math.sqrt(24 / 40) * _nuclear(g)),
    ("Linear", {"out": 40}, (24,), lambda g: math.sqrt(40 / 24) * _nuclear(g)),
    ("Linear", {"out": 16}, (16,), lambda g: _nuclear(g)),
    ("Embed", {"num": 30, "dim": 12}, (5,), lambda g: math.sqrt(12) * g.double().norm(dim=1).sum()),
    (
        "Conv2D",
        {"out": 6, "kernel": 3, "padding": 1},
        (4, 8, 8),
        lambda g: math.sqrt(6 / 4) / 9 * _nuclear(g.permute(2, 3, 0, 1)).sum(),
    ),
    ("Bias", {}, (5, 9), lambda g: math.sqrt(9) * g.double().norm()),
    ("Gain", {}, (5, 9), lambda g: g.double().abs().sum()),
]


def _atom(name, values, shape):
    op = make(name, values, shape)
    return op, type(op).dualize, type(op).norm


IDS = ["linear-narrowing", "linear-widening", "linear-square", "embed", "conv", "bias", "gain"]


@pytest.mark.parametrize(("name", "values", "shape", "dual"), ATOMS, ids=IDS)
def test_dual_map_has_the_target_norm_and_is_steepest(name, values, shape, dual):
    op, dualize, norm = _atom(name, values, shape)
    gen = torch.Generator().manual_seed(0)
    shape_w = tuple(int(d) for d in op.weight_shape())
    g = torch.randn(shape_w, generator=gen)
    u = dualize(g, TARGET, **float32(dualize))
    assert u.shape == g.shape and u.dtype == g.dtype
    assert norm(u) == pytest.approx(TARGET, rel=1e-4)
    best = TARGET * dual(g).item()
    reached = (g.double() * u.double()).sum().item()
    assert reached == pytest.approx(best, rel=2e-3)
    for _ in range(100):
        v = torch.randn(shape_w, generator=gen)
        v = v * (TARGET / norm(v))
        assert (g * v).sum().item() <= reached * (1 + 1e-6)
        w = u + 0.05 * TARGET * torch.randn(shape_w, generator=gen) / math.sqrt(g.numel())
        w = w * (TARGET / norm(w))
        assert (g.double() * w.double()).sum().item() <= reached * (1 + 1e-4)


def float32(dualize) -> dict:
    """Polar options for float32 matmuls, for the dual maps that call polar()."""
    params = inspect.signature(dualize).parameters.values()
    return {"dtype": torch.float32} if any(p.kind is p.VAR_KEYWORD for p in params) else {}


@pytest.mark.parametrize(("name", "values", "shape", "dual"), ATOMS, ids=IDS)
def test_a_bank_of_gradients_gives_each_its_own_update(name, values, shape, dual):
    """The optimizer dualizes same-shape weights as a bank (k, *shape), targets (k, 1, ...)."""
    op, dualize, norm = _atom(name, values, shape)
    gen = torch.Generator().manual_seed(1)
    grads = torch.randn(3, *(int(d) for d in op.weight_shape()), generator=gen)
    targets = torch.tensor([0.5, 1.0, 2.0]).view(3, *[1] * (grads.dim() - 1))
    bank = dualize(grads, targets, **float32(dualize))
    for i in range(3):
        alone = dualize(grads[i], float(targets[i]), **float32(dualize))
        assert torch.allclose(bank[i], alone, atol=1e-5)
        assert norm(bank[i]) == pytest.approx(float(targets[i]), rel=1e-4)


@pytest.mark.parametrize(("name", "values", "shape", "dual"), ATOMS, ids=IDS)
def test_zero_gradient_gives_zero_update(name, values, shape, dual):
    op, dualize, _ = _atom(name, values, shape)
    g = torch.zeros(tuple(int(d) for d in op.weight_shape()))
    u = dualize(g, TARGET)
    assert torch.isfinite(u).all() and not u.any()


def test_embed_dual_leaves_rows_without_gradient_at_zero():
    _, dualize, _ = _atom("Embed", {"num": 6, "dim": 4}, (3,))
    g = torch.randn(6, 4)
    g[[1, 4]] = 0
    u = dualize(g, TARGET)
    assert not u[[1, 4]].any()
    others = u[[0, 2, 3, 5]].norm(dim=1)
    assert torch.allclose(others, torch.full_like(others, TARGET * 2))


def test_conv_dual_map_passes_polar_options_on():
    _, dualize, norm = _atom("Conv2D", {"out": 6, "kernel": 3}, (4, 8, 8))
    u = dualize(torch.randn(6, 4, 3, 3), TARGET, method="muon")
    assert norm(u) == pytest.approx(TARGET, rel=0.3)  # Muon's quintic is near, not at, 1


@pytest.mark.parametrize(
    ("name", "values", "shape"),
    [
        ("Linear", {"out": 24}, (40,)),
        ("Linear", {"out": 40}, (24,)),
        ("Embed", {"num": 30, "dim": 12}, (5,)),
        ("Conv2D", {"out": 6, "kernel": 3}, (4, 8, 8)),
        ("Conv2D", {"out": 3, "kernel": 2}, (5, 8, 8)),
        ("Gain", {}, (9,)),
    ],
    ids=["linear-narrowing", "linear-widening", "embed", "conv-3", "conv-2", "gain"],
)
def test_initial_weights_have_norm_one(name, values, shape):
    torch.manual_seed(0)
    op = make(name, values, shape)
    assert type(op).norm(emit(op).module.weight) == pytest.approx(1.0, rel=1e-6)


def test_bias_starts_at_zero():
    op = make("Bias", {}, (9,))
    assert type(op).norm(emit(op).module.weight) == 0


def test_conv_norm_is_reached_when_every_tap_is_the_same():
    op = make("Conv2D", {"out": 3, "kernel": 3, "padding": 1}, (2, 6, 6))
    f = emit(op)
    tap = torch.randn(3, 2, dtype=torch.float64)
    with torch.no_grad():
        f.module.weight.copy_(tap[:, :, None, None].expand(3, 2, 3, 3))
    _, _, vh = torch.linalg.svd(tap)
    x = vh[0].view(1, 2, 1, 1).expand(1, 2, 6, 6)  # constant image along the top input
    y = f(x)
    gain = y.pow(2).mean(1).sqrt().amax() / x.pow(2).mean(1).sqrt().amax()
    assert gain.item() == pytest.approx(type(op).norm(f.module.weight), rel=1e-9)


def _conv_matrix(weight: torch.Tensor, shape: tuple, stride: int, padding: int) -> torch.Tensor:
    n = math.prod(shape)
    basis = torch.eye(n, dtype=torch.float64).view(n, *shape)
    return F.conv2d(basis, weight, stride=stride, padding=padding).flatten(1).T


@pytest.mark.parametrize(("stride", "padding"), [(1, 1), (2, 0), (2, 2), (3, 0)])
def test_conv_l2_bound_is_sound(stride, padding):
    op = make("Conv2D", {"out": 3, "kernel": 3, "stride": stride, "padding": padding}, (2, 7, 7))
    gen = torch.Generator().manual_seed(stride * 10 + padding)
    w = torch.randn(3, 2, 3, 3, generator=gen, dtype=torch.float64)
    exact = torch.linalg.matrix_norm(_conv_matrix(w, (2, 7, 7), stride, padding), ord=2)
    assert exact.item() <= type(op).lipschitz(w)


def test_l2_bounds_of_the_vector_atoms_are_exact():
    g = torch.tensor([0.5, -2.0, 1.0])
    gain = make("Gain", {}, (3,))
    assert type(gain).lipschitz(g) == 2.0 == type(gain).norm(g)
    assert type(make("Bias", {}, (3,))).lipschitz(g) == 1.0
    table = torch.randn(7, 4, dtype=torch.float64)
    embed = make("Embed", {"num": 7, "dim": 4}, (2,))
    sigma = torch.linalg.matrix_norm(table, ord=2).item()
    assert sigma <= type(embed).lipschitz(table) <= sigma * (1 + 1e-12)
    assert type(embed).norm(table) == pytest.approx(table.norm(dim=1).max().item() / 2)
