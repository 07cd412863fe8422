"""Running a sweep's grid: each variant compiled once, runs in parallel, finished runs kept.

A run that diverges (train.py's status 1 with its own message) is a result; any other
failure stops the sweep with one line naming the run and its log, since it is a set-up
error (bad data, a flag, memory) that the remaining runs would repeat. Finished runs are
kept, so a rerun after the fix continues where this one stopped.

On a machine with GPUs the runs are spread over the visible ones: each job slot holds one
GPU (slot i the GPU i mod count), and a run sees only its own (CUDA_VISIBLE_DEVICES).
"""

from __future__ import annotations

import json
import os
import queue
import subprocess
import sys
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path

from modc.codegen.build import write_build
from modc.compiler import load
from modc.errors import ModcError
from modc.sweep.grid import Run

MAX_JOBS = 256  # runs in parallel: each is a process


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


class Failed(Exception):
    """A run that ended neither with a result nor with divergence."""


def visible_gpus(count: Callable[[], int] | None = None) -> list[str]:
    """The GPUs runs may use, as CUDA_VISIBLE_DEVICES names them: the ones it lists when it
    is set, else 0 … count() - 1; `count` is torch.cuda.device_count unless a test gives
    its own."""
    listed = os.environ.get("CUDA_VISIBLE_DEVICES")
    if listed is not None:
        return [g.strip() for g in listed.split(",") if g.strip() and g.strip() != "-1"]
    if count is None:
        import torch

        count = torch.cuda.device_count
    return [str(i) for i in range(count())]


def _train(
    build: Path, run: Run, out: Path, args: list[str], threads: int, gpu: str | None = None
) -> Result:
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
    if gpu is not None:
        env["CUDA_VISIBLE_DEVICES"] = gpu
    out.mkdir(parents=True, exist_ok=True)
    log = out / "train.log"
    with open(log, "w") as f:
        if gpu is not None:
            f.write(f"# CUDA_VISIBLE_DEVICES={gpu}\n")
            f.flush()
        code = subprocess.run(cmd, stdout=f, stderr=subprocess.STDOUT, env=env).returncode
    last = (log.read_text(errors="replace").strip().splitlines() or [""])[-1]
    if code == 1 and last.startswith("train.py: error:"):  # stopped on a non-finite loss
        (out / "diverged").write_text(last + "\n")
    result = _finished(out, run) if code in (0, 1) else None
    if result is None:
        raise Failed(f"run {run.id} failed (exit status {code}): {last.strip()[:300]}; log: {log}")
    return result


def execute(
    spec: Path,
    runs: list[Run],
    out: Path,
    train_args: list[str],
    jobs: int,
    fixed: list[str] = (),
    progress: bool = True,
    gpus: list[str] = (),
) -> list[Result]:
    """Compile each variant (with the `fixed` parameters) once into out/builds, then run the
    grid into out/runs, `jobs` at a time; with `gpus`, job slot i runs on gpus[i mod count]."""
    builds: dict[str, Path] = {}
    for run in runs:
        if run.variant_id not in builds:
            builds[run.variant_id] = _compile(spec, run, out / "builds", fixed)
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
    slots: queue.SimpleQueue = queue.SimpleQueue()  # a job takes a slot, runs, gives it back
    for i in range(jobs):
        slots.put(gpus[i % len(gpus)] if gpus else None)

    def train(run: Run) -> Result:
        gpu = slots.get()
        try:
            return _train(
                builds[run.variant_id], run, out / "runs" / run.id, train_args, threads, gpu
            )
        finally:
            slots.put(gpu)

    with ThreadPoolExecutor(max_workers=jobs) as pool:
        futures = [pool.submit(train, r) for r in todo]
        try:
            for future in as_completed(futures):
                result = future.result()
                results[result.run] = result
                bar.advance()
        except Failed as e:
            for f in futures:
                f.cancel()  # the runs under way finish (and are kept); no new one starts
            bar.close()
            raise ModcError(f"{e}; the finished runs are kept for a rerun") from None
    bar.close()
    return [results[r] for r in runs]


def _compile(spec: Path, run: Run, builds: Path, fixed: list[str]) -> Path:
    """The build of run's variant: the spec with its sizes, and its optimizer settings in
    place of the spec's own (so the build's defaults are the swept values)."""
    network, analysis = load(spec, [*fixed, *(f"{k}={v}" for k, v in run.sizes)])
    network.optimizer = {**network.optimizer, **dict(run.settings)}
    return write_build(network, analysis, builds / (run.variant_id or "default"))


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
