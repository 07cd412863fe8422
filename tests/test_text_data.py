"""Byte-level text data in a build (templates/data.py): the GPT of specs/gpt.modc trains on
the shipped Shakespeare, resumes exactly, and bad text or a wrong model fails clearly."""

import importlib.util
import json
import math
import signal
from pathlib import Path
from types import ModuleType

import pytest
import torch

from modc.compiler import compile_spec
from tests.conftest import SPECS
from tests.test_train_template import (
    compiled,
    finish,
    launch,
    logged,
    run_here,
    weights,
)

SMALL = ["width=32", "depth=1", "context=16"]
FLAGS = ["--steps", "30", "--checkpoint-every", "10", "--eval-every", "10", "--quiet"]
FLAGS += ["--log-every", "1"]  # rows past the checkpoint, which --resume drops


@pytest.fixture(scope="module")
def gpt(tmp_path_factory) -> Path:
    return compile_spec(SPECS / "gpt.modc", tmp_path_factory.mktemp("gpt") / "build", SMALL)


@pytest.fixture(scope="module")
def whole(gpt, tmp_path_factory) -> Path:
    """An unbroken 30-step run on the spec's data, shakespeare."""
    run = tmp_path_factory.mktemp("whole")
    code, _, err = finish(launch(gpt, *FLAGS, "--out", str(run)))
    assert code == 0, err
    return run


def data_module(build: Path) -> ModuleType:
    """The build's data.py, imported from its file."""
    spec = importlib.util.spec_from_file_location("build_data", build / "data.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_gpt_learns_shakespeare_in_30_steps(gpt, whole):
    assert (gpt / "data" / "shakespeare.txt").stat().st_size == 1_055_094
    assert json.loads((gpt / "spec.json").read_text())["train"]["data"] == "shakespeare"
    losses = [float(r.split(",")[1]) for r in (whole / "metrics.csv").read_text().split()[1:]]
    assert len(losses) == 30 and sum(losses[-5:]) < sum(losses[:5]) - 0.5, losses
    final = json.loads((whole / "final.json").read_text())
    assert set(final) == {"steps", "tokens", "train_loss", "eval_loss", "eval_acc", "seconds"}
    assert final["eval_loss"] < math.log(128) and 0 < final["eval_acc"] < 1


@pytest.mark.usefixtures("one_thread")  # as in the child processes: the same float sums
def test_text_run_killed_and_resumed_ends_like_an_unbroken_one(gpt, whole, tmp_path):
    broken = tmp_path / "broken"
    assert finish(launch(gpt, *FLAGS, "--out", str(broken), kill_at=17))[0] == -signal.SIGKILL
    assert torch.load(broken / "checkpoint.pt", weights_only=True)["step"] == 10
    assert logged(broken) == 16

    assert run_here(gpt, "--out", str(broken), "--resume", "--quiet") == 0
    a, b = weights(whole), weights(broken)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert (whole / "metrics.csv").read_text() == (broken / "metrics.csv").read_text()
    ends = [json.loads((run / "final.json").read_text()) for run in (whole, broken)]
    assert [end.pop("seconds") > 0 for end in ends] == [True, True] and ends[0] == ends[1]


def test_text_batches_are_a_function_of_seed_and_step(gpt):
    data = data_module(gpt)
    positions = torch.arange(10_000)  # each token is its own offset
    text = data.Text(positions, 16)
    x, y = text.batch(7, 8, 0)
    assert x.shape == y.shape == (8, 16) and x.dtype == y.dtype == torch.long
    assert torch.equal(y, x + 1) and (y[:, -1] < 9_000).all()  # inside the first 90%
    assert torch.equal(torch.cat(text.batch(7, 8, 0)), torch.cat((x, y)))
    assert not torch.equal(text.batch(8, 8, 0)[0], x) and not torch.equal(text.batch(7, 8, 1)[0], x)

    held_x, held_y = text.held_out()
    starts = held_x[:, 0].tolist()
    assert len(starts) == 1_000 // 17 and starts[0] == 9_000 and held_y[-1, -1] == 9_999
    assert all(b - a >= 17 for a, b in zip(starts, starts[1:], strict=False))
    assert torch.equal(held_y, held_x + 1)

    shakespeare = data.load("shakespeare", (16,), (16, 128))
    assert shakespeare.held_out()[0].shape == (data.HELD_WINDOWS, 16)
    assert torch.equal(shakespeare.batch(3, 4, 5)[0], shakespeare.batch(3, 4, 5)[0])
    with pytest.raises(data.DataError, match="vocab is 65: set vocab ≥ 128$"):
        data.load("shakespeare", (16,), (16, 65))  # ASCII: 128 will do
    for vocab in (256, 300):  # every byte fits (uint8 tokens must not wrap the comparison)
        assert data.load("shakespeare", (16,), (16, vocab)).held_out()


def test_bad_text_exits_2_with_one_line_and_no_traceback(gpt, tmp_path, capsys):
    (tmp_path / "latin1.txt").write_bytes(b"caf\xc8 au lait, " * 20)
    (tmp_path / "short.txt").write_bytes(b"to be or not to be")
    for name, expected in [
        (
            "latin1.txt",
            "latin1.txt: byte 200 at offset 3; the model's vocab is 128: set vocab ≥ 256\n",
        ),
        ("short.txt", "18 bytes of text are too few"),
        ("missing.txt", "no such data file"),
    ]:
        assert run_here(gpt, "--data", str(tmp_path / name), "--out", str(tmp_path / "r")) == 2
        out, err = capsys.readouterr()
        assert out == "" and err.startswith("train.py: error: ") and err.count("\n") == 1
        assert expected in err, err


def test_text_on_a_model_that_is_not_a_sequence_model_says_so(tmp_path, capsys):
    build = compiled(tmp_path, "mlp.yaml", {"width": 8, "depth": 2})
    assert run_here(build, "--data", "shakespeare", "--out", str(tmp_path / "run")) == 2
    err = capsys.readouterr().err
    assert err == (
        "train.py: error: --data shakespeare is text, for a model from byte tokens of shape "
        "(context,) to next-byte logits (context, vocab); this model maps (1, 28, 28) to (10,)\n"
    )
