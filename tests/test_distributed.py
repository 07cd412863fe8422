"""Training on several processes: the dual map split across ranks (whole matrices, or rows
of them under FSDP2), and torchrun runs of generated builds, data parallel or fully sharded,
that equal one process with the same global batch (gloo, on CPU)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import warnings
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.distributed.checkpoint as dcp
import torch.multiprocessing as mp
from torch.distributed.device_mesh import init_device_mesh
from torch.distributed.tensor import DTensor, Shard, distribute_tensor

import modc.ops.conv
import modc.ops.linear
from modc.ops.affine import bias_dualize
from modc.ops.conv import conv2d_dualize
from modc.ops.linear import linear_dualize
from modc.runtime.distributed import Dealer, rows_for_all, split_dual_maps
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


def optimizer(split: Dealer | None, mesh: object = None) -> tuple[Dualized, list[torch.Tensor]]:
    """Dualized over SHAPES, its dual maps dealt out by `split`; with a mesh, every weight
    a DTensor sharded by rows over it, as FSDP2 shards them."""
    torch.manual_seed(0)
    groups, params = [], []
    for atom, shapes in SHAPES.items():
        ps = [torch.randn(*s) for s in shapes]
        if mesh is not None:  # as shard() does: the weights that give every rank rows
            world = mesh.size()
            ps = [
                distribute_tensor(p, mesh, [Shard(0)]) if rows_for_all(p.shape, world) else p
                for p in ps
            ]
        ps = [torch.nn.Parameter(p) for p in ps]
        group = {"params": ps, "targets": [0.5 + i for i in range(len(ps))], "atom": atom}
        if atom in POLAR_ATOMS:  # the same matmuls whatever a bank's size
            group["polar"] = {"dtype": torch.float32}
        groups.append(group)
        params += ps
    maps = MAPS if split is None else split_dual_maps(MAPS, POLAR_ATOMS, split)
    return Dualized(groups, maps, lr=0.1), params


def split_worker(rank: int, world: int, rendezvous: str, out: str, sharded: bool) -> None:
    """Steps a split optimizer (of whole weights, or of row shards) and an unsplit one on
    the same gradients; records, per step, how many polar factors this rank computed, and
    how far the two weights lie apart."""
    dist.init_process_group("gloo", init_method=rendezvous, rank=rank, world_size=world)
    mesh = init_device_mesh("cpu", (world,)) if sharded else None
    dealer = Dealer()
    split, params = optimizer(dealer, mesh)
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
            q.grad = torch.randn(q.shape, generator=g)
            shards = isinstance(p, DTensor)
            p.grad = distribute_tensor(q.grad, mesh, [Shard(0)]) if shards else q.grad.clone()
        modc.ops.linear.polar = counting(polar_of_linear)
        modc.ops.conv.polar = counting(polar_of_conv)
        counted[0] = 0
        split.step()
        counts.append(counted[0])
        modc.ops.linear.polar, modc.ops.conv.polar = polar_of_linear, polar_of_conv
        alone.step()
        whole = [p.full_tensor() if isinstance(p, DTensor) else p for p in params]
        gaps.append(max((p - q).abs().max().item() for p, q in zip(whole, reference, strict=True)))
    report = {"counts": counts, "gaps": gaps, "sent": dealer.sent}
    Path(out, f"rank{rank}.json").write_text(json.dumps(report))
    dist.barrier()  # no rank leaves while another's gloo traffic is in flight (as train.py)
    dist.destroy_process_group()
    # The report is written and closed. As train.py does, skip the interpreter's teardown:
    # with DTensors on gloo it can abort a finished process ("terminate called without an
    # active exception"), which mp.spawn would report as this test's failure.
    os._exit(0)


polar_of_linear, polar_of_conv = modc.ops.linear.polar, modc.ops.conv.polar


@pytest.mark.parametrize(
    "world, sharded",
    [(2, False), (3, True), (1, True), pytest.param(3, False, marks=pytest.mark.slow)],
)
def test_split_dual_map_computes_each_polar_factor_once(
    tmp_path: Path, world: int, sharded: bool
) -> None:
    """Sharded over 3 ranks, the weights' rows split unevenly (5 = 2 + 2 + 1), and a 4 × 4
    bank stays whole (2 + 2 + 0 rows would leave a rank without), as shard() keeps it.
    Sharded over one rank, the dual maps still see whole, plain matrices (nothing sent)."""
    rendezvous = f"file://{tmp_path / 'rendezvous'}"
    mp.spawn(split_worker, (world, rendezvous, str(tmp_path), sharded), nprocs=world)
    reports = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(world)]
    for step in range(STEPS):
        assert sum(r["counts"][step] for r in reports) == matrices()
        assert all(r["counts"][step] > 0 for r in reports)  # every rank has a share
    for r in reports:
        assert max(r["gaps"]) < 1e-5, r["gaps"]  # the update of one process
        assert r["sent"] > 0 if world > 1 else r["sent"] == 0


# -- torchrun runs of generated builds ---------------------------------------------------

BUILDS = {  # small sizes of the shipped specs; data sets that ship with the build
    "mlp": ["-p", "width=32"],
    "gpt": ["-p", "width=32", "-p", "depth=1", "-p", "heads=2", "-p", "context=16"],
    "gpt_certified": ["-p", "width=32", "-p", "depth=1", "-p", "heads=2", "-p", "context=16"],
}
FLAGS = ["--steps", "20", "--quiet", "--eval-every", "0", "--certify-every", "0"]


@pytest.fixture(scope="module")
def builds(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The builds, with polar factors computed in float32 (CPU's default is bfloat16, whose
    rounding would swamp the float32 differences between one process and two)."""
    root = tmp_path_factory.mktemp("builds")
    out = {}
    for name, params in BUILDS.items():
        spec = next(
            SPECS / f"{name}.{ext}"
            for ext in ("yaml", "modc")
            if (SPECS / f"{name}.{ext}").exists()
        )
        done = run_modc("compile", str(spec), "-o", str(root / name), *params)
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
    """The weights of the run's checkpoint: in checkpoint.pt, or (--fsdp) in the folder of
    shards that it names, read whole in this process."""
    ckpt = torch.load(out / "checkpoint.pt", weights_only=True)
    if "shards" not in ckpt:
        return ckpt["model"]
    folder = out / ckpt["shards"]
    stored = dcp.FileSystemReader(folder).read_metadata().state_dict_metadata
    model = {
        key.removeprefix("model."): torch.empty(tuple(meta.size))
        for key, meta in stored.items()
        if key.startswith("model.")
    }
    with warnings.catch_warnings():  # that it reads without a process group: it is meant to
        warnings.simplefilter("ignore", UserWarning)
        dcp.load({"model": model}, checkpoint_id=folder, no_dist=True)
    return model


SLOW = pytest.mark.slow


@pytest.mark.parametrize(
    "name, kind, fsdp",
    [
        ("mlp", "dualized", False),
        ("gpt", "adamw", False),
        ("gpt", "dualized", True),
        ("mlp", "adamw", True),
        pytest.param("mlp", "adamw", False, marks=SLOW),
        pytest.param("gpt", "dualized", False, marks=SLOW),
        pytest.param("mlp", "normalized:adam", False, marks=SLOW),
        pytest.param("mlp", "dualized", True, marks=SLOW),
        pytest.param("gpt", "adamw", True, marks=SLOW),
        pytest.param("gpt", "normalized:sgd", True, marks=SLOW),
        pytest.param("mlp", "adafactor", True, marks=SLOW),
    ],
)
def test_two_processes_equal_one_with_the_same_global_batch(
    builds: dict[str, Path], tmp_path: Path, name: str, kind: str, fsdp: bool
) -> None:
    lr = {"dualized": "0.05", "normalized:sgd": "0.05", "adafactor": "0.01"}.get(kind, "0.002")
    args = ["--optimizer", kind, "--lr", lr]
    one = train(builds[name], tmp_path / "one", 1, "--batch-size", "8", *args)
    assert one.returncode == 0, one.stderr
    two_args = ["--batch-size", "2", "--grad-accum", "2", *args, *(["--fsdp"] if fsdp else [])]
    two = train(builds[name], tmp_path / "two", 2, *two_args)
    assert two.returncode == 0, two.stderr
    assert "global batch 8 = 2 (--batch-size) × 2 processes × 2 (--grad-accum)" in two.stderr
    a, b = weights(tmp_path / "one"), weights(tmp_path / "two")
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(b[k], a[k], rtol=1e-4, atol=1e-5, msg=k)
    rows = (tmp_path / "two" / "metrics.csv").read_text().splitlines()
    assert len(rows) == 21  # rank 0 alone wrote them: a header and a row a step


def test_a_capped_sharded_run_equals_one_process(builds: dict[str, Path], tmp_path: Path) -> None:
    """--fsdp with the spectral cap (gpt_certified, constraint cap): each rank caps the whole
    matrices, gathered, and keeps its rows; the run ends with one process's weights and
    certificate, its bound at most the spec's. (The cap divides by a bound that a Cholesky
    certifies at a Ritz value: rounding moves it more than a plain step, hence atol 1e-4.)"""
    args = ["--steps", "3", "--lr", "0.5"]
    one = train(builds["gpt_certified"], tmp_path / "one", 1, "--batch-size", "8", *args)
    assert one.returncode == 0, one.stderr
    two_args = ["--batch-size", "2", "--grad-accum", "2", "--fsdp", *args]
    two = train(builds["gpt_certified"], tmp_path / "two", 2, *two_args)
    assert two.returncode == 0, two.stderr
    a, b = weights(tmp_path / "one"), weights(tmp_path / "two")
    for k in a:
        torch.testing.assert_close(b[k], a[k], rtol=1e-4, atol=1e-4, msg=k)
    bounds = [
        json.loads((tmp_path / run / "certificate.json").read_text())["lipschitz_upper"]
        for run in ("one", "two")
    ]
    assert bounds[1] == pytest.approx(bounds[0], rel=1e-4) and max(bounds) <= 2


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


def resume_and_compare(build: Path, tmp_path: Path, args: list[str], again: list[str]) -> None:
    """Resume the killed run in tmp_path/killed with `again`, run `args` uninterrupted in
    tmp_path/whole, and check that both end with the same weights."""
    resumed = train(build, tmp_path / "killed", 2, "--resume", *again)
    assert resumed.returncode == 0, resumed.stderr
    whole = train(build, tmp_path / "whole", 2, *args)
    assert whole.returncode == 0, whole.stderr
    a, b = weights(tmp_path / "whole"), weights(tmp_path / "killed")
    for k in a:
        torch.testing.assert_close(b[k], a[k], rtol=1e-4, atol=1e-5, msg=k)


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
    resume_and_compare(builds["mlp"], tmp_path, args, [*args[:2]])


@pytest.mark.parametrize("first, then", [(2, 1), (1, 2)])
def test_a_run_resumed_on_another_number_of_processes_ends_at_its_steps(
    builds: dict[str, Path], tmp_path: Path, first: int, then: int
) -> None:
    """--resume --steps 4 with fewer or more processes than the checkpoint's: the global
    batch changes (train.py says so), and the run still ends after step 4."""
    out = tmp_path / "run"
    done = train(builds["mlp"], out, first, "--steps", "2", "--batch-size", "2")
    assert done.returncode == 0, done.stderr
    again = train(builds["mlp"], out, then, "--resume", "--steps", "4")
    assert again.returncode == 0, again.stderr
    assert f"the checkpoint is of {first} processes, this run has {then}" in again.stderr
    if then > 1:  # the checkpoint's --batch-size, not the command line's default
        assert "global batch 4 = 2 (--batch-size) × 2 processes" in again.stderr
    assert json.loads((out / "final.json").read_text())["steps"] == 4
    steps = [row.split(",")[0] for row in (out / "metrics.csv").read_text().splitlines()[1:]]
    assert steps == ["1", "2", "3", "4"]


def test_a_global_batch_larger_than_the_data_is_refused(
    builds: dict[str, Path], tmp_path: Path
) -> None:
    """100 examples (90 train): a global batch of 2 × 64 would give rank 0 64 and rank 1
    26 of them, whose DDP average is not the mean over the 90; refused, said once."""
    g = torch.Generator().manual_seed(0)
    data = tmp_path / "small.pt"
    torch.save({"x": torch.randn(100, 1, 28, 28, generator=g), "y": torch.arange(100) % 10}, data)
    done = train(builds["mlp"], tmp_path / "run", 2, "--batch-size", "64", "--data", str(data))
    assert done.returncode != 0
    assert done.stderr.count("train.py: error: a step's global batch of 128 examples") == 1


def test_an_error_of_every_rank_is_said_once(builds: dict[str, Path], tmp_path: Path) -> None:
    done = train(builds["mlp"], tmp_path / "run", 2, "--data", str(tmp_path / "missing.csv"))
    assert done.returncode != 0
    assert done.stderr.count("train.py: error:") == 1, done.stderr
    assert "missing.csv" in done.stderr


@LINUX
def test_a_sharded_run_killed_and_resumed_ends_as_an_uninterrupted_one(
    builds: dict[str, Path], tmp_path: Path
) -> None:
    """--fsdp: every rank writes its shards (torch.distributed.checkpoint); a rank killed
    after a checkpoint leaves it whole, and the run resumed from it ends where an
    uninterrupted run does."""
    args = ["--steps", "30", "--batch-size", "2", "--checkpoint-every", "5", "--fsdp"]
    kill_rank_one(builds["mlp"], tmp_path / "killed", *args)
    ckpt = torch.load(tmp_path / "killed" / "checkpoint.pt", weights_only=True)
    assert ckpt["step"] < 30 and ckpt["shards"] == f"shards-{ckpt['step']:08d}"
    resume_and_compare(builds["mlp"], tmp_path, args, ["--fsdp", *args[:2]])
    left = sorted(p.name for p in (tmp_path / "killed").iterdir() if "shards" in p.name)
    assert left == ["shards-00000030"]  # the older folders went once a newer one was named


def test_fsdp_needs_torchrun_and_a_checkpoint_of_its_kind(
    builds: dict[str, Path], tmp_path: Path
) -> None:
    alone = train(builds["mlp"], tmp_path / "alone", 1, "--fsdp")
    assert alone.returncode == 2
    assert "train.py: error: --fsdp shards over the processes that torchrun starts" in alone.stderr
    plain = train(builds["mlp"], tmp_path / "plain", 1, "--steps", "2", "--batch-size", "2")
    assert plain.returncode == 0, plain.stderr
    again = train(builds["mlp"], tmp_path / "plain", 2, "--resume", "--fsdp")
    assert again.returncode != 0
    assert again.stderr.count("is of a run without --fsdp; resume it so") == 1, again.stderr
