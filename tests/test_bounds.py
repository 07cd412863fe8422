"""The analysis of whole networks: the check-values of docs/theory.md §3, closed forms in
free parameters that agree with fixed ones, the Lipschitz bound against measured networks,
the modular norm, conditions, and the `modc bounds` formats (text, json, latex).
"""

from __future__ import annotations

import json
import math

import pytest
import sympy
import torch

import modc
from modc.cli import main
from modc.compiler import load
from modc.errors import ModcError
from modc.spec import load_spec
from tests.conftest import SPECS
from tests.netspecs import ATTENTION, CNN, GELU_MLP
from tests.opkit import (
    clip_rms,
    img,
    tok,
)

pytestmark = pytest.mark.usefixtures("one_thread")

R = sympy.Rational
MODULA = {"embed": R(1, 7), "q": R(5, 7), "k": R(5, 7), "v": R(5, 7)}
MODULA |= {"o": R(5, 21), "up": R(5, 21), "down": R(5, 21), "head": R(1, 7)}


def _dsl_available() -> bool:
    try:
        load_spec(SPECS / "gpt_modula.modc")
    except ModcError as e:
        return "not available yet" not in e.message
    return True


needs_dsl = pytest.mark.skipif(not _dsl_available(), reason="the .modc front end is not there")


def _by_name(analysis) -> dict[str, set]:
    found: dict[str, set] = {}
    for a in analysis.atoms:
        found.setdefault(a.path.rsplit(".", 1)[-1], set()).add(a.target)
    return found


@pytest.mark.parametrize("depth", [2, 4, 8])
@pytest.mark.parametrize(
    "spec", ["gpt_modula.yaml", pytest.param("gpt_modula.modc", marks=needs_dsl)]
)
def test_modula_gpt_targets_at_every_depth(spec, depth):
    _, a = load(SPECS / spec, {"depth": depth, "width": 32, "head_mass": 1})
    assert _by_name(a) == {name: {t} for name, t in MODULA.items()}
    assert len(a.atoms) == 6 * depth + 2
    assert a.mass == 7 and a.sensitivity == 1


@pytest.mark.parametrize(
    "spec", ["gpt_modula.yaml", pytest.param("gpt_modula.modc", marks=needs_dsl)]
)
def test_modula_gpt_with_free_depth_and_width_has_the_same_targets(spec):
    network, a = load(SPECS / spec, {"head_mass": 1}, free=["depth", "width"])
    assert _by_name(a) == {name: {t} for name, t in MODULA.items()}
    assert len(a.atoms) == 8  # the blocks are not unrolled
    depth = network.params["depth"]
    assert all(depth not in x.target.free_symbols for x in a.atoms)


@pytest.mark.parametrize(
    "spec", ["gpt_modula.yaml", pytest.param("gpt_modula.modc", marks=needs_dsl)]
)
def test_the_shipped_gpt_gives_the_head_mass_six(spec):
    _, a = load(SPECS / spec, {"depth": 2, "width": 32})
    shares = {name: {t * R(7, 12)} for name, t in MODULA.items()} | {"head": {R(1, 2)}}
    assert _by_name(a) == shares and a.mass == 12


def test_three_layer_mlp_gives_each_linear_one_third():
    _, a = load(SPECS / "mlp.yaml", {"depth": 3})
    assert [x.target for x in a.atoms] == [R(1, 3)] * 3


def _at(e, values: dict) -> float:
    return float(sympy.sympify(e).subs(values).doit())


@pytest.mark.parametrize("spec", ["gpt_modula.yaml", "resmlp.yaml"])
def test_free_depth_closed_forms_agree_with_every_fixed_depth(spec):
    network, free = load(SPECS / spec, free=["depth"])
    depth = network.params["depth"]
    gen = torch.Generator().manual_seed(0)
    norms = {s: 0.5 + torch.rand(1, generator=gen).item() for s in free.norms.values()}
    for d in (1, 2, 4, 8):
        _, fixed = load(SPECS / spec, {"depth": d})
        at = {depth: d, **{s: norms[free.norms[name]] for name, s in fixed.norms.items()}}
        at_free = {depth: d, **norms}
        for key in ("mass", "sensitivity", "parameters", "lipschitz_well_normed"):
            assert _at(getattr(free, key), at_free) == pytest.approx(_at(getattr(fixed, key), at))
        assert _at(free.lipschitz, at_free) == pytest.approx(_at(fixed.lipschitz, at))
        assert _at(free.modular_norm, at_free) == pytest.approx(_at(fixed.modular_norm, at))
        if fixed.sharpness.alpha is not None:
            for key in ("alpha", "beta", "gamma", "omega", "smoothness"):
                s = {
                    sympy.Symbol("σ", positive=True): 1.3,
                    sympy.Symbol("τ", nonnegative=True): 0.7,
                }
                got = _at(free.sharpness.expand(getattr(free.sharpness, key)), {**at_free, **s})
                assert got == pytest.approx(_at(getattr(fixed.sharpness, key), {**at, **s}))


def test_modular_norm_is_the_largest_norm_over_target():
    _, a = load(SPECS / "gpt_modula.yaml", {"depth": 3})
    values = {s: i + 1.0 for i, s in enumerate(a.norms.values())}
    expected = max(values[x.norm] / float(x.target) for x in a.atoms)
    assert _at(a.modular_norm, values) == pytest.approx(expected)


def _site_norms(analysis, model: torch.nn.Module) -> dict:
    """Each site's symbol at the largest norm of its weight over copies."""
    weights = dict(model.named_parameters())
    out: dict = {}
    for x in analysis.atoms:
        n = type(x.node.op).norm(weights[f"{x.path}.weight"])
        out[x.norm] = max(out.get(x.norm, 0.0), n)
    return out


def _worst_secant(f, x: torch.Tensor, norm_in, norm_out, project=lambda v: v) -> float:
    gen = torch.Generator().manual_seed(3)
    best = 0.0
    a = project(x)
    b = project(a + 0.3 * torch.randn(a.shape, generator=gen, dtype=a.dtype))
    for _ in range(25):
        a, b = a.detach().requires_grad_(True), b.detach().requires_grad_(True)
        r = norm_out(f(a) - f(b)) / norm_in(a - b)
        best = max(best, r.max().item())
        ga, gb = torch.autograd.grad(r.log().sum(), (a, b))
        with torch.no_grad():
            a = project(a + 0.05 * ga / (ga.norm() + 1e-12) * a.norm())
            b = project(b + 0.05 * gb / (gb.norm() + 1e-12) * b.norm())
    return best


@pytest.mark.parametrize(
    ("spec", "params", "norm_in"),
    [
        ("mlp.yaml", {"width": 16}, tok),
        ("resmlp.yaml", {"width": 16, "depth": 3}, tok),
        ("cnn", {}, img),
        ("gelu", {}, tok),
    ],
)
def test_lipschitz_bound_holds_at_the_weights_norms(spec, params, norm_in, tmp_path, write_spec):
    path = (
        SPECS / spec if spec.endswith(".yaml") else write_spec({"cnn": CNN, "gelu": GELU_MLP}[spec])
    )
    network, a = load(path, params)
    build = modc.build(path, params, out=tmp_path / "b")
    torch.manual_seed(0)
    model = build.model.build_model().double()
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(0.5 + torch.rand(1, dtype=p.dtype)).add_(0.1 * torch.randn_like(p))
    bound = _at(a.lipschitz, _site_norms(a, model))
    x = torch.randn(16, *(int(d) for d in network.input_shape), dtype=torch.float64)
    worst = _worst_secant(model, x, norm_in, tok)
    assert worst <= bound
    assert worst >= 0.01 * bound  # measured and bounded in the same norms


def test_attention_bound_holds_where_its_conditions_do(tmp_path, write_spec):
    """q, k, v of RMS ≤ 1 per head: inputs of RMS ≤ 1/√heads at well-normed weights."""
    path = write_spec(ATTENTION)
    network, a = load(path)
    assert {c.op for c in a.conditions} == {"AttentionQK", "ApplyScores"}
    build = modc.build(path, out=tmp_path / "b")
    torch.manual_seed(0)
    model = build.model.build_model().double()
    norms = _site_norms(a, model)
    assert all(v == pytest.approx(1.0) for v in norms.values())
    bound = _at(a.lipschitz, norms)
    assert bound == pytest.approx(float(a.lipschitz_well_normed))
    x = torch.randn(16, 4, 8, dtype=torch.float64)

    def inside(v: torch.Tensor) -> torch.Tensor:
        return clip_rms(v, 1 / math.sqrt(2))

    assert _worst_secant(model, x, tok, tok, inside) <= bound


def test_free_counts_nest_with_their_own_index(write_spec):
    path = write_spec("""
params: {n: 2, m: 3}
input: 4
network:
  - repeat: n
    name: outer
    body:
      - repeat: m
        name: inner
        body: [Linear: 4, Mul: 2]
""")
    _, a = load(path, free=["n", "m"])
    (atom,) = a.atoms
    assert atom.path == "outer.{i}.inner.{j}.linear1"
    assert [r[0].name for r in atom.ranges] == ["i", "j"]
    n, m = sympy.symbols("n m", positive=True, integer=True)
    _, fixed = load(path, {"n": 2, "m": 3})
    smallest = min(x.target for x in fixed.atoms)
    assert _at(a.site_targets["outer.inner.linear1"], {n: 2, m: 3}) == pytest.approx(
        float(smallest)
    )


def test_a_single_copy_with_its_own_first_copy_is_analysed():
    _, a = load(SPECS / "mlp.yaml", {"depth": 2})
    assert [x.target for x in a.atoms] == [R(1, 2)] * 2
    assert len(a.norms) == 2


def test_conditions_are_reported_in_json_and_text(write_spec, capsys):
    assert main(["bounds", str(SPECS / "gpt_modula.yaml"), "--format", "json"]) == 0
    report = json.loads(capsys.readouterr().out)["network"]
    ops = {c["op"] for c in report["conditions"]}
    assert ops == {"AttentionQK", "ApplyScores"}
    assert all(c["where"] and c["condition"] for c in report["conditions"])
    assert [n["op"] for n in report["notes"]] == ["SplitHeads"]
    assert report["lipschitz_well_normed"] == pytest.approx((9 / 8) ** 4)
    path = write_spec("input: [3, 6]\nnetwork: [LayerNorm, Linear: 4]\n")
    assert main(["bounds", str(path)]) == 0
    text = capsys.readouterr().out
    assert "conditions:" in text and "LayerNorm: its constants hold where" in text
    assert main(["bounds", str(SPECS / "mlp.yaml"), "--format", "json"]) == 0
    mlp = json.loads(capsys.readouterr().out)["network"]
    assert mlp["conditions"] == [] and mlp["sharpness"]["smoothness"] is None


@needs_dsl
def test_latex_of_the_gpt_with_free_width_and_depth(capsys):
    assert (
        main(["bounds", str(SPECS / "gpt.modc"), "--free", "width,depth", "--format", "latex"]) == 0
    )
    out = capsys.readouterr().out
    lines = out.splitlines()
    block = lines[lines.index(r"\begin{align*}") + 1 : lines.index(r"\end{align*}")]
    assert all(line.isascii() for line in block)
    assert all(line.endswith(r" \\") for line in block[:-1])
    lhs = [line.split("&=")[0].strip() for line in block]
    assert lhs[:3] == [r"\mu", r"\nu", r"\#W"]
    targets = [line for line in block if line.startswith("t_")]
    assert [t.rsplit("&=", 1)[1].removesuffix(r" \\").strip() for t in targets] == [
        r"\frac{1}{7}",
        r"\frac{5}{7}",
        r"\frac{5}{21}",
    ]
    assert r"\mathrm{depth}" in out and r"\mathrm{width}" in out
    assert any(line.startswith(r"\|w\|_M &= \max") for line in block)
    assert any(line.startswith("L &=") for line in block)
    assert "% condition: AttentionQK" in out


def test_text_format_shows_every_quantity(capsys):
    assert main(["bounds", str(SPECS / "resmlp.yaml"), "--free", "depth"]) == 0
    out = capsys.readouterr().out
    for words in (
        "modular norm",
        "Lipschitz bound",
        "well-normed",
        "smoothness",
        "‖blocks.linear1‖",
    ):
        assert words in out
