"""One build on several processes with torchrun (gloo on CPU, nccl on GPUs), and the same
steps on one process with the same global batch.

    python examples/torchrun/run.py            # 2 processes, the MLP on MNIST-5k
    python examples/torchrun/run.py --quick    # a smoke test, seconds

Compiles specs/mlp.yaml, then trains it twice: `torchrun --standalone --nproc_per_node 2
train.py --batch-size 32` (data parallel, DDP; the dualized optimizer deals its polar
factors out to the two processes and gathers them) and `train.py --batch-size 64` on one
process. A step's global batch is --batch-size × processes × --grad-accum examples, the
same examples either way, so the two runs take the same steps up to float rounding: the
example prints both held-out losses and the largest weight difference. Writes into --out
(default runs/torchrun). On a machine with GPUs, add --device cuda: one GPU a process.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[2]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--quick", action="store_true", help="a smoke test: few steps")
    p.add_argument("--out", type=Path, default=Path("runs/torchrun"))
    p.add_argument("--device", default="cpu", help="cpu, or cuda: one GPU a process")
    args = p.parse_args()
    out = args.out.resolve()
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
    build = out / "build"
    params = ["-p", "width=32", "-p", "depth=3"] if args.quick else []
    subprocess.run(
        [
            sys.executable,
            "-m",
            "modc",
            "compile",
            "specs/mlp.yaml",
            *params,
            "-o",
            str(build),
            "--force",
        ],
        cwd=ROOT,
        check=True,
        env=env,
        stdout=subprocess.DEVNULL,
    )
    flags = ["--steps", "10" if args.quick else "300", "--quiet", "--device", args.device]
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone"]
    runs = {
        "2 processes × 32": [
            *torchrun,
            "--nproc_per_node",
            "2",
            str(build / "train.py"),
            "--batch-size",
            "32",
            "--out",
            str(out / "two"),
            *flags,
        ],
        "1 process × 64": [
            sys.executable,
            str(build / "train.py"),
            "--batch-size",
            "64",
            "--out",
            str(out / "one"),
            *flags,
        ],
    }
    for name, command in runs.items():
        done = subprocess.run(command, env=env, capture_output=True, text=True)
        if done.returncode:
            sys.exit(f"{name} failed:\n{done.stderr}")
        print(f"{name}: {done.stdout.strip()}")
    a, b = (
        torch.load(out / run / "checkpoint.pt", weights_only=True)["model"]
        for run in ("two", "one")
    )
    gap = max((a[k] - b[k]).abs().max().item() for k in a)
    print(f"largest weight difference between the two runs: {gap:.2e}")


if __name__ == "__main__":
    main()
