"""Training on several processes: the dual map split across ranks, and torchrun runs of
generated builds that equal one process with the same global batch (gloo, on CPU)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

import modc.ops.conv
import modc.ops.linear
from modc.ops.affine import bias_dualize
from modc.ops.conv import conv2d_dualize
from modc.ops.linear import linear_dualize
from modc.runtime.distributed import Dealer, split_dual_maps
from modc.runtime.optim import Dualized
from tests.conftest import SPECS
from tests.conftest import modc as run_modc

# Banks of 3, 1 and 2 matrices, a bank of two convolutions (a polar factor per tap) and
# biases; a bank smaller than the number of ranks leaves some ranks without a share.
SHAPES = {
    "Linear": [(8, 6), (8, 6), (5, 7), (8, 6), (4, 4), (4, 4)],
    "Conv2D": [(3, 2, 3, 3), (3, 2, 3, 3)],
    "Bias": [(5,), (5,)],
}
MAPS = {"Linear": linear_dualize, "Conv2D": conv2d_dualize, "Bias": bias_dualize}
POLAR_ATOMS = ("Linear", "Conv2D")
STEPS = 3


def matrices() -> int:
    """The polar factors of one step: a matrix each, a conv weight one per tap."""
    taps = sum(s[2] * s[3] for s in SHAPES["Conv2D"])
    return len(SHAPES["Linear"]) + taps


def optimizer(split: Dealer | None) -> tuple[Dualized, list[torch.Tensor]]:
    torch.manual_seed(0)
    groups, params = [], []
    for atom, shapes in SHAPES.items():
        ps = [torch.randn(*s, requires_grad=True) for s in shapes]
        group = {"params": ps, "targets": [0.5 + i for i in range(len(ps))], "atom": atom}
        if atom in POLAR_ATOMS:  # the same matmuls whatever a bank's size
            group["polar"] = {"dtype": torch.float32}
        groups.append(group)
        params += ps
    maps = MAPS if split is None else split_dual_maps(MAPS, POLAR_ATOMS, split)
    return Dualized(groups, maps, lr=0.1), params


def split_worker(rank: int, world: int, rendezvous: str, out: str) -> None:
    """Steps a split optimizer and an unsplit one on the same gradients; records, per step,
    how many polar factors this rank computed, and how far the two weights lie apart."""
    dist.init_process_group("gloo", init_method=rendezvous, rank=rank, world_size=world)
    dealer = Dealer()
    split, params = optimizer(dealer)
    alone, reference = optimizer(None)
    counted = [0]

    def counting(polar):
        def count(g: torch.Tensor, **options) -> torch.Tensor:
            counted[0] += g[..., 0, 0].numel()  # one polar factor per matrix of the batch
            return polar(g, **options)

        return count

    counts, gaps = [], []
    for step in range(STEPS):
        g = torch.Generator().manual_seed(step)
        for p, q in zip(params, reference, strict=True):
            p.grad = torch.randn(p.shape, generator=g)
            q.grad = p.grad.clone()
        modc.ops.linear.polar = counting(polar_of_linear)
        modc.ops.conv.polar = counting(polar_of_conv)
        counted[0] = 0
        split.step()
        counts.append(counted[0])
        modc.ops.linear.polar, modc.ops.conv.polar = polar_of_linear, polar_of_conv
        alone.step()
        gaps.append(max((p - q).abs().max().item() for p, q in zip(params, reference, strict=True)))
    report = {"counts": counts, "gaps": gaps, "gathered": dealer.gathered}
    Path(out, f"rank{rank}.json").write_text(json.dumps(report))
    dist.destroy_process_group()


polar_of_linear, polar_of_conv = modc.ops.linear.polar, modc.ops.conv.polar


@pytest.mark.parametrize("world", [2, pytest.param(3, marks=pytest.mark.slow)])
def test_split_dual_map_computes_each_polar_factor_once(tmp_path: Path, world: int) -> None:
    rendezvous = f"file://{tmp_path / 'rendezvous'}"
    mp.spawn(split_worker, (world, rendezvous, str(tmp_path)), nprocs=world)
    reports = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(world)]
    for step in range(STEPS):
        assert sum(r["counts"][step] for r in reports) == matrices()
        assert all(r["counts"][step] > 0 for r in reports)  # every rank has a share
    for r in reports:
        assert max(r["gaps"]) < 1e-5, r["gaps"]  # the update of one process
        assert r["gathered"] > 0


# -- torchrun runs of generated builds ---------------------------------------------------

BUILDS = {  # small sizes of the shipped specs; data sets that ship with the build
    "mlp": ["-p", "width=32"],
    "gpt": ["-p", "width=32", "-p", "depth=1", "-p", "heads=2", "-p", "context=16"],
}
FLAGS = ["--steps", "20", "--quiet", "--eval-every", "0", "--certify-every", "0"]


@pytest.fixture(scope="module")
def builds(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The builds, with polar factors computed in float32 (CPU's default is bfloat16, whose
    rounding would swamp the float32 differences between one process and two)."""
    root = tmp_path_factory.mktemp("builds")
    out = {}
    for name, params in BUILDS.items():
        done = run_modc("compile", str(SPECS / f"{name}.yaml"), "-o", str(root / name), *params)
        assert done.returncode == 0, done.stderr
        optimizer = root / name / "optimizer.py"
        text = optimizer.read_text()
        fp32 = 'POLAR = {"polar_express": {"dtype": torch.float32},'
        optimizer.write_text(text.replace('POLAR = {"polar_express": {},', fp32))
        assert fp32 in optimizer.read_text()
        out[name] = root / name
    return out


def train(build: Path, out: Path, procs: int, *args: str) -> subprocess.CompletedProcess:
    """train.py in `procs` processes (torchrun, gloo), or plainly for one."""
    launch = [sys.executable]
    if procs > 1:
        launch += ["-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={procs}"]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    return subprocess.run(
        [*launch, str(build / "train.py"), *FLAGS, "--out", str(out), *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )


def weights(out: Path) -> dict[str, torch.Tensor]:
    return torch.load(out / "checkpoint.pt", weights_only=True)["model"]


@pytest.mark.parametrize(
    "name, kind",
    [
        ("mlp", "dualized"),
        ("gpt", "adamw"),
        pytest.param("mlp", "adamw", marks=pytest.mark.slow),
        pytest.param("gpt", "dualized", marks=pytest.mark.slow),
        pytest.param("mlp", "normalized:adam", marks=pytest.mark.slow),
    ],
)
def test_two_processes_equal_one_with_the_same_global_batch(
    builds: dict[str, Path], tmp_path: Path, name: str, kind: str
) -> None:
    lr = "0.05" if kind == "dualized" else "0.002"
    args = ["--optimizer", kind, "--lr", lr]
    one = train(builds[name], tmp_path / "one", 1, "--batch-size", "8", *args)
    assert one.returncode == 0, one.stderr
    two = train(builds[name], tmp_path / "two", 2, "--batch-size", "2", "--grad-accum", "2", *args)
    assert two.returncode == 0, two.stderr
    assert "global batch 8 = 2 (--batch-size) × 2 processes × 2 (--grad-accum)" in two.stderr
    a, b = weights(tmp_path / "one"), weights(tmp_path / "two")
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(b[k], a[k], rtol=1e-4, atol=1e-5, msg=k)
    rows = (tmp_path / "two" / "metrics.csv").read_text().splitlines()
    assert len(rows) == 21  # rank 0 alone wrote them: a header and a row a step


def worker_pids(launcher: int) -> dict[int, int]:
    """The worker processes of a torchrun agent, by rank (from their environment)."""
    found = {}
    for task in Path(f"/proc/{launcher}/task").iterdir():
        for pid in (task / "children").read_text().split():
            env = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
            rank = [e for e in env if e.startswith(b"RANK=")]
            if rank:
                found[int(rank[0][5:])] = int(pid)
    return found


def kill_rank_one(build: Path, out: Path, *args: str) -> tuple[str, dict[int, int], int]:
    """A 2-process run, its rank 1 killed once it has written a checkpoint: (torchrun's
    stderr, the workers' pids by rank, torchrun's exit status)."""
    launch = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]
    proc = subprocess.Popen(
        [*launch, str(build / "train.py"), *FLAGS[2:], *args, "--out", str(out)],
        env=dict(os.environ, OMP_NUM_THREADS="1"),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 120
        while not (out / "checkpoint.pt").exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert (out / "checkpoint.pt").exists(), "no checkpoint within 120 s"
        workers = worker_pids(proc.pid)
        assert sorted(workers) == [0, 1]
        os.kill(workers[1], signal.SIGKILL)
        _, err = proc.communicate(timeout=60)  # torchrun stops rank 0 and exits
    finally:
        proc.kill()
    return err, workers, proc.returncode


LINUX = pytest.mark.skipif(not Path("/proc/self/task").exists(), reason="reads /proc (Linux)")


@LINUX
def test_a_killed_rank_ends_the_others_and_leaves_the_checkpoint(
    builds: dict[str, Path], tmp_path: Path
) -> None:
    out = tmp_path / "run"
    args = ["--steps", "100000", "--batch-size", "2", "--checkpoint-every", "5", "--timeout", "30"]
    err, workers, status = kill_rank_one(builds["mlp"], out, *args)
    assert status != 0
    assert "train.py FAILED" in err and "Signal 9 (SIGKILL)" in err, err
    assert (
        not Path(f"/proc/{workers[0]}").exists()
        or "zombie" in Path(f"/proc/{workers[0]}/status").read_text()
    )
    ckpt = torch.load(out / "checkpoint.pt", weights_only=True)
    assert ckpt["step"] % 5 == 0 and ckpt["step"] >= 5 and ckpt["ranks"] == 2
    assert all(w.isfinite().all() for w in ckpt["model"].values())


@LINUX
@pytest.mark.slow
def test_a_killed_run_resumed_ends_as_an_uninterrupted_one(
    builds: dict[str, Path], tmp_path: Path
) -> None:
    args = ["--steps", "300", "--batch-size", "2", "--checkpoint-every", "10"]
    kill_rank_one(builds["mlp"], tmp_path / "killed", *args)
    assert torch.load(tmp_path / "killed" / "checkpoint.pt", weights_only=True)["step"] < 300
    resumed = train(builds["mlp"], tmp_path / "killed", 2, "--resume")
    assert resumed.returncode == 0, resumed.stderr
    whole = train(builds["mlp"], tmp_path / "whole", 2, *args)
    assert whole.returncode == 0, whole.stderr
    a, b = weights(tmp_path / "whole"), weights(tmp_path / "killed")
    for k in a:
        torch.testing.assert_close(b[k], a[k], rtol=1e-4, atol=1e-5, msg=k)


def test_an_error_of_every_rank_is_said_once(builds: dict[str, Path], tmp_path: Path) -> None:
    done = train(builds["mlp"], tmp_path / "run", 2, "--data", str(tmp_path / "missing.csv"))
    assert done.returncode != 0
    assert done.stderr.count("train.py: error:") == 1, done.stderr
    assert "missing.csv" in done.stderr
