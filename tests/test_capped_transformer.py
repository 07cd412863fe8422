"""`lipschitz: 2` with `--constraint cap` on a transformer: the certified ℓ2 bound stays at
most 2 at every logged step, its conditions are checked on held-out data and hold, and the
held-out loss still falls. Small GPTs from the shipped specs: specs/gpt.modc, whose
attention constants need queries, keys and values of RMS ≤ 1 (checked on data);
specs/gpt_clipped.modc, where RMSClip meets them for every input; specs/gpt_fused.modc, the
same with the fused CausalAttention and its joint ℓ2 constant; specs/gpt_certified.modc,
that with a Bias on the logits (free in ℓ2). Each atom has its own cap (docs/theory.md §9).
The cap solver and the certificate compose the same fold: at weights exactly at their caps,
the certificate equals the solver's bound. bench/capped_gpt.py runs the same at a realistic size.
"""

from __future__ import annotations

import csv
import importlib.util
import json
import math
import os
import subprocess
import sys

import pytest
import torch

import modc
from modc.codegen.settings import optimizer_settings
from modc.spec import load_spec
from tests.conftest import SPECS

pytestmark = pytest.mark.usefixtures("one_thread")

SIZES = {"vocab": 32, "width": 32, "depth": 2, "heads": 4, "context": 16}
STEPS, EVERY = 60, 10


def capped_build(spec: str, tmp_path):
    """specs/`spec` at SIZES, built with `optimizer { lipschitz = 2 }` (gpt_certified's own)."""
    path, text = tmp_path / spec, (SPECS / spec).read_text()
    own = any(s.key == "lipschitz" for s in load_spec(SPECS / spec).optimizer)
    path.write_text(text if own else text + "\noptimizer { lipschitz = 2 }\n")
    return path, modc.build(path, SIZES, out=tmp_path / "build")


def train(build, run) -> list[dict]:
    """train.py with the hard cap, the certificate logged every EVERY steps; its metrics."""
    flags = ["--data", "synthetic", "--steps", str(STEPS), "--batch-size", "16", "--lr", "0.3"]
    flags += ["--constraint", "cap", "--certify-every", str(EVERY), "--eval-every", str(EVERY)]
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    done = subprocess.run(
        [sys.executable, str(build.path / "train.py"), *flags, "--quiet", "--out", str(run)],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr
    with open(run / "metrics.csv") as f:
        return [row for row in csv.DictReader(f) if row["eval_loss"]]


@pytest.mark.parametrize(
    "spec", ["gpt.modc", "gpt_clipped.modc", "gpt_fused.modc", "gpt_certified.modc"]
)
def test_capped_gpt_stays_certified_under_2_and_learns(spec, tmp_path):
    path, build = capped_build(spec, tmp_path)
    cert = build.certificate
    assert 2 - 1e-9 < cert.LIPSCHITZ_BOUND <= 2
    if spec != "gpt.modc":  # RMSClip meets every condition
        assert cert.CONDITIONS == ()
    else:  # attention's ℓ2 constants need bounded queries, keys and values: checked on data
        assert any(c.startswith("AttentionQK") for c in cert.CONDITIONS)
        assert any(c.startswith("ApplyScores") for c in cert.CONDITIONS)
    run = tmp_path / "run"
    rows = train(build, run)
    assert [int(r["step"]) for r in rows] == list(range(EVERY, STEPS + 1, EVERY))
    reports = [json.loads(line) for line in (run / "certificates.jsonl").read_text().splitlines()]
    assert [r["step"] for r in reports] == [int(r["step"]) for r in rows]
    caps = cert.ATOM_CAPS
    assert set(caps) == {n for n, kind in cert.ATOMS.items() if kind != "Bias"}  # 1 for any b
    for r in reports:
        assert r["norm"] == "l2 to l2, per example"
        assert r["lipschitz_upper"] <= 2, r["step"]
        assert r["conditions_held"] and r["within"] and r["constraint"]["within"], r["failed"]
        checked = r["conditions_checked"]
        assert len(checked) == len(cert.CONDITIONS) and all(c["held"] for c in checked)
        assert {n: a["cap"] for n, a in r["atoms"].items() if n in caps} == caps
        assert all(r["atoms"][n]["lipschitz"] <= cap for n, cap in caps.items())
    bound_at = [
        any(r["atoms"][n]["lipschitz"] > 0.99 * c for n, c in caps.items()) for r in reports
    ]
    assert all(bound_at), "no cap ever bound: the test would prove nothing"
    losses = [float(r["eval_loss"]) for r in rows]
    assert losses[-1] < losses[0] < math.log(SIZES["vocab"]), losses  # from ≈ uniform
    assert math.log(SIZES["vocab"]) - losses[-1] > 0.05, losses

    # the trained weights, certified afresh: bound, conditions on held-out data, and no
    # pair of inputs (one token changed: one-hot inputs 2^½ apart) beyond it
    model = build.model.build_model()
    model.load_state_dict(torch.load(run / "checkpoint.pt", weights_only=True)["model"])
    model.eval()
    x = held_out(build)
    rep = cert.report(model, x)
    upper = cert.lipschitz_upper(model, norm="l2")
    assert rep["within"] and rep["lipschitz_upper"] == upper <= 2
    saved = json.loads((run / "certificate.json").read_text())
    assert saved["within"] and saved["lipschitz_upper"] == upper
    assert largest_token_secant(model, cert, x[:8]) <= upper


def held_out(build) -> torch.Tensor:
    """The held-out inputs train.py evaluated on (its data.py, as the run loaded them)."""
    found = importlib.util.spec_from_file_location("capped_data", build.path / "data.py")
    data = importlib.util.module_from_spec(found)
    found.loader.exec_module(data)
    shapes = (build.model.INPUT_SHAPE, build.model.OUTPUT_SHAPE)
    return data.load("synthetic", *shapes, torch.device("cpu")).held_out()[0]


def largest_token_secant(model, cert, x: torch.Tensor) -> float:
    """The largest ‖f(x) − f(x′)‖₂ / ‖onehot(x) − onehot(x′)‖₂ over x′ = x with one position
    set to another token, at a few positions, both inputs inside the conditions."""
    vocab = model.embed.weight.shape[0]
    best = 0.0
    with torch.no_grad():
        y = model(x).double()
        for pos in (0, x.shape[1] // 2, x.shape[1] - 1):
            for token in range(vocab):
                other = x.clone()
                other[:, pos] = token
                changed = other[:, pos] != x[:, pos]
                ok = changed & cert.inside(model, other) & cert.inside(model, x)
                gap = (model(other).double() - y).flatten(1).norm(dim=1) / math.sqrt(2)
                if ok.any():
                    best = max(best, gap[ok].max().item())
    assert best > 0
    return best


def test_cap_solver_and_certificate_compose_the_same_bound(tmp_path):
    """With every atom's ℓ2 factor exactly at its solved cap, the certificate's bound is the
    solver's (the one fold, evaluated at floats and at live weights)."""
    path, build = capped_build("gpt.modc", tmp_path)
    network, _ = modc.load(path, SIZES)
    cert = build.certificate
    settings = optimizer_settings(network)
    assert settings.atom_caps == cert.ATOM_CAPS
    assert settings.bound_at_caps == cert.LIPSCHITZ_BOUND == pytest.approx(2.0, rel=1e-9)
    assert len(set(cert.ATOM_CAPS.values())) > 2  # a cap per atom, not one for all
    torch.manual_seed(0)
    model = build.model.build_model().double()
    weights = dict(model.named_parameters())
    with torch.no_grad():
        for name, kind in cert.ATOMS.items():
            w = weights[name]
            w.mul_(cert.ATOM_CAPS[name] / cert.ATOM_LIPSCHITZ[kind](w))
    assert cert.lipschitz_upper(model) == pytest.approx(2.0, rel=1e-7)
