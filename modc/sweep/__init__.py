"""`modc sweep`: train a grid of sizes × optimizer settings × learning rates, to check
transfer: each optimizer on its own lr grid, and an optimum on a grid's edge flagged, not
counted."""

from __future__ import annotations

import json
import os
from pathlib import Path

from modc.errors import ModcError
from modc.fileio import write_atomic
from modc.sweep.grid import check_optimizers, lr_grids, parse_set, parse_vary, plan
from modc.sweep.report import plot, summary, write_csv
from modc.sweep.runner import execute


def sweep(
    spec: Path,
    vary: list[str],
    lrs: list[str],
    optimizers: list[str],
    out: Path,
    train_args: list[str],
    jobs: int = 1,
    seeds: int = 1,
    fixed: list[str] = (),
    settings: list[str] = (),
    gpus: list[str] = (),
) -> str:
    """Run the grid and write results.csv and transfer.png into `out`; returns the summary.

    `vary` ("width=32,64") lists sizes, `settings` ("decay=0.5,1") optimizer settings, `lrs`
    the lr grids ("LO:HI" for all, "KIND=LO:HI" for one; see grid.lr_grids).
    `fixed` ("name=value") holds the other parameters of every variant; a directory keeps
    the fixed parameters and training arguments it was first swept with, so that finished
    runs are only reused for the same grid. `gpus` (CUDA_VISIBLE_DEVICES names) spreads the
    runs over those GPUs (runner.execute).
    """
    axes = [parse_vary(v) for v in vary]
    if both := {f.split("=", 1)[0].strip() for f in fixed} & {name for name, _ in axes}:
        raise ModcError(f"{', '.join(sorted(both))}: set with both -p and --vary")
    _folder(Path(out))
    check_optimizers(optimizers)
    chosen = [parse_set(s) for s in settings]
    runs = plan(axes, optimizers, lr_grids(list(lrs), optimizers), seeds, chosen)
    _same_setup(Path(out), {"fixed": list(fixed), "train": train_args})
    results = execute(Path(spec), runs, Path(out), train_args, jobs, list(fixed), gpus=gpus)
    write_csv(results, Path(out) / "results.csv")
    names = " × ".join(name for name, _ in [*axes, *chosen]) or "lr"
    plot(results, Path(out) / "transfer.png", f"{Path(spec).name}: held-out loss, by {names}")
    text = summary(results)
    write_atomic(Path(out) / "summary.txt", text + "\n")
    return text


def _folder(out: Path) -> None:
    """Make the sweep's folder, or say in one line why it cannot be made or written."""
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise ModcError(f"-o {out}: cannot make the sweep folder ({e.strerror})") from None
    if not os.access(out, os.W_OK | os.X_OK):
        raise ModcError(f"-o {out}: the sweep folder is not writable")


def _same_setup(out: Path, setup: dict) -> None:
    """Record the sweep's setup in out/setup.json; refuse a different one while out holds
    finished runs (they would be reused as if they belonged to the new grid)."""
    path = out / "setup.json"
    finished = any((out / "runs").glob("*/final.json")) or any((out / "runs").glob("*/diverged"))
    if finished and path.exists() and json.loads(path.read_text()) != setup:
        raise ModcError(
            f"{out} holds a sweep with other settings ({path.read_text().strip()}); "
            "use another -o, or the same -p and --steps/--data"
        )
    write_atomic(path, json.dumps(setup) + "\n")
