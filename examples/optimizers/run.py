"""modc's dualized optimizer against AdamW and Muon on one spec, each at its best lr.

    python examples/optimizers/run.py            # the MLP on MNIST-5k, minutes
    python examples/optimizers/run.py --quick    # a smoke test, seconds

One build per width; the three optimizers are kinds of the same build (`train.py
--optimizer dualized | adamw | muon`), so the model, data, batches and schedule are the
same and only the update differs. Each kind runs on its own lr grid (their lrs are on
different scales: dualized's is the step's modular norm), over two widths, with `modc
sweep`: results.csv, transfer.png (held-out loss against lr, one panel per optimizer) and
the best lr per width with its drift, in --out (default runs/optimizers). A best lr on the
edge of its grid is flagged, not counted.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--quick", action="store_true", help="a smoke test: tiny grid, few steps")
    p.add_argument("--out", type=Path, default=Path("runs/optimizers"))
    args = p.parse_args()
    if args.quick:
        grid = ["--vary", "width=16", "--steps", "3", "--data", "synthetic"]
        grid += ["--lr", "dualized=0.1", "--lr", "adamw=3e-3", "--lr", "muon=0.02"]
    else:
        grid = ["--vary", "width=64,256", "--steps", "300", "--data", "mnist"]
        grid += ["--lr", "dualized=2^-6:2^1", "--lr", "adamw=2^-12:2^-5", "--lr", "muon=2^-9:2^-2"]
    command = [
        sys.executable,
        "-m",
        "modc",
        "sweep",
        "specs/mlp.yaml",
        "-p",
        "depth=3",
        "--optimizer",
        "dualized,adamw,muon",
        *grid,
        "-o",
        str(args.out.resolve()),
    ]
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
    subprocess.run(command, cwd=ROOT, check=True, env=env)


if __name__ == "__main__":
    main()
