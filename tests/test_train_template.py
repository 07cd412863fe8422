"""The training script that `modc compile` copies into every build (modc/codegen/templates/
train.py and data.py), run as a user would run it, on a small hand-written build directory."""

import json
import math
import os
import re
import runpy
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from modc.codegen.distributed import emit_distributed
from modc.codegen.gns import emit_gns

TEMPLATES = Path(__file__).resolve().parents[1] / "modc" / "codegen" / "templates"

MODEL = """\
import os
import re
import runpy
import time

from torch import nn

INPUT_SHAPE = (1, 4, 4)
OUTPUT_SHAPE = (3,)
SLEEP = float(os.environ.get("FIXTURE_SLEEP", "0"))  # per training step: a run slow to kill


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(nn.Flatten(), nn.Linear(16, 32), nn.ReLU(), nn.Dropout(0.1),
                                  nn.Linear(32, 3))

    def forward(self, x):
        if self.training and SLEEP:
            time.sleep(SLEEP)
        return self.body(x)


def build_model():
    return Net()
"""

OPTIMIZER = """\
import torch


def make_optimizer(model, lr, momentum=0.95, nesterov=True, weight_decay=0.0):
    return torch.optim.SGD(model.parameters(), lr=lr, momentum=momentum, nesterov=nesterov,
                           weight_decay=weight_decay)
"""

CERTIFICATE = """\
import torch


def lipschitz_upper(model):
    bound = 1.0
    for m in model.modules():
        if isinstance(m, torch.nn.Linear):
            bound *= torch.linalg.matrix_norm(m.weight.detach().double(), ord=2).item()
    return bound


def report(model, x=None):
    return {"lipschitz_upper": lipschitz_upper(model), "sound": True}
"""

SPEC = {
    "name": "tiny",
    "train": {
        "data": "synthetic",
        "steps": 60,
        "batch_size": 32,
        "lr": 0.1,
        "schedule": "cosine",
        "warmup": 5,
        "eval_every": 20,
        "checkpoint_every": 10,
    },
}


def make_build(root: Path) -> Path:
    build = root / "build" / "tiny"
    build.mkdir(parents=True)
    for name, text in [
        ("model.py", MODEL),
        ("optimizer.py", OPTIMIZER),
        ("certificate.py", CERTIFICATE),
        ("spec.json", json.dumps(SPEC)),
        ("train.py", (TEMPLATES / "train.py").read_text()),
        ("data.py", (TEMPLATES / "data.py").read_text()),
        ("options.py", (TEMPLATES / "options.py").read_text()),
        ("metrics.py", (TEMPLATES / "metrics.py").read_text()),
        ("generate.py", (TEMPLATES / "generate.py").read_text()),
        ("distributed.py", emit_distributed()),
        ("gns.py", emit_gns()),
    ]:
        (build / name).write_text(text)
    return build


def start(build: Path, *args: str, sleep: float = 0.0) -> subprocess.Popen:
    """train.py in a child process, from another directory than the build's."""
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", FIXTURE_SLEEP=str(sleep))
    return subprocess.Popen(
        [sys.executable, str(build / "train.py"), *args],
        cwd=build.parent.parent,
        env=env,
        text=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )


def finish(proc: subprocess.Popen) -> tuple[int, str, str]:
    out, err = proc.communicate(timeout=120)
    return proc.returncode, out, err


def logged(run: Path) -> int:
    """Rows in run/metrics.csv so far."""
    path = run / "metrics.csv"
    return len(path.read_text().splitlines()) - 1 if path.exists() else 0


def weights(run: Path) -> dict[str, torch.Tensor]:
    return torch.load(run / "checkpoint.pt", weights_only=True)["model"]


def test_runs_end_to_end_on_synthetic_data_and_a_users_csv(tmp_path):
    build = make_build(tmp_path)
    g = torch.Generator().manual_seed(1)
    x = torch.randn(90, 16, generator=g)
    y = x[:, :3].argmax(1)
    rows = [
        ",".join([*(f"{v:.4f}" for v in xi.tolist()), str(int(yi))])
        for xi, yi in zip(x, y, strict=True)
    ]
    (tmp_path / "mine.csv").write_text("\n".join(rows) + "\n")
    synthetic = start(build, "--out", str(tmp_path / "runs" / "syn"))
    users = start(
        build,
        "--data",
        str(tmp_path / "mine.csv"),
        "--steps",
        "20",
        "--quiet",
        "--out",
        str(tmp_path / "runs" / "csv"),
    )

    for proc, steps, run in [(synthetic, 60, "syn"), (users, 20, "csv")]:
        code, out, err = finish(proc)
        assert code == 0, err
        assert out.startswith("held-out loss") and out.count("\n") == 1
        progress = err.splitlines()  # not a terminal: a line about every 10%
        assert len(progress) == (10 if run == "syn" else 0), err
        assert all(" it/s | ETA " in line for line in progress)
        assert not progress or progress[-1].startswith("step 60/60 [####################] loss")
        run = tmp_path / "runs" / run
        assert sorted(p.name for p in run.iterdir()) == [
            "certificate.json",
            "certificates.jsonl",
            "checkpoint.pt",
            "final.json",
            "metrics.csv",
            "train.lock",
        ]
        lines = (run / "metrics.csv").read_text().splitlines()
        assert lines[0] == "step,loss,lr,eval_loss,eval_acc,lipschitz_upper,skipped"
        assert [int(line.split(",")[0]) for line in lines[1:]] == list(range(1, steps + 1))
        final = json.loads((run / "final.json").read_text())
        assert final["steps"] == steps and 0 <= final["eval_acc"] <= 1
        assert set(final) == {"steps", "tokens", "train_loss", "eval_loss", "eval_acc", "seconds"}
        assert json.loads((run / "certificate.json").read_text())["sound"] is True
        reports = [json.loads(r) for r in (run / "certificates.jsonl").read_text().splitlines()]
        assert [r["step"] for r in reports] == [steps] and reports[0]["sound"] is True
        assert torch.load(run / "checkpoint.pt", weights_only=True)["step"] == steps

    lines = (tmp_path / "runs" / "syn" / "metrics.csv").read_text().splitlines()
    measured = [line.split(",")[0] for line in lines[1:] if line.split(",")[3]]
    assert measured == ["20", "40", "60"]  # eval_every from spec.json
    assert lines[-1].split(",")[5] and not lines[-2].split(",")[5]  # certified at the end
    assert json.loads((tmp_path / "runs" / "syn" / "final.json").read_text())["eval_acc"] > 0.6


def test_resume_after_sigkill_ends_with_the_weights_of_an_unbroken_run(tmp_path):
    build = make_build(tmp_path)
    flags = ["--steps", "100", "--checkpoint-every", "10", "--certify-every", "25"]
    flags += ["--log-every", "1"]  # rows past the last checkpoint, for --resume to drop
    whole, broken = tmp_path / "whole", tmp_path / "broken"
    unbroken = start(build, *flags, "--out", str(whole))
    doomed = start(build, *flags, "--out", str(broken), sleep=0.02)
    deadline = time.time() + 60
    while time.time() < deadline and logged(broken) < 25:  # checkpoint at 20, rows past it
        time.sleep(0.01)
    assert doomed.poll() is None, "the run ended before it could be killed"
    os.kill(doomed.pid, signal.SIGKILL)
    doomed.wait()
    step = torch.load(broken / "checkpoint.pt", weights_only=True)["step"]
    assert 20 <= step < logged(broken) < 100 and not (broken / "final.json").exists()
    assert finish(unbroken)[0] == 0

    code, _, err = finish(start(build, "--out", str(broken), "--resume"))  # args from checkpoint
    assert code == 0, err
    a, b = weights(whole), weights(broken)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert (whole / "metrics.csv").read_text() == (broken / "metrics.csv").read_text()


def run_here(build: Path, *args: str) -> int:
    """train.py in this process, where torch is imported already: quicker than a child."""
    siblings = ("model", "optimizer", "certificate", "data", "metrics", "generate")
    saved = (
        sys.argv,
        list(sys.path),
        {name: sys.modules.pop(name, None) for name in siblings},
    )
    sys.argv = ["train.py", *args]
    try:
        runpy.run_path(str(build / "train.py"), run_name="__main__")
    except SystemExit as e:
        return e.code
    finally:
        sys.argv, sys.path[:] = saved[0], saved[1]
        for name, module in saved[2].items():
            sys.modules.pop(name, None)
            if module is not None:
                sys.modules[name] = module
    return 0


def test_bad_data_exits_2_with_one_line_and_no_traceback(tmp_path, capsys):
    build = make_build(tmp_path)
    code, out, err = finish(start(build, "--data", str(tmp_path / "missing.csv")))
    assert (code, out) == (2, "") and "Traceback" not in err
    assert err == f"train.py: error: no such data file: {tmp_path / 'missing.csv'}\n"

    (tmp_path / "short.csv").write_text("1,2,3,0\n")  # 3 features, the model takes 16
    (tmp_path / "labels.csv").write_text(",".join(["0.5"] * 16 + ["7"]) + "\n")  # 3 classes
    (tmp_path / "text.csv").write_text(",".join(["a"] * 16 + ["1"]) + "\n")
    (tmp_path / "latin1.csv").write_bytes(",".join(["0.5"] * 16 + ["1"]).encode() + b"\xe9\n")
    (tmp_path / "plain.csv.gz").write_text(",".join(["0.5"] * 16 + ["1"]) + "\n")
    torch.save({"x": torch.zeros(5, 7), "y": torch.zeros(5)}, tmp_path / "narrow.pt")
    torch.save({"x": torch.zeros(5, 16), "y": torch.zeros(5, 2)}, tmp_path / "labels2d.pt")
    capsys.readouterr()
    for name, expected in [
        ("short.csv", "row 1: 3 features; the model takes 16"),
        ("labels.csv", "must be integers in [0, 3); found 7 to 7"),
        ("text.csv", "not a number: 'a'"),
        ("latin1.csv", "not UTF-8 text: byte 0xe9"),
        ("plain.csv.gz", "cannot be read: Not a gzipped file"),
        ("narrow.pt", 'expected {"x": float tensor (N, *(1, 4, 4))'),
        ("labels2d.pt", '"y": labels (N,)'),
    ]:
        assert run_here(build, "--data", str(tmp_path / name)) == 2
        out, err = capsys.readouterr()
        assert out == "" and err.startswith("train.py: error: ") and err.count("\n") == 1
        assert expected in err, err


# -- real builds: the dualized optimizer's state through a kill, and the Lipschitz cap ------

KILLER = """
import os, runpy, signal, sys, torch
count = [0]
def hook(module, args, out):  # SIGKILL ourselves in the forward pass of step KILL_AT
    if type(module).__name__ == "Network" and module.training:
        count[0] += 1
        if count[0] == int(os.environ["KILL_AT"]):
            os.kill(os.getpid(), signal.SIGKILL)
torch.nn.modules.module.register_module_forward_hook(hook)
sys.argv = sys.argv[1:]
runpy.run_path(sys.argv[0], run_name="__main__")
"""


def compiled(root: Path, spec: str, params: dict[str, int], optimizer: str = "") -> Path:
    """A build of specs/`spec` with `params`, and an `optimizer:` section appended."""
    from modc.compiler import compile_spec

    path = root / spec
    path.write_text((Path(__file__).parents[1] / "specs" / spec).read_text() + optimizer)
    return compile_spec(path, root / "build", [f"{k}={v}" for k, v in params.items()])


def launch(build: Path, *args: str, kill_at: int = 0) -> subprocess.Popen:
    """train.py in a child process; with `kill_at`, it SIGKILLs itself at that step."""
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", KILL_AT=str(kill_at))
    pre = ["-c", KILLER] if kill_at else []
    return subprocess.Popen(
        [sys.executable, *pre, str(build / "train.py"), *args],
        cwd=build.parent,
        env=env,
        text=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )


def run_train(build: Path, *args: str) -> tuple[int, str]:
    code, _, err = finish(launch(build, *args))
    return code, err


def test_compiled_dualized_run_killed_and_resumed_ends_like_an_unbroken_one(tmp_path):
    build = compiled(tmp_path, "mlp.yaml", {"width": 16, "depth": 3})
    flags = ["--data", "synthetic", "--steps", "60", "--batch-size", "32", "--lr", "0.05"]
    flags += ["--checkpoint-every", "10", "--certify-every", "5", "--eval-every", "20", "--quiet"]
    flags += ["--log-every", "1"]
    whole, broken = tmp_path / "whole", tmp_path / "broken"
    unbroken = launch(build, *flags, "--out", str(whole))
    doomed = launch(build, *flags, "--out", str(broken), kill_at=27)
    assert finish(unbroken)[::2] == (0, "")
    assert finish(doomed)[0] == -signal.SIGKILL
    ckpt = torch.load(broken / "checkpoint.pt", weights_only=True)
    assert ckpt["step"] == 20 and logged(broken) == 26
    assert any("momentum_buffer" in s for s in ckpt["optimizer"]["state"].values())

    code, err = run_train(build, "--out", str(broken), "--resume")
    assert code == 0, err
    a, b = weights(whole), weights(broken)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    end_a, end_b = (torch.load(r / "checkpoint.pt", weights_only=True) for r in (whole, broken))
    buffers = [
        [s["momentum_buffer"] for s in e["optimizer"]["state"].values()] for e in (end_a, end_b)
    ]
    assert all(torch.equal(x, y) for x, y in zip(*buffers, strict=True))
    for name in ("metrics.csv", "certificates.jsonl"):
        assert (whole / name).read_text() == (broken / name).read_text(), name


def test_a_hard_capped_run_killed_and_resumed_ends_like_an_unbroken_one(tmp_path):
    """The cap's warm start (the last Krylov block of each bank) decides its bound, and so
    how far a weight above its cap is scaled: the checkpoint keeps it, or a resumed run
    starts it cold and its weights drift from the unbroken run's."""
    sizes = {"width": 16, "depth": 1, "heads": 2, "context": 16}
    build = compiled(tmp_path, "gpt_certified.modc", sizes)
    flags = ["--data", "shakespeare", "--steps", "24", "--batch-size", "8", "--quiet"]
    flags += ["--checkpoint-every", "5", "--eval-every", "0"]
    whole, broken = tmp_path / "whole", tmp_path / "broken"
    unbroken = launch(build, *flags, "--out", str(whole))
    doomed = launch(build, *flags, "--out", str(broken), kill_at=13)
    assert finish(unbroken)[::2] == (0, "")
    assert finish(doomed)[0] == -signal.SIGKILL
    assert torch.load(broken / "checkpoint.pt", weights_only=True)["step"] == 10

    code, err = run_train(build, "--out", str(broken), "--resume")
    assert code == 0, err
    a, b = weights(whole), weights(broken)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_hard_cap_keeps_the_certificate_under_the_spec_bound_for_500_steps(tmp_path):
    build = compiled(
        tmp_path, "mlp.yaml", {"width": 32, "depth": 3}, "optimizer:\n  lipschitz: 2\n"
    )
    run = tmp_path / "run"
    flags = ["--data", "synthetic", "--steps", "500", "--lr", "0.2", "--certify-every", "10"]
    code, err = run_train(build, *flags, "--eval-every", "0", "--quiet", "--out", str(run))
    assert code == 0, err
    rows = [r.split(",") for r in (run / "metrics.csv").read_text().splitlines()[1:]]
    logged = [(int(r[0]), float(r[5])) for r in rows if r[5]]
    assert [s for s, _ in logged] == list(range(10, 501, 10))
    assert all(upper <= 2 for _, upper in logged), max(u for _, u in logged)
    reports = [json.loads(r) for r in (run / "certificates.jsonl").read_text().splitlines()]
    caps = reports[0]["constraint"]["atom_caps"]  # a chain of three: the bound is their product
    assert math.prod(caps.values()) == pytest.approx(2)
    assert all(r["constraint"]["within"] for r in reports)
    at_cap = [
        r["step"]
        for r in reports
        if any(a["lipschitz"] > 0.99 * a["cap"] for a in r["atoms"].values())
    ]
    assert at_cap, "the cap never bound: the test would prove nothing"
    assert json.loads((run / "certificate.json").read_text())["lipschitz_upper"] <= 2


def test_every_optimizer_kind_trains_from_the_same_build(tmp_path, capsys, one_thread):
    build = compiled(tmp_path, "mlp.yaml", {"width": 8, "depth": 2}, "optimizer:\n  lipschitz: 3\n")
    kinds = ["dualized", "normalized:sgd", "normalized:adam", "normalized:adafactor", "adamw"]
    kinds += ["muon"] if hasattr(torch.optim, "Muon") else []
    flags = ["--data", "synthetic", "--steps", "12", "--batch-size", "16", "--quiet"]
    for kind in kinds:
        run = tmp_path / kind.replace(":", "-")
        lr = "0.001" if kind == "adamw" else "0.05"
        code = run_here(build, *flags, "--lr", lr, "--optimizer", kind, "--out", str(run))
        assert code == 0, capsys.readouterr().err
        ckpt = torch.load(run / "checkpoint.pt", weights_only=True)
        assert ckpt["args"]["optimizer"] == kind and ckpt["step"] == 12
        cert = json.loads((run / "certificate.json").read_text())
        assert cert["lipschitz_upper"] <= cert["constraint"]["lipschitz_bound"] <= 3
    code = run_here(build, *flags, "--optimizer", "lion", "--out", str(tmp_path / "x"))
    assert code == 2 and "invalid choice: 'lion'" in capsys.readouterr().err


@pytest.mark.parametrize(
    "flags,expected",
    [
        (["--lr", "nan"], "--lr must be a finite number ≥ 0, got nan"),
        (["--lr", "inf"], "--lr must be a finite number ≥ 0, got inf"),
        (["--lr", "-0.1"], "--lr must be a finite number ≥ 0, got -0.1"),
        (["--momentum", "1"], "--momentum must be a number in [0, 1), got 1.0"),
        (["--beta2", "nan"], "--beta2 must be a number in [0, 1), got nan"),
        (["--seed", str(2**64)], f"--seed must be an integer in [0, 2^64), got {2**64}"),
        (["--batch-size", "0"], "--batch-size must be an integer ≥ 1, got 0"),
        (["--max-skips", "0"], "--max-skips must be an integer ≥ 1, got 0"),
    ],
)
def test_bad_numbers_on_the_command_line_exit_2_with_one_line(tmp_path, capsys, flags, expected):
    build = make_build(tmp_path)
    assert run_here(build, *flags, "--out", str(tmp_path / "run")) == 2
    out, err = capsys.readouterr()
    assert (out, err) == ("", f"train.py: error: {expected}\n")


def test_the_largest_seed_trains(tmp_path, capsys):
    build = make_build(tmp_path)
    flags = ["--steps", "3", "--seed", str(2**64 - 1), "--quiet", "--out", str(tmp_path / "r")]
    assert run_here(build, *flags) == 0, capsys.readouterr().err


def train_module(build: Path) -> dict:
    """train.py's functions (digest, ...), loaded without running it."""
    siblings = ("model", "optimizer", "certificate", "data", "metrics", "generate")
    saved = list(sys.path), {name: sys.modules.pop(name, None) for name in siblings}
    try:
        return runpy.run_path(str(build / "train.py"), run_name="train")
    finally:
        sys.path[:] = saved[0]
        for name, module in saved[1].items():
            sys.modules.pop(name, None)
            if module is not None:
                sys.modules[name] = module


def resealed(ckpt: dict, digest) -> dict:
    """`ckpt` with a fresh checksum of its (changed) contents."""
    content = {k: v for k, v in ckpt.items() if k != "sha256"}
    return {**content, "sha256": digest(content)}


def test_every_damaged_checkpoint_is_refused_with_one_line_and_left_as_it_is(tmp_path, capsys):
    build = make_build(tmp_path)
    run = tmp_path / "run"
    flags = ["--steps", "10", "--checkpoint-every", "5", "--quiet", "--out", str(run)]
    assert run_here(build, *flags) == 0
    path = run / "checkpoint.pt"
    good, metrics = path.read_bytes(), (run / "metrics.csv").read_bytes()
    digest = train_module(build)["digest"]
    ckpt = torch.load(path, weights_only=True)

    other = tmp_path / "other"  # another network: a checkpoint whose checksum holds
    other.mkdir()
    (other / "model.py").write_text(MODEL.replace("nn.Linear(16, 32)", "nn.Linear(16, 8)"))
    (other / "model.py").write_text(
        (other / "model.py").read_text().replace("nn.Linear(32, 3)", "nn.Linear(8, 3)")
    )
    foreign = tmp_path / "foreign.pt"
    for name in (
        "optimizer.py",
        "certificate.py",
        "spec.json",
        "train.py",
        "data.py",
        "options.py",
        "metrics.py",
        "generate.py",
    ):
        (other / name).write_bytes((build / name).read_bytes())
    assert run_here(other, *flags[:-1], str(tmp_path / "o")) == 0
    foreign.write_bytes((tmp_path / "o" / "checkpoint.pt").read_bytes())

    flipped = bytearray(good)
    gen = torch.Generator().manual_seed(0)
    for i in torch.randperm(len(good), generator=gen)[:64].tolist():
        flipped[i] ^= 0xFF
    no_args = resealed({k: v for k, v in ckpt.items() if k != "args"}, digest)
    bad_lr = resealed({**ckpt, "args": {**ckpt["args"], "lr": "fast"}}, digest)
    unsealed = {k: v for k, v in ckpt.items() if k != "sha256"}
    model = {k: v.clone() for k, v in ckpt["model"].items()}
    next(iter(model.values())).view(-1)[0] += 1  # one weight changed, the checksum kept
    cases = {
        "truncated": (good[: len(good) // 2], "cannot be read as a checkpoint"),
        "random bytes": (bytes(torch.randint(0, 256, (len(good),)).tolist()), "cannot be read"),
        "64 flipped bytes": (bytes(flipped), ""),  # unreadable, or its checksum fails
        "a changed weight": ({**ckpt, "model": model}, "is damaged: its contents do not match"),
        "another build's": (foreign.read_bytes(), "is for another network or optimizer"),
        "no args": (no_args, "has no args of type dict"),
        "mistyped args": (bad_lr, "has a bad args.lr: it must be a finite number ≥ 0, got 'fast'"),
        "no checksum": (unsealed, "not a checkpoint of train.py (no checksum)"),
        "a folder": (None, "cannot be read as a checkpoint (IsADirectoryError)"),
    }
    capsys.readouterr()
    for case, (content, expected) in cases.items():
        path.unlink(missing_ok=True)
        if content is None:
            path.mkdir()
        elif isinstance(content, dict):
            torch.save(content, path)
        else:
            path.write_bytes(content)
        before = None if content is None else path.read_bytes()
        assert run_here(build, "--out", str(run), "--resume") == 2, case
        out, err = capsys.readouterr()
        assert out == "" and err.startswith(f"train.py: error: {path}") and err.count("\n") == 1
        assert expected in err and "it is left as it is" in err, (case, err)
        assert path.is_dir() if content is None else path.read_bytes() == before, case
        assert (run / "metrics.csv").read_bytes() == metrics, case
        if content is None:
            path.rmdir()
    path.write_bytes(good)
    assert run_here(build, "--out", str(run), "--resume") == 0


def test_a_second_run_on_the_same_out_is_refused_while_the_first_runs(tmp_path, capsys):
    build = make_build(tmp_path)
    run = tmp_path / "run"
    flags = ["--steps", "40", "--checkpoint-every", "1", "--quiet", "--out", str(run)]
    first = start(build, *flags, sleep=0.05)
    deadline = time.time() + 60
    while time.time() < deadline and logged(run) < 3:
        time.sleep(0.01)
    assert first.poll() is None, "the first run ended before the second began"
    for extra in ([], ["--resume"]):
        assert run_here(build, *flags, *extra) == 2
        err = capsys.readouterr().err
        assert err == (
            f"train.py: error: {run} is in use by another run of train.py; "
            "let it finish, or pass another --out\n"
        )
    code, _, err = finish(first)
    assert code == 0, err
    steps = [int(r.split(",")[0]) for r in (run / "metrics.csv").read_text().splitlines()[1:]]
    assert steps == list(range(1, 41))
    assert run_here(build, *flags, "--steps", "1") == 0  # the lock went with the first run


def test_a_run_removes_its_own_stale_temp_files_and_no_one_elses(tmp_path, capsys):
    """A killed run leaves its temp files (FILE.XXXX.tmp) in --out, and the next run removes
    them; a file or folder of the user's that also ends in .tmp stays."""
    build = make_build(tmp_path)
    run = tmp_path / "run"
    run.mkdir()
    (run / "notes.tmp").write_text("mine\n")
    (run / "drafts.tmp").mkdir()
    (run / "checkpoint.pt.k2j4x9.tmp").write_bytes(b"torn")
    (run / "metrics.csv.tmp").write_text("step,lo")
    assert run_here(build, "--steps", "2", "--quiet", "--out", str(run)) == 0, capsys.readouterr()
    assert (run / "notes.tmp").read_text() == "mine\n" and (run / "drafts.tmp").is_dir()
    assert not [p for p in run.glob("*.tmp") if p.name not in ("notes.tmp", "drafts.tmp")]


def test_every_optimizer_setting_has_a_flag_recorded_in_the_runs_args(tmp_path, capsys, one_thread):
    from modc.codegen.settings import KEYS

    build = compiled(tmp_path, "mlp.yaml", {"width": 8, "depth": 3}, "optimizer:\n  lipschitz: 3\n")
    runs = {
        "muon": {"momentum": 0.9, "nesterov": False, "weight_decay": 0.01, "adamw_lr": 0.002}
        | {"beta1": 0.8, "beta2": 0.95, "eps": 1e-6},
        "dualized": {"polar": "muon", "constraint": "normalize"},
        "normalized:adafactor": {"decay": 0.8},
        "adafactor": {"clip": 2.0, "eps1": 1e-20, "eps2": 0.01},
    }
    # every setting a spec can hold has a flag, but the bound, which is compiled into the caps;
    # gauss_newton's (loss, rtol, atol) on a reversible build: tests/test_gauss_newton.py
    gauss_newton = {"loss", "rtol", "atol"}
    assert set(KEYS) - {"kind", "lipschitz", "max_norm"} - gauss_newton == {
        k for r in runs.values() for k in r
    }
    groups = {}
    for kind, settings in runs.items():
        run = tmp_path / kind.replace(":", "-")
        flags = ["--data", "synthetic", "--steps", "2", "--batch-size", "8", "--quiet"]
        flags += ["--schedule", "constant", "--optimizer", kind, "--out", str(run)]
        for key, value in settings.items():
            flag = "--" + key.replace("_", "-")
            flags += ["--no-nesterov"] if key == "nesterov" else [flag, str(value)]
        assert run_here(build, *flags) == 0, capsys.readouterr().err
        ckpt = torch.load(run / "checkpoint.pt", weights_only=True)
        assert {k: ckpt["args"][k] for k in settings} == settings
        groups[kind] = ckpt["optimizer"]
    muon, adamw = (part["param_groups"][0] for part in groups["muon"]["parts"])
    assert (muon["lr"], muon["momentum"], muon["nesterov"], muon["weight_decay"]) == (
        0.05,  # the spec's
        0.9,
        False,
        0.01,
    )
    assert (adamw["lr"], adamw["betas"], adamw["eps"]) == (0.002, (0.8, 0.95), 1e-6)
    assert groups["dualized"]["param_groups"][0]["polar"] == {"method": "muon", "steps": 5}
    assert groups["normalized:adafactor"]["param_groups"][0]["decay"] == 0.8
    adafactor = groups["adafactor"]["param_groups"][0]
    assert (adafactor["clip"], adafactor["eps1"], adafactor["eps2"]) == (2.0, 1e-20, 0.01)


POISON = """
import os, runpy, sys, torch
count, bad = [0], dict(item.split("=") for item in os.environ["POISON"].split(","))
def hook(module, args, out):  # in training step s: a NaN gradient, or an infinite loss
    if type(module).__name__ == "Network" and module.training:
        count[0] += 1
        what = bad.get(str(count[0]))
        if what == "grad":
            out.register_hook(lambda g: g * float("nan"))
        if what == "loss":
            return out * float("inf")
torch.nn.modules.module.register_module_forward_hook(hook)
sys.argv = sys.argv[1:]
runpy.run_path(sys.argv[0], run_name="__main__")
"""


def poisoned(build: Path, poison: str, *args: str) -> tuple[int, str]:
    """train.py with the steps in `poison` ("3=grad,9=loss") made non-finite."""
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", POISON=poison)
    proc = subprocess.run(
        [sys.executable, "-c", POISON, str(build / "train.py"), *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    return proc.returncode, proc.stderr


@pytest.mark.parametrize("kind", ["dualized", "muon"])
def test_non_finite_steps_are_skipped_counted_and_training_goes_on(tmp_path, kind):
    build = compiled(tmp_path, "mlp.yaml", {"width": 8, "depth": 2})
    run = tmp_path / "run"
    flags = ["--data", "synthetic", "--steps", "20", "--batch-size", "16", "--lr", "0.05"]
    flags += ["--optimizer", kind, "--eval-every", "0", "--out", str(run)]
    code, err = poisoned(build, "3=grad,4=grad,11=loss", *flags)
    assert code == 0, err
    rows = [r.split(",") for r in (run / "metrics.csv").read_text().splitlines()[1:]]
    skipped = [int(r[6]) for r in rows]
    assert skipped == [0, 0, 1, 2, 2, 2, 2, 2, 2, 2, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3]
    assert rows[10][1] == "nan" and all(math.isfinite(float(r[1])) for r in rows[11:])
    assert err.splitlines()[-1].startswith("step 20/20 [####################] loss ")
    assert " (3 skipped) | " in err.splitlines()[-1]
    assert all(w.isfinite().all() for w in weights(run).values())
    assert torch.load(run / "checkpoint.pt", weights_only=True)["skipped"] == 3


def test_too_many_skipped_steps_in_a_row_stop_the_run(tmp_path):
    build = compiled(tmp_path, "mlp.yaml", {"width": 8, "depth": 2})
    run = tmp_path / "run"
    flags = ["--data", "synthetic", "--steps", "20", "--batch-size", "16", "--quiet"]
    poison = ",".join(f"{s}=grad" for s in range(5, 21))
    code, err = poisoned(build, poison, *flags, "--max-skips", "4", "--out", str(run))
    assert code == 1
    head, loss, tail = re.fullmatch(r"(.*) \(loss ([^)]*)\) (.*)\n", err).groups()
    assert (
        head == "train.py: error: 4 steps in a row, up to step 8, had a non-finite loss or gradient"
    )
    assert math.isfinite(float(loss)) and tail.startswith(
        "and were skipped; stopping, with the last"
    )


def test_an_out_that_cannot_be_a_folder_exits_2_with_one_line(tmp_path, capsys):
    build = make_build(tmp_path)
    (tmp_path / "file").write_text("mine\n")
    for out, reason in [
        (tmp_path / "file", "File exists"),
        (tmp_path / "file" / "x", "Not a directory"),
    ]:
        assert run_here(build, "--out", str(out)) == 2
        assert capsys.readouterr().err == f"train.py: error: --out {out}: {reason}\n"
    assert (tmp_path / "file").read_text() == "mine\n"
    assert run_here(build, "--out", "") == 2  # an unset variable, say: not the working dir
    assert capsys.readouterr().err == "train.py: error: --out must name a folder, got ''\n"
