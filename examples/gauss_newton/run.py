"""Exact Gauss–Newton on a reversible MLP against SGD, Adam and modc's dualized optimizer.

Buffelli et al. (NeurIPS 2024) find that exact Gauss–Newton (GN) trains reversible networks
far faster than SGD and Adam on a full batch, but that on mini-batches it overfits each
batch: the per-batch loss drops sharply while held-out accuracy lags, and the network stays
in the lazy regime (block representations hardly move from their initialisation). This
measures all three on specs/revmlp.modc (MNIST-5k from the build's data.py; M frozen
features per f and g, 2 coupling blocks) with modc's `gauss_newton` kind:

    full batch   1,024 training examples, every optimizer for the same number of steps:
                 training loss against steps and against wall time
    mini-batch   batches of --batch (≤ M) from the 4,500 training examples, the same steps:
                 held-out accuracy (500 examples) and the per-batch loss change
                 100·(L_after − L_before)/L_before on the batch just stepped on
    lazy regime  linear CKA between each block's output at initialisation and during the
                 mini-batch runs, on 500 held-out inputs (1 = the representation did not move)

SGD, Adam and dualized each run a small lr grid on the full batch; the lr with the lowest
final training loss is used for both experiments. GN uses the paper's lr (0.5 full batch,
0.1 mini-batch) and its truncation (rtol 1e-2, atol 1e-5). One seed.

    python examples/gauss_newton/run.py            # the experiment (M = 1024)
    python examples/gauss_newton/run.py --quick    # a smoke test of the pipeline, seconds

Writes into --out (default runs/gauss_newton): results.json, table.md, and the pictures
full_batch.png, mini_batch.png and cka.png (with matplotlib, `pip install modc[plots]`).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import math
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

import modc
from modc.fileio import write_atomic

ROOT = Path(__file__).resolve().parents[2]
GRIDS = {"sgd": (0.1, 0.3, 1.0, 3.0), "adam": (1e-3, 3e-3, 1e-2), "dualized": (0.1, 0.3, 1.0)}
GN_LR = {"full": 0.5, "mini": 0.1}
OPTIMIZERS = ("gauss_newton", "sgd", "adam", "dualized")


def module_of(path: Path, name: str):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def optimizer(build: modc.Build, model: torch.nn.Module, kind: str, lr: float):
    trainable = [p for p in model.parameters() if p.requires_grad]
    if kind == "sgd":
        return torch.optim.SGD(trainable, lr)
    if kind == "adam":
        return torch.optim.Adam(trainable, lr)
    return build.optimizer.make_optimizer(model, lr, kind=kind)


def step(model, opt, x, y) -> tuple[float, float]:
    """One step on (x, y): the loss before, and after on the same batch."""
    opt.zero_grad(set_to_none=True)
    loss = F.cross_entropy(model(x), y)
    loss.backward()
    opt.step()
    with torch.no_grad():
        after = F.cross_entropy(model(x), y).item()
    return loss.item(), after


def blocks_of(model) -> list[torch.nn.Module]:
    return [block.coupling1 for block in model.blocks]


@torch.no_grad()
def representations(model, x) -> list[torch.Tensor]:
    """Each coupling block's output on x."""
    outs = []
    hooks = [b.register_forward_hook(lambda m, a, o: outs.append(o)) for b in blocks_of(model)]
    model(x)
    for h in hooks:
        h.remove()
    return outs


def linear_cka(a: torch.Tensor, b: torch.Tensor) -> float:
    """Linear CKA (Kornblith et al. 2019) of two representations of the same examples."""
    a, b = a.double() - a.double().mean(0), b.double() - b.double().mean(0)
    cross = (a.mT @ b).square().sum()
    return (cross / ((a.mT @ a).norm() * (b.mT @ b).norm())).item()


@torch.no_grad()
def accuracy(model, x, y) -> float:
    return (model(x).argmax(-1) == y).float().mean().item()


def full_batch(build, kind, lr, x, y, steps, seed) -> dict:
    torch.manual_seed(seed)
    model = build.model.build_model()
    opt = optimizer(build, model, kind, lr)
    losses, times, start = [], [], time.perf_counter()
    for _ in range(steps):
        before, _ = step(model, opt, x, y)
        losses.append(before)
        times.append(time.perf_counter() - start)
    with torch.no_grad():
        losses.append(F.cross_entropy(model(x), y).item())
    times.append(time.perf_counter() - start)
    return {"kind": kind, "lr": lr, "loss": losses, "seconds": times}


def mini_batch(build, kind, lr, data, batch, steps, every, seed) -> dict:
    torch.manual_seed(seed)
    model = build.model.build_model()
    opt = optimizer(build, model, kind, lr)
    held_x, held_y = data.held_out()
    init = representations(model, held_x)
    out = {"kind": kind, "lr": lr, "step": [], "held_acc": [], "cka": [], "change": []}
    for t in range(steps + 1):
        if t % every == 0 or t == steps:
            out["step"].append(t)
            out["held_acc"].append(accuracy(model, held_x, held_y))
            now = representations(model, held_x)
            out["cka"].append([linear_cka(a, b) for a, b in zip(init, now, strict=True)])
        if t < steps:
            x, y = data.batch(t, batch, seed)
            before, after = step(model, opt, x, y)
            out["change"].append(100 * (after - before) / before)
    out["train_acc"] = accuracy(model, data.x, data.y)
    return out


def changes(values: list[float]) -> str:
    """The median per-batch loss change over the first and the last 30 steps."""

    def median(xs: list[float]) -> str:
        xs = sorted(x if math.isfinite(x) else math.inf for x in xs)
        mid = xs[len(xs) // 2]
        return f"{mid:+.1f}%" if math.isfinite(mid) else "diverged"

    return f"{median(values[:30])} / {median(values[-30:])}"


def table(results: dict, args) -> str:
    rows = [
        f"Full batch: {args.full} examples, {args.steps_full} steps; mini-batch: batches of "
        f"{args.batch}, {args.steps_mini} steps; M = {args.M}; one seed.",
        "",
        "| optimizer | lr | full-batch loss: start → end | seconds | steps to loss < 0.1 | "
        "mini-batch lr | held-out acc (end) | train acc (end) | per-batch loss change, median: "
        "first 30 / last 30 steps | "
        "CKA to init, blocks 1, 2 (end) |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for kind in OPTIMIZERS:
        if kind not in results["full"]:
            if kind in results["mini"]:
                m = results["mini"][kind]
                cka = ", ".join(f"{c:.3f}" for c in m["cka"][-1])
                change = changes(m["change"])
                rows.append(
                    f"| {kind} | — | — | — | — | {m['lr']:g} | {m['held_acc'][-1]:.3f} | "
                    f"{m['train_acc']:.3f} | {change} | {cka} |"
                )
            continue
        f = results["full"][kind]
        reach = next((i for i, v in enumerate(f["loss"]) if v < 0.1), None)
        row = (
            f"| {kind} | {f['lr']:g} | {f['loss'][0]:.3f} → {f['loss'][-1]:.4f} | "
            f"{f['seconds'][-1]:.1f} | {reach if reach is not None else '—'} |"
        )
        if kind not in results["mini"]:
            rows.append(row + " — | — | — | — | — |")
            continue
        m = results["mini"][kind]
        cka = ", ".join(f"{c:.3f}" for c in m["cka"][-1])
        change = changes(m["change"])
        rows.append(
            row + f" {m['lr']:g} | {m['held_acc'][-1]:.3f} | {m['train_acc']:.3f} | "
            f"{change} | {cka} |"
        )
    return "\n".join(rows) + "\n"


def plot(results: dict, out: Path) -> list[str]:
    try:
        import matplotlib
    except ImportError:
        print("matplotlib is not installed (pip install modc[plots]): no pictures", file=sys.stderr)
        return []
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    pictures = []
    fig, (a, b) = plt.subplots(1, 2, figsize=(11, 4))
    for kind in [k for k in OPTIMIZERS if k in results["full"]]:
        r = results["full"][kind]
        label = f"{kind} (lr {r['lr']:g})"
        a.semilogy(range(len(r["loss"])), r["loss"], label=label)
        b.semilogy(r["seconds"], r["loss"], label=label)
    a.set(xlabel="step", ylabel="training loss (full batch)", title="Full batch: loss vs steps")
    b.set(xlabel="wall time (s)", ylabel="training loss", title="Full batch: loss vs time")
    a.legend()
    fig.tight_layout()
    if results["full"]:
        fig.savefig(out / "full_batch.png", dpi=110)
        pictures.append("full_batch.png")
    if not results["mini"]:
        return pictures
    fig, (a, b) = plt.subplots(1, 2, figsize=(11, 4))
    for kind in [k for k in OPTIMIZERS if k in results["mini"]]:
        r = results["mini"][kind]
        a.plot(r["step"], r["held_acc"], label=f"{kind} (lr {r['lr']:g})")
        shown = [(i, c) for i, c in enumerate(r["change"], 1) if math.isfinite(c) and c < 100]
        b.plot(*zip(*shown, strict=True), label=kind, lw=0.8)  # a diverging run's tail is cut
    a.set(xlabel="step", ylabel="held-out accuracy", title="Mini-batch: held-out accuracy")
    b.set(xlabel="step", ylabel="loss change on the batch (%)", title="Per-batch loss change")
    b.set_ylim(-100, 20)
    a.legend()
    fig.tight_layout()
    fig.savefig(out / "mini_batch.png", dpi=110)
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for i, ax in enumerate(axes):
        for kind in [k for k in OPTIMIZERS if k in results["mini"]]:
            r = results["mini"][kind]
            ax.plot(r["step"], [c[i] for c in r["cka"]], label=kind)
        ax.set(xlabel="step", ylabel="linear CKA to initialisation", title=f"Block {i + 1}")
    axes[0].legend()
    fig.tight_layout()
    fig.savefig(out / "cka.png", dpi=110)
    return [*pictures, "mini_batch.png", "cka.png"]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="a smoke test: tiny sizes, seconds")
    p.add_argument("--out", default="runs/gauss_newton")
    p.add_argument("--M", type=int, default=1024, help="frozen features per f and g")
    p.add_argument("--full", type=int, default=1024, help="examples in the full batch")
    p.add_argument("--steps-full", type=int, default=50)
    p.add_argument("--batch", type=int, default=512, help="mini-batch size (at most M)")
    p.add_argument("--steps-mini", type=int, default=270, help="30 epochs of 4,500 at 512")
    p.add_argument("--grid-steps", type=int, default=15, help="full-batch steps per grid lr")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--lrs", help="the baselines' lrs, no grid: sgd=1,adam=0.001,dualized=1")
    p.add_argument("--no-mini", action="store_true", help="the full-batch experiment alone")
    p.add_argument("--no-full", action="store_true", help="the mini-batch experiment alone")
    p.add_argument("--kinds", default=",".join(OPTIMIZERS), help="the optimizers to run")
    p.add_argument("--replot", action="store_true", help="redraw from --out/results.json")
    args = p.parse_args()
    if args.replot:  # pictures and table.md again from the measured results
        results = json.loads((Path(args.out) / "results.json").read_text())
        text = table(results, argparse.Namespace(**results["args"]))
        write_atomic(Path(args.out) / "table.md", text.encode())
        print(text + ", ".join(plot(results, Path(args.out))))
        return
    if args.quick:
        args.M, args.full, args.steps_full, args.batch = 64, 64, 3, 32
        args.steps_mini, args.grid_steps = 4, 2
    if args.batch > args.M:
        p.error(f"--batch {args.batch} must be at most --M {args.M}: GN is exact only then")
    torch.set_num_threads(1)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    build = modc.build(ROOT / "specs" / "revmlp.modc", {"M": args.M}, out=out / "build")
    data_py = module_of(build.path / "data.py", "revmlp_data")
    data = data_py.load("mnist", build.model.INPUT_SHAPE, build.model.OUTPUT_SHAPE, "cpu")
    x, y = data.x[: args.full], data.y[: args.full]
    start = time.perf_counter()
    chosen = {"gauss_newton": GN_LR["full"]}
    grid = {}
    if args.lrs:
        chosen.update({k: float(v) for k, v in (i.split("=") for i in args.lrs.split(","))})
    for kind, lrs in GRIDS.items():  # the baselines' lr: lowest full-batch loss after a few steps
        if kind in chosen:
            continue
        finals = {
            lr: full_batch(build, kind, lr, x, y, args.grid_steps, args.seed)["loss"][-1]
            for lr in lrs
        }
        grid[kind] = finals
        chosen[kind] = min(lrs, key=lambda lr: finals[lr] if math.isfinite(finals[lr]) else 1e9)
        print(f"{kind}: grid {finals} → lr {chosen[kind]:g}", flush=True)
    results = {
        "args": vars(args),
        "grid": {k: {str(a): b for a, b in v.items()} for k, v in grid.items()},
        "full": {},
        "mini": {},
    }
    kinds = [k for k in OPTIMIZERS if k in args.kinds.split(",")]
    for kind in () if args.no_full else kinds:
        results["full"][kind] = full_batch(
            build, kind, chosen[kind], x, y, args.steps_full, args.seed
        )
        r = results["full"][kind]
        print(
            f"full {kind}: loss {r['loss'][0]:.3f} → {r['loss'][-1]:.4f} in "
            f"{r['seconds'][-1]:.1f}s",
            flush=True,
        )
    for kind in () if args.no_mini else kinds:
        lr = GN_LR["mini"] if kind == "gauss_newton" else chosen[kind]
        every = max(1, args.steps_mini // 12)
        r = mini_batch(build, kind, lr, data, args.batch, args.steps_mini, every, args.seed)
        smaller = [g for g in GRIDS.get(kind, ()) if g < lr]
        if not all(map(math.isfinite, r["change"])) and smaller:  # diverged: the next lr down
            print(f"mini {kind}: diverged at lr {lr:g}; again at {max(smaller):g}", flush=True)
            results.setdefault("diverged", {})[kind] = lr
            r = mini_batch(
                build, kind, max(smaller), data, args.batch, args.steps_mini, every, args.seed
            )
        results["mini"][kind] = r
        print(f"mini {kind}: held-out acc {r['held_acc'][-1]:.3f}, CKA {r['cka'][-1]}", flush=True)
    results["seconds"] = time.perf_counter() - start
    text = table(results, args)
    write_atomic(out / "results.json", json.dumps(results, indent=1).encode())
    write_atomic(out / "table.md", text.encode())
    pictures = plot(results, out)
    print(text)
    print(
        f"total {results['seconds']:.0f}s; wrote {out}/results.json, table.md, "
        + ", ".join(pictures)
    )


if __name__ == "__main__":
    main()
