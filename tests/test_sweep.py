"""`modc sweep`: grids parse as a user writes them; a sweep writes its results and resumes."""

from __future__ import annotations

import csv

import pytest

from modc.errors import ModcError
from modc.sweep.grid import parse_lrs, parse_vary, plan
from tests.conftest import modc


def test_geometric_lr_grid_from_powers_of_two():
    assert parse_lrs("2^-6:2^2") == [2.0**k for k in range(-6, 3)]
    assert parse_lrs("0.001:1:10") == pytest.approx([0.001, 0.01, 0.1, 1.0])
    assert parse_lrs("0.1,0.3") == [0.1, 0.3]


def test_vary_and_plan_cover_the_grid():
    name, values = parse_vary("width=32,64")
    runs = plan([(name, values)], ["dualized", "adamw"], [0.1, 1.0], seeds=2)
    assert len(runs) == 2 * 2 * 2 * 2
    assert len({r.id for r in runs}) == len(runs)
    assert runs[0].variant == (("width", 32),)


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
