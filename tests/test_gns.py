"""The gradient noise scale (gns.py in every build): per-example gradient norms of the norm
atoms from the backward pass against torch.func, the estimators against a simulation with
known |G|² and tr(Σ), the learning-rate rule against the best step of a simulated noisy
quadratic, the batch schedules, and train.py's --gns under one process and two."""

from __future__ import annotations

import csv
import importlib.util
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

import modc
from modc.codegen.templates.options import batch_schedule
from tests.conftest import SPECS
from tests.conftest import modc as run_modc

pytestmark = pytest.mark.usefixtures("one_thread")

SMALL = {"width": 16, "depth": 2, "heads": 2, "context": 8}


@pytest.fixture(scope="module")
def prenorm(tmp_path_factory) -> modc.Build:
    return modc.build(SPECS / "gpt_prenorm.modc", SMALL, out=tmp_path_factory.mktemp("prenorm"))


def build_gns(build: modc.Build):
    """The build's own gns.py, imported."""
    spec = importlib.util.spec_from_file_location(f"gns_{id(build)}", build.path / "gns.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def loss_of(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(logits.flatten(0, -2), y.flatten())


def exact_norms(model, x, y, params) -> torch.Tensor:
    """Per-example squared gradient norms over `params` (names), by torch.func."""
    weights = {k: p.detach() for k, p in model.named_parameters()}

    def one(w, xi, yi):
        return loss_of(torch.func.functional_call(model, w, (xi[None],)), yi[None])

    grads = torch.func.vmap(torch.func.grad(one), in_dims=(None, 0, 0))(weights, x, y)
    return sum(grads[k].flatten(1).square().sum(1) for k in params)


@pytest.mark.parametrize("accum", [1, 3])
def test_per_example_norms_match_torch_func(prenorm, accum):
    gns = build_gns(prenorm)
    torch.manual_seed(0)
    model = prenorm.model.build_model().double()
    with torch.no_grad():  # gains and biases away from their init, so every term counts
        for p in model.parameters():
            if p.dim() == 1:
                p.add_(0.3 * torch.randn_like(p))
    optimizer = prenorm.optimizer.make_optimizer(model, 0.01)
    noise = gns.GradientNoise(model, optimizer)
    x = torch.randint(0, 128, (6, SMALL["context"]))
    y = torch.randint(0, 128, (6, SMALL["context"]))
    kinds = {f"{n}.weight": type(m).__name__ for n, m in model.named_modules()}
    groups = {
        "norm": [k for k, v in kinds.items() if v in ("Gain", "Bias")],
        "Gain": [k for k, v in kinds.items() if v == "Gain"],
        "Bias": [k for k, v in kinds.items() if v == "Bias"],
    }
    exact = {g: exact_norms(model, x, y, names) for g, names in groups.items()}
    optimizer.zero_grad(set_to_none=True)
    for xs, ys in zip(x.chunk(accum), y.chunk(accum), strict=True):
        (loss_of(model(xs), ys) / accum).backward()
    optimizer.step()

    for group, names in groups.items():
        assert len(names) == (10 if group == "norm" else 5)
        want = exact[group]
        got, batch_sq = noise.last[group]
        assert got.shape == (6,)
        torch.testing.assert_close(got, want, rtol=1e-5, atol=0)
        # |G_B|² is the gradient of the mean loss, the mean of the per-example gradients
        assert batch_sq > 0 and noise.scales[group].count == 1


REVERSIBLE = """
name "tiny_rev"
input (1, 2, 4)
def side = Linear(8, frozen=true) > ReLU > Linear(4) > Bias
network = Flatten > repeat(2, name=blocks) { coupling(side, side) } > Linear(3, frozen=true)
"""


@pytest.mark.parametrize("accum", [1, 2])
def test_frozen_weights_count_in_no_group(tmp_path, accum):
    """A network whose first weight is frozen (requires_grad off, no gradient ever): the
    micro-batches of a step all count, and --gns-total's groups hold the trained weights
    only, as |G_B|² does, so that E|g_i|² is of the same gradient."""
    spec = tmp_path / "tiny_rev.modc"
    spec.write_text(REVERSIBLE)
    build = modc.build(spec, out=tmp_path / "build")
    gns = build_gns(build)
    torch.manual_seed(0)
    model = build.model.build_model().double()
    trained = [k for k, p in model.named_parameters() if p.requires_grad]
    assert not next(model.parameters()).requires_grad and len(trained) == 8
    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.0)
    noise = gns.GradientNoise(model, optimizer, total=True)
    x, y = torch.randn(4, 1, 2, 4, dtype=torch.float64), torch.randint(0, 3, (4,))
    batches = list(zip(x.chunk(accum), y.chunk(accum), strict=True))
    noise.observe_total(batches, loss_of)
    optimizer.zero_grad(set_to_none=True)
    for xs, ys in batches:
        (loss_of(model(xs), ys) / accum).backward()
    optimizer.step()
    biases = [k for k in trained if ".bias" in k]  # each side's Bias
    for group, names in [("norm", biases), ("total", trained)]:
        got, batch_sq = noise.last[group]
        torch.testing.assert_close(got, exact_norms(model, x, y, names), rtol=1e-6, atol=0)
        grads = [model.get_parameter(k).grad for k in names]
        assert batch_sq == pytest.approx(sum(g.square().sum().item() for g in grads))


def test_estimators_are_unbiased_on_a_simulation_with_known_moments():
    """Per-example gradients g_i = G + Lz with known |G|² and tr(Σ) = |L|²_F; averaged
    over many batches, the unbiased estimates meet them within 4 standard errors, and the
    ratio of moving averages meets tr(Σ)/|G|²."""
    from modc.runtime.gns import NoiseScale, unbiased

    gen = torch.Generator().manual_seed(1)
    d, batch, draws = 20, 8, 20000
    G = torch.randn(d, generator=gen, dtype=torch.float64)
    L = 0.8 * torch.randn(d, d, generator=gen, dtype=torch.float64)
    true_g2, true_trace = G.square().sum().item(), L.square().sum().item()
    g = G + torch.randn(draws, batch, d, generator=gen, dtype=torch.float64) @ L.T
    batch_sq = g.mean(1).square().sum(1)
    example_sq = g.square().sum(2).mean(1)
    g2, trace = unbiased(batch_sq, example_sq, batch)
    for est, truth in [(g2, true_g2), (trace, true_trace)]:
        err = est.std().item() / math.sqrt(draws)
        assert abs(est.mean().item() - truth) < 4 * err, (est.mean().item(), truth, err)
    # from two batch sizes (a rank's examples against all ranks'), the same, unbiased
    small = g[:, :2].mean(1).square().sum(1)  # "ranks" of 2 examples, 4 of them
    g2, trace = unbiased(batch_sq, small, batch, 2)
    for est, truth in [(g2, true_g2), (trace, true_trace)]:
        err = est.std().item() / math.sqrt(draws)
        assert abs(est.mean().item() - truth) < 4 * err, (est.mean().item(), truth, err)
    # the naive |G_B|² is biased upwards by tr(Σ)/B: the test tells them apart
    assert batch_sq.mean().item() - true_g2 > 10 * batch_sq.std().item() / math.sqrt(draws)
    scale = NoiseScale(decay=0.999)
    for b, e in zip(batch_sq.tolist(), example_sq.tolist(), strict=True):
        scale.update(b, e, batch)
    assert scale.b_simple == pytest.approx(true_trace / true_g2, rel=0.1)


def best_step(batch: int, noise: float, dim: int = 2000, draws: int = 400) -> float:
    """The norm η minimising E L(w − η·u) on L = |w|²/2 (Hessian I) at w = G, u the unit
    direction of a batch gradient G_B = G + ξ/√B with E|ξ|² = noise·|G|²: by the quadratic,
    η* = E⟨G, u⟩, since |u| = 1 (the Euclidean dual map, a Bias atom's)."""
    gen = torch.Generator().manual_seed(batch)
    G = torch.randn(dim, generator=gen, dtype=torch.float64)
    G /= G.norm()
    xi = torch.randn(draws, dim, generator=gen, dtype=torch.float64) * math.sqrt(noise / dim)
    gb = G + xi / math.sqrt(batch)
    u = gb / gb.norm(dim=1, keepdim=True)
    return (u @ G).mean().item()


def test_lr_scale_follows_the_best_dualized_step_on_a_noisy_quadratic():
    from modc.runtime.gns import lr_scale

    noise, reference = 64.0, 16
    base = best_step(reference, noise)
    for batch in (1, 4, 64, 256, 4096):
        ratio = best_step(batch, noise) / base
        assert lr_scale(batch, reference, noise) == pytest.approx(ratio, rel=0.03), batch
    # the linear scaling rule of SGD and a constant lr are far off
    assert best_step(256, noise) / base < 0.5 * 256 / reference
    assert best_step(4096, noise) / base > 1.5
    assert lr_scale(64, 16, math.nan) == pytest.approx(2.0)  # noise unknown: √(B/B_ref)


def test_batch_schedule_text():
    assert batch_schedule("none") is None
    assert batch_schedule("linear:1024->4096") == ("linear", 1024, 4096)
    assert batch_schedule("linear:4096→1024") == ("linear", 4096, 1024)
    assert batch_schedule("gns") == ("gns", None, None)
    assert batch_schedule("gns:512->8192") == ("gns", 512, 8192)
    for bad in ["linear", "linear:1->", "gns:9->2", "cosine:1->2", "linear:0->5", "gns:a->b"]:
        with pytest.raises(ValueError):
            batch_schedule(bad)


class Measured:
    """A stand-in for GradientNoise whose norm-atom B_simple is set by the test."""

    def __init__(self, gns, value: float, count: int):
        self.scales = {"norm": gns.NoiseScale()}
        self.scales["norm"].count, self.value = count, value

    def b_simple(self, group: str = "norm") -> float:
        return self.value


def test_plans_count_tokens_and_the_gns_batch_only_grows():
    from modc.runtime import gns

    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    lr = ([1.0], lambda s: 1.0)
    linear = gns.BatchPlan(("linear", 64, 512), 2, 16, 8, 16 * 8 * 100, lr)
    sizes = []
    while linear.left():
        sizes.append(linear.next(None, opt) * 2)
        linear.advance()
    assert sizes[0] == 4 and sizes[-1] == 32 and sizes == sorted(sizes)
    assert linear.tokens - 16 * 8 * 100 < 32 * 16  # the budget, overshot by < one step
    assert opt.param_groups[0]["lr"] == pytest.approx(math.sqrt(32 / 8))

    plan = gns.BatchPlan(("gns", 32, 1024), 2, 16, 8, 10**9, lr, warm=5)
    assert plan.next(Measured(gns, 40.0, 4), opt) == 1  # not warm yet: the smallest batch
    assert plan.next(Measured(gns, 40.0, 5), opt) == 20
    assert plan.next(Measured(gns, 10.0, 6), opt) == 20  # grows only
    assert plan.next(Measured(gns, 1e9, 7), opt) == 32  # at most 1024 tokens
    assert plan.next(Measured(gns, math.nan, 8), opt) == 32


def read_rows(path: Path) -> list[dict[str, float]]:
    with open(path) as f:
        return [{k: float(v) for k, v in row.items()} for row in csv.DictReader(f)]


def train(build: Path, out: Path, procs: int, *args: str) -> subprocess.CompletedProcess:
    launch = [sys.executable]
    if procs > 1:
        launch += ["-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={procs}"]
    flags = ["--quiet", "--eval-every", "0", "--certify-every", "0", "--out", str(out)]
    return subprocess.run(
        [*launch, str(build / "train.py"), *flags, *args],
        capture_output=True,
        text=True,
        env=dict(os.environ, OMP_NUM_THREADS="1"),
        timeout=300,
    )


@pytest.fixture(scope="module")
def compiled(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("b") / "prenorm"
    params = [f"-p{k}={v}" for k, v in SMALL.items()]
    done = run_modc("compile", str(SPECS / "gpt_prenorm.modc"), "-o", str(out), *params)
    assert done.returncode == 0, done.stderr
    return out


def test_train_logs_the_noise_scale_and_follows_it(compiled, tmp_path):
    done = train(
        compiled,
        tmp_path / "g",
        1,
        "--steps",
        "12",
        "--batch-size",
        "4",
        "--gns",
        "--gns-total",
        "--batch-schedule",
        "gns:32->256",
    )
    assert done.returncode == 0, done.stderr
    rows = read_rows(tmp_path / "g" / "gns.csv")
    batches = [r["batch"] for r in rows]
    assert batches == sorted(batches) and 4 <= min(batches) and max(batches) <= 32
    assert rows[-1]["tokens"] >= 12 * 4 * 8  # the fixed run's tokens
    for r in rows:  # the hooks' Gain and Bias equal the exact per-example gradients'
        for kind in ("Gain", "Bias"):
            assert r[f"{kind}_g2"] == pytest.approx(r[f"total_{kind}_g2"], rel=1e-4)
            assert r[f"{kind}_trace"] == pytest.approx(r[f"total_{kind}_trace"], rel=1e-4)
    again = train(compiled, tmp_path / "g", 1, "--steps", "3", "--batch-size", "4", "--gns")
    assert again.returncode == 0, again.stderr  # a fresh run: gns.csv starts over
    assert [r["step"] for r in read_rows(tmp_path / "g" / "gns.csv")] == [1, 2, 3]
    bad = train(compiled, tmp_path / "x", 1, "--steps", "2", "--batch-schedule", "cubic")
    assert bad.returncode == 2 and "--batch-schedule must be none, linear" in bad.stderr


def test_clipping_comes_after_the_measurement(compiled, tmp_path):
    """--clip-grad clips the gradient that the step uses, not the one the noise scale is of:
    the first step's estimates (the same weights) are those of a run without it."""
    args = ["--steps", "1", "--batch-size", "4", "--gns", "--optimizer", "adamw"]
    plain = train(compiled, tmp_path / "plain", 1, *args)
    clipped = train(compiled, tmp_path / "clipped", 1, *args, "--clip-grad", "1e-4")
    assert plain.returncode == 0 and clipped.returncode == 0, plain.stderr + clipped.stderr
    a, b = read_rows(tmp_path / "plain" / "gns.csv"), read_rows(tmp_path / "clipped" / "gns.csv")
    for key in ("norm_g2", "norm_trace", "Gain_g2", "Bias_trace"):
        assert b[0][key] == pytest.approx(a[0][key], rel=1e-6), key
    assert a[0]["norm_g2"] > 0


def test_two_processes_measure_what_one_does(compiled, tmp_path):
    args = ["--steps", "3", "--gns", "--optimizer", "adamw", "--lr", "0.002"]
    one = train(compiled, tmp_path / "one", 1, "--batch-size", "8", *args)
    two = train(compiled, tmp_path / "two", 2, "--batch-size", "2", "--grad-accum", "2", *args)
    assert one.returncode == 0 and two.returncode == 0, one.stderr + two.stderr
    a, b = read_rows(tmp_path / "one" / "gns.csv"), read_rows(tmp_path / "two" / "gns.csv")
    assert len(a) == len(b) == 3
    for ra, rb in zip(a, b, strict=True):
        for key in ("norm_g2", "norm_trace", "Gain_g2", "Bias_trace"):
            assert rb[key] == pytest.approx(ra[key], rel=1e-3), key
        assert math.isfinite(rb["ranks_g2"]) and math.isfinite(rb["ranks_trace"])


def test_the_gns_example_runs_quick(tmp_path):
    """`examples/gns/run.py --quick`: the experiment's whole pipeline at toy sizes."""
    script = Path(__file__).resolve().parents[1] / "examples" / "gns" / "run.py"
    run = subprocess.run(
        [sys.executable, str(script), "--quick", "--out", str(tmp_path)],
        capture_output=True,
        text=True,
        env=dict(os.environ, OMP_NUM_THREADS="1"),
    )
    assert run.returncode == 0, run.stderr
    table = (tmp_path / "table.md").read_text()
    assert all(f"\n| {kind} | 0 |" in table for kind in ("fixed", "linear", "gns"))
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert -1 <= summary["correlation"]["pearson"] <= 1 and summary["overhead"]["ratio"] > 0
    assert (tmp_path / "gns.png").read_bytes()[:4] == b"\x89PNG"
