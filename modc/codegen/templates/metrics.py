"""What train.py logs as it trains: metrics.csv, an optional TensorBoard log, and the
progress line.

A step's loss stays on the device until the log is written, every --log-every steps (and
before each checkpoint, and at the end): one host sync and one write per batch of rows,
not one per step, so a GPU never waits on the log. Imports torch and the Python standard
library only (TensorBoard's writer only with --tensorboard).
"""

import os
import sys
import time
from pathlib import Path
from typing import IO

import torch
import torch.distributed as dist


def start_metrics(path: Path, fields: list[str], keep_until: int) -> IO[str]:
    """metrics.csv, rewritten to hold only the rows up to step `keep_until`, which the
    checkpoint we resume from covers (a killed run may have logged a few more, and its last
    line may be torn: only whole lines count), and left open for appending."""
    text = path.read_text() if keep_until and path.exists() else ""
    rows = text.split("\n")[1:-1]  # a line counts once its newline is written
    rows = [
        r for r in rows if r.count(",") == len(fields) - 1 and int(r.split(",")[0]) <= keep_until
    ]
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w") as f:  # then renamed over path: the old file or the new, never torn
        f.write("\n".join([",".join(fields), *rows, ""]))
        f.flush()
        os.fsync(f.fileno())
    tmp.replace(path)
    return open(path, "a")  # noqa: SIM115 (kept open for the run: appended in batches)


class Metrics:
    """Rows of metrics.csv, held until `flush`: a row's values may be device tensors (the
    loss), read back all at once. Rank 0 writes; every rank flushes alike, since the loss
    logged is the mean over the ranks (one all-reduce per flush)."""

    def __init__(
        self, file: IO[str] | None, fields: list[str], tensorboard: Path | None = None
    ) -> None:
        self.file, self.fields, self.rows = file, fields, []
        self.writer = summary_writer(tensorboard) if tensorboard and file else None

    def add(self, row: dict) -> None:
        self.rows.append(row)

    def flush(self) -> list[dict]:
        """Write the rows held (rank 0) and return them with plain numbers."""
        if not self.rows:
            return []
        losses = torch.stack([r["loss"].detach().double().reshape(()) for r in self.rows])
        if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
            dist.all_reduce(losses)
            losses /= dist.get_world_size()
        rows = [{**r, "loss": v} for r, v in zip(self.rows, losses.tolist(), strict=True)]
        self.rows = []
        if self.file is not None:
            cells = [
                ",".join([str(r["step"])] + [fmt(r.get(k)) for k in self.fields[1:]]) for r in rows
            ]
            self.file.write("".join(c + "\n" for c in cells))
            self.file.flush()  # whole lines; a line torn by a kill is dropped on --resume
        if self.writer is not None:
            for r in rows:
                for k in self.fields[1:]:
                    if isinstance(r.get(k), (int, float)):
                        self.writer.add_scalar(k, r[k], r["step"])
            self.writer.flush()
        return rows

    def close(self) -> None:
        for f in (self.file, self.writer):
            if f is not None:
                f.close()


def fmt(value: object) -> str:
    return "" if value is None else f"{value:.6g}"


def summary_writer(folder: Path) -> object:
    """TensorBoard's SummaryWriter into `folder`; a clear error if tensorboard is missing."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        print(
            "train.py: error: --tensorboard needs the tensorboard package: pip install tensorboard",
            file=sys.stderr,
        )
        sys.exit(2)
    return SummaryWriter(str(folder))


class Progress:
    """step/steps, a bar, loss, it/s and ETA on stderr: redrawn in place on a terminal,
    printed about every 10% otherwise."""

    def __init__(self, start: int, steps: int, quiet: bool):
        self.start, self.steps, self.quiet = start, steps, quiet
        self.tty, self.t0, self.shown = sys.stderr.isatty(), time.time(), 0.0

    def update(self, step: int, loss: float, skipped: int) -> None:
        now, last = time.time(), step == self.steps
        decile = step * 10 // self.steps > (step - 1) * 10 // self.steps
        if self.quiet or not (last or (now - self.shown > 0.1 if self.tty else decile)):
            return
        self.shown, rate = now, (step - self.start) / max(now - self.t0, 1e-9)
        eta = int((self.steps - step) / max(rate, 1e-9))
        line = (
            f"step {step:>{len(str(self.steps))}}/{self.steps} "
            f"[{'#' * (20 * step // self.steps):<20}] loss {loss:.4f}"
            f"{f' ({skipped} skipped)' if skipped else ''} | "
            f"{rate:.1f} it/s | ETA {eta // 60}:{eta % 60:02d}"
        )
        if self.tty:  # back to the start of the line, and clear what is left of it
            print(f"\r{line}\033[K", end="\n" if last else "", file=sys.stderr, flush=True)
        else:
            print(line, file=sys.stderr, flush=True)
