"""Coupling blocks, frozen atoms, inverses and their bi-Lipschitz certificate.

- the language: coupling(f, g) and frozen=true in both fronts, and the mistakes they refuse;
- the rules: a coupling's mass, sensitivity and target split (docs/theory.md §12);
- model.py: inverse(forward(x)) = x to float tolerance; frozen weights take no step;
- certificate.py: the inverse's ℓ2 bound is at least an adversarial lower bound of the
  inverse's Lipschitz constant (power iteration and secant ascent on model.inverse).
"""

from __future__ import annotations

import math
import random
import shutil
import subprocess

import pytest
import sympy
import torch
from torch import nn

import modc
from modc.compiler import load
from modc.spec import ast, load_spec
from tests.test_certificate_soundness import adversarial_weights

pytestmark = pytest.mark.usefixtures("one_thread")

REVERSIBLE = """
name "rev"
input (2, 3, 2)
def side(act) = Linear(8, frozen=true) > act > Linear(6) > Bias
network = Flatten > repeat(2, name=blocks) { coupling(side(ReLU), side(GELU)) }
    > 1/2 * Identity > coupling(Linear(6), Linear(5, frozen=true) > Abs > Linear(6), name=last)
"""


@pytest.fixture(scope="module")
def rev(tmp_path_factory) -> modc.Build:
    root = tmp_path_factory.mktemp("rev")
    spec = root / "rev.modc"
    spec.write_text(REVERSIBLE)
    return modc.build(spec, out=root / "build")


# ---------------------------------------------------------------- language and rules


def test_coupling_and_frozen_read_alike_in_both_fronts(write_spec):
    text = write_spec(
        "input 8\nnetwork = coupling(Linear(4) > ReLU, Linear(4, frozen=true), name=c)\n",
        "a.modc",
    )
    yaml = write_spec(
        "input: 8\nnetwork:\n  - coupling:\n      - [Linear: 4, ReLU]\n"
        "      - Linear: 4\n        frozen: true\n    name: c\n",
        "a.yaml",
    )
    a, b = load_spec(text), load_spec(yaml)
    assert a.network == b.network
    assert isinstance(a.network, ast.Coupling) and a.network.name == "c"
    assert a.network.g.frozen and not a.network.f.items[0].frozen


@pytest.mark.parametrize(
    ("network", "message"),
    [
        ("coupling(Linear(4))", "takes two networks"),
        ("coupling(Linear(4), 2)", "takes two networks"),
        ("ReLU(frozen=true)", "no weights to freeze"),
        ("Linear(8, frozen=maybe)", "frozen= takes true or false"),
        ("Linear(7) > coupling(Linear(3), Linear(3))", "an even number of features"),
        ("coupling(Linear(5), Linear(4))", "must map a half (4,) to the same shape"),
    ],
)
def test_coupling_mistakes_are_located(write_spec, network, message):
    spec = write_spec(f"input 8\nnetwork = {network}\n", "bad.modc")
    with pytest.raises(modc.ModcError) as err:
        load(spec)
    assert message in str(err.value)
    assert err.value.span is not None


def test_coupling_rules_mass_sensitivity_and_split(write_spec):
    spec = write_spec(
        "input 8\nnetwork = coupling(Linear(4) > Linear(4), 2 * Linear(4)) > Linear(8)\n",
        "c.modc",
    )
    _, analysis = load(spec)
    # ν = (1 + ν_f)(1 + ν_g) = (1 + 1)(1 + 2); masses 2 + 1, then the Linear after: 4
    assert analysis.sensitivity == 6 and analysis.mass == 4
    targets = {a.path: a.target for a in analysis.atoms}
    # the coupling's share 3/4 (over the last Linear's ν = 1); f's 2/3 of it over g's shear
    # (1 + 2), halved between its Linears; g's 1/3 of it over its Mul(2)
    assert targets["coupling1.f_linear1"] == sympy.Rational(3, 4) * sympy.Rational(2, 3) / 3 / 2
    assert targets["coupling1.g_linear1"] == sympy.Rational(3, 4) * sympy.Rational(1, 3) / 2
    assert targets["linear1"] == sympy.Rational(1, 4)


def test_frozen_atoms_have_mass_zero_and_no_target(write_spec):
    spec = write_spec("input 4\nnetwork = Linear(8, frozen=true) > ReLU > Linear(2)\n", "f.modc")
    _, analysis = load(spec)
    targets = {a.path: a.target for a in analysis.atoms}
    assert targets == {"linear1": 0, "linear2": 1}
    assert analysis.sensitivity == 1  # still counted


# ---------------------------------------------------------------- model.py


def test_inverse_undoes_forward(rev):
    torch.manual_seed(0)
    model = rev.model.build_model()
    x = torch.randn(64, *rev.model.INPUT_SHAPE)
    assert torch.allclose(model.inverse(model(x)), x, atol=1e-5)
    model = model.double()
    assert (model.inverse(model(x.double())) - x.double()).abs().max() < 1e-12
    y = torch.randn(16, 12, dtype=torch.float64)  # and forward(inverse(y)) = y
    assert (model(model.inverse(y)) - y).abs().max() < 1e-12


def test_frozen_weights_take_no_step(rev):
    torch.manual_seed(0)
    model = rev.model.build_model()
    frozen = {n: p.detach().clone() for n, p in model.named_parameters() if not p.requires_grad}
    assert set(frozen) == {
        "blocks.0.coupling1.f_linear1.weight",
        "blocks.0.coupling1.g_linear1.weight",
        "blocks.1.coupling1.f_linear1.weight",
        "blocks.1.coupling1.g_linear1.weight",
        "last.g_linear1.weight",
    }
    for kind in ("dualized", "adamw", "normalized:adam"):
        opt = rev.optimizer.make_optimizer(model, 0.1, kind=kind, weight_decay=0.1)
        model(torch.randn(8, *rev.model.INPUT_SHAPE)).square().sum().backward()
        opt.step()
    for name, p in model.named_parameters():
        if name in frozen:
            assert torch.equal(p, frozen[name]), name


# ---------------------------------------------------------------- the inverse's bound


class Inverse(nn.Module):
    """model.inverse as a module, for lipschitz_lower."""

    def __init__(self, net: nn.Module):
        super().__init__()
        self.net = net

    def forward(self, y: torch.Tensor) -> torch.Tensor:
        return self.net.inverse(y)


def test_inverse_bound_is_at_least_an_adversarial_lower_bound(rev, trials):
    rng = random.Random("inverse-soundness")
    cert = rev.certificate
    worst = 0.0
    for trial in range(trials or 8):
        torch.manual_seed(rng.randint(0, 2**31))
        model = rev.model.build_model().double()
        how = rng.choice(("init", "scaled", "blown", "low_rank", "zeroed"))
        with torch.no_grad():  # frozen atoms are weights too: blow them up as well
            for p in model.parameters():
                p.requires_grad_(True)
        adversarial_weights(rev, model, how, rng)
        scale = math.exp(rng.uniform(math.log(0.05), math.log(20.0)))
        y = scale * torch.randn(8, 12, dtype=torch.float64)
        upper = cert.lipschitz_inverse_upper(model)
        lower = cert.lipschitz_lower(Inverse(model), y, iters=20, ascent=6)
        assert upper >= lower, f"trial {trial}: weights {how}: certified {upper} < {lower}"
        assert cert.lipschitz_upper(model) >= cert.lipschitz_lower(model, y.view(8, 2, 3, 2))
        worst = max(worst, lower / upper)
    assert worst > 1e-3  # the search finds something: the test can fail


def test_non_invertible_network_states_no_inverse_bound(tmp_path):
    spec = tmp_path / "m.modc"
    spec.write_text("input 4\nnetwork = coupling(Linear(2), Linear(2)) > Linear(3)\n")
    build = modc.build(spec, out=tmp_path / "b")
    model = build.model.build_model()
    assert not hasattr(model, "inverse")
    assert build.certificate.lipschitz_inverse_upper(model) is None


def test_python_api_writes_the_same_spec():
    from modc import api as m

    half = m.Linear(m.param("M", 2048), frozen=True) >> m.ReLU >> m.Linear(392) >> m.Bias
    net = (
        m.Flatten
        >> m.repeat(m.param("depth", 2), m.coupling(half, half), name="blocks")
        >> m.Linear(out=10, frozen=True, name="head")
    )
    built = m.load(m.spec(net, name="revmlp", input=(1, 28, 28), output=10))[1]
    shipped = load(modc.compiler.Path(__file__).parent.parent / "specs" / "revmlp.modc")[1]
    assert [(a.path, a.target) for a in built.atoms] == [(a.path, a.target) for a in shipped.atoms]


@pytest.mark.skipif(shutil.which("ruff") is None, reason="ruff is in the test extra")
def test_generated_reversible_code_passes_the_linter(rev):
    files = [str(rev.path / f) for f in ("model.py", "optimizer.py", "certificate.py")]
    out = subprocess.run(
        ["ruff", "check", "--no-cache", "--select", "E,F,W,I,B,UP", "--line-length", "100", *files],
        capture_output=True,
        text=True,
    )
    assert out.returncode == 0, out.stdout


def test_a_lipschitz_constraint_with_frozen_atoms_is_refused(write_spec):
    spec = write_spec(
        "input 4\nnetwork = Linear(8, frozen=true) > ReLU > Linear(2)\n"
        "optimizer {\n    lipschitz = 2\n}\n",
        "capped.modc",
    )
    with pytest.raises(modc.ModcError, match="frozen atoms"):
        load(spec)
