"""The gauss_newton optimizer kind: exact Gauss–Newton steps for reversible networks.

Normalisation (modc/runtime/gauss_newton.py): δ_L = n·∂L/∂z / c, the loss's gradient in the
outputs over its Hessian taken as c·I (softmax(z) − y for the mean cross-entropy, z − y for
F.mse_loss). Each of the B blocks solves for δ_L alone, so with n ≤ M one step of learning
rate lr moves the outputs by −lr·B·δ_L to first order. Checked two ways on a small network
in float64: by finite differences of the outputs, and exactly in the linearisation against
a dense Gauss–Newton solve with the full Jacobian (torch.func.jacrev) of every trainable
weight, J·Δθ = δ_L with Δθ = J⁺δ_L.
"""

from __future__ import annotations

import os
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

import modc
from tests.conftest import modc as run_modc

pytestmark = pytest.mark.usefixtures("one_thread")

SPEC = """
name "tiny_rev"
param M = 16
input (1, 2, 4)
def side = Linear(M, frozen=true) > ReLU > Linear(4) > Bias
network = Flatten > repeat(2, name=blocks) { coupling(side, side) } > Linear(3, frozen=true)
"""
BLOCKS = 2
ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> modc.Build:
    root = tmp_path_factory.mktemp("gn")
    spec = root / "tiny_rev.modc"
    spec.write_text(SPEC)
    return modc.build(spec, out=root / "build")


def setup(tiny: modc.Build, n: int = 6, seed: int = 0):
    torch.manual_seed(seed)
    model = tiny.model.build_model().double()
    with torch.no_grad():  # weights away from the initialisation, biases nonzero
        for p in model.parameters():
            if p.requires_grad:
                p.add_(0.3 * torch.randn_like(p))
    x = torch.randn(n, *tiny.model.INPUT_SHAPE, dtype=torch.float64)
    y = torch.randint(0, 3, (n,))
    return model, x, y


def trainable(model) -> dict[str, torch.Tensor]:
    return {k: p.detach().clone() for k, p in model.named_parameters() if p.requires_grad}


def gn_step(tiny, model, x, y, lr: float, loss: str = "cross_entropy"):
    """One step (the optimizer's hooks removed after it); returns (outputs before, δ_L,
    weights before)."""
    opt = tiny.optimizer.make_optimizer(model, lr, kind="gauss_newton", loss=loss)
    z = model(x)
    if loss == "cross_entropy":
        F.cross_entropy(z, y).backward()
        delta = torch.softmax(z, -1) - F.one_hot(y, 3)
    else:
        target = F.one_hot(y, 3).double()
        F.mse_loss(z, target).backward()
        delta = z - target
    before = trainable(model)
    opt.step()
    opt.remove_hooks()
    return z.detach(), delta.detach(), before


@pytest.mark.parametrize("loss", ["cross_entropy", "mse"])
def test_outputs_move_by_minus_lr_blocks_delta_to_first_order(tiny, loss):
    model, x, y = setup(tiny)
    lr = 1e-6
    z0, delta, _ = gn_step(tiny, model, x, y, lr, loss)
    moved = (model(x).detach() - z0) / lr
    err = (moved + BLOCKS * delta).norm() / (BLOCKS * delta).norm()
    assert err < 1e-4, err


def test_update_matches_a_dense_gauss_newton_solve(tiny):
    model, x, y = setup(tiny, seed=1)
    names = list(trainable(model))
    lr = 1.0
    z0, delta, before = gn_step(tiny, model, x, y, lr)
    after = trainable(model)
    update = torch.cat([(before[k] - after[k]).flatten() for k in names]) / lr

    def outputs(*weights):
        params = dict(zip(names, weights, strict=True))
        return torch.func.functional_call(model, params, (x,)).flatten()

    jac = torch.func.jacrev(outputs, argnums=tuple(range(len(names))))(*[before[k] for k in names])
    J = torch.cat([j.reshape(j.shape[0], -1) for j in jac], dim=1)  # (n·k) × P
    dense = torch.linalg.pinv(J) @ delta.flatten()  # the dense GN step: J⁺ δ_L
    assert torch.allclose(J @ dense, delta.flatten(), atol=1e-9)  # it interpolates δ_L
    # ours moves the linearised outputs by B times as much: each block solves for δ_L
    assert torch.allclose(J @ update, BLOCKS * (J @ dense), atol=1e-8)


def test_warns_when_the_batch_exceeds_M(tiny):
    model, x, y = setup(tiny, n=20)  # M = 16
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        gn_step(tiny, model, x, y, 0.1)
    assert any("no longer exact" in str(w.message) for w in caught)


def test_non_finite_targets_skip_the_step(tiny):
    model, x, y = setup(tiny)
    opt = tiny.optimizer.make_optimizer(model, 0.1, kind="gauss_newton")
    z = model(x)
    (z * float("nan")).sum().backward()
    before = trainable(model)
    opt.step()
    assert opt.skipped == 1
    assert all(torch.equal(before[k], v) for k, v in trainable(model).items())


def test_a_torch_func_pass_leaves_the_step_alone(tiny):
    """train.py's --gns-total takes per-example gradients by torch.func.vmap(grad(...)) of
    the model that the optimizer hooks: its hooks ignore that pass (retain_grad would raise
    in it) and the step is the one without it."""
    plain, x, y = setup(tiny)
    gn_step(tiny, plain, x, y, 0.5)
    model, _, _ = setup(tiny)
    opt = tiny.optimizer.make_optimizer(model, 0.5, kind="gauss_newton")
    F.cross_entropy(model(x), y).backward()
    weights = {k: p.detach() for k, p in model.named_parameters()}

    def one(w, xi, yi):
        return F.cross_entropy(torch.func.functional_call(model, w, (xi[None],)), yi[None])

    torch.func.vmap(torch.func.grad(one), in_dims=(None, 0, 0))(weights, x, y)
    opt.step()
    for k, v in trainable(plain).items():
        torch.testing.assert_close(trainable(model)[k], v, rtol=0, atol=0, msg=k)


def test_step_without_a_backward_pass_says_so(tiny):
    model, _, _ = setup(tiny)
    opt = tiny.optimizer.make_optimizer(model, 0.1, kind="gauss_newton")
    with pytest.raises(RuntimeError, match="loss.backward"):
        opt.step()


def test_refused_for_a_network_that_is_not_reversible(tmp_path):
    spec = tmp_path / "mlp.modc"
    spec.write_text(
        'name "mlp"\ninput 8\nnetwork = Linear(16) > ReLU > Linear(4)\n'
        "optimizer {\n    kind = gauss_newton\n}\n"
    )
    out = run_modc("compile", str(spec), "-o", str(tmp_path / "b"))
    assert out.returncode == 2
    assert "mlp.modc:3:11: error: gauss_newton needs a reversible network" in out.stderr
    assert "no coupling block" in out.stderr
    spec.write_text('name "mlp"\ninput 8\nnetwork = Linear(16) > ReLU > Linear(4)\n')
    build = modc.build(spec, out=tmp_path / "b2")
    with pytest.raises(ValueError, match="gauss_newton cannot train this network"):
        build.optimizer.make_optimizer(build.model.build_model(), 0.1, kind="gauss_newton")


def test_train_py_runs_gauss_newton(tiny, tmp_path):
    out = subprocess.run(
        [
            sys.executable,
            str(tiny.path / "train.py"),
            "--optimizer",
            "gauss_newton",
            "--steps",
            "3",
            "--batch-size",
            "8",
            "--lr",
            "0.1",
            "--out",
            str(tmp_path / "run"),
            "--quiet",
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr
    assert (tmp_path / "run" / "final.json").exists()


def test_gauss_newton_under_torchrun_is_refused(tiny, tmp_path):
    """Each process would solve on its own batch and the copies would drift apart."""
    launch = ["-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]
    out = subprocess.run(
        [sys.executable, *launch, str(tiny.path / "train.py"), "--optimizer", "gauss_newton"]
        + ["--steps", "2", "--out", str(tmp_path / "run")],
        capture_output=True,
        text=True,
        env=dict(os.environ, OMP_NUM_THREADS="1"),
        timeout=300,
    )
    assert out.returncode != 0
    assert "train.py: error: gauss_newton solves for the update on one process" in out.stderr
    assert not (tmp_path / "run" / "final.json").exists()


def test_the_gauss_newton_example_runs_quick(tmp_path):
    """`examples/gauss_newton/run.py --quick`: the experiment's whole pipeline at toy sizes."""
    run = subprocess.run(
        [
            sys.executable,
            str(ROOT / "examples" / "gauss_newton" / "run.py"),
            "--quick",
            "--out",
            str(tmp_path / "out"),
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert run.returncode == 0, run.stderr
    table = (tmp_path / "out" / "table.md").read_text()
    assert all(f"\n| {kind} |" in table for kind in ("gauss_newton", "sgd", "adam", "dualized"))
