"""Smoothness constants, checked with second-order finite differences.

Operations: ‖D²f[h, h]‖ ≤ γ‖h‖² (and the tight cases reach γ); atoms: α = 0, β ≤ 1 and
ω ≤ 1. Networks: the α, β, γ, ω that the analysis states bound the second differences of
compiled models at well-normed weights, on inputs inside every operation's domain, for
weight perturbations of modular norm 1.
"""

from __future__ import annotations

import math

import pytest
import sympy
import torch

import modc
from modc.compiler import load
from modc.theory.sharpness import Sharp, power
from tests.netspecs import ATTENTION, GELU_MLP, LAYERNORM, RESIDUAL
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

EPS = 1e-3


def _second(f, x: list[torch.Tensor], h: list[torch.Tensor]) -> torch.Tensor:
    plus = f(*[a + EPS * d for a, d in zip(x, h, strict=True)])
    minus = f(*[a - EPS * d for a, d in zip(x, h, strict=True)])
    return (plus - 2 * f(*x) + minus) / EPS**2


def _center_lift(x: torch.Tensor) -> torch.Tensor:
    m = x.mean(-1, keepdim=True)
    return m + lift_rms(x - m)


# name, arguments, shapes, input norms, output norm, domain
SMOOTH = [
    ("GELU", {}, [(4, 6)], (tok,), tok, lambda xs: xs),
    ("RMSDivide", {}, [(4, 6)], (tok,), tok, lambda xs: [lift_rms(xs[0])]),
    ("LayerNorm", {}, [(4, 6)], (tok,), tok, lambda xs: [_center_lift(xs[0])]),
    ("Softmax", {"scale": 3}, [(2, 5, 5)], (entries,), rows_l1, lambda xs: xs),
    ("AttentionQK", {}, [(2, 5, 4), (2, 5, 4)], (tok, tok), entries, lambda xs: xs),
    ("ApplyScores", {}, [(2, 5, 3), (2, 5, 5)], (tok, rows_l1), tok, lambda xs: xs),
]
LINEAR = [
    ("Identity", {}, [(4, 6)]),
    ("Flatten", {}, [(3, 2, 2)]),
    ("Mul", {"factor": 3}, [(6,)]),
    ("Add", {}, [(6,), (6,)]),
    ("MeanSubtract", {}, [(4, 6)]),
    ("Mean", {}, [(4, 6)]),
    ("AvgPool", {"kernel": 2}, [(2, 4, 4)]),
    ("SplitHeads", {"heads": 2}, [(4, 6)]),
    ("MergeHeads", {}, [(2, 4, 3)]),
    ("CausalMask", {}, [(2, 4, 4)]),
    ("RoPE", {}, [(2, 4, 4)]),
]


@pytest.mark.parametrize(
    ("name", "values", "shapes", "nin", "nout", "domain"), SMOOTH, ids=[c[0] for c in SMOOTH]
)
def test_second_derivative_is_bounded_by_gamma(name, values, shapes, nin, nout, domain):
    op = make(name, values, *shapes)
    gamma = float(op.sharpness()[2])
    f = emit(op)
    gen = torch.Generator().manual_seed(0)
    worst = 0.0
    for scale in (0.1, 1.0, 3.0):
        x = domain(
            [scale * torch.randn(64, *s, generator=gen, dtype=torch.float64) for s in shapes]
        )
        h = [torch.randn(64, *s, generator=gen, dtype=torch.float64) for s in shapes]
        size = sum(n(d) for n, d in zip(nin, h, strict=True))
        h = [d / size.view(-1, *[1] * (d.dim() - 1)) for d in h]  # unit input norm
        worst = max(worst, nout(_second(f, x, h)).max().item())
    assert worst <= gamma * (1 + 1e-4) + 1e-6


def test_gelu_curvature_is_reached_at_zero_along_one_feature():
    op = make("GELU", {}, (9,))
    x, h = torch.zeros(1, 9, dtype=torch.float64), torch.zeros(1, 9, dtype=torch.float64)
    h[0, 0] = 3.0  # RMS 1
    ratio = tok(_second(emit(op), [x], [h])).item()
    assert 0.999 * float(op.sharpness()[2]) <= ratio <= float(op.sharpness()[2])


def test_rms_divide_curvature_is_reached_on_the_unit_sphere():
    op = make("RMSDivide", {}, (4,))
    x = torch.tensor([[2.0, 0, 0, 0]], dtype=torch.float64)  # RMS 1
    s, c = math.sqrt(2 / 3), math.sqrt(1 / 3)
    h = torch.tensor([[2 * c, 2 * s, 0, 0]], dtype=torch.float64)  # RMS 1, at angle s² = 2/3
    ratio = tok(_second(emit(op), [x], [h])).item()
    assert ratio == pytest.approx(2 / math.sqrt(3), rel=1e-4)
    assert float(op.sharpness()[2]) == pytest.approx(2 / math.sqrt(3))


@pytest.mark.parametrize(("name", "values", "shapes"), LINEAR, ids=[c[0] for c in LINEAR])
def test_linear_bonds_have_no_curvature(name, values, shapes):
    op = make(name, values, *shapes)
    assert op.sharpness() == (0, 0, 0)
    gen = torch.Generator().manual_seed(0)
    x = [torch.randn(8, *s, generator=gen, dtype=torch.float64) for s in shapes]
    h = [torch.randn(8, *s, generator=gen, dtype=torch.float64) for s in shapes]
    d2 = _second(emit(op), x, h)
    assert torch.where(d2.isfinite(), d2, torch.zeros_like(d2)).abs().max() < 1e-6


def test_kinks_have_no_smoothness_constant():
    assert make("ReLU", {}, (3,)).sharpness()[2] is None
    assert make("Abs", {}, (3,)).sharpness()[2] is None


@pytest.mark.parametrize(
    ("name", "values", "shape", "norm"),
    [
        ("Linear", {"out": 5}, (3, 7), tok),
        ("Conv2D", {"out": 3, "kernel": 3, "padding": 1}, (2, 5, 5), img),
        ("Gain", {}, (3, 7), tok),
        ("Bias", {}, (3, 7), tok),
    ],
    ids=["linear", "conv", "gain", "bias"],
)
def test_atoms_are_well_normed_linear_in_weights_and_mixed_at_most_one(name, values, shape, norm):
    op = make(name, values, shape)
    alpha, beta, gamma = op.sharpness()
    f = emit(op)
    weight = f.module.weight
    gen = torch.Generator().manual_seed(0)
    for _ in range(10):
        x = torch.randn(16, *shape, generator=gen, dtype=torch.float64)
        x = x / norm(x).view(-1, *[1] * len(shape))  # inputs of norm 1
        h = torch.randn(16, *shape, generator=gen, dtype=torch.float64)
        h = h / norm(h).view(-1, *[1] * len(shape))
        delta = torch.randn(weight.shape, generator=gen, dtype=torch.float64)
        delta = delta / type(op).norm(delta)

        def at(w: torch.Tensor, inp: torch.Tensor) -> torch.Tensor:
            with torch.no_grad():
                saved = weight.clone()
                weight.copy_(w)
                out = f(inp)
                weight.copy_(saved)
            return out

        w0 = weight.detach().clone()
        first = norm(at(w0 + delta, x) - at(w0, x)).max().item()
        assert first <= 1 + 1e-9  # ω = 1
        second = at(w0 + EPS * delta, x) - 2 * at(w0, x) + at(w0 - EPS * delta, x)
        assert norm(second).max().item() / EPS**2 <= 1e-6 + float(alpha)
        mixed = at(w0 + EPS * delta, x + EPS * h) - at(w0, x + EPS * h)
        mixed = (mixed - at(w0 + EPS * delta, x) + at(w0, x)) / EPS**2
        assert norm(mixed).max().item() <= float(beta) * (1 + 1e-6) + 1e-6
    assert gamma == 0


def test_closed_form_of_n_copies_matches_composing_them():
    n = sympy.Symbol("n", positive=True, integer=True)
    R = sympy.Rational
    for c in [
        Sharp(R(3, 2), R(1), R(5, 4), R(9, 8), R(1, 3), R(2, 5), R(7, 3)),
        Sharp(R(2), R(2), R(2), R(1), R(1, 3), R(2, 5), R(7, 3)),
        Sharp(R(2), R(1), R(1), R(1), R(1, 3), R(2, 5), R(7, 3)),
        Sharp(R(2), R(3, 4), R(5, 7), R(1), R(1, 3), R(2, 5), R(7, 3)),
    ]:
        closed = power(c, n)
        for k in (1, 2, 5):
            step = power(c, sympy.Integer(k))
            for a, b in zip(
                (step.omega, step.alpha, step.beta, step.gamma, step.nuh),
                (closed.omega, closed.alpha, closed.beta, closed.gamma, closed.nuh),
                strict=True,
            ):
                assert float(b.subs(n, k).doit()) == pytest.approx(float(a), rel=1e-12)


def _inputs(kind: str, shape: tuple, gen: torch.Generator) -> torch.Tensor:
    x = torch.randn(32, *shape, generator=gen, dtype=torch.float64)
    if kind == "layernorm":  # in RMSDivide's domain: standard deviation at least 1
        return _center_lift(x)
    limit = 1 / math.sqrt(2) if kind == "attention" else 1.0  # q, k, v of RMS ≤ 1 per head
    return clip_rms(x, limit) * torch.rand(32, *[1] * len(shape), generator=gen, dtype=x.dtype)


NETS = {"mlp": GELU_MLP, "residual": RESIDUAL, "layernorm": LAYERNORM, "attention": ATTENTION}


@pytest.mark.parametrize("kind", list(NETS))
def test_network_sharpness_bounds_second_differences(kind, write_spec, tmp_path):
    path = write_spec(NETS[kind])
    network, analysis = load(path)
    s = analysis.sharpness
    alpha, beta, gamma, omega = (float(v) for v in (s.alpha, s.beta, s.gamma, s.omega))
    build = modc.build(path, out=tmp_path / "build")
    torch.manual_seed(0)
    model = build.model.build_model().double()
    params = {k: v.detach() for k, v in model.named_parameters()}
    atoms = {f"{a.path}.weight": a for a in analysis.atoms}
    gen = torch.Generator().manual_seed(1)

    def f(x, w):
        return torch.func.functional_call(model, w, (x,))

    shape = tuple(int(d) for d in network.input_shape)
    worst = {"alpha": 0.0, "beta": 0.0, "gamma": 0.0, "omega": 0.0}
    for trial in range(6):
        x = _inputs(kind, shape, gen)
        h = torch.randn(32, *shape, generator=gen, dtype=torch.float64)
        h = h / tok(h).view(-1, *[1] * len(shape))
        delta = {}
        for i, (name, info) in enumerate(atoms.items()):  # modular norm exactly 1
            d = torch.randn(params[name].shape, generator=gen, dtype=torch.float64)
            share = (
                1.0 if i == trial % len(atoms) else 0.5 + 0.5 * torch.rand(1, generator=gen).item()
            )
            delta[name] = d * (float(info.target) * share / type(info.node.op).norm(d))

        def w(t: float, delta: dict = delta) -> dict:
            return {k: v + t * delta[k] for k, v in params.items()}

        d2w = (f(x, w(EPS)) - 2 * f(x, w(0)) + f(x, w(-EPS))) / EPS**2
        d2x = (f(x + EPS * h, w(0)) - 2 * f(x, w(0)) + f(x - EPS * h, w(0))) / EPS**2
        mixed = (f(x + EPS * h, w(EPS)) - f(x + EPS * h, w(0)) - f(x, w(EPS)) + f(x, w(0))) / EPS**2
        first = (f(x, w(EPS)) - f(x, w(-EPS))) / (2 * EPS)
        for key, value in (("alpha", d2w), ("gamma", d2x), ("beta", mixed), ("omega", first)):
            worst[key] = max(worst[key], tok(value).max().item())
    worst["alpha"] = max(worst["alpha"], _alpha_ascent(f, params, atoms, x, kind))
    assert worst["alpha"] <= alpha * (1 + 1e-3) + 1e-6
    assert worst["beta"] <= beta * (1 + 1e-3) + 1e-6
    assert worst["gamma"] <= gamma * (1 + 1e-3) + 1e-6
    assert worst["omega"] <= omega * (1 + 1e-6)
    assert omega >= 1 if kind == "attention" else omega == 1


def _alpha_ascent(f, params: dict, atoms: dict, x: torch.Tensor, kind: str) -> float:
    """The largest ‖D²_ww f[Δw, Δw]‖ found by 15 steps of gradient ascent over inputs and
    over weight directions of modular norm 1 (each atom's Δ at norm = its target)."""

    def fit(delta: dict) -> dict:
        return {
            k: d.detach() * (float(atoms[k].target) / type(atoms[k].node.op).norm(d.detach()))
            for k, d in delta.items()
        }

    limit = 1 / math.sqrt(2) if kind == "attention" else 1.0
    gen = torch.Generator().manual_seed(2)
    delta = fit({k: torch.randn(v.shape, generator=gen, dtype=v.dtype) for k, v in params.items()})
    x = x[:8]
    best = 0.0
    for _ in range(15):
        x = x.detach().requires_grad_(kind != "layernorm")
        dl = {k: v.detach().requires_grad_(True) for k, v in delta.items()}

        def w(t: float, dl: dict = dl) -> dict:
            return {k: v + t * dl[k] for k, v in params.items()}

        ratio = tok((f(x, w(EPS)) - 2 * f(x, w(0)) + f(x, w(-EPS))) / EPS**2)
        best = max(best, ratio.max().item())
        wrt = [*dl.values()] + ([x] if x.requires_grad else [])
        grads = torch.autograd.grad(ratio.sum(), wrt)
        with torch.no_grad():
            moved = {
                k: v + 0.2 * g / (g.norm() + 1e-12) * v.norm()
                for (k, v), g in zip(dl.items(), grads, strict=False)
            }
            delta = fit(moved)
            if x.requires_grad:
                x = clip_rms(x + 0.1 * grads[-1] / (grads[-1].norm() + 1e-12) * x.norm(), limit)
    return best


def test_relu_networks_state_that_no_smoothness_constant_exists():
    _, a = load("specs/mlp.yaml")
    assert a.sharpness.alpha is None and a.sharpness.smoothness is None
    assert a.sharpness.missing and a.sharpness.missing[0].startswith("ReLU")
