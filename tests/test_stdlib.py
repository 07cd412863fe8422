"""The standard library, written in the DSL: every network elaborates, with the theory of
docs/theory.md §3 (GPT's per-atom targets do not change with depth)."""

from __future__ import annotations

from pathlib import Path

import pytest
import sympy

from modc.compiler import load
from modc.ops import OPS
from modc.spec import load_spec
from tests.language import SPECS

NEEDS = {
    "mlp": ("Linear", "ReLU", "Flatten"),
    "resmlp": ("Linear", "ReLU", "Flatten"),
    "cnn": ("Conv2D", "AvgPool", "ReLU", "Flatten", "Linear"),
    "attention": (
        "Linear",
        "SplitHeads",
        "RoPE",
        "AttentionQK",
        "CausalMask",
        "Softmax",
        "ApplyScores",
        "MergeHeads",
    ),
    "transformer": (
        "Linear",
        "GELU",
        "SplitHeads",
        "RoPE",
        "AttentionQK",
        "CausalMask",
        "Softmax",
        "ApplyScores",
        "MergeHeads",
    ),
    "gpt": (
        "Embed",
        "Linear",
        "GELU",
        "SplitHeads",
        "RoPE",
        "AttentionQK",
        "CausalMask",
        "Softmax",
        "ApplyScores",
        "MergeHeads",
    ),
}


def needs(stem: str):
    """Skip, naming the missing operations, until the operation library has them all."""
    missing = [op for op in NEEDS[stem] if op not in OPS]
    return pytest.mark.skipif(bool(missing), reason=f"operations not in OPS yet: {missing}")


def targets(path: Path, **params: int) -> dict[str, sympy.Expr]:
    """Each atom's kind and target, keyed by its path with copy indices dropped."""
    _, analysis = load(path, [f"{k}={v}" for k, v in params.items()])
    out = {}
    for atom in analysis.atoms:
        key = ".".join(p for p in atom.path.split(".") if not p.isdigit() and p != "{i}")
        out[key] = (atom.kind, atom.target)
    return out


@pytest.mark.parametrize("stem", list(NEEDS))
def test_every_library_network_has_both_forms_and_elaborates(stem):
    if any(op not in OPS for op in NEEDS[stem]):
        pytest.skip(f"operations not in OPS yet: {[o for o in NEEDS[stem] if o not in OPS]}")
    modc_spec, yaml_spec = SPECS / f"{stem}.modc", SPECS / f"{stem}.yaml"
    assert load_spec(modc_spec) == load_spec(yaml_spec)
    network, analysis = load(modc_spec)
    assert analysis.sensitivity == 1
    assert analysis.parameters > 0


@needs("gpt")
def test_gpt_targets_follow_modula_at_every_depth():
    seen = []
    for depth in (2, 4, 8):
        t = targets(SPECS / "gpt.modc", depth=depth, width=32, heads=2)
        kinds = {k: v[1] for k, v in t.items()}
        assert kinds["embed"] == sympy.Rational(1, 7)
        assert kinds["head"] == sympy.Rational(1, 7)
        inner = sorted(v for k, v in kinds.items() if k.startswith("blocks."))
        assert inner == [sympy.Rational(5, 21)] * 3 + [sympy.Rational(5, 7)] * 3
        seen.append(t)
    assert seen[0] == seen[1] == seen[2]


@needs("gpt")
def test_gpt_mass_and_shapes():
    network, analysis = load(SPECS / "gpt.modc", ["depth=96"])
    assert analysis.mass == 7
    assert network.output_shape == (64, 128)


def test_stdlib_mlp_matches_the_shipped_mlp(tmp_path: Path):
    spec = tmp_path / "net.modc"
    spec.write_text(
        'include "std/mlp.modc"\nparam width = 256\nparam depth = 3\ninput (1, 28, 28)\n'
        "network = Flatten > mlp(width, depth, 10)\n"
    )
    got = {k.removeprefix("mlp."): v for k, v in targets(spec).items()}  # mlp: a submodule
    assert got == targets(SPECS / "mlp.yaml")
    spec.write_text(
        'include "std/mlp.modc"\nparam width = 256\nparam depth = 4\ninput (1, 28, 28)\n'
        "network = Flatten > resmlp(width, depth, 10)\n"
    )
    got, want = targets(spec), targets(SPECS / "resmlp.yaml")
    assert sorted(got.values()) == sorted(want.values())
