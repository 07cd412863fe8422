"""The gradient noise scale of the normalisation layers, and batch schedules that follow it.

Gray et al. (NeurIPS 2024) find that the gradient noise scale (GNS) of a transformer's
LayerNorm gains and biases tracks the whole network's, and that a batch schedule guided
by it saves tokens. This trains a small pre-norm GPT (specs/gpt_prenorm.modc: width 64,
depth 2, 2 heads, context 64) on Shakespeare with train.py, the dualized optimizer at the
spec's lr, and measures, as train.py reports it:

1. correlation: one fixed-batch run (seed 0) with --gns --gns-total logs, every step,
   B_simple of the norm atoms (per-example gradients from the backward pass) and of all
   weights (exact per-example gradients, torch.func); the Pearson correlation of the two
   series (and of their logs) after the moving averages' first 100 steps;
2. overhead: bench/gns_overhead.py --size small (this model; median step time with and
   without --gns, steps alternating);
3. tokens: per seed (0, 1, 2), a fixed batch of 16 sequences (--batch-size 8 --grad-accum
   2, --steps STEPS), --batch-schedule linear:512->1536 (8 to 24 sequences) and
   --batch-schedule gns:512->4096 (8 to 64 sequences), all within the fixed run's tokens,
   the lr schedule (linear decay) counted in tokens; for each schedule, the tokens at
   which its held-out loss first reaches the fixed run's final one (linear interpolation
   between evaluations; "not reached" otherwise), against the fixed run's tokens.

    python examples/gns/run.py           # everything (about 15 min on 2 shared cores)
    python examples/gns/run.py --quick   # a smoke test of the pipeline, under a minute

Writes into --out (default runs/gns): one folder per run, summary.json, table.md, and
gns.png (the two noise scales over tokens, and held-out loss against tokens).
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import os
import statistics
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SPEC = ROOT / "specs" / "gpt_prenorm.modc"
SIZE = {"width": 64, "depth": 2, "heads": 2, "context": 64}
FIXED = ["--batch-size", "8", "--grad-accum", "2"]  # 16 sequences of 64 tokens a step
SCHEDULES = {
    "fixed": [],
    "linear": ["--batch-schedule", "linear:512->1536"],
    "gns": ["--batch-schedule", "gns:512->4096"],
}
WARM = 100  # steps of the moving averages left out of the correlation (half, if fewer)


def rows(path: Path) -> list[dict[str, float]]:
    with open(path) as f:
        return [{k: float(v) for k, v in r.items() if v != ""} for r in csv.DictReader(f)]


def pearson(a: list[float], b: list[float]) -> float:
    ma, mb = statistics.fmean(a), statistics.fmean(b)
    cov = sum((x - ma) * (y - mb) for x, y in zip(a, b, strict=True))
    va = sum((x - ma) ** 2 for x in a)
    vb = sum((y - mb) ** 2 for y in b)
    return max(-1.0, min(1.0, cov / math.sqrt(va * vb)))  # rounding may pass ±1


def train(build: Path, out: Path, steps: int, seed: int, *extra: str) -> dict:
    """One run of the build's train.py (skipped when its final.json is there); returns its
    held-out curve in tokens and its final numbers."""
    if not (out / "final.json").exists():
        cmd = [
            sys.executable,
            str(build / "train.py"),
            "--steps",
            str(steps),
            "--seed",
            str(seed),
            "--out",
            str(out),
            "--quiet",
            "--certify-every",
            "0",
            "--checkpoint-every",
            "0",
            *FIXED,
            *extra,
        ]
        print("  $", " ".join(cmd[1:]).replace(str(ROOT) + "/", ""), flush=True)
        subprocess.run(cmd, check=True, env=dict(os.environ, OMP_NUM_THREADS="1"))
    final = json.loads((out / "final.json").read_text())
    tokens = (
        {int(r["step"]): r["tokens"] for r in rows(out / "gns.csv")}
        if (out / "gns.csv").exists()
        else None
    )
    per_step = 16 * SIZE["context"]
    curve = [
        (tokens[int(r["step"])] if tokens else r["step"] * per_step, r["eval_loss"])
        for r in rows(out / "metrics.csv")
        if "eval_loss" in r
    ]
    curve.append((final["tokens"], final["eval_loss"]))
    return {"final": final, "curve": sorted(set(curve))}


def tokens_to(curve: list[tuple[float, float]], target: float) -> float | None:
    """The tokens at which the held-out loss first reaches `target`, interpolated."""
    prev = None
    for t, loss in curve:
        if loss <= target:
            if prev is None:
                return t
            (t0, l0) = prev
            return t0 + (t - t0) * (l0 - target) / (l0 - loss)
        prev = (t, loss)
    return None


def plot(out: Path, corr_rows: list[dict], runs: dict, image: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (a, b) = plt.subplots(1, 2, figsize=(11, 4))
    t = [r["tokens"] / 1e3 for r in corr_rows]
    a.plot(t, [r["norm_bsimple"] for r in corr_rows], label="norm atoms (Gain, Bias)")
    a.plot(t, [r["total_bsimple"] for r in corr_rows], label="all weights (exact)")
    a.axvline(corr_rows[min(WARM, len(corr_rows) - 1)]["tokens"] / 1e3, color="grey", lw=0.5)
    a.set_xlabel("tokens (thousands)")
    a.set_ylabel("B_simple (sequences)")
    a.set_title("Noise scale, fixed batch, seed 0")
    a.legend()
    for kind, color in [("fixed", "k"), ("linear", "C0"), ("gns", "C3")]:
        for seed, run in runs[kind].items():
            xs, ys = zip(*run["curve"], strict=True)
            b.plot(
                [x / 1e3 for x in xs], ys, color=color, alpha=0.8, label=kind if seed == 0 else None
            )
    b.set_xlabel("tokens (thousands)")
    b.set_ylabel("held-out loss (nats/byte)")
    b.set_title("Batch schedules, 3 seeds")
    b.legend()
    fig.tight_layout()
    fig.savefig(image, dpi=110)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="a smoke test: 12 steps, one seed")
    p.add_argument("--out", default=str(ROOT / "runs" / "gns"))
    p.add_argument("--steps", type=int, default=600, help="steps of the fixed-batch run")
    p.add_argument("--image", default=None, help="where gns.png goes (default: --out)")
    args = p.parse_args()
    steps, seeds = (12, [0]) if args.quick else (args.steps, [0, 1, 2])
    out = Path(args.out)
    build = out / "build"
    params = [f"-p{k}={v}" for k, v in SIZE.items()]
    subprocess.run(
        [sys.executable, "-m", "modc", "compile", str(SPEC), "-o", str(build), "--force", *params],
        check=True,
        stdout=subprocess.DEVNULL,
    )
    eval_every = {"fixed": "25", "linear": "25", "gns": "10"}

    print("runs (fixed batch with --gns --gns-total on seed 0):", flush=True)
    runs: dict[str, dict[int, dict]] = {k: {} for k in SCHEDULES}
    for seed in seeds:
        for kind, flags in SCHEDULES.items():
            extra = ["--gns", "--gns-total"] if kind == "fixed" and seed == 0 else []
            runs[kind][seed] = train(
                build,
                out / f"{kind}-{seed}",
                steps,
                seed,
                "--eval-every",
                eval_every[kind],
                *flags,
                *extra,
            )

    corr_rows = rows(out / "fixed-0" / "gns.csv")
    warm = min(WARM, len(corr_rows) // 2)
    kept = [r for r in corr_rows[warm:] if r["norm_bsimple"] > 0 and r["total_bsimple"] > 0]
    norm, total = [r["norm_bsimple"] for r in kept], [r["total_bsimple"] for r in kept]
    correlation = {
        "pearson": pearson(norm, total),
        "pearson_log": pearson([math.log(abs(v)) for v in norm], [math.log(abs(v)) for v in total]),
        "steps": len(kept),
        "norm_final": corr_rows[-1]["norm_bsimple"],
        "total_final": corr_rows[-1]["total_bsimple"],
    }

    bench = [
        sys.executable,
        str(ROOT / "bench" / "gns_overhead.py"),
        "--size",
        "small",
        "--json",
    ] + (["--rounds", "1", "--steps", "3"] if args.quick else [])
    print("  $", " ".join(bench[1:]).replace(str(ROOT) + "/", ""), flush=True)
    done = subprocess.run(
        bench, check=True, capture_output=True, text=True, env=dict(os.environ, OMP_NUM_THREADS="1")
    )
    overhead = json.loads(done.stdout.strip().splitlines()[-1])

    table = [
        "| schedule | seed | final held-out loss | tokens to the fixed run's final loss"
        " | vs fixed | tokens in all |",
        "|---|---|---|---|---|---|",
    ]
    saved: dict[str, list[float]] = {k: [] for k in SCHEDULES if k != "fixed"}
    for seed in seeds:
        fixed = runs["fixed"][seed]
        target, budget = fixed["final"]["eval_loss"], fixed["final"]["tokens"]
        for kind in SCHEDULES:
            run = runs[kind][seed]
            reached = budget if kind == "fixed" else tokens_to(run["curve"], target)
            if kind != "fixed" and reached is not None:
                saved[kind].append(1 - reached / budget)
            shown = f"{reached:,.0f}" if reached is not None else "not reached"
            ratio = f"{reached / budget:.3f}" if reached is not None else "–"
            table.append(
                f"| {kind} | {seed} | {run['final']['eval_loss']:.4f} | {shown} | "
                f"{ratio} | {run['final']['tokens']:,} |"
            )
    summary = {
        "command": "python examples/gns/run.py" + (" --quick" if args.quick else ""),
        "size": SIZE,
        "steps": steps,
        "correlation": correlation,
        "overhead": overhead,
        "tokens_saved": {
            k: {
                "mean": statistics.fmean(v) if v else None,
                "runs": v,
                "reached": f"{len(v)} of {len(seeds)}",
            }
            for k, v in saved.items()
        },
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    (out / "table.md").write_text("\n".join(table) + "\n")
    image = Path(args.image) if args.image else out / "gns.png"
    plot(out, corr_rows, runs, image)
    print("\n".join(table))
    print(json.dumps({k: summary[k] for k in ("correlation", "tokens_saved")}, indent=2))
    print(f"--gns overhead (small): ratio {overhead['ratio']:.4f}; image {image}")


if __name__ == "__main__":
    main()
