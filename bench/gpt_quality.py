"""Held-out loss of Modula's GPT on Shakespeare: modc's defaults against Modula's recipe.

Compiles specs/gpt_modula.modc (width 128, depth 4, context 64) once, then trains each run
of the table with the build's own train.py: batch 12, 2,000 steps, the shipped Shakespeare
split, and prints the held-out loss (nats per byte) and the wall time of each. The rows:
  modc default         train.py --steps N --batch-size 12, nothing else: the spec's defaults
  normalized:adam      Modula's recipe: Adam normalised per atom, lr 0.5, weight decay 0.01,
                       linear decay
  dualized, lr 0.1     the default optimizer at the issue's reference setting, wd 0.01, no
                       warm-up (on the spec's masses: head mass 6 by default)
--run NAME="ARGS" adds a row (train.py arguments), e.g. --run warm="--warmup 100"; -p K=V
sets a spec parameter for every row, e.g. -p head_mass=8.
Usage: python bench/gpt_quality.py [--steps 2000] [--only default,adam] [--run NAME=ARGS]
       [-p K=V] [--seed 0] [--jobs 2]
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RUNS = {  # train.py arguments of each row
    "default": "",
    "adam": "--optimizer normalized:adam --lr 0.5 --weight-decay 0.01 --schedule linear",
    "dualized-0.1": "--optimizer dualized --lr 0.1 --weight-decay 0.01 --schedule linear",
}
LABELS = {
    "default": "modc default (spec's optimizer and train settings)",
    "adam": "modc normalized:adam, Modula's recipe (lr 0.5, wd 0.01, linear decay)",
    "dualized-0.1": "modc dualized, lr 0.1, wd 0.01, linear decay, no warm-up",
}


def train(
    build: Path, name: str, extra: list[str], steps: int, seed: int, env: dict | None = None
) -> dict:
    """One run of the build's train.py; its final.json, with the wall time."""
    out = build / "runs" / name
    cmd = [
        sys.executable,
        str(build / "train.py"),
        "--data",
        "shakespeare",
        "--steps",
        str(steps),
        "--batch-size",
        "12",
        "--seed",
        str(seed),
        "--out",
        str(out),
        "--eval-every",
        str(steps),
        "--certify-every",
        str(steps),
        "--quiet",
        *extra,
    ]
    start = time.perf_counter()
    subprocess.run(cmd, check=True, env=env)
    final = json.loads((out / "final.json").read_text())
    final["wall"] = time.perf_counter() - start
    return final


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--spec", default=str(ROOT / "specs" / "gpt_modula.modc"))
    p.add_argument("--steps", type=int, default=2000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "-p", dest="params", action="append", default=[], metavar="K=V", help="a spec parameter"
    )
    p.add_argument("--only", default=",".join(RUNS), help="comma-separated rows of the table")
    p.add_argument(
        "--run",
        action="append",
        default=[],
        metavar="NAME=ARGS",
        help="an extra row: train.py arguments, e.g. warm='--warmup 100'",
    )
    p.add_argument(
        "--jobs",
        type=int,
        default=1,
        help="rows trained at once, one thread each (OMP_NUM_THREADS=1) when more than one",
    )
    args = p.parse_args()
    runs = {k: shlex.split(RUNS[k]) for k in args.only.split(",") if k}
    labels = dict(LABELS)
    for item in args.run:
        name, _, extra = item.partition("=")
        runs[name], labels[name] = shlex.split(extra), f"modc default + {extra}"
    with tempfile.TemporaryDirectory() as tmp:
        build = Path(tmp) / "gpt"
        subprocess.run(
            [sys.executable, "-m", "modc", "compile", args.spec, "-o", str(build)]
            + [a for kv in args.params for a in ("-p", kv)],
            check=True,
            stdout=subprocess.DEVNULL,
        )
        given = "".join(f", {kv}" for kv in args.params)
        print(f"{Path(args.spec).name}{given}, batch 12, {args.steps} steps, seed {args.seed}")
        print("| run | held-out loss (nats/byte) | train loss | wall time |")
        print("|---|---|---|---|")
        env = dict(os.environ, OMP_NUM_THREADS="1") if args.jobs > 1 else None
        with ThreadPoolExecutor(max(1, args.jobs)) as pool:
            results = {
                name: pool.submit(train, build, name, extra, args.steps, args.seed, env)
                for name, extra in runs.items()
            }
            for name, result in results.items():  # in table order, each as it is done
                r = result.result()
                print(
                    f"| {labels[name]} | {r['eval_loss']:.3f} | {r['train_loss']:.3f} | "
                    f"{r['wall']:.0f} s |",
                    flush=True,
                )


if __name__ == "__main__":
    main()
