"""`modc sweep`: train a grid of widths or depths × learning rates, to check transfer."""

from __future__ import annotations

from pathlib import Path

from modc.fileio import write_atomic
from modc.sweep.grid import parse_lrs, parse_vary, plan
from modc.sweep.report import plot, summary, write_csv
from modc.sweep.runner import execute


def sweep(
    spec: Path,
    vary: list[str],
    lrs: str,
    optimizers: list[str],
    out: Path,
    train_args: list[str],
    jobs: int = 1,
    seeds: int = 1,
) -> str:
    """Run the grid and write results.csv and transfer.png into `out`; returns the summary."""
    axes = [parse_vary(v) for v in vary]
    runs = plan(axes, optimizers, parse_lrs(lrs), seeds)
    results = execute(Path(spec), runs, Path(out), train_args, jobs)
    write_csv(results, Path(out) / "results.csv")
    names = " × ".join(name for name, _ in axes) or "lr"
    plot(results, Path(out) / "transfer.png", f"{Path(spec).name}: held-out loss, by {names}")
    text = summary(results)
    write_atomic(Path(out) / "summary.txt", text + "\n")
    return text
