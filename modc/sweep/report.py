"""What a sweep shows: results.csv, the transfer picture, and the best-lr table."""

from __future__ import annotations

import csv
import io
import math
from collections import defaultdict
from pathlib import Path

from modc.fileio import write_atomic
from modc.sweep.grid import show
from modc.sweep.runner import Result

FIELDS = ["optimizer", "lr", "seed", "train_loss", "eval_loss", "eval_acc", "diverged"]


def write_csv(results: list[Result], path: Path) -> None:
    """One row per run: varied sizes and settings, optimizer, lr, seed, losses, diverged."""
    first = results[0].run if results else None
    keys = [k for k, _ in (*first.sizes, *first.settings)] if first else []
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow([*keys, *FIELDS])
    for r in results:
        acc = "" if r.eval_acc is None else f"{r.eval_acc:.6g}"
        w.writerow(
            [
                *(v for _, v in r.run.sizes),
                *(show(v) for _, v in r.run.settings),
                r.run.optimizer,
                f"{r.run.lr:.6g}",
                r.run.seed,
                f"{r.train_loss:.6g}",
                f"{r.eval_loss:.6g}",
                acc,
                "yes" if r.diverged else "no",
            ]
        )
    write_atomic(path, buf.getvalue())


def curves(results: list[Result]) -> dict[str, dict[str, dict[float, float]]]:
    """config (optimizer and settings) → sizes → lr → held-out loss averaged over seeds
    (inf if any seed diverged)."""
    sums: dict = defaultdict(lambda: defaultdict(lambda: defaultdict(list)))
    for r in results:
        loss = math.inf if r.diverged else r.eval_loss
        sums[r.run.config][r.run.size_id][r.run.lr].append(loss)
    return {
        config: {
            var: {lr: sum(v) / len(v) for lr, v in sorted(by_lr.items())}
            for var, by_lr in by_var.items()
        }
        for config, by_var in sums.items()
    }


def best(curve: dict[float, float]) -> float | None:
    """The learning rate with the lowest finite held-out loss."""
    finite = {lr: loss for lr, loss in curve.items() if math.isfinite(loss)}
    return min(finite, key=finite.get) if finite else None


def edge(curve: dict[float, float]) -> str | None:
    """ "low" or "high" when the best lr is the grid's smallest or largest: the true optimum
    may lie outside the grid, so the point says nothing about transfer."""
    lr, grid = best(curve), sorted(curve)
    if lr is None or len(grid) < 2:
        return None
    return "low" if lr == grid[0] else "high" if lr == grid[-1] else None


def summary(results: list[Result]) -> str:
    """Best lr per size for each optimizer configuration, and the drift of the optimum in
    grid steps, measured only when every optimum lies inside its grid."""
    lines = []
    for config, by_var in curves(results).items():
        grid = sorted({lr for c in by_var.values() for lr in c})
        lines.append(f"{config}:")
        picks, edges = [], 0
        for var, curve in by_var.items():
            lr = best(curve)
            text = (
                "diverged everywhere"
                if lr is None
                else f"best lr {lr:.4g} (2^{math.log2(lr):.2f}), held-out loss {curve[lr]:.4f}"
            )
            if side := edge(curve):
                text += f"  <- on the grid's {side} edge"
                edges += 1
            lines.append(f"  {var:<24} {text}")
            if lr is not None:
                picks.append(grid.index(lr))
        kind = config.split(",")[0]
        if edges:
            lines.append(
                f"  drift of the best lr: not measured, {edges} of {len(by_var)} optima on the "
                f"grid's edge (widen it: --lr {kind}=LO:HI)"
            )
        elif len(grid) < 2:
            lines.append("  drift of the best lr: not measured, one learning rate")
        else:
            drift = max(picks) - min(picks) if picks else 0
            lines.append(f"  drift of the best lr: {drift} grid step{'s' * (drift != 1)}")
    return "\n".join(lines)


def plot(results: list[Result], path: Path, title: str) -> None:
    """Held-out loss against lr (log axis), a curve per size, a panel per optimizer and
    settings; a best lr on its grid's edge is drawn as a red hollow triangle, not a star."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    data = curves(results)
    cols = min(len(data), 3)
    rows = -(-len(data) // cols)
    fig, axes = plt.subplots(
        rows, cols, figsize=(5.5 * cols, 4.2 * rows), squeeze=False, sharey=True
    )
    for ax in axes.flat[len(data) :]:
        ax.set_visible(False)
    finite = [
        x
        for by_var in data.values()
        for c in by_var.values()
        for x in c.values()
        if math.isfinite(x)
    ]
    top = min(max(finite), 3 * sorted(finite)[len(finite) // 2]) if finite else 1.0
    for ax, (config, by_var) in zip(axes.flat, data.items(), strict=False):
        cmap, edges = plt.get_cmap("viridis"), 0
        for i, (var, curve) in enumerate(by_var.items()):
            color = cmap(i / max(len(by_var) - 1, 1))
            lrs = [lr for lr, loss in curve.items() if math.isfinite(loss)]
            ax.plot(lrs, [min(curve[lr], top) for lr in lrs], "o-", color=color, ms=3, label=var)
            lr = best(curve)
            if lr is None:
                continue
            if edge(curve):  # not an optimum: a hollow red triangle, named once in the legend
                label = None if edges else "best lr on the grid's edge"
                ax.plot([lr], [curve[lr]], "v", mfc="none", mec="red", ms=13, mew=1.6, label=label)
                edges += 1
            else:
                ax.plot([lr], [curve[lr]], "*", color=color, ms=14, mec="black", mew=0.6)
        ax.set_xscale("log", base=2)
        note = "\n(best lr on the grid's edge: no transfer measured)" if edges else ""
        ax.set_title(config + note, fontsize=10, color="red" if edges else "black")
        ax.set_xlabel("learning rate")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    for row in axes:
        row[0].set_ylabel("held-out loss")
    fig.suptitle(title)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    write_atomic(path, buf.getvalue())
