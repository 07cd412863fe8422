"""Per-atom caps of `optimizer: {lipschitz: L}` (modc.theory.caps, docs/theory.md §9).

The caps meet the bound in the rounded-up float fold the certificate composes, and solve
the convex problem they are defined by: at a bound that binds, m_i·log(r_i/c_i) is the
same multiple μ > 0 of ∂log L/∂log c_i for every atom (KKT); at a loose one every cap is its
reference size times one factor. The log-domain jet of the fold agrees with the float fold
and with finite differences, and its Hessian is positive semidefinite (log L is convex in
the log caps). Adversarially: random networks of the soundness test's families, their
weights drawn adversarially and then capped by the generated optimizer, are certified at
most L, and no search finds a lower bound above the certificate. `modc check` solves the
caps without importing torch.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import random
import subprocess
import sys

import numpy as np
import pytest
import torch

import modc
from modc.codegen.settings import optimizer_settings
from modc.errors import ModcError
from modc.ops.base import L2
from modc.theory.caps import atom_caps, atom_masses, capped_atoms
from modc.theory.lipschitz import LogJet, capped_bound, lipschitz
from tests.conftest import SPECS
from tests.test_certificate_soundness import FAMILIES, SCALES, adversarial_weights

pytestmark = pytest.mark.usefixtures("one_thread")

GPT = (SPECS / "gpt.modc", {"vocab": 32, "width": 32, "depth": 2, "heads": 4, "context": 16})
NETWORKS = {
    "gpt": GPT,
    "fused": (SPECS / "gpt_fused.modc", GPT[1]),
    "transformer": (SPECS / "transformer.modc", {"width": 16, "depth": 2, "context": 8}),
    "resmlp": (SPECS / "resmlp.yaml", {"width": 16, "depth": 3}),
    "cnn": (SPECS / "cnn.yaml", {"channels": 4}),
}


def load(spec, params):
    return modc.load(spec, params)[0]


def solved(root, bound: float, max_norm: float | None = None):
    """(atoms, masses, log references, log caps, jet of log L at the caps)."""
    atoms, masses = capped_atoms(root), atom_masses(root)
    caps = atom_caps(root, bound, max_norm, masses)
    x = np.log([caps[id(a)] for a in atoms])
    jet = lipschitz(root, LogJet({id(a): i for i, a in enumerate(atoms)}, x), L2)
    refs = np.log([float(a.op.l2_reference()) for a in atoms])
    m = np.array([masses[id(a)] for a in atoms])
    return caps, m, refs, x, jet


@pytest.mark.parametrize("name", list(NETWORKS))
def test_caps_meet_the_bound_and_solve_the_convex_problem(name):
    spec, params = NETWORKS[name]
    root = load(spec, params).root
    references = {id(a): float(a.op.l2_reference()) for a in capped_atoms(root)}
    bound = min(2.0, capped_bound(root, references) / 10)  # the references exceed it
    caps, m, refs, x, jet = solved(root, bound)
    assert capped_bound(root, caps) <= bound  # rounded up: what the certificate promises
    assert jet.value == pytest.approx(math.log(bound), abs=1e-9)  # it binds: none wasted
    mu = m * (refs - x) / jet.grad  # KKT: the same μ > 0 for every atom
    assert np.all(mu > 0) and mu == pytest.approx(np.full_like(mu, mu.mean()), rel=1e-6)
    assert len({round(c, 12) for c in caps.values()}) > 1


def test_a_loose_bound_scales_every_reference_size_by_one_factor():
    root = load(*NETWORKS["resmlp"]).root
    caps, m, refs, x, jet = solved(root, 4.0)
    assert jet.value == pytest.approx(math.log(4.0), abs=1e-9)
    assert x - refs == pytest.approx(np.full_like(x, (x - refs)[0]), abs=1e-9)
    assert (x - refs)[0] > 0  # the references certify less than 4: every cap grows


@pytest.mark.parametrize("bound", [0.5, 8.0])
def test_alike_atoms_on_a_chain_share_the_old_common_cap(bound, write_spec):
    """Equal masses and reference sizes on a chain: by symmetry one cap, L^(1/3), the
    common cap of the uniform solver, whether the references bind (L < 1) or not."""
    spec = write_spec("input: 8\nnetwork:\n  - Linear: 8\n  - ReLU\n  - Linear: 8\n  - Linear: 8\n")
    root = load(spec, {}).root
    caps = atom_caps(root, bound, None, atom_masses(root))
    assert list(caps.values()) == pytest.approx([bound ** (1 / 3)] * 3, rel=1e-9)


def test_max_norm_bounds_every_cap_and_the_others_take_up_the_rest():
    root = load(*NETWORKS["gpt"]).root
    free, *_ = solved(root, 2.0)
    limit = 0.8 * max(free.values())
    caps, m, refs, x, jet = solved(root, 2.0, max_norm=limit)
    assert max(caps.values()) <= limit and capped_bound(root, caps) <= 2
    assert jet.value == pytest.approx(math.log(2.0), abs=1e-9)
    at_limit = np.isclose(np.exp(x), limit, rtol=1e-12)
    assert at_limit.any() and not at_limit.all()
    mu = (m * (refs - x) / jet.grad)[~at_limit]  # KKT among the atoms below the limit
    assert mu == pytest.approx(np.full_like(mu, mu.mean()), rel=1e-6)
    assert all(caps[k] >= free[k] * (1 - 1e-12) for k in caps if caps[k] < limit)


@pytest.mark.parametrize("bound", [1e-300, 1e-3, 1e3, 1e300])
def test_extreme_bounds_are_solved_and_met(bound):
    root = load(*NETWORKS["gpt"]).root
    caps = atom_caps(root, bound, None, atom_masses(root))
    assert all(0 < c < math.inf for c in caps.values())
    assert capped_bound(root, caps) <= bound


def test_an_unreachable_bound_is_a_clear_error(write_spec):
    spec = write_spec("input: 4\nnetwork:\n  - sum:\n    - [Identity]\n    - [Linear: 4]\n")
    network = load(spec, {})
    with pytest.raises(ModcError, match="bonds alone give a bound of 1"):
        optimizer_settings(dataclasses.replace(network, optimizer={"lipschitz": 0.9}))


@pytest.mark.parametrize("name", ["gpt", "fused", "cnn"])
def test_the_log_jet_is_the_fold_its_derivatives_and_convex(name):
    root = load(*NETWORKS[name]).root
    atoms = capped_atoms(root)
    index = {id(a): i for i, a in enumerate(atoms)}
    rng = np.random.default_rng(0)
    for _ in range(3):
        x = rng.uniform(-3, 1, len(atoms))
        jet = lipschitz(root, LogJet(index, x), L2)
        floats = capped_bound(root, {id(a): math.exp(v) for a, v in zip(atoms, x, strict=True)})
        assert jet.value == pytest.approx(math.log(floats), abs=1e-9)
        h = 1e-6
        for i in range(len(atoms)):
            up, down = x.copy(), x.copy()
            up[i] += h
            down[i] -= h
            jets = [lipschitz(root, LogJet(index, y), L2) for y in (up, down)]
            assert (jets[0].value - jets[1].value) / (2 * h) == pytest.approx(jet.grad[i], abs=1e-6)
            assert (jets[0].grad - jets[1].grad) / (2 * h) == pytest.approx(jet.hess[i], abs=1e-5)
        assert np.linalg.eigvalsh(jet.hess).min() >= -1e-9


def capped_family(family: str, root, bound: float) -> modc.Build:
    """The soundness test's family with `optimizer: {lipschitz: bound}`, built."""
    spec, params = FAMILIES[family]
    text, name = spec if isinstance(spec, tuple) else (spec.read_text(), spec.name)
    if name.endswith(".yaml"):
        text += f"\noptimizer:\n  lipschitz: {bound!r}\n"
    else:
        text += f"\noptimizer {{ lipschitz = {bound!r} }}\n"
    path = root / f"capped-{family}-{name}"
    path.write_text(text)
    return modc.build(path, params, out=root / f"capped-build-{family}")


@pytest.mark.parametrize("family", [f for f in FAMILIES if f != "coupling"])  # frozen atoms
def test_weights_capped_per_atom_are_certified_within_the_bound(family, trials, tmp_path_factory):
    rng = random.Random(f"{family}-caps")
    bound = rng.choice([0.5, 2.0, 30.0])
    build = capped_family(family, tmp_path_factory.mktemp(family), bound)
    cert, caps = build.certificate, build.optimizer.ATOM_CAPS
    assert build.optimizer.LIPSCHITZ_BOUND <= bound
    scales = SCALES.get(family, (0.02, 30.0))
    for trial in range(trials or 3):
        torch.manual_seed(rng.randint(0, 2**31))
        model = build.model.build_model().double()
        how = rng.choice(["scaled", "blown", "low_rank", "vectors", "trained"])
        adversarial_weights(build, model, how, rng)
        with torch.no_grad():
            for p in model.parameters():  # far above every cap
                p.mul_(rng.uniform(1.0, 30.0))
        build.optimizer.make_optimizer(model, lr=0.0, constraint="cap")  # caps at once
        weights = dict(model.named_parameters())
        for name, cap in caps.items():
            assert cert.ATOM_LIPSCHITZ[cert.ATOMS[name]](weights[name]) <= cap, (trial, name)
        upper = cert.lipschitz_upper(model)
        assert upper <= build.optimizer.LIPSCHITZ_BOUND <= bound, (trial, how)
        gen = torch.Generator().manual_seed(trial)
        scale = math.exp(rng.uniform(*map(math.log, scales)))
        x = scale * torch.randn(8, *build.model.INPUT_SHAPE, generator=gen, dtype=torch.float64)
        ok = cert.inside(model, x)
        if ok.any():
            inside = functools.partial(cert.inside, model)
            lower = cert.lipschitz_lower(model, x[ok], iters=15, ascent=4, inside=inside)
            assert lower <= upper, (trial, how, lower, upper)


def test_the_solver_runs_no_tensor(tmp_path):
    """`modc check` solves the caps (it refuses what compile refuses) without importing torch."""
    spec = tmp_path / "capped.modc"
    spec.write_text((SPECS / "gpt.modc").read_text() + "\noptimizer { lipschitz = 2 }\n")
    probe = (
        "import contextlib, io, sys\n"
        "from modc.cli import main\n"
        "with contextlib.redirect_stdout(io.StringIO()):\n"
        f"    code = main(['check', {str(spec)!r}])\n"
        "print(code, sorted(m for m in sys.modules if m == 'torch' or m.startswith('torch.')))\n"
    )
    run = [sys.executable, "-c", probe]
    done = subprocess.run(run, capture_output=True, text=True, timeout=300)
    assert done.stdout == "0 []\n", done.stderr
