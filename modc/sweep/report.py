"""What a sweep shows: results.csv, the transfer picture, and the best-lr table."""

from __future__ import annotations

import csv
import io
import math
from collections import defaultdict
from pathlib import Path

from modc.fileio import write_atomic
from modc.sweep.runner import Result

FIELDS = ["optimizer", "lr", "seed", "train_loss", "eval_loss", "eval_acc", "diverged"]


def write_csv(results: list[Result], path: Path) -> None:
    """One row per run: varied values, optimizer, lr, seed, losses, accuracy, diverged."""
    keys = [k for k, _ in results[0].run.variant] if results else []
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow([*keys, *FIELDS])
    for r in results:
        acc = "" if r.eval_acc is None else f"{r.eval_acc:.6g}"
        w.writerow(
            [
                *(v for _, v in r.run.variant),
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
    """optimizer → variant → lr → held-out loss averaged over seeds (inf if any diverged)."""
    sums: dict = defaultdict(lambda: defaultdict(lambda: defaultdict(list)))
    for r in results:
        loss = math.inf if r.diverged else r.eval_loss
        sums[r.run.optimizer][r.run.variant_id][r.run.lr].append(loss)
    return {
        opt: {
            var: {lr: sum(v) / len(v) for lr, v in sorted(by_lr.items())}
            for var, by_lr in by_var.items()
        }
        for opt, by_var in sums.items()
    }


def best(curve: dict[float, float]) -> float | None:
    """The learning rate with the lowest finite held-out loss."""
    finite = {lr: loss for lr, loss in curve.items() if math.isfinite(loss)}
    return min(finite, key=finite.get) if finite else None


def summary(results: list[Result]) -> str:
    """Best lr per variant and optimizer, and the drift of the optimum in grid steps."""
    lines = []
    for opt, by_var in curves(results).items():
        grid = sorted({lr for c in by_var.values() for lr in c})
        lines.append(f"{opt}:")
        picks = []
        for var, curve in by_var.items():
            lr = best(curve)
            text = (
                "diverged everywhere"
                if lr is None
                else f"best lr {lr:.4g} (2^{math.log2(lr):.2f}), held-out loss {curve[lr]:.4f}"
            )
            lines.append(f"  {var:<24} {text}")
            if lr is not None:
                picks.append(grid.index(lr))
        drift = max(picks) - min(picks) if picks else 0
        lines.append(f"  drift of the best lr: {drift} grid step{'s' * (drift != 1)}")
    return "\n".join(lines)


def plot(results: list[Result], path: Path, title: str) -> None:
    """Held-out loss against lr (log axis), a curve per variant, a panel per optimizer."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    data = curves(results)
    fig, axes = plt.subplots(
        1, len(data), figsize=(5.5 * len(data), 4.2), squeeze=False, sharey=True
    )
    finite = [
        x
        for by_var in data.values()
        for c in by_var.values()
        for x in c.values()
        if math.isfinite(x)
    ]
    top = min(max(finite), 3 * sorted(finite)[len(finite) // 2]) if finite else 1.0
    for ax, (opt, by_var) in zip(axes[0], data.items(), strict=True):
        cmap = plt.get_cmap("viridis")
        for i, (var, curve) in enumerate(by_var.items()):
            color = cmap(i / max(len(by_var) - 1, 1))
            lrs = [lr for lr, loss in curve.items() if math.isfinite(loss)]
            ax.plot(lrs, [min(curve[lr], top) for lr in lrs], "o-", color=color, ms=3, label=var)
            lr = best(curve)
            if lr is not None:
                ax.plot([lr], [curve[lr]], "*", color=color, ms=14, mec="black", mew=0.6)
        ax.set_xscale("log", base=2)
        ax.set_title(opt)
        ax.set_xlabel("learning rate")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    axes[0][0].set_ylabel("held-out loss")
    fig.suptitle(title)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    write_atomic(path, buf.getvalue())
