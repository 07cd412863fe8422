"""One Lipschitz formula: `modc bounds` (symbolic), the cap solver (floats at a cap) and the
generated certificate (live weights) agree on random networks, because all three are the
one fold of modc.theory.lipschitz evaluated in three domains.

Each random network mixes the combinators (composition, sums, scalar multiples, residual
blocks, repeats, tares) with atoms and bonds, attention included. With every atom's ℓ2
factor set to c, the certificate's bound must equal the cap solver's at c, and the
symbolic ℓ2 bound with each ‖site‖ = c / (its ℓ2 factor per unit norm) must equal both.
"""

from __future__ import annotations

import dataclasses
import random
from dataclasses import dataclass

import pytest
import sympy
import torch

import modc
from modc.check import check_table
from modc.codegen.optimizer import output_atoms
from modc.graph import ir
from modc.graph.budget import check_budget
from modc.graph.view import tree
from modc.theory.analysis import Analyzer, analyze
from modc.theory.lipschitz import capped_bound
from modc.theory.sharpness import sharp_tree

pytestmark = pytest.mark.usefixtures("one_thread")

WIDTH, POSITIONS = 8, 4
LEAVES = ["Linear(8)", "ReLU", "GELU", "Bias", "Gain", "RMSClip", "Abs", "RoPE"]


def block(rng: random.Random, depth: int) -> str:
    """A random (T, 8) → (T, 8) network in the language, `depth` levels of combinators."""
    if depth == 0:
        return " > ".join(rng.choice(LEAVES) for _ in range(rng.randint(1, 3)))
    inner = lambda: block(rng, depth - 1)  # noqa: E731
    kind = rng.choice(["compose", "sum", "scale", "residual", "repeat", "tare", "attention"])
    if kind == "compose":
        return f"{inner()} > {inner()}"
    if kind == "sum":
        return f"({inner()}) + ({inner()})"
    if kind == "scale":
        return f"{rng.choice(['1/2', '3', '2/3'])} * ({inner()})"
    if kind == "residual":
        return f"residual({rng.randint(1, 3)}) {{ {inner()} }}"
    if kind == "repeat":
        return f"repeat({rng.randint(1, 3)}) {{ {inner()} }}"
    if kind == "tare":
        return f"tare({rng.randint(1, 4)}) {{ {inner()} }}"
    return "attention(8, 2)"


def spec(rng: random.Random) -> str:
    body = block(rng, rng.randint(1, 3))
    return (
        f'name "random"\ninclude "std/attention.modc"\ninput ({POSITIONS}, {WIDTH})\n'
        f"network = Linear(8) > {body}\n"
    )


@pytest.mark.parametrize("seed", range(50))
def test_bounds_cap_solver_and_certificate_agree(seed, tmp_path):
    rng = random.Random(seed)
    path = tmp_path / "random.modc"
    path.write_text(spec(rng))
    network, analysis = modc.load(path)
    build = modc.build(path, out=tmp_path / "b")
    model = build.model.build_model().double()
    weights = dict(model.named_parameters())
    c = rng.choice([0.5, 0.9, 1.7])
    with torch.no_grad():
        for name, kind in build.certificate.ATOMS.items():
            w = weights[name]
            w.mul_(c / build.certificate.ATOM_LIPSCHITZ[kind](w))
    certified = build.certificate.lipschitz_upper(model)
    capped = capped_bound(network.root, c)
    at = {a.norm: c / a.node.op.l2_factor() for a in analysis.atoms}
    symbolic = float(analysis.lipschitz_l2.xreplace(at))
    assert certified == pytest.approx(capped, rel=1e-7), path.read_text()
    assert symbolic == pytest.approx(capped, rel=1e-7), path.read_text()
    assert analysis.lipschitz_l2.free_symbols <= set(at)


@dataclass(eq=False)
class Parallel(ir.Node):
    """A combinator written here, as a new one is in modc/graph/ir.py: branches on one
    input, their outputs added (what `A + B` elaborates to, Add ∘ Tuple, as one node)."""

    branches: tuple[ir.Node, ...] = ()

    @property
    def out_shape(self):
        return self.branches[0].out_shape

    def children(self):
        return self.branches

    def mass_of(self, values):
        return sympy.Add(*values)

    def sensitivity_of(self, values):
        return sympy.Add(*values)

    def lipschitz_of(self, values, domain, space):
        return domain.total(values)

    def sharpness_of(self, values, algebra):
        return algebra.concatenate(list(values))  # the sum is linear: nothing to add

    def split(self, t, mass, sensitivity, index):
        return [ir.Share(b, t * mass(b) / mass(self)) for b in self.branches]

    def flow(self, facts, through):
        for b in self.branches:
            through(b, facts)
        return frozenset()  # a sum of vectors of RMS ≤ 1 need not have RMS ≤ 1

    def heads(self, path, recurse):
        found = [recurse(b, path) for b in self.branches]
        return set().union(*(f[0] for f in found)), any(f[1] for f in found)


SUM = """
name "sum"
input (4, 8)
network = Linear(8) > (Linear(8) > GELU) + 1/2 * Linear(8) > RMSDivide
    > (Linear(8), Linear(8) > RMSClip) > AttentionQK
"""


def test_a_new_combinator_is_one_class(tmp_path):
    """Parallel, defined above and nowhere else, goes through every stage that reads the IR:
    the analysis (masses, targets, both Lipschitz bounds, sharpness, conditions), the cap
    solver, `modc check`'s table, the parameter count, the IR views and the muon baseline's
    head atoms, and agrees with the Add ∘ Tuple it replaces."""
    path = tmp_path / "sum.modc"
    path.write_text(SUM)
    network, _ = modc.load(path)
    root = network.root
    (summed,) = [n for n in root.parts if isinstance(n, ir.Compose)]
    tuple_, add = summed.parts
    assert isinstance(tuple_, ir.Tuple) and add.label() == "Add"
    node = Parallel(summed.in_shape, summed.span, tuple_.branches)
    parts = tuple(node if p is summed else p for p in root.parts)
    rewritten = dataclasses.replace(network, root=ir.Compose(root.in_shape, root.span, parts))
    before, after = analyze(network), analyze(rewritten)
    assert (after.mass, after.sensitivity) == (before.mass, before.sensitivity)
    assert [(a.path, a.site, a.target) for a in after.atoms] == [
        (a.path, a.site, a.target) for a in before.atoms
    ]
    assert after.lipschitz == before.lipschitz and after.lipschitz_l2 == before.lipschitz_l2
    smooth = [sharp_tree(n, Analyzer()) for n in (node, summed)]
    assert smooth[0] == smooth[1] and smooth[0].alpha is not None
    assert [c.text for c in after.conditions] == [c.text for c in before.conditions]
    assert len(after.conditions) == 2  # RMSDivide's, and AttentionQK's on the queries
    assert capped_bound(rewritten.root, 0.7) == capped_bound(network.root, 0.7)
    assert check_budget(rewritten) == check_budget(network) == 5 * 64
    assert output_atoms(rewritten.root) == output_atoms(network.root)
    assert "Parallel" in check_table(rewritten, after)
    assert tree(rewritten.root)["children"][1]["kind"] == "Parallel"
