"""Runtime library: polar factor, the Dualized optimizer, and the operator-norm bounds."""

from __future__ import annotations

import copy
import io
import math

import pytest
import torch
from torch import nn

from modc.runtime.certify import lipschitz_lower, spectral_norm_upper
from modc.runtime.optim import Dualized
from modc.runtime.polar import polar

# --- Dualized ----------------------------------------------------------------------------


def linear_dual(grad: torch.Tensor, target: float) -> torch.Tensor:
    """Linear atom: target · sqrt(fan_out/fan_in) · polar(grad), grad a matrix or a bank."""
    fan_out, fan_in = grad.shape[-2:]
    return target * math.sqrt(fan_out / fan_in) * polar(grad, dtype=torch.float32)


def linear_norm(w: torch.Tensor) -> float:
    """Linear atom norm: sqrt(fan_in/fan_out) · σ_max(w)."""
    fan_out, fan_in = w.shape
    return math.sqrt(fan_in / fan_out) * torch.linalg.matrix_norm(w.double(), ord=2).item()


def make_net(seed: int = 0) -> nn.Sequential:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(12, 32, bias=False), nn.ReLU(), nn.Linear(32, 5, bias=False))


def make_opt(net: nn.Sequential, lr: float = 0.1, dual=linear_dual, **kw) -> Dualized:
    groups = [
        {
            "params": [net[0].weight, net[2].weight],
            "targets": [0.5, 0.5],
            "atom": "Linear",
        }
    ]
    return Dualized(groups, {"Linear": dual}, lr=lr, **kw)


def train(net: nn.Sequential, opt: Dualized, steps: range, sched=None) -> None:
    for t in steps:
        gen = torch.Generator().manual_seed(t)
        x, y = torch.randn(16, 12, generator=gen), torch.randn(16, 5, generator=gen)
        opt.zero_grad()
        nn.functional.mse_loss(net(x), y).backward()
        opt.step()
        if sched is not None:
            sched.step()


@pytest.mark.parametrize("nesterov", [True, False])
def test_dualized_update_has_norm_lr_times_target(nesterov):
    net = make_net()
    opt = make_opt(net, lr=0.2, nesterov=nesterov)
    for t in range(3):
        before = [p.detach().clone() for p in opt.param_groups[0]["params"]]
        train(net, opt, range(t, t + 1))
        for w0, p, target in zip(before, opt.param_groups[0]["params"], [0.5, 0.5], strict=False):
            assert linear_norm(w0 - p.detach()) == pytest.approx(0.2 * target, rel=0.02)


def test_dualized_momentum_and_weight_decay_follow_the_formulas():
    """With the Frobenius norm's dual map, t·g/‖g‖_F, every step is checkable by hand."""
    w = nn.Parameter(torch.randn(4, 3))
    w0 = w.detach().clone()
    opt = Dualized(
        [{"params": [w], "targets": [0.5], "atom": "Id"}],
        {"Id": lambda g, t: t * g / g.norm()},
        lr=0.1,
        momentum=0.9,
        weight_decay=0.2,
    )
    g1, g2 = torch.randn(4, 3), torch.randn(4, 3)
    w.grad = g1
    opt.step()
    buf = 0.1 * g1
    d = 0.1 * g1 + 0.9 * buf
    w1 = w0 * (1 - 0.1 * 0.5 * 0.2) - 0.05 * d / d.norm()
    assert torch.allclose(w.detach(), w1, atol=1e-6)
    w.grad = g2
    opt.step()
    buf = 0.9 * buf + 0.1 * g2
    d = 0.1 * g2 + 0.9 * buf
    w2 = w1 * (1 - 0.1 * 0.5 * 0.2) - 0.05 * d / d.norm()
    assert torch.allclose(w.detach(), w2, atol=1e-6)


def test_dualized_skips_params_without_grad():
    net = make_net()
    opt = make_opt(net)
    before = net[2].weight.detach().clone()
    net[0].weight.grad = torch.ones_like(net[0].weight)
    opt.step()
    assert torch.equal(net[2].weight.detach(), before)
    assert net[2].weight not in opt.state


def test_dualized_state_dict_round_trip_gives_identical_trajectory():
    net_a = make_net()
    opt_a = make_opt(net_a, weight_decay=0.1)
    train(net_a, opt_a, range(3))
    saved_net = copy.deepcopy(net_a.state_dict())
    blob = io.BytesIO()
    torch.save(opt_a.state_dict(), blob)
    train(net_a, opt_a, range(3, 6))

    net_b = make_net(seed=1)
    net_b.load_state_dict(saved_net)
    opt_b = make_opt(net_b, lr=0.5)  # lr and buffers come from the state dict
    blob.seek(0)
    opt_b.load_state_dict(torch.load(blob))
    assert opt_b.param_groups[0]["lr"] == 0.1
    train(net_b, opt_b, range(3, 6))
    for pa, pb in zip(net_a.parameters(), net_b.parameters(), strict=False):
        assert torch.equal(pa, pb)


def test_dualized_works_with_lambda_lr_scheduler():
    net = make_net()
    opt = make_opt(net, lr=0.4)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda t: 0.5**t)
    for t in range(3):
        lr = opt.param_groups[0]["lr"]
        assert lr == pytest.approx(0.4 * 0.5**t)
        before = net[0].weight.detach().clone()
        train(net, opt, range(t, t + 1), sched)
        assert linear_norm(before - net[0].weight.detach()) == pytest.approx(lr * 0.5, rel=0.02)


def test_dualized_rejects_bad_groups():
    w = nn.Parameter(torch.randn(3, 3))
    with pytest.raises(ValueError, match="no dual map"):
        Dualized(
            [{"params": [w], "targets": [1.0], "atom": "Embed"}],
            {"Linear": linear_dual},
            lr=0.1,
        )
    with pytest.raises(ValueError, match="targets"):
        Dualized(
            [{"params": [w], "targets": [1.0, 2.0], "atom": "Linear"}],
            {"Linear": linear_dual},
            lr=0.1,
        )


# --- certify -----------------------------------------------------------------------------


@pytest.mark.parametrize("shape", [(784, 256), (10, 256), (64, 64), (1, 7), (3, 4, 5)])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16])
def test_spectral_norm_upper_is_tight_upper_bound(shape, dtype):
    w = torch.randn(shape, dtype=torch.float64).to(dtype)
    exact = torch.linalg.svdvals(w.double()).max().item()
    bound = spectral_norm_upper(w)
    assert isinstance(bound, float)
    assert exact <= bound <= exact * (1 + 1e-6)


def test_spectral_norm_upper_of_zero_is_nonnegative():
    assert 0 <= spectral_norm_upper(torch.zeros(4, 6)) < 1e-300


def test_lipschitz_lower_of_linear_map_is_its_spectral_norm():
    torch.manual_seed(0)
    model = nn.Linear(30, 20)
    sigma = torch.linalg.svdvals(model.weight.double()).max().item()
    lower = lipschitz_lower(model, torch.randn(8, 30))
    assert 0.99 * sigma <= lower <= sigma <= spectral_norm_upper(model.weight)


def test_lipschitz_lower_of_convolution_matches_its_jacobian():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(2, 3, 3, padding=1), nn.Flatten())
    jac = torch.func.jacrev(model)(torch.zeros(1, 2, 5, 5)).reshape(75, 50)
    sigma = torch.linalg.svdvals(jac.double()).max().item()
    lower = lipschitz_lower(model, torch.randn(4, 2, 5, 5))
    assert 0.99 * sigma <= lower <= sigma


def test_lipschitz_lower_of_relu_net_is_below_product_of_norms():
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Linear(20, 40),
        nn.BatchNorm1d(40),
        nn.ReLU(),
        nn.Dropout(0.5),
        nn.Linear(40, 10),
    )
    with torch.no_grad():
        model[1].running_var.uniform_(0.5, 2.0)
    bn = model[1].weight / (model[1].running_var + model[1].eps).sqrt()
    upper = (
        spectral_norm_upper(model[0].weight)
        * bn.abs().max().item()
        * spectral_norm_upper(model[4].weight)
    )
    model.train()
    model[4].eval()
    x = torch.randn(16, 20)
    lower = lipschitz_lower(model, x)
    assert 0 < lower <= upper
    assert lipschitz_lower(model, x) == lower  # eval mode: no dropout; fixed seed
    assert model.training and model[0].training and not model[4].training
    assert all(p.grad is None and p.dtype == torch.float32 for p in model.parameters())
    assert model[1].num_batches_tracked.item() == 0


# --- banks and torch.compile --------------------------------------------------------------


def bank_params(seed: int = 0) -> list[nn.Parameter]:
    """Three 16 × 8 matrices (one bank) and one 8 × 8 (a bank of its own)."""
    gen = torch.Generator().manual_seed(seed)
    return [nn.Parameter(torch.randn(s, generator=gen)) for s in [(16, 8)] * 3 + [(8, 8)]]


def grads_for(params: list[nn.Parameter], step: int) -> None:
    gen = torch.Generator().manual_seed(100 + step)
    for p in params:
        p.grad = torch.randn(p.shape, generator=gen)


def test_a_bank_steps_each_weight_as_if_it_were_alone():
    together = bank_params()
    alone = bank_params()
    targets = [0.5, 1.0, 2.0, 0.25]
    opt = Dualized([{"params": together, "targets": targets, "atom": "L"}], {"L": linear_dual}, 0.1)
    singles = [
        Dualized([{"params": [p], "targets": [t], "atom": "L"}], {"L": linear_dual}, 0.1)
        for p, t in zip(alone, targets, strict=True)
    ]
    for step in range(3):
        grads_for(together, step)
        grads_for(alone, step)
        opt.step()
        for single in singles:
            single.step()
    for a, b in zip(together, alone, strict=True):
        assert torch.allclose(a, b, atol=1e-5)


def test_compiled_step_matches_eager_and_a_new_lr_does_not_recompile():
    import torch._dynamo.utils as dynamo_utils

    eager, compiled = bank_params(), bank_params()
    group = {"targets": [0.5, 1.0, 2.0, 0.25], "atom": "L"}
    opt_e = Dualized([{**group, "params": eager}], {"L": linear_dual}, 0.1, weight_decay=0.1)
    opt_c = Dualized(
        [{**group, "params": compiled}], {"L": linear_dual}, 0.1, weight_decay=0.1, compile=True
    )
    for step in range(4):
        if step == 2:  # what a schedule does; the compiled step must not be traced again
            opt_e.param_groups[0]["lr"] = opt_c.param_groups[0]["lr"] = 0.03
            frames = dynamo_utils.counters["frames"]["total"]
        grads_for(eager, step)
        grads_for(compiled, step)
        opt_e.step()
        opt_c.step()
    assert dynamo_utils.counters["frames"]["total"] == frames
    for a, b in zip(eager, compiled, strict=True):
        assert torch.allclose(a, b, atol=1e-4)
