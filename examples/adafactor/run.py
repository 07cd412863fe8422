"""Adafactor's second-moment decay c and its update clipping, measured.

Shazeer & Stern (2018) decay the second moment with β2,t = 1 − t^(−c), c = 0.8, and clip
updates at RMS d = 1. The convergence analysis of Hong & Lin (2024) finds the optimal rate
Õ(1/√T) for min_{t ≤ T} ‖∇f(x_t)‖² with c = 1 and no clipping, a slower rate for c < 1
(Õ(T^(−0.3)) for c = 0.8), no benefit from clipping, and a time-varying threshold
d_t = t^(c/(2(α−1))) that matches d = 1. This trains modc's `adafactor` kind (no momentum,
as in the analysis) at c ∈ {0.5, 0.8, 1.0} × clipping {none, d = 1, time-varying} on two tasks:

    mlp  specs/mlp.yaml (width 128, depth 3) on MNIST-5k, batch 128
    gpt  specs/gpt.yaml (width 32, depth 2, 2 heads, context 32) on Shakespeare, batch 16

Each setting first runs every lr of a small grid on seed 0; its best lr (lowest held-out
loss) then runs on seeds 1 and 2. Reported: held-out loss at the best lr (mean ± std over
the 3 seeds), and min over t ≤ T of the squared gradient norm on a fixed training batch,
measured at log-spaced steps, against T on log-log axes with the slope fitted over T ≥ 10.

    python examples/adafactor/run.py            # everything (30 min on 2 shared cores)
    python examples/adafactor/run.py --quick    # a smoke test of the pipeline, seconds

Writes into --out (default runs/adafactor): runs.jsonl (one line per run), table.md, and
gradnorm.png; a rerun reuses the runs already in runs.jsonl.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import math
import os
import statistics
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

import modc
from modc.fileio import write_atomic

ROOT = Path(__file__).resolve().parents[2]
DECAYS = (0.5, 0.8, 1.0)
ALPHA = 3.0  # time-varying threshold d_t = t^(c/(2(α−1))) = t^(c/4)
CLIPS = {"none": {}, "d=1": {"clip": 1.0}, "time-varying": {"clip_alpha": ALPHA}}
SEEDS = (0, 1, 2)


@dataclass(frozen=True)
class Task:
    spec: str
    params: dict
    data: str
    batch: int
    probe: int  # examples in the fixed batch whose gradient norm is measured
    steps: int
    lrs: tuple[float, ...]


FULL = {
    "mlp": Task(
        "specs/mlp.yaml",
        {"width": 128, "depth": 3},
        "mnist",
        128,
        1024,
        1000,
        (2**-8, 2**-6, 2**-4),
    ),
    "gpt": Task(
        "specs/gpt.yaml",
        {"width": 32, "depth": 2, "heads": 2, "context": 32},
        "shakespeare",
        16,
        64,
        1000,
        (2**-8, 2**-6, 2**-4),
    ),
}
QUICK = {
    "mlp": Task("specs/mlp.yaml", {"width": 16, "depth": 2}, "mnist", 32, 64, 12, (2**-6,)),
    "gpt": Task(
        "specs/gpt.yaml",
        {"width": 8, "depth": 1, "heads": 2, "context": 8},
        "shakespeare",
        4,
        8,
        12,
        (2**-6,),
    ),
}


def checkpoints(steps: int, count: int = 24) -> list[int]:
    """Log-spaced steps 1 … steps at which the gradient norm is measured."""
    return sorted({round(steps ** (i / (count - 1))) for i in range(count)})


def _module(path: Path, name: str):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def loss_of(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Cross-entropy over every output position (one label per example or per position)."""
    logits = model(x)
    if y.dim() == 1 and logits.dim() > 2:
        y = y.view(-1, *[1] * (logits.dim() - 2)).expand(logits.shape[:-1])
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.reshape(-1))


def train(job: dict) -> dict:
    """One run: a task, a setting, an lr and a seed; returns its losses and gradient norms."""
    torch.set_num_threads(1)
    task, where = Task(**job["task"]), Path(job["build"])
    model_py = _module(where / "model.py", f"model_{where.name}")
    optim_py = _module(where / "optimizer.py", f"optimizer_{where.name}")
    data_py = _module(where / "data.py", f"data_{where.name}")
    data = data_py.load(task.data, model_py.INPUT_SHAPE, model_py.OUTPUT_SHAPE, "cpu")
    probe = data.batch(10**6, task.probe, 12345)  # a fixed training batch
    torch.manual_seed(job["seed"])
    model = model_py.build_model()
    opt = optim_py.make_optimizer(
        model,
        job["lr"],
        kind="adafactor",
        momentum=0.0,
        decay=job["decay"],
        **CLIPS[job["clip"]],
    )
    start, grads, marks = time.time(), [], set(checkpoints(task.steps))
    for step in range(1, task.steps + 1):
        x, y = data.batch(step - 1, task.batch, job["seed"])
        loss = loss_of(model, x, y)
        if not math.isfinite(loss.item()):
            return {**job, "eval_loss": math.inf, "grads": grads, "diverged": True}
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if step in marks:
            opt.zero_grad(set_to_none=True)
            loss_of(model, *probe).backward()
            grads.append([step, sum(p.grad.pow(2).sum().item() for p in model.parameters())])
    opt.zero_grad(set_to_none=True)
    with torch.no_grad():
        x, y = data.held_out()
        eval_loss = sum(
            loss_of(model, x[i : i + 512], y[i : i + 512]).item() * len(x[i : i + 512])
            for i in range(0, len(x), 512)
        ) / len(x)
    return {
        **job,
        "eval_loss": eval_loss,
        "grads": grads,
        "diverged": not math.isfinite(eval_loss),
        "seconds": round(time.time() - start, 2),
    }


def run_all(jobs: list[dict], done: dict, log: Path, workers: int) -> None:
    """Run the jobs not yet in `done` (keyed by key()), appending each result to `log`."""
    todo = [j for j in jobs if key(j) not in done]
    with ProcessPoolExecutor(workers) as pool:
        for result in pool.map(train, todo):
            done[key(result)] = result
            with open(log, "a") as f:
                f.write(json.dumps(result) + "\n")
            print(f"  {key(result)}: held-out {result['eval_loss']:.4f}", file=sys.stderr)


def key(job: dict) -> str:
    """A run's name, unique in the experiment."""
    setting = f"c={job['decay']} clip={job['clip']}"
    return f"{job['task_name']} {setting} lr={job['lr']:.6g} seed={job['seed']}"


def slope(points: list[tuple[float, float]]) -> float:
    """Least-squares slope of log y against log x."""
    xs, ys = [math.log(x) for x, _ in points], [math.log(y) for _, y in points]
    mx, my = statistics.fmean(xs), statistics.fmean(ys)
    return sum((a - mx) * (b - my) for a, b in zip(xs, ys, strict=True)) / sum(
        (a - mx) ** 2 for a in xs
    )


def running_min(grads: list[list[float]]) -> list[tuple[int, float]]:
    out, low = [], math.inf
    for step, g in grads:
        low = min(low, g)
        out.append((step, low))
    return out


def geomean(curves: list[list]) -> list[tuple[int, float]]:
    """(step, geometric mean over the curves) at the steps that every curve reached."""
    curves = [c for c in curves if c]
    size = min(map(len, curves), default=0)
    return [
        (curves[0][i][0], math.exp(statistics.fmean(math.log(c[i][1]) for c in curves)))
        for i in range(size)
    ]


def main() -> None:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--quick", action="store_true", help="tiny sizes and steps: a smoke test")
    p.add_argument("--out", default="runs/adafactor", help="output folder")
    p.add_argument("--jobs", type=int, default=len(os.sched_getaffinity(0)), help="processes")
    args = p.parse_args()
    tasks, seeds = (QUICK, (0,)) if args.quick else (FULL, SEEDS)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    log = out / "runs.jsonl"
    done = (
        {key(r): r for r in map(json.loads, log.read_text().splitlines())} if log.exists() else {}
    )
    began = time.time()
    builds = {
        name: str(modc.build(ROOT / t.spec, t.params, out=out / "builds" / name).path)
        for name, t in tasks.items()
    }

    def job(name: str, decay: float, clip: str, lr: float, seed: int) -> dict:
        return {
            "task_name": name,
            "task": vars(tasks[name]),
            "build": builds[name],
            "decay": decay,
            "clip": clip,
            "lr": lr,
            "seed": seed,
        }

    settings = [(n, c, clip) for n in tasks for c in DECAYS for clip in CLIPS]
    run_all(
        [job(n, c, clip, lr, 0) for n, c, clip in settings for lr in tasks[n].lrs],
        done,
        log,
        args.jobs,
    )
    best = {}
    for n, c, clip in settings:
        losses = {lr: done[key(job(n, c, clip, lr, 0))]["eval_loss"] for lr in tasks[n].lrs}
        best[n, c, clip] = min(losses, key=losses.get)
    run_all(
        [job(n, c, clip, best[n, c, clip], s) for n, c, clip in settings for s in seeds[1:]],
        done,
        log,
        args.jobs,
    )
    report(tasks, settings, seeds, best, done, job, out, time.time() - began)


def report(tasks, settings, seeds, best, done, job, out: Path, seconds: float) -> None:
    """table.md and gradnorm.png."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [
        f"| task | c | clipping | best lr | held-out loss (mean ± std, {len(seeds)} seeds) | "
        "‖∇f‖² at t = 1 → T | slope of min ‖∇f‖² vs T |",
        "|---|---|---|---|---|---|---|",
    ]
    fig, axes = plt.subplots(2, len(tasks), figsize=(6.5 * len(tasks), 9), squeeze=False)
    styles = {"none": "-", "d=1": "--", "time-varying": ":"}
    colors = {0.5: "tab:blue", 0.8: "tab:orange", 1.0: "tab:green"}
    for top, bottom, name in zip(axes[0], axes[1], tasks, strict=True):
        for n, c, clip in [s for s in settings if s[0] == name]:
            lr = best[n, c, clip]
            runs = [done[key(job(n, c, clip, lr, s))] for s in seeds]
            losses = [r["eval_loss"] for r in runs]
            spread = statistics.stdev(losses) if len(losses) > 1 else 0.0
            now = geomean([r["grads"] for r in runs])
            low = geomean([running_min(r["grads"]) for r in runs])
            fit = [(t, g) for t, g in low if t >= 10]
            k = slope(fit) if len(fit) > 1 else math.nan
            edge = (
                " (grid edge)"
                if len(tasks[n].lrs) > 1 and lr in (min(tasks[n].lrs), max(tasks[n].lrs))
                else ""
            )
            ends = f"{now[0][1]:.3g} → {now[-1][1]:.3g}" if now else "–"
            rows.append(
                f"| {n} | {c} | {clip} | 2^{math.log2(lr):.0f}{edge} | "
                f"{statistics.fmean(losses):.4f} ± {spread:.4f} | {ends} | {k:.2f} |"
            )
            style = {"color": colors[c], "linestyle": styles[clip]}
            if low:
                top.plot(*zip(*low, strict=True), **style, label=f"c={c}, {clip} (slope {k:.2f})")
                bottom.plot(*zip(*now, strict=True), **style, label=f"c={c}, {clip}")
        for ax, what in [(top, "min over t ≤ T of ‖∇f(x_t)‖²"), (bottom, "‖∇f(x_T)‖²")]:
            ax.set_xscale("log")
            ax.set_yscale("log")
            ax.set_xlabel("T (steps)")
            ax.set_ylabel(f"{what} (fixed batch)")
            ax.set_title(f"{name}: Adafactor, each setting at its best lr")
            ax.grid(alpha=0.3, which="both")
            ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out / "gradnorm.png", dpi=110)
    plt.close(fig)
    minutes, secs = divmod(round(seconds), 60)
    text = (
        "\n".join(rows) + f"\n\n{len(done)} runs; this invocation took {minutes} m {secs:02d} s.\n"
    )
    write_atomic(out / "table.md", text)
    print(text)


if __name__ == "__main__":
    main()
