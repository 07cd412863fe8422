"""The generated certificate is sound: its upper bound never falls below a measured one."""

from __future__ import annotations

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import modc
from modc.theory.lipschitz import capped_bound
from tests.conftest import SPECS

pytestmark = pytest.mark.usefixtures("one_thread")

# Standard-library specs and small values for the size parameters each has. A spec that is
# not in specs/ yet is skipped, so new ones switch on as they land.
FAMILIES = {
    "mlp.yaml": {"width": [8, 16, 32], "depth": [2, 3, 4, 5]},
    "resmlp.yaml": {"width": [8, 16, 32], "depth": [1, 2, 3, 4, 5]},
    "cnn.yaml": {"width": [4, 8], "channels": [2, 4], "depth": [1, 2]},
    "gpt.yaml": {"width": [16, 32], "depth": [1, 2], "heads": [2], "context": [8]},
}
KINDS = ["dualized", "normalized:sgd", "normalized:adam", "normalized:adafactor"]
_builds: dict[tuple, modc.Build] = {}


def cached_build(spec: str, params: dict[str, int], tmp: str) -> modc.Build:
    """Each (spec, sizes) compiled once per session; weights and inputs vary freely."""
    key = (spec, *sorted(params.items()))
    if key not in _builds:
        tag = "-".join(f"{k}{v}" for k, v in sorted(params.items()))
        _builds[key] = modc.build(SPECS / spec, params, out=f"{tmp}/{spec}-{tag}")
    return _builds[key]


@pytest.mark.parametrize(
    "spec",
    [
        pytest.param(s, marks=pytest.mark.skipif(not (SPECS / s).exists(), reason=f"no {s}"))
        for s in FAMILIES
    ],
)
def test_random_networks_bound_and_step_soundly(tmp_path_factory, spec):
    """Over random sizes, weights and inputs: lipschitz_upper ≥ lipschitz_lower, and each
    step of every modc optimizer has modular norm lr (within 2%). Networks of token ids
    (no input gradient, no lower bound) check the step only."""
    network, _ = modc.load(SPECS / spec)
    sizes = {k: v for k, v in FAMILIES[spec].items() if k in network.params}
    probe = cached_build(
        spec, {k: v[0] for k, v in sizes.items()}, str(tmp_path_factory.getbasetemp())
    )
    try:
        probe.model.build_model()(torch.randn(2, *probe.model.INPUT_SHAPE))
        tokens = False
    except (RuntimeError, IndexError, TypeError):  # token ids: only the step is checked
        tokens = True
    examples = {"mlp.yaml": 110, "resmlp.yaml": 110}.get(spec, 40)
    check = settings(
        max_examples=examples,
        deadline=None,
        derandomize=True,
        database=None,
        suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    )(given(data=st.data())(lambda data: one_network(data, spec, sizes, tokens, tmp_path_factory)))
    check()


def one_network(data, spec: str, sizes: dict, tokens: bool, tmp_path_factory) -> None:
    params = {k: data.draw(st.sampled_from(v), label=k) for k, v in sizes.items()}
    build = cached_build(spec, params, str(tmp_path_factory.getbasetemp()))
    seed = data.draw(st.integers(0, 2**16), label="seed")
    scale = data.draw(st.floats(0.1, 3.0), label="weight scale")
    spread = data.draw(st.floats(0.1, 10.0), label="input scale")
    torch.manual_seed(seed)
    net = build.model.build_model()
    with torch.no_grad():
        for p in net.parameters():
            p.mul_(scale).add_(torch.randn_like(p), alpha=0.3 * scale / p.shape[-1] ** 0.5)
    if tokens:
        x = torch.randint(0, 2, (8, *build.model.INPUT_SHAPE))
    else:
        x = spread * torch.randn(8, *build.model.INPUT_SHAPE) + torch.randn(build.model.INPUT_SHAPE)
        upper = build.certificate.lipschitz_upper(net)
        lower = build.certificate.lipschitz_lower(net, x)
        assert upper >= lower > 0, (params, seed)

    kind = data.draw(st.sampled_from(KINDS), label="kind")
    lr = 10 ** data.draw(st.floats(-2, 0), label="log10 lr")
    momentum = data.draw(st.sampled_from([0.0, 0.5, 0.95]), label="momentum")
    opt = build.optimizer.make_optimizer(net, lr, momentum=momentum, kind=kind)
    for _ in range(2):
        before = {n: p.detach().clone() for n, p in net.named_parameters()}
        opt.zero_grad()
        out = net(x)
        (out * torch.randn_like(out)).sum().backward()
        opt.step()
        update = {n: before[n] - p.detach() for n, p in net.named_parameters()}
        norm = build.certificate.modular_norm(net, update)
        if norm == 0:  # dead ReLUs everywhere: no gradient, no step
            assert all(torch.count_nonzero(p.grad) == 0 for p in net.parameters())
        else:
            assert norm == pytest.approx(lr, rel=0.02), kind


def test_linear_network_bound_is_tight(write_spec, tmp_path):
    path = write_spec("input: 12\nnetwork:\n  - Linear: 7\n")
    build = modc.build(path, out=tmp_path / "lin")
    torch.manual_seed(1)
    net = build.model.build_model()
    with torch.no_grad():
        next(net.parameters()).normal_()
    upper = build.certificate.lipschitz_upper(net)
    lower = build.certificate.lipschitz_lower(net, torch.randn(4, 12))
    assert lower <= upper <= lower * (1 + 1e-4)


def test_report_lists_every_atom(tmp_path):
    build = modc.build(SPECS / "resmlp.yaml", {"width": 16, "depth": 2}, out=tmp_path / "r")
    rep = build.certificate.report(build.model.build_model())
    assert set(rep["atoms"]) == set(build.optimizer.TARGETS)
    assert rep["conditions"] == [] and rep["constraint"] is None
    assert all(a["target"] == pytest.approx(1 / 4) for a in rep["atoms"].values())
    # fresh atoms are well-normed (norm 1), so the residual network's l2 bound is modest
    assert all(a["norm"] == pytest.approx(1.0, rel=1e-4) for a in rep["atoms"].values())


@pytest.mark.parametrize(
    "spec",
    [
        pytest.param(s, marks=pytest.mark.skipif(not (SPECS / s).exists(), reason=f"no {s}"))
        for s in FAMILIES
    ],
)
def test_the_compilers_bound_formula_is_the_generated_certificates(tmp_path_factory, spec):
    """capped_bound (used to solve the constraint's cap) and lipschitz_upper agree when every
    atom's Lipschitz bound is set to c (each bound is homogeneous in its weight); a Conv2D's
    certificate may be lower (its bound from the padded grid's DFT), never higher."""
    network, _ = modc.load(SPECS / spec)
    sizes = {k: v[-1] for k, v in FAMILIES[spec].items() if k in network.params}
    build = cached_build(spec, sizes, str(tmp_path_factory.getbasetemp()))
    network, _ = modc.load(SPECS / spec, sizes)
    net = build.model.build_model()
    weights = dict(net.named_parameters())
    for c in (0.5, 1.3):
        with torch.no_grad():
            for name, kind in build.certificate.ATOMS.items():
                w = weights[name]
                w.mul_(c / build.certificate.ATOM_LIPSCHITZ[kind](w))
        upper, capped = build.certificate.lipschitz_upper(net), capped_bound(network.root, c)
        assert upper <= capped * (1 + 1e-6)  # the weights were scaled in float32
        if "cnn" not in spec:
            assert upper == pytest.approx(capped, rel=1e-6)
