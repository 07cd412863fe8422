"""The certificate checks its conditions on data, names the one that failed and where, and
says `within: true` only when the bound and its conditions hold; its attention bounds are
at least the constants measured on the issue's reproductions."""

from __future__ import annotations

import time

import pytest
import torch

import modc

pytestmark = pytest.mark.usefixtures("one_thread")

RESIDUAL_RMS = """
input: [1, 4, 4]
output: 10
optimizer: {lipschitz: 5}
network:
  - Flatten
  - Linear: 32
  - residual: 2
    name: blocks
    body: [RMSDivide, Linear: 32, ReLU, Linear: 32]
  - Linear: 10
"""

LAYERNORM = "input: 16\nnetwork: [Linear: 16, LayerNorm, Linear: 16]\n"

QK = """
name "qk"
input (64, 16)
network = (Linear(16) > SplitHeads(1), Linear(16) > SplitHeads(1)) > AttentionQK
"""

CLIPPED_ATTENTION = """
name "clipped"
input (8, 16)
def heads(width, n) = Linear(width) > SplitHeads(n) > RMSClip
network = RMSClip
    > ((heads(16, 2), (heads(16, 2), heads(16, 2)) > AttentionQK > CausalMask > Softmax)
       > 1/3 * ApplyScores > MergeHeads > Linear(16))
"""


def test_rms_divide_below_its_floor_is_reported_and_not_within(write_spec, tmp_path):
    build = modc.build(write_spec(RESIDUAL_RMS), out=tmp_path / "b")
    torch.manual_seed(0)
    model = build.model.build_model()
    x = 0.3 * torch.randn(64, 1, 4, 4)  # activations of RMS well below 1 reach RMSDivide
    rep = build.certificate.report(model, x)
    assert rep["within"] is False and rep["constraint"]["within"] is False
    assert rep["conditions_held"] is False
    (failed,) = rep["failed"]
    assert failed.startswith("RMSDivide") and "rms_divide call 1 in blocks." in failed
    # without data the conditions are unchecked, and nothing is claimed
    assert build.certificate.report(model)["within"] is False
    # where they hold (inputs of RMS ≥ 1 at RMSDivide), the bound is within the spec's 5
    lifted = build.certificate.report(model, 30 * torch.randn(64, 1, 4, 4))
    assert lifted["conditions_held"] and lifted["within"] and lifted["lipschitz_upper"] <= 5


def test_layer_norm_at_unit_variance_inputs_fails_its_condition(write_spec, tmp_path):
    build = modc.build(write_spec(LAYERNORM), out=tmp_path / "b")
    torch.manual_seed(0)
    model = build.model.build_model()
    rep = build.certificate.report(model, torch.randn(256, 16))
    assert rep["within"] is False
    (failed,) = rep["failed"]
    assert failed.startswith("LayerNorm") and "layer_norm call 1 in network" in failed
    check = rep["conditions_checked"][0]
    assert check["held"] is False and check["worst"] < 1


def test_query_key_scores_bound_is_at_least_the_secant_of_equal_tokens(write_spec, tmp_path):
    """The issue's first reproduction: measured 3.98, once certified 2.00."""
    build = modc.build(write_spec(QK, "qk.modc"), out=tmp_path / "b")
    torch.manual_seed(0)
    model = build.model.build_model().double()
    w = torch.linalg.qr(torch.randn(16, 16, dtype=torch.float64))[0]
    with torch.no_grad():
        model.linear1.weight.copy_(w)
        model.linear2.weight.copy_(w)
    v = torch.randn(16, dtype=torch.float64)
    x = (v / v.pow(2).mean().sqrt()).expand(1, 64, 16).clone()
    measured = ((model(x) - model(0.99 * x)).norm() / (0.01 * x).norm()).item()
    rep = build.certificate.report(model, torch.cat([x, 0.99 * x]))
    assert rep["conditions_held"] and measured == pytest.approx(3.98)
    assert rep["lipschitz_upper"] >= measured


def test_attention_with_zero_queries_and_keys_is_bounded(tmp_path):
    """The issue's second reproduction: (1/3)·W_o·(causal average)·W_v, exact 0.533."""
    from tests.conftest import SPECS

    params = {"width": 16, "heads": 4, "context": 64}
    build = modc.build(SPECS / "attention.modc", params, out=tmp_path / "b")
    torch.manual_seed(0)
    model = build.model.build_model().double()
    with torch.no_grad():
        model.q.weight.zero_()
        model.k.weight.zero_()
    x = 0.4 * torch.randn(4, 64, 16, dtype=torch.float64)
    rep = build.certificate.report(model, x)
    inside = build.certificate.inside
    lower = build.certificate.lipschitz_lower(model, x, inside=lambda z: inside(model, z))
    assert rep["conditions_held"] and lower == pytest.approx(0.533, abs=1e-3)
    assert rep["lipschitz_upper"] >= lower


def test_clipped_attention_needs_no_condition(write_spec, tmp_path):
    """RMSClip before the heads: a transformer layer certified for every input."""
    build = modc.build(write_spec(CLIPPED_ATTENTION, "clipped.modc"), out=tmp_path / "b")
    _, analysis = modc.load(tmp_path / "clipped.modc")
    assert build.certificate.CONDITIONS == () and analysis.conditions == []
    torch.manual_seed(0)
    model = build.model.build_model().double()
    x = 10 * torch.randn(8, 8, 16, dtype=torch.float64)
    rep = build.certificate.report(model, x)
    assert rep["conditions_held"] and rep["within"]
    assert build.certificate.lipschitz_lower(model, x) <= rep["lipschitz_upper"]


def test_a_bias_under_a_cap_below_one_is_left_alone(write_spec, tmp_path):
    """A translation's bound is 1 whatever its weight: the cap leaves it, at once."""
    spec = "input: 8\noptimizer: {max_norm: 0.5}\nnetwork: [Linear: 8, Bias, ReLU, Linear: 4]\n"
    build = modc.build(write_spec(spec), out=tmp_path / "b")
    build.optimizer.make_optimizer(build.model.build_model(), 0.1)  # torch's first-call setup
    model = build.model.build_model()
    with torch.no_grad():
        model.bias1.weight.fill_(3.0)
    start = time.perf_counter()
    opt = build.optimizer.make_optimizer(model, 0.1, constraint="cap")
    assert time.perf_counter() - start < 1.0
    assert torch.all(model.bias1.weight == 3.0)
    model(torch.randn(4, 8)).sum().backward()
    opt.step()
    assert build.certificate.report(model)["lipschitz_upper"] <= build.certificate.LIPSCHITZ_BOUND
