"""Mass, sensitivity and targets: the check-values of docs/theory.md §3 and depth independence."""

from __future__ import annotations

import json

import pytest
import sympy

from modc import load
from tests.conftest import SPECS, modc


def targets(spec: str, **params: object) -> dict[str, sympy.Expr]:
    _, analysis = load(SPECS / spec, params)
    return {a.path: a.target for a in analysis.atoms}


def test_mlp_depth3_gives_every_linear_one_third_on_the_command_line():
    out = modc("bounds", "specs/mlp.yaml", "-p", "depth=3", "--format", "json")
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout)
    linears = [a for a in report["atoms"] if a["kind"] == "Linear"]
    assert len(linears) == 3
    assert all(a["target"] == pytest.approx(1 / 3) for a in linears)
    assert report["network"]["mass"] == 3
    assert report["network"]["sensitivity"] == 1
    assert linears[0]["shape"] == [256, 784]


@pytest.mark.parametrize("depth", [2, 5, 8])
def test_mlp_targets_are_one_over_depth(depth):
    assert set(targets("mlp.yaml", depth=depth).values()) == {sympy.Rational(1, depth)}


def test_resmlp_block_targets_do_not_change_with_depth():
    seen = set()
    for depth in (2, 4, 8, 16):
        t = targets("resmlp.yaml", depth=depth)
        inside = {v for k, v in t.items() if k.startswith("blocks.")}
        assert len(t) == 2 * depth + 2
        seen |= inside
    assert seen == {sympy.Rational(1, 4)}  # tared mass 2 of total 4, split over 2 Linears


def test_resmlp_has_sensitivity_one_and_fixed_mass_at_any_depth():
    for depth in (1, 3, 16):
        _, a = load(SPECS / "resmlp.yaml", {"depth": depth})
        assert a.sensitivity == 1
        assert a.mass == 4


def test_free_depth_gives_closed_forms_without_depth_in_block_targets():
    network, a = load(SPECS / "resmlp.yaml", free=["depth", "width"])
    depth = sympy.Symbol("depth", positive=True, integer=True)
    inside = [x for x in a.atoms if x.path.startswith("blocks.")]
    assert len(inside) == 2 and all(x.target == sympy.Rational(1, 4) for x in inside)
    assert all(depth not in x.target.free_symbols for x in inside)
    assert (
        sympy.simplify(
            a.parameters
            - (2 * depth * network.params["width"] ** 2 + 794 * network.params["width"])
        )
        == 0
    )


def test_tare_rescales_atom_masses(write_spec):
    path = write_spec("""
input: 8
network:
  - tare: 6
    body:
      - Linear: 8
      - Linear: {out: 8, mass: 2}
""")
    _, a = load(path)
    assert [x.mass for x in a.atoms] == [2, 4]
    assert a.mass == 6
    # targets follow the relative masses: 1/3 and 2/3
    assert [x.target for x in a.atoms] == [sympy.Rational(1, 3), sympy.Rational(2, 3)]


@pytest.mark.parametrize(
    "network,atoms",
    [
        ("Linear(4) > (Linear(4, frozen=true) > Linear(4, frozen=true))", 3),
        ("Linear(4) > (Linear(4, mass=0) > Linear(4, mass=0))", 3),
        ("Linear(4, frozen=true) > Linear(4, frozen=true)", 2),
    ],
)
def test_atoms_in_a_module_of_mass_0_are_listed_with_target_0(write_spec, network, atoms):
    """A mass-0 module has no share of the step, but its atoms are in every bound."""
    _, a = load(write_spec(f"input 4\nnetwork = {network}\n", "net.modc"))
    assert len(a.atoms) == atoms
    assert [x.target for x in a.atoms if x.mass == 0] == [0, 0]
    assert a.lipschitz.free_symbols == set(a.norms.values())


def test_a_lone_frozen_atom_has_target_0(write_spec):
    _, a = load(write_spec("input 4\nnetwork = Linear(4, frozen=true)\n", "net.modc"))
    assert [x.target for x in a.atoms] == [0] and a.modular_norm == 0


def test_a_later_scale_divides_the_targets_of_the_atoms_before_it(write_spec):
    path = write_spec("""
input: 4
network:
  - Linear: 4
  - scale: 2
    body: [Linear: 4]
""")
    _, a = load(path)
    # M = Mul(2) ∘ L1 ∘ L0, μ = 2: the factor 2 after both atoms halves both shares of 1/2.
    assert [x.target for x in a.atoms] == [sympy.Rational(1, 4), sympy.Rational(1, 4)]
    assert a.sensitivity == 2
