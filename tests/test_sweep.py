"""`modc sweep`: grids parse as a user writes them, each optimizer on its own bounded grid; an
optimum on a grid's edge is flagged, not counted as transfer; a sweep writes its results,
resumes, varies optimizer settings, and ends misuse and failed runs with one line."""

from __future__ import annotations

import csv
import subprocess
from pathlib import Path

import pytest

from modc.errors import ModcError
from modc.sweep.grid import MAX_LRS, Run, lr_grids, parse_lrs, parse_set, parse_vary, plan
from modc.sweep.report import plot, summary
from modc.sweep.runner import Result
from tests.conftest import modc


def test_geometric_lr_grid_from_powers_of_two():
    assert parse_lrs("2^-6:2^2") == [2.0**k for k in range(-6, 3)]
    assert parse_lrs("0.001:1:10") == pytest.approx([0.001, 0.01, 0.1, 1.0])
    assert parse_lrs("0.1,0.3") == [0.1, 0.3]


def test_vary_and_plan_cover_the_grid():
    name, values = parse_vary("width=32,64")
    grids = {"dualized": [0.1, 1.0], "adamw": [1e-3]}
    runs = plan([(name, values)], ["dualized", "adamw"], grids, seeds=2)
    assert len(runs) == 2 * (2 + 1) * 2
    assert len({r.id for r in runs}) == len(runs)
    assert runs[0].sizes == (("width", 32),)
    assert {r.lr for r in runs if r.optimizer == "adamw"} == {1e-3}


def test_each_optimizer_has_its_own_lr_grid():
    grids = lr_grids([], ["dualized", "adamw"])
    assert grids["dualized"] == [2.0**k for k in range(-8, 3)]
    assert max(grids["adamw"]) <= max(grids["dualized"]) / 64  # AdamW's range lies lower
    grids = lr_grids(["adamw=2^-12:2^-10", "0.1,0.2"], ["dualized", "adamw"])
    assert grids == {"dualized": [0.1, 0.2], "adamw": [2.0**-12, 2.0**-11, 2.0**-10]}
    with pytest.raises(ModcError, match="does not run") as e:
        lr_grids(["adamm=1:2"], ["dualized", "adamw"])
    assert e.value.hint == "did you mean 'adamw'?"


@pytest.mark.parametrize(
    "text,message",
    [
        ("1e-10:1e10:1.0000001", f"at most {MAX_LRS}"),
        ("2^-100:2^100", f"at most {MAX_LRS}"),
        ("1e400:1e401", "finite number"),
        ("1e-300:1e300", f"has 1.99e\\+03 learning rates; a grid takes at most {MAX_LRS}"),
        ("1e-300:1e300:1e200", "HI/LO must be a finite number"),
        ("0,1", "must be positive"),
        ("1:2:1", "FACTOR > 1"),
        (",".join(["0.1"] * 65), "at most 64"),
    ],
)
def test_lr_grids_are_bounded_and_checked(text, message):
    with pytest.raises(ModcError, match=message):
        parse_lrs(text)


def test_set_parses_optimizer_settings():
    assert parse_set("decay=0.5,0.8,1") == ("decay", [0.5, 0.8, 1.0])
    assert parse_set("clip=none,1,alpha=2") == ("clip", ["none", 1.0, "alpha=2"])
    with pytest.raises(ModcError) as e:
        parse_set("decy=1")
    assert e.value.hint == "did you mean 'decay'?"
    with pytest.raises(ModcError, match="--optimizer"):
        parse_set("kind=adamw")


def result(opt: str, width: int, lr: float, loss: float) -> Result:
    return Result(Run((("width", width),), (), opt, lr, 0), loss, loss, None, False)


def test_an_optimum_on_the_grids_edge_is_flagged_not_counted(tmp_path):
    inside = {0.1: 2.0, 0.2: 1.0, 0.4: 1.5}  # best lr inside the grid
    rising = {0.1: 3.0, 0.2: 2.0, 0.4: 1.0}  # still falling at the grid's top
    results = [result("dualized", 8, lr, x) for lr, x in inside.items()]
    results += [result("dualized", 16, lr, x) for lr, x in inside.items()]
    results += [result("adamw", 8, lr, x) for lr, x in rising.items()]
    results += [result("adamw", 16, lr, x) for lr, x in rising.items()]
    text = summary(results)
    dualized, adamw = text.split("adamw:")
    assert "drift of the best lr: 0 grid steps" in dualized and "edge" not in dualized
    assert adamw.count("on the grid's high edge") == 2
    assert "drift of the best lr: not measured, 2 of 2 optima" in adamw
    assert "--lr adamw=LO:HI" in adamw and "grid steps" not in adamw
    plot(results, tmp_path / "t.png", "edges")
    assert (tmp_path / "t.png").read_bytes()[:4] == b"\x89PNG"


@pytest.mark.parametrize("text,col", [("width=32,x", 10), ("width=3.5", 7), ("=3", 1)])
def test_bad_vary_points_at_the_value(text, col):
    with pytest.raises(ModcError) as e:
        parse_vary(text)
    assert e.value.span.col == col


def test_bad_lr_grid_is_refused():
    with pytest.raises(ModcError, match="LO <= HI"):
        parse_lrs("1:0.1")


def test_sweep_writes_results_and_skips_finished_runs(tmp_path, write_spec):
    spec = write_spec(
        "params:\n  width: 8\ninput: 6\noutput: [3]\nnetwork:\n"
        "  - Linear: width\n  - ReLU\n  - Linear: 3\n"
    )
    args = [
        "sweep",
        str(spec),
        "--vary",
        "width=8,16",
        "--lr",
        "0.05,0.2",
        "--steps",
        "15",
        "--data",
        "synthetic",
        "--jobs",
        "2",
        "-o",
        str(tmp_path / "sw"),
    ]
    out = modc(*args)
    assert out.returncode == 0, out.stderr
    assert "drift of the best lr" in out.stdout
    rows = list(csv.DictReader(open(tmp_path / "sw" / "results.csv")))
    assert len(rows) == 4 and {r["width"] for r in rows} == {"8", "16"}
    assert all(r["diverged"] == "no" and float(r["eval_loss"]) > 0 for r in rows)
    assert (tmp_path / "sw" / "transfer.png").read_bytes()[:4] == b"\x89PNG"
    again = modc(*args)
    assert again.returncode == 0
    assert again.stderr.count("sweep 4/4") == 1 and "sweep 1/4" not in again.stderr


def test_sweep_fixes_other_parameters_and_guards_its_directory(tmp_path, write_spec):
    spec = write_spec(
        "params:\n  width: 8\n  hidden: 4\ninput: 6\noutput: [3]\nnetwork:\n"
        "  - Linear: width\n  - ReLU\n  - Linear: hidden\n  - ReLU\n  - Linear: 3\n"
    )
    common = [str(spec), "--vary", "width=8", "--lr", "0.1", "--data", "synthetic"]
    out_dir = str(tmp_path / "sw")
    ok = modc("sweep", *common, "-p", "hidden=5", "--steps", "5", "-o", out_dir)
    assert ok.returncode == 0, ok.stderr
    assert "Linear(8, 5)" in (tmp_path / "sw" / "builds" / "width=8" / "model.py").read_text()
    both = modc("sweep", *common, "-p", "width=16", "--steps", "5", "-o", out_dir)
    assert both.returncode == 2 and "width: set with both -p and --vary" in both.stderr
    typo = modc("sweep", *common, "-p", "hiden=7", "--steps", "5", "-o", str(tmp_path / "t"))
    assert typo.returncode == 2 and "did you mean 'hidden'" in typo.stderr
    fixed = modc("sweep", *common, "-p", "hidden=7", "--steps", "5", "-o", str(tmp_path / "t"))
    assert fixed.returncode == 0, fixed.stderr  # no run finished: the typo locked nothing
    other = modc("sweep", *common, "-p", "hidden=7", "--steps", "5", "-o", out_dir)
    assert other.returncode == 2 and "holds a sweep with other settings" in other.stderr
    assert "Traceback" not in both.stderr + other.stderr


TINY = (
    "params:\n  width: 8\ninput: 6\noutput: [3]\nnetwork:\n"
    "  - Linear: width\n  - ReLU\n  - Linear: 3\n"
)


@pytest.mark.parametrize(
    "extra,message",
    [
        (["--lr", "1e-10:1e10:1.0000001"], "a grid takes at most 64"),
        (["--lr", "1e-300:1e300"], "<--lr>:1:1: error: '1e-300:1e300' has 1.99e+03"),
        (["--steps", "99999999999999999999999"], "at most 1000000 steps"),
        (["--lr", "adamw=1:2"], "which this sweep does not run"),
        (["--jobs", "0"], "at least 1"),
        (["--jobs", "100000"], "at most 256 runs in parallel"),
        (["--optimizer", "dualized,adamm"], "unknown optimizer kind 'adamm'"),
        (["--vary", "width=1e400"], "finite number"),
        (["--vary", "width=8", "--vary", "width=16"], "given twice"),
        (["--seeds", "5000"], "at most 4096"),
        (["--set", "decay=-1"], "optimizer.decay must be a positive number"),
        (["-o", "/dev/null"], "cannot make the sweep folder"),
        (["-o", "/proc/modc-sweep"], "cannot make the sweep folder"),
    ],
)
def test_sweep_misuse_ends_in_one_line(tmp_path, write_spec, extra, message):
    spec = write_spec(TINY)
    out = modc(
        "sweep",
        str(spec),
        "--steps",
        "2",
        "--data",
        "synthetic",
        "-o",
        str(tmp_path / "sw"),
        *extra,
    )
    assert out.returncode == 2 and message in out.stderr, out.stderr
    assert "Traceback" not in out.stderr


def test_a_failed_run_names_itself_and_its_log(tmp_path, write_spec):
    spec = write_spec(TINY)
    out = modc(
        "sweep",
        str(spec),
        "--lr",
        "0.1",
        "--steps",
        "2",
        "--data",
        str(tmp_path / "missing.csv"),
        "-o",
        str(tmp_path / "sw"),
    )
    assert out.returncode == 2 and "Traceback" not in out.stderr
    line = out.stderr.strip().splitlines()[-1]
    assert "run default_dualized_lr=0.1_seed=0 failed (exit status 2)" in line
    log = line.split("log: ")[1].split(";")[0]
    assert "missing.csv" in open(log).read()


def test_sweep_varies_optimizer_settings(tmp_path, write_spec):
    spec = write_spec(TINY)
    out = modc(
        "sweep",
        str(spec),
        "--vary",
        "width=8",
        "--optimizer",
        "adafactor",
        "--set",
        "decay=0.8,1",
        "--set",
        "clip=none,alpha=2",
        "--lr",
        "adafactor=0.01,0.02,0.04",
        "--steps",
        "5",
        "--data",
        "synthetic",
        "--jobs",
        "2",
        "-o",
        str(tmp_path / "sw"),
    )
    assert out.returncode == 0, out.stderr
    assert "adafactor, decay=0.8, clip=alpha=2:" in out.stdout
    rows = list(csv.DictReader(open(tmp_path / "sw" / "results.csv")))
    assert len(rows) == 2 * 2 * 3
    assert {(r["decay"], r["clip"]) for r in rows} == {
        (d, c) for d in ("0.8", "1") for c in ("none", "alpha=2")
    }
    made = tmp_path / "sw" / "builds" / "width=8,decay=0.8,clip=alpha=2" / "optimizer.py"
    assert "decay: float = 0.8" in made.read_text()


def test_runs_are_spread_over_the_visible_gpus_one_job_each(tmp_path, write_spec, monkeypatch):
    """Faked GPUs and a fake train.py: each run sees one GPU, and no two runs at once share
    one when there are as many jobs as GPUs."""
    import json
    import threading
    import time

    from modc.sweep import runner

    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    assert runner.visible_gpus(lambda: 3) == ["0", "1", "2"]
    assert runner.visible_gpus(lambda: 0) == []
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "4,6")
    assert runner.visible_gpus(lambda: 8) == ["4", "6"]

    busy, seen, lock = set(), [], threading.Lock()

    def fake_run(cmd, stdout, stderr, env):  # train.py: holds its GPU a moment, then ends
        gpu = env["CUDA_VISIBLE_DEVICES"]
        with lock:
            assert gpu not in busy, f"two runs on GPU {gpu} at once"
            busy.add(gpu)
            seen.append(gpu)
        time.sleep(0.05)
        out = Path(cmd[cmd.index("--out") + 1])
        (out / "final.json").write_text(json.dumps({"train_loss": 1.0, "eval_loss": 1.0}))
        with lock:
            busy.remove(gpu)
        return subprocess.CompletedProcess(cmd, 0)

    monkeypatch.setattr(runner.subprocess, "run", fake_run)
    spec = write_spec("input: 6\noutput: [3]\nnetwork:\n  - Linear: 3\n")
    runs = plan([], ["dualized"], lr_grids(["2^-3:2^0"], ["dualized"]), 1, [])
    results = runner.execute(spec, runs, tmp_path / "sw", [], 2, progress=False, gpus=["4", "6"])
    assert len(results) == len(runs) == 4 and sorted(set(seen)) == ["4", "6"]
    logs = [(tmp_path / "sw" / "runs" / r.id / "train.log").read_text() for r in runs]
    assert all(log.startswith("# CUDA_VISIBLE_DEVICES=") for log in logs)
