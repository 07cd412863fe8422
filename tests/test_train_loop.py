"""The training loop's options in a build's train.py: gradient accumulation, gradient
clipping, extending a run, batched logging, the loss (cross-entropy or MSE), CSV columns
and headers, the device, TensorBoard, and text sampled from a text model."""

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from modc.compiler import compile_spec
from tests.conftest import SPECS
from tests.test_train_template import compiled, make_build, run_here, weights

QUIET = ["--quiet", "--eval-every", "0"]


def column(run: Path, name: str) -> list[str]:
    """One column of run/metrics.csv, as text."""
    lines = (run / "metrics.csv").read_text().splitlines()
    k = lines[0].split(",").index(name)
    return [line.split(",")[k] for line in lines[1:]]


def test_grad_accum_k_with_batch_b_equals_batch_k_times_b(tmp_path, capsys, one_thread):
    """The same examples and the same mean gradient, up to float rounding; the dualized
    step's polar factor (bf16 where the CPU has it) amplifies rounding the most."""
    build = compiled(tmp_path, "mlp.yaml", {"width": 16, "depth": 3})
    for kind, tolerance in [("normalized:sgd", 1e-6), ("adamw", 1e-5), ("dualized", 1e-3)]:
        flags = ["--data", "synthetic", "--steps", "10", "--lr", "0.05", *QUIET]
        flags += ["--optimizer", kind]
        whole, accumulated = tmp_path / f"whole{kind}", tmp_path / f"accum{kind}"
        assert run_here(build, *flags, "--batch-size", "32", "--out", str(whole)) == 0
        args = ["--batch-size", "8", "--grad-accum", "4", "--out", str(accumulated)]
        assert run_here(build, *flags, *args) == 0, capsys.readouterr().err
        a, b = weights(whole), weights(accumulated)
        assert a.keys() == b.keys()
        assert max((a[k] - b[k]).abs().max() for k in a) <= tolerance, kind
        losses = [[float(v) for v in column(run, "loss")] for run in (whole, accumulated)]
        assert losses[0] == pytest.approx(losses[1], rel=1e-4), kind


def test_a_global_batch_of_micro_batches_larger_than_the_data_is_refused(tmp_path, capsys):
    """100 examples (90 train), --batch-size 100 --grad-accum 2: the second micro-batch had
    none, so every step's loss was NaN and skipped, and the run ended with exit status 0
    having trained nothing; a batch schedule past the data hung building its micro-batches.
    Both are refused with one line (one micro-batch of the whole set still trains)."""
    build = compiled(tmp_path, "mlp.yaml", {"width": 16, "depth": 2})
    data = tmp_path / "small.pt"
    g = torch.Generator().manual_seed(0)
    torch.save({"x": torch.randn(100, 1, 28, 28, generator=g), "y": torch.arange(100) % 10}, data)
    flags = ["--data", str(data), "--steps", "3", *QUIET]
    for args in [
        ["--batch-size", "100", "--grad-accum", "2"],
        ["--batch-size", "8", "--batch-schedule", "linear:99999999999999999999->1"],
    ]:
        assert run_here(build, *flags, *args, "--out", str(tmp_path / "refused")) == 2
        assert "is more than the 90 that the data set trains on" in capsys.readouterr().err
    assert run_here(build, *flags, "--batch-size", "100", "--out", str(tmp_path / "one")) == 0
    assert json.loads((tmp_path / "one" / "final.json").read_text())["train_loss"] < 10


def test_an_extended_resume_equals_one_longer_run(tmp_path, capsys):
    build = make_build(tmp_path)
    short, longer = tmp_path / "short", tmp_path / "long"
    flags = ["--schedule", "constant", "--warmup", "0", "--quiet"]
    assert run_here(build, *flags, "--steps", "20", "--out", str(short)) == 0
    assert (short / "final.json").exists()
    assert run_here(build, "--resume", "--steps", "40", "--out", str(short)) == 0
    assert run_here(build, *flags, "--steps", "40", "--out", str(longer)) == 0
    a, b = weights(short), weights(longer)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert column(short, "loss") == column(longer, "loss")
    assert json.loads((short / "final.json").read_text())["steps"] == 40
    capsys.readouterr()
    assert run_here(build, "--resume", "--steps", "30", "--out", str(short)) == 2
    assert "--steps 30, but the checkpoint in" in capsys.readouterr().err


def test_an_extended_resume_follows_the_schedule_of_the_new_total(tmp_path):
    build = make_build(tmp_path)
    short, longer = tmp_path / "short", tmp_path / "long"
    flags = ["--schedule", "linear", "--warmup", "0", "--quiet", "--lr", "0.1"]
    assert run_here(build, *flags, "--steps", "10", "--out", str(short)) == 0
    assert run_here(build, "--resume", "--steps", "20", "--out", str(short)) == 0
    assert run_here(build, *flags, "--steps", "20", "--out", str(longer)) == 0
    lrs = [float(v) for v in column(short, "lr")]
    assert lrs[:10] == pytest.approx([0.1 * (1 - s / 10) for s in range(10)])
    assert column(short, "lr")[10:] == column(longer, "lr")[10:]  # as --help says


def test_log_every_writes_the_same_rows_in_batches(tmp_path):
    build = make_build(tmp_path)
    one, seven = tmp_path / "one", tmp_path / "seven"
    assert run_here(build, "--steps", "20", "--log-every", "1", "--quiet", "--out", str(one)) == 0
    assert run_here(build, "--steps", "20", "--log-every", "7", "--quiet", "--out", str(seven)) == 0
    assert (one / "metrics.csv").read_text() == (seven / "metrics.csv").read_text()


def test_a_batch_schedule_run_logs_and_checkpoints_its_last_step(tmp_path, capsys):
    """Under --batch-schedule the run ends when its tokens are spent, not at --steps: its
    last step is logged and checkpointed all the same, so --resume finds it finished."""
    build = make_build(tmp_path)
    run = tmp_path / "run"
    flags = ["--steps", "10", "--batch-size", "8", "--batch-schedule", "linear:8->32", *QUIET]
    assert run_here(build, *flags, "--out", str(run)) == 0, capsys.readouterr().err
    steps = json.loads((run / "final.json").read_text())["steps"]
    assert steps < 10  # the batch grows: fewer steps than the fixed run's
    assert column(run, "step") == [str(s) for s in range(1, steps + 1)]
    assert torch.load(run / "checkpoint.pt", weights_only=True)["step"] == steps
    logged = (run / "metrics.csv").read_text()
    assert run_here(build, "--resume", "--out", str(run)) == 0
    assert json.loads((run / "final.json").read_text())["steps"] == steps
    assert (run / "metrics.csv").read_text() == logged


def test_clip_grad_is_recorded_and_bounds_each_step(tmp_path):
    build = make_build(tmp_path)
    start, clipped = tmp_path / "start", tmp_path / "clipped"
    flags = ["--steps", "1", "--lr", "0.1", "--warmup", "0", "--momentum", "0", "--no-nesterov"]
    flags += QUIET
    assert run_here(build, *flags, "--out", str(start)) == 0
    norm = 1e-3
    assert run_here(build, *flags, "--clip-grad", str(norm), "--out", str(clipped)) == 0
    ckpt = torch.load(clipped / "checkpoint.pt", weights_only=True)
    assert ckpt["args"]["clip_grad"] == norm
    assert torch.load(start / "checkpoint.pt", weights_only=True)["args"]["clip_grad"] == 0
    torch.manual_seed(0)  # the initial weights: train.py seeds with --seed 0, then builds
    sys.path.insert(0, str(build))
    try:
        from model import build_model

        init = build_model().state_dict()
    finally:
        sys.path.remove(str(build))
        sys.modules.pop("model", None)
    moved = torch.cat([(ckpt["model"][k] - init[k]).flatten() for k in init]).norm()
    assert moved == pytest.approx(0.1 * norm, rel=1e-3)  # SGD without momentum: lr · g


def regression_csv(path: Path, rows: int = 600) -> None:
    """16 features and 3 targets, a fixed linear map of them, under a header row."""
    g = torch.Generator().manual_seed(3)
    x = torch.randn(rows, 16, generator=g)
    y = x @ torch.randn(16, 3, generator=g) / 4
    header = [f"f{i}" for i in range(16)] + ["a", "b", "c"]
    lines = [",".join(header)] + [",".join(f"{v:.5f}" for v in r) for r in torch.cat([x, y], 1)]
    path.write_text("\n".join(lines) + "\n")


def test_mse_trains_a_regression_csv(tmp_path, capsys, one_thread):
    build = make_build(tmp_path)
    regression_csv(tmp_path / "reg.csv")
    run = tmp_path / "run"
    flags = ["--data", str(tmp_path / "reg.csv"), "--loss", "mse", "--steps", "100"]
    assert run_here(build, *flags, "--eval-every", "10", "--out", str(run)) == 0
    out = capsys.readouterr().out
    assert out.startswith("held-out loss ") and "accuracy" not in out
    final = json.loads((run / "final.json").read_text())
    evals = [float(v) for v in column(run, "eval_loss") if v]
    assert final["eval_acc"] is None and set(column(run, "eval_acc")) == {""}
    assert final["eval_loss"] < evals[0] / 5, evals  # targets' mean square is about 1


def test_mse_on_class_labels_uses_one_hot_targets(tmp_path):
    build = make_build(tmp_path)
    run = tmp_path / "run"
    assert run_here(build, "--loss", "mse", "--quiet", "--out", str(run)) == 0
    final = json.loads((run / "final.json").read_text())
    assert final["eval_acc"] > 0.6 and final["eval_loss"] < 1 / 3


def labelled_csv(path: Path, label_first: bool, header: bool) -> None:
    """Labels in [0, 3) from 16 features whose last is always 0, as an image's corner."""
    g = torch.Generator().manual_seed(4)
    x = torch.randn(300, 16, generator=g)
    x[:, -1] = 0
    y = x[:, :3].argmax(1)
    rows = []
    for xi, label in zip(x.tolist(), y.tolist(), strict=True):
        cells = [f"{v:.4f}" for v in xi]
        rows.append([str(label), *cells] if label_first else [*cells, str(label)])
    names = ["label", *(f"px{i}" for i in range(16))]
    lines = ([",".join(names)] if header else []) + [",".join(r) for r in rows]
    path.write_text("\n".join(lines) + "\n")


def test_a_label_first_csv_is_refused_with_the_column_to_pass(tmp_path, capsys):
    build = make_build(tmp_path)
    labelled_csv(tmp_path / "first.csv", label_first=True, header=False)
    flags = ["--data", str(tmp_path / "first.csv"), "--steps", "30", "--quiet"]
    assert run_here(build, *flags, "--out", str(tmp_path / "a")) == 2
    err = capsys.readouterr().err
    assert err.endswith(
        "first.csv: the label (column 16) is 0 in all 300 rows: not class labels; column 0 "
        "looks like class labels: pass --label-column 0\n"
    ), err
    assert run_here(build, *flags, "--label-column", "0", "--out", str(tmp_path / "b")) == 0
    assert json.loads((tmp_path / "b" / "final.json").read_text())["eval_acc"] > 0.6


def test_a_header_row_is_detected_and_names_the_label_column(tmp_path, capsys):
    build = make_build(tmp_path)
    labelled_csv(tmp_path / "named.csv", label_first=True, header=True)
    flags = ["--data", str(tmp_path / "named.csv"), "--steps", "30", "--quiet"]
    assert run_here(build, *flags, "--label-column", "label", "--out", str(tmp_path / "a")) == 0
    ckpt = torch.load(tmp_path / "a" / "checkpoint.pt", weights_only=True)
    assert ckpt["args"]["label_column"] == "label"
    capsys.readouterr()
    assert run_here(build, *flags, "--label-column", "lable", "--out", str(tmp_path / "b")) == 2
    assert "no column named 'lable'; the columns: label, px0," in capsys.readouterr().err
    assert run_here(build, *flags, "--no-header", "--out", str(tmp_path / "c")) == 2
    assert "not a number: 'label'" in capsys.readouterr().err


@pytest.mark.parametrize(
    "device,expected",
    [
        ("gpu", "argument --device: expected auto, cpu, cuda or cuda:N, got 'gpu'"),
        ("cuda:x", "argument --device: expected auto, cpu, cuda or cuda:N, got 'cuda:x'"),
    ]
    + ([] if torch.cuda.is_available() else [("cuda:1", "CUDA is not available")]),
)
def test_the_device_is_auto_cpu_cuda_or_cuda_n(tmp_path, capsys, device, expected):
    build = make_build(tmp_path)
    assert run_here(build, "--device", device, "--out", str(tmp_path / "run")) == 2
    assert expected in capsys.readouterr().err


def test_tensorboard_logs_when_installed_and_says_how_to_install_it_otherwise(tmp_path, capsys):
    build = make_build(tmp_path)
    run = tmp_path / "run"
    code = run_here(build, "--steps", "5", "--tensorboard", "--quiet", "--out", str(run))
    if importlib.util.find_spec("tensorboard") is None:
        assert code == 2
        assert "--tensorboard needs the tensorboard package: pip install tensorboard" in (
            capsys.readouterr().err
        )
    else:
        assert code == 0 and any((run / "tensorboard").glob("events.out.tfevents.*"))


def test_a_trained_text_model_samples_n_bytes(tmp_path, capsys, one_thread):
    small = ["width=32", "depth=1", "context=16"]
    build = compile_spec(SPECS / "gpt.modc", tmp_path / "build", small)
    run = tmp_path / "run"
    flags = ["--steps", "10", "--quiet", "--sample", "80", "--prompt", "ROMEO:", "--top-k", "5"]
    assert run_here(build, *flags, "--temperature", "0.8", "--out", str(run)) == 0
    out = capsys.readouterr().out.split("\n", 1)[1]  # after the held-out line
    sample = (run / "sample.txt").read_bytes()
    assert len(sample) == len("ROMEO:") + 80 and sample.startswith(b"ROMEO:")
    assert max(sample) < 128 and out == sample.decode() + "\n"
    command = [sys.executable, str(build / "generate.py"), str(run), "--bytes", "40"]
    done = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and len(done.stdout) == 1 + 40 + 1, done.stderr
    assert run_here(build, "--sample", "5", "--prompt", "é", "--out", str(tmp_path / "r")) == 2
    assert "--prompt: the prompt has byte 195; the model's vocab is 128" in capsys.readouterr().err


def test_sample_is_refused_for_a_model_that_is_not_a_text_model(tmp_path, capsys):
    build = make_build(tmp_path)
    assert run_here(build, "--sample", "10", "--out", str(tmp_path / "run")) == 2
    assert "--sample is for text models; this model maps (1, 4, 4) to (3,)" in (
        capsys.readouterr().err
    )


def test_the_spec_says_its_loss_and_a_bad_one_is_refused_where_written(write_spec):
    from modc.compiler import load
    from modc.errors import ModcError

    base = "input: 4\noutput: [1]\nnetwork:\n  - Linear: 1\ntrain:\n"
    network, _ = load(write_spec(base + "  loss: mse\n  clip_grad: 1.0\n"))
    assert network.train["loss"] == "mse" and network.train["clip_grad"] == 1.0
    with pytest.raises(ModcError) as e:
        load(write_spec(base + "  loss: mae\n"))
    assert "train.loss must be cross_entropy or mse, got 'mae'" in e.value.render()
    assert "net.yaml:6:" in e.value.render()


def test_the_loop_reads_losses_back_once_per_log_not_once_per_step(
    tmp_path, monkeypatch, one_thread
):
    """Tensor.item and Tensor.tolist called from train.py and metrics.py, counted over a
    20-step run logged every 10 steps: the losses come back in 2 batches; the rest is the
    evaluation at the end. (The optimizer's own check of its gradients is its business.)"""
    build = compiled(tmp_path, "mlp.yaml", {"width": 8, "depth": 2})
    calls = []
    for method in ("item", "tolist"):
        real = getattr(torch.Tensor, method)

        def counted(self, *args, real=real, method=method):
            caller = Path(sys._getframe(1).f_code.co_filename).name
            if caller in ("train.py", "metrics.py"):
                calls.append((caller, method))
            return real(self, *args)

        monkeypatch.setattr(torch.Tensor, method, counted)
    flags = ["--data", "synthetic", "--steps", "20", "--log-every", "10", "--eval-every", "0"]
    assert run_here(build, *flags, "--quiet", "--out", str(tmp_path / "run")) == 0
    assert calls.count(("metrics.py", "tolist")) == 2
    assert calls.count(("train.py", "item")) <= 4  # two evaluations: the last step's, final
    assert len(column(tmp_path / "run", "loss")) == 20
