"""Every example in examples/ runs end to end with --quick (toy sizes, seconds to a minute)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from tests.conftest import ROOT

QUICK = {  # example: a line its output must hold
    "own_csv": "sine (mse): held-out loss",
    "python_api": "held-out accuracy",
    "own_module": "modc.dualized lr 0.5",
    "latex_bounds": "paper.tex",
    "optimizers": "wrote ",
    "torchrun": "largest weight difference between the two runs",
}


def test_every_example_is_smoke_tested():
    shown = {p.parent.name for p in (ROOT / "examples").glob("*/run.py")}
    others = {"adafactor", "gauss_newton", "gns"}  # smoke-tested in their own test files
    assert shown - others == set(QUICK)


@pytest.mark.parametrize("name", sorted(QUICK))
def test_example_runs_quick(name, tmp_path):
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    command = [sys.executable, str(ROOT / "examples" / name / "run.py"), "--quick"]
    if name != "own_module":
        command += ["--out", str(tmp_path / name)]
    done = subprocess.run(
        command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert QUICK[name] in done.stdout, done.stdout
