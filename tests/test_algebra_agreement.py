"""One Lipschitz formula: `modc bounds` (symbolic), the cap solver (floats at a cap) and the
generated certificate (live weights) agree on random networks, because all three are the
one fold of modc.theory.lipschitz evaluated in three domains.

Each random network mixes the combinators (composition, sums, scalar multiples, residual
blocks, repeats, tares) with atoms and bonds, attention included. With every atom's ℓ2
factor set to c, the certificate's bound must equal the cap solver's at c, and the
symbolic ℓ2 bound with each ‖site‖ = c / (its ℓ2 factor per unit norm) must equal both.
"""

from __future__ import annotations

import random

import pytest
import torch

import modc
from modc.theory.lipschitz import capped_bound

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
