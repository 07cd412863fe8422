"""The `adafactor` kind: torch's Adafactor as an oracle, its settings, every shipped spec."""

from __future__ import annotations

import copy
import io
import math
import subprocess
import sys

import pytest
import torch
from torch import nn

import modc
from modc.compiler import _import
from modc.errors import ModcError
from modc.runtime.optim import Adafactor, Normalized, clip_rms, threshold
from tests.conftest import ROOT, SPECS

pytestmark = pytest.mark.usefixtures("one_thread")


class Net(nn.Module):
    """Matrices, vectors and a 3-axis weight (factored over its last two axes)."""

    def __init__(self, seed: int) -> None:
        super().__init__()
        torch.manual_seed(seed)
        self.a = nn.Linear(7, 13)
        self.b = nn.Linear(13, 5)
        self.mix = nn.Parameter(torch.randn(2, 5, 5) / 3)
        self.gain = nn.Parameter(torch.ones(5))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.b(torch.tanh(self.a(x)))
        return self.gain * (h + torch.einsum("bj,kij->bi", h, self.mix))


def steps(net: nn.Module, opt: torch.optim.Optimizer, count: int, start: int = 0):
    """`count` steps on random regression batches; yields after each."""
    for t in range(start, start + count):
        gen = torch.Generator().manual_seed(t)
        x = torch.randn(16, 7, generator=gen, dtype=torch.float64)
        y = torch.randn(16, 5, generator=gen, dtype=torch.float64)
        opt.zero_grad()
        nn.functional.mse_loss(net(x), y).backward()
        opt.step()
        yield t


@pytest.mark.parametrize("seed,weight_decay", [(0, 0.0), (1, 0.1)])
def test_adafactor_with_decay_08_and_clip_1_is_torchs_adafactor(seed, weight_decay):
    if not hasattr(torch.optim, "Adafactor"):
        pytest.skip("torch.optim.Adafactor needs torch >= 2.5")
    ours, theirs = Net(seed).double(), Net(seed).double()
    kw = {"lr": 0.02, "weight_decay": weight_decay}
    opt_ours = Adafactor(ours.parameters(), decay=0.8, clip=1.0, **kw)
    opt_theirs = torch.optim.Adafactor(theirs.parameters(), beta2_decay=-0.8, d=1.0, **kw)
    for _ in zip(steps(ours, opt_ours, 100), steps(theirs, opt_theirs, 100), strict=True):
        for p, q in zip(ours.parameters(), theirs.parameters(), strict=True):
            assert (p - q).norm() <= 1e-6 * q.norm()
    start = Net(seed).double()
    assert (ours.a.weight - start.a.weight).norm() > 0.1 * start.a.weight.norm()  # it moved


def test_clipping_thresholds():
    assert threshold(None, None, 1.0, 7) is None
    assert threshold(1.0, None, 1.0, 7) == 1.0
    assert threshold(None, 2.0, 0.8, 16) == pytest.approx(16 ** (0.8 / 2))
    u = torch.randn(40, 30) * 5
    assert clip_rms(u, 2.0).pow(2).mean().sqrt() == pytest.approx(2.0)
    small = torch.randn(40, 30) * 1e-3
    assert torch.equal(clip_rms(small, 1.0), small)


@pytest.mark.parametrize(
    "options",
    [{}, {"clip": 1.0}, {"clip_alpha": 2.0, "momentum": 0.9}, {"weight_decay": 0.0, "decay": 0.5}],
)
def test_a_zero_gradient_leaves_the_weights_alone(options):
    net = Net(0)
    opt = Adafactor(net.parameters(), lr=0.01, **options)
    before = copy.deepcopy(net.state_dict())
    for _ in range(3):
        for p in net.parameters():
            p.grad = torch.zeros_like(p)
        opt.step()
    for name, p in net.state_dict().items():
        assert torch.equal(p, before[name]), name
    assert all(
        torch.isfinite(v).all()
        for s in opt.state.values()
        for v in s.values()
        if isinstance(v, torch.Tensor)
    )


def test_without_momentum_a_zero_gradient_stops_the_weights_mid_run():
    net = Net(0).double()
    opt = Adafactor(net.parameters(), lr=0.01, clip_alpha=3.0)
    list(steps(net, opt, 5))
    before = copy.deepcopy(net.state_dict())
    for p in net.parameters():
        p.grad = torch.zeros_like(p)
    opt.step()
    assert all(torch.equal(p, before[n]) for n, p in net.state_dict().items())


@pytest.mark.parametrize("options", [{}, {"momentum": 0.9, "clip": 1.0, "weight_decay": 0.1}])
def test_state_dict_round_trip(options):
    def make(net):
        return Adafactor(net.parameters(), lr=0.01, decay=0.8, **options)

    net_a = Net(0).double()
    opt_a = make(net_a)
    list(steps(net_a, opt_a, 4))
    saved = copy.deepcopy(net_a.state_dict())
    blob = io.BytesIO()
    torch.save(opt_a.state_dict(), blob)
    list(steps(net_a, opt_a, 4, start=4))
    net_b = Net(1).double()
    net_b.load_state_dict(saved)
    opt_b = make(net_b)
    blob.seek(0)
    opt_b.load_state_dict(torch.load(blob, weights_only=True))
    list(steps(net_b, opt_b, 4, start=4))
    for p, q in zip(net_a.parameters(), net_b.parameters(), strict=True):
        assert torch.equal(p, q)


def test_bad_hyperparameters_are_refused():
    params = Net(0).parameters()
    for bad in [
        {"decay": 0},
        {"clip": 0.0},
        {"clip_alpha": 1.0},
        {"eps1": 0.0},
        {"clip": 1.0, "clip_alpha": 2.0},
        {"lr": math.nan},
    ]:
        with pytest.raises(ValueError):
            Adafactor(params, **bad)


def test_normalized_adafactor_takes_decay_and_clip():
    net = Net(0)
    group = [{"params": [net.a.weight], "targets": [1.0], "atom": "L"}]
    norms = {"L": lambda w: w.norm().item()}
    opt = Normalized(group, norms, 0.1, "adafactor", momentum=0.9, decay=0.5, clip=0.01)
    net.a.weight.grad = torch.randn_like(net.a.weight)
    before = net.a.weight.detach().clone()
    opt.step()
    assert (before - net.a.weight).norm().item() == pytest.approx(0.1)  # lr · target
    # with momentum, clipping changes what the buffer holds: Û has RMS at most d
    m = opt.state[net.a.weight]["exp_avg"]
    assert m.pow(2).mean().sqrt().item() <= 0.1 * 0.01 * (1 + 1e-5)


SIZES = {
    "mlp": {"width": 16, "depth": 2},
    "resmlp": {"width": 16, "depth": 1},
    "cnn": {"channels": 2},
    "attention": {"width": 8, "heads": 2, "context": 4},
    "transformer": {"width": 8, "depth": 1, "heads": 2, "context": 4},
    "gpt": {"width": 8, "depth": 1, "heads": 2, "context": 4},
    "gpt_modula": {"width": 8, "depth": 1, "heads": 2, "context": 4},
}
SECTION = {
    "yaml": "\noptimizer:\n  kind: adafactor\n  decay: 0.8\n  clip: alpha=2\n",
    "modc": '\noptimizer { kind = adafactor, decay = 0.8, clip = "alpha=2" }\n',
}


@pytest.mark.parametrize("stem", sorted(SIZES))
@pytest.mark.parametrize("form", ["yaml", "modc"])
def test_adafactor_trains_every_shipped_spec(tmp_path, stem, form):
    """From the spec (its optimizer section names adafactor) and as train.py's --optimizer
    passes it (kind="adafactor" on the spec as shipped): a few finite steps that move every
    weight."""
    source = SPECS / f"{stem}.{form}"
    spec = tmp_path / source.name
    spec.write_text(source.read_text() + SECTION[form])
    for path, kind in [(spec, None), (source, "adafactor")]:
        build = modc.build(path, SIZES[stem], out=tmp_path / f"b{kind}")
        assert build.optimizer.make_optimizer.__defaults__  # the spec's defaults
        data = _import(build.path / "data.py", f"data_{stem}_{form}_{kind}")
        dataset = data.load("synthetic", build.model.INPUT_SHAPE, build.model.OUTPUT_SHAPE)
        torch.manual_seed(0)
        net = build.model.build_model()
        options = {} if kind is None else {"kind": kind}
        opt = build.optimizer.make_optimizer(net, 0.01, **options)
        assert type(opt).__name__ == "Adafactor"
        assert opt.defaults["clip_alpha"] == (2.0 if kind is None else None)
        start = {n: p.detach().clone() for n, p in net.named_parameters()}
        for step in range(2):
            x, y = dataset.batch(step, 4, 0)
            logits = net(x)
            if y.dim() == 1 and logits.dim() > 2:
                y = y.view(-1, *[1] * (logits.dim() - 2)).expand(logits.shape[:-1])
            loss = nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.reshape(-1))
            opt.zero_grad()
            loss.backward()
            opt.step()
        for n, p in net.named_parameters():
            assert torch.isfinite(p).all() and not torch.equal(p, start[n]), n


def test_train_py_takes_adafactor_from_the_command_line(tmp_path):
    where = modc.build(SPECS / "gpt.yaml", SIZES["gpt"], out=tmp_path / "b").path
    run = subprocess.run(
        [
            sys.executable,
            str(where / "train.py"),
            "--optimizer",
            "adafactor",
            "--lr",
            "0.01",
            "--steps",
            "3",
            "--batch-size",
            "4",
            "--data",
            "synthetic",
            "--eval-every",
            "0",
            "--quiet",
            "--out",
            str(tmp_path / "run"),
        ],
        capture_output=True,
        text=True,
    )
    assert run.returncode == 0, run.stderr
    assert "held-out loss" in run.stdout


@pytest.mark.parametrize(
    "clip,message",
    [
        ("alpha=1", "alpha=A with A > 1"),
        (-1, "clip must be"),
        ("sometimes", "clip must be"),
        (True, "clip must be"),
    ],
)
def test_bad_clip_settings_are_refused(write_spec, clip, message):
    spec = write_spec(
        "input: 6\noutput: [3]\nnetwork:\n  - Linear: 3\n"
        f"optimizer:\n  kind: adafactor\n  clip: {clip if not isinstance(clip, bool) else 'true'}\n"
    )
    with pytest.raises(ModcError, match=message):
        modc.build(spec)


def test_the_adafactor_example_runs_quick(tmp_path):
    """`examples/adafactor/run.py --quick`: the experiment's whole pipeline at toy sizes."""
    run = subprocess.run(
        [
            sys.executable,
            str(ROOT / "examples" / "adafactor" / "run.py"),
            "--quick",
            "--jobs",
            "2",
            "--out",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
    )
    assert run.returncode == 0, run.stderr
    table = (tmp_path / "table.md").read_text()
    assert table.count("\n| mlp |") == 9 and table.count("\n| gpt |") == 9
    assert (tmp_path / "gradnorm.png").read_bytes()[:4] == b"\x89PNG"
