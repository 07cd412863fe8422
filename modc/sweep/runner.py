"""Running a sweep's grid: each variant compiled once, runs in parallel, finished runs kept."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path

from modc.compiler import compile_spec
from modc.sweep.grid import Run


@dataclass
class Result:
    run: Run
    train_loss: float
    eval_loss: float
    eval_acc: float | None
    diverged: bool


def _finished(run_dir: Path, run: Run) -> Result | None:
    """The result of a run that completed earlier (final.json or a divergence marker)."""
    if (run_dir / "diverged").exists():
        nan = float("nan")
        return Result(run, nan, nan, None, True)
    final = run_dir / "final.json"
    if not final.exists():
        return None
    f = json.loads(final.read_text())
    bad = any(
        not isinstance(f.get(k), (int, float)) or f[k] != f[k] for k in ("train_loss", "eval_loss")
    )
    return Result(run, f.get("train_loss"), f.get("eval_loss"), f.get("eval_acc"), bad)


def _train(build: Path, run: Run, out: Path, args: list[str], threads: int) -> Result:
    cmd = [
        sys.executable,
        str(build / "train.py"),
        "--quiet",
        "--out",
        str(out),
        "--lr",
        repr(run.lr),
        "--seed",
        str(run.seed),
        "--optimizer",
        run.optimizer,
        *args,
    ]
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if proc.returncode == 1:  # train.py stops with status 1 on a non-finite loss
        out.mkdir(parents=True, exist_ok=True)
        (out / "diverged").write_text(proc.stderr)
    elif proc.returncode != 0:
        raise RuntimeError(f"run {run.id} failed:\n{proc.stderr.strip()}")
    return _finished(out, run)


def execute(
    spec: Path,
    runs: list[Run],
    out: Path,
    train_args: list[str],
    jobs: int,
    fixed: list[str] = (),
    progress: bool = True,
) -> list[Result]:
    """Compile each variant (with the `fixed` parameters) once into out/builds, then run the
    grid into out/runs."""
    builds: dict[str, Path] = {}
    for run in runs:
        if run.variant_id not in builds:
            where = out / "builds" / (run.variant_id or "default")
            params = [*fixed, *(f"{k}={v}" for k, v in run.variant)]
            builds[run.variant_id] = compile_spec(spec, where, params)
    results: dict[Run, Result] = {}
    todo = []
    for run in runs:
        done = _finished(out / "runs" / run.id, run)
        if done:
            results[run] = done
        else:
            todo.append(run)
    bar = Progress(len(runs), len(results), progress)
    threads = max(1, usable_cores() // jobs)
    with ThreadPoolExecutor(max_workers=jobs) as pool:
        futures = [
            pool.submit(_train, builds[r.variant_id], r, out / "runs" / r.id, train_args, threads)
            for r in todo
        ]
        for future in as_completed(futures):
            result = future.result()
            results[result.run] = result
            bar.advance()
    bar.close()
    return [results[r] for r in runs]


class Progress:
    """A progress line for the whole grid on stderr."""

    def __init__(self, total: int, done: int, show: bool):
        self.total, self.done, self.show, self.start = total, done, show, time.time()
        self.skipped = done
        self._draw()

    def advance(self) -> None:
        self.done += 1
        self._draw()

    def _draw(self) -> None:
        if not self.show:
            return
        n = self.done - self.skipped
        rate = n / max(time.time() - self.start, 1e-9)
        eta = (self.total - self.done) / rate if n else float("nan")
        width = 30
        filled = int(width * self.done / max(self.total, 1))
        eta_text = f"{int(eta) // 60}:{int(eta) % 60:02d}" if eta == eta else "?"
        line = (
            f"sweep {self.done}/{self.total} [{'#' * filled}{' ' * (width - filled)}] "
            f"ETA {eta_text}"
        )
        end = "\r" if sys.stderr.isatty() else "\n"
        print(line, end=end, file=sys.stderr, flush=True)

    def close(self) -> None:
        if self.show and sys.stderr.isatty():
            print(file=sys.stderr)


def usable_cores() -> int:
    """The CPU cores this process may run on (its affinity, where the OS tells it)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1
