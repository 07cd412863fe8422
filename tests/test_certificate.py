"""The generated certificate is sound: its upper bound never falls below a measured one."""

from __future__ import annotations

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import modc
from tests.conftest import SPECS

_builds: dict[tuple, modc.Build] = {}


def cached_build(spec: str, width: int, depth: int, tmp: str) -> modc.Build:
    key = (spec, width, depth)
    if key not in _builds:
        _builds[key] = modc.build(
            SPECS / spec,
            {"width": width, "depth": depth},
            out=f"{tmp}/{spec}-{width}-{depth}",
        )
    return _builds[key]


@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(
    spec=st.sampled_from(["mlp.yaml", "resmlp.yaml"]),
    width=st.sampled_from([8, 16, 32]),
    depth=st.integers(2, 5),
    scale=st.floats(0.1, 3.0),
    seed=st.integers(0, 2**16),
)
def test_upper_bound_is_at_least_the_lower_bound(tmp_path_factory, spec, width, depth, scale, seed):
    build = cached_build(spec, width, depth, str(tmp_path_factory.getbasetemp()))
    torch.manual_seed(seed)
    net = build.model.build_model()
    with torch.no_grad():
        for p in net.parameters():
            p.mul_(scale).add_(torch.randn_like(p), alpha=0.3 * scale / p.shape[1] ** 0.5)
    x = torch.randn(8, *build.model.INPUT_SHAPE)
    upper = build.certificate.lipschitz_upper(net)
    lower = build.certificate.lipschitz_lower(net, x)
    assert upper >= lower > 0


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
    assert rep["conditions"] == []
    # fresh atoms are well-normed (norm 1), so the residual network's l2 bound is modest
    assert all(a["norm"] == pytest.approx(1.0, rel=1e-4) for a in rep["atoms"].values())
