"""Your own data set as a CSV file: a classifier and a regression, each from its spec.

    python examples/own_csv/run.py            # about a minute on a CPU
    python examples/own_csv/run.py --quick    # a smoke test, seconds

It writes two CSV files with a header row, as a spreadsheet exports them:

    spirals.csv  label,x,y        three interleaved spirals, the label in the FIRST column
    sine.csv     x,y              y = sin(3x) + noise, a regression target

and compiles and trains `spirals.modc` (cross-entropy, `--label-column label`: the name from
the header row, which train.py detects) and `sine.modc` (its spec says `loss = mse`; the
last column is the target). A label-first CSV without `--label-column` is refused, since
its last column (a coordinate) does not look like class labels; the example shows that
error too. Writes into --out (default runs/own_csv): the CSVs, the builds, and one run
folder per model (metrics.csv, final.json, certificate.json).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent


def spirals(path: Path, n: int = 1500) -> None:
    rng = random.Random(0)
    rows = ["label,x,y"]
    for i in range(n):
        label, t = i % 3, rng.uniform(0.2, 1.0)
        angle = 3.5 * t + 2 * math.pi * label / 3 + rng.gauss(0, 0.15)
        rows.append(f"{label},{t * math.cos(angle):.5f},{t * math.sin(angle):.5f}")
    path.write_text("\n".join(rows) + "\n")


def sine(path: Path, n: int = 1500) -> None:
    rng = random.Random(1)
    rows = ["x,y"]
    for _ in range(n):
        x = rng.uniform(-2, 2)
        rows.append(f"{x:.5f},{math.sin(3 * x) + rng.gauss(0, 0.05):.5f}")
    path.write_text("\n".join(rows) + "\n")


# Small models train fastest on one thread (and do not crowd a shared machine).
ENV = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}


def modc(*args: str) -> None:
    command = [sys.executable, "-m", "modc", *args]
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL, env=ENV)


def train(build: Path, *args: str) -> subprocess.CompletedProcess:
    command = [sys.executable, str(build / "train.py"), "--quiet", *args]
    return subprocess.run(command, capture_output=True, text=True, env=ENV)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--quick", action="store_true", help="a smoke test: few steps")
    p.add_argument("--out", type=Path, default=Path("runs/own_csv"))
    args = p.parse_args()
    out = args.out
    out.mkdir(parents=True, exist_ok=True)
    spirals(out / "spirals.csv")
    sine(out / "sine.csv")
    steps = ["--steps", "20"] if args.quick else []

    modc("compile", str(HERE / "spirals.modc"), "-o", str(out / "build" / "spirals"), "--force")
    refused = train(out / "build" / "spirals", "--data", str(out / "spirals.csv"), *steps)
    print("without --label-column:", refused.stderr.strip().split("error: ")[-1])
    assert refused.returncode == 2
    done = train(
        out / "build" / "spirals",
        "--data",
        str(out / "spirals.csv"),
        "--label-column",
        "label",
        "--out",
        str(out / "spirals"),
        *steps,
    )
    print("spirals:", done.stdout.strip() or done.stderr)

    modc("compile", str(HERE / "sine.modc"), "-o", str(out / "build" / "sine"), "--force")
    done = train(
        out / "build" / "sine", "--data", str(out / "sine.csv"), "--out", str(out / "sine"), *steps
    )
    print("sine (mse):", done.stdout.strip() or done.stderr)
    for name in ("spirals", "sine"):
        final = json.loads((out / name / "final.json").read_text())
        print(f"{name}: held-out loss {final['eval_loss']:.4f}, accuracy {final['eval_acc']}")


if __name__ == "__main__":
    main()
