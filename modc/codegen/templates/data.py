"""The data train.py trains on: labelled examples or a text corpus, behind one interface.

A data set gives `batch(step, batch_size, seed)`, the training batch of `step` (0-based),
a function of (seed, step) alone, so that a resumed run sees exactly the batches of an
unbroken one; and `held_out()`, a fixed evaluation split that no seed changes. Both return
(x, y) on the CPU: train.py moves each batch to the device as it needs it, so a data set
larger than the device's memory trains. y holds class labels (integers), or regression
targets (floats, one row per example) for `loss: mse` on a CSV with a target per output.
Imports torch and the Python standard library only.
"""

import array
import bisect
import functools
import gzip
import math
from pathlib import Path
from typing import Protocol

import torch

HERE = Path(__file__).resolve().parent
SHIPPED = {"mnist": "mnist_5k.csv.gz", "shakespeare": "shakespeare.txt"}  # in data/
NAMES = ("synthetic", *SHIPPED)  # the --data values that are not paths
FORMATS = (".csv", ".csv.gz", ".pt", ".txt")
HELD_WINDOWS = 256  # at most this many held-out windows of text

Pair = tuple[torch.Tensor, torch.Tensor]


class DataError(Exception):
    """Data this model cannot train on; the message says why, in one line."""


class Dataset(Protocol):
    """What train.py asks of a data set."""

    def batch(self, step: int, batch_size: int, seed: int) -> Pair: ...

    def held_out(self) -> Pair: ...


def load(
    data: str,
    input_shape: tuple[int, ...],
    output_shape: tuple[int, ...],
    loss: str = "cross_entropy",
    label_column: int | str = -1,
    header: bool | str = "auto",
) -> Dataset:
    """The data set that --data names (one of NAMES, else a path) for a model of these shapes.

    A CSV's label is its column `label_column` (an index, negative from the end, or a name
    in the header row); `header` is True, False or "auto" (a first row with a cell that is
    not a number). With `loss` "mse", a CSV may instead end in one target per output."""
    if data == "synthetic" and is_sequence_model(input_shape, output_shape):
        return Text(synthetic_text(output_shape[-1]), input_shape[0])
    if data == "synthetic":
        return Examples(*synthetic(input_shape, output_shape[-1]))
    path = HERE / "data" / SHIPPED[data] if data in SHIPPED else Path(data)
    if path.suffix == ".txt":
        context = sequence_context(data, input_shape, output_shape)
        return Text(read_text(path, output_shape[-1]), context)
    targets = math.prod(output_shape) if loss == "mse" else 0
    x, y = read_examples(path, input_shape, output_shape[-1], targets, label_column, header)
    x = x / 255 if data == "mnist" else x
    y = y.float() if y.dim() == 2 else y.long()
    return Examples(x.reshape(len(x), *input_shape).float(), y)


def check_file(path: Path) -> None:
    if not path.is_file():
        raise DataError(f"no such data file: {path}")
    if not path.name.endswith(FORMATS):
        raise DataError(f"{path}: unknown format; expected .csv, .csv.gz, .pt or .txt")


# -- labelled examples: x of shape (N, *INPUT_SHAPE), integer labels y -------------------


def synthetic(input_shape: tuple[int, ...], classes: int) -> Pair:
    """4,096 Gaussian inputs, labelled by a fixed random linear teacher."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(4096, *input_shape, generator=g)
    teacher = torch.randn(math.prod(input_shape), classes, generator=g)
    return x, (x.flatten(1) @ teacher).argmax(1)


def read_examples(
    path: Path,
    input_shape: tuple[int, ...],
    classes: int,
    targets: int = 0,
    label_column: int | str = -1,
    header: bool | str = "auto",
) -> Pair:
    """Features and labels from a .csv, .csv.gz or .pt file, checked against the model; or,
    when `targets` (the model's outputs, for mse) is not 0 and the rows hold that many
    targets, float targets of shape (N, targets)."""
    check_file(path)
    features = math.prod(input_shape)
    if path.suffix == ".pt":
        x, y = read_pt(path, features, input_shape, targets)
        column = None
    else:
        x, y, column = read_csv(path, features, input_shape, targets, label_column, header)
    if not x.isfinite().all():
        raise DataError(f"{path}: features must be finite numbers")
    if y.dim() == 2:
        if not y.isfinite().all():
            raise DataError(f"{path}: targets must be finite numbers")
        return x, y
    check_labels(path, y, classes, column, x)
    return x, y


def check_labels(
    path: Path, y: torch.Tensor, classes: int, column: int | None, x: torch.Tensor
) -> None:
    """Refuse labels that are not class indices of this model, and a label column whose
    every value is the same (a pixel read as the label, say), naming a column that looks
    like labels when there is one."""
    where = "" if column is None else f" (column {column})"
    if (y != y.round()).any() or y.min() < 0 or y.max() >= classes:
        raise DataError(
            f"{path}: labels{where} must be integers in [0, {classes}); found "
            f"{y.min().item():g} to {y.max().item():g}{label_hint(x, classes, column)}"
        )
    if len(y) > 1 and (y == y[0]).all():
        raise DataError(
            f"{path}: the label{where} is {y[0].item():g} in all {len(y)} rows: not class "
            f"labels{label_hint(x, classes, column) or '; is the label another column?'}"
        )


def label_hint(x: torch.Tensor, classes: int, column: int | None) -> str:
    """The hint "; column K looks like class labels: pass --label-column K", for the first
    feature column of integers in [0, classes) with two values or more; "" if none."""
    if column is None:
        return ""
    for k in range(x.shape[1]):
        v = x[:, k]
        if (v == v.round()).all() and v.min() >= 0 and v.max() < classes and (v != v[0]).any():
            shown = k if k < column else k + 1  # x lacks the label column
            return f"; column {shown} looks like class labels: pass --label-column {shown}"
    return ""


def read_csv(
    path: Path,
    features: int,
    input_shape: tuple[int, ...],
    targets: int = 0,
    label_column: int | str = -1,
    header: bool | str = "auto",
) -> tuple[torch.Tensor, torch.Tensor, int]:
    """(features, labels, the label's column) of a CSV: one example a row, `features`
    numbers and the label in column `label_column`. With `targets` not 0, a row of
    `features` + `targets` numbers ends in regression targets (one target: the column
    `label_column`), returned as (N, targets) floats. A header row is skipped (`header`:
    True, False or "auto": a first row that is not all numbers over a second that is)."""
    try:
        with (gzip.open if path.suffix == ".gz" else open)(path, "rt", encoding="utf-8") as f:
            lines = [line for line in f.read().splitlines() if line.strip()]
    except UnicodeDecodeError as e:
        raise DataError(f"{path}: not UTF-8 text: byte 0x{e.object[e.start]:02x}") from None
    except (OSError, EOFError) as e:  # not gzip, truncated, unreadable
        raise DataError(f"{path}: cannot be read: {e}") from None
    names = []
    detected = len(lines) > 1 and not numbers(lines[0]) and numbers(lines[1])
    if lines and (header is True or (header == "auto" and detected)):
        names, lines = [c.strip() for c in lines[0].split(",")], lines[1:]
    if not lines:
        raise DataError(f"{path}: no rows")
    regression = targets > 0 and lines[0].count(",") == features + targets - 1
    width = features + (targets if regression else 1)
    for n, line in enumerate(lines, start=1 + bool(names)):
        if line.count(",") != width - 1:
            raise DataError(
                f"{path}, row {n}: {line.count(',')} features; the model takes {features} "
                f"(INPUT_SHAPE {input_shape}), then the label"
                + (f" (or {targets} targets)" if targets > 1 else "")
            )
    try:  # one flat array of float64: much faster than a list of lists
        flat = array.array("d", map(float, ",".join(lines).split(",")))
    except ValueError as e:
        raise DataError(f"{path}: not a number: {str(e).split(': ', 1)[-1]}") from None
    rows = torch.frombuffer(flat, dtype=torch.float64).view(-1, width)
    if regression and targets > 1:  # the last `targets` columns
        return rows[:, :features], rows[:, features:], features
    column = label_index(path, label_column, names, width)
    keep = [k for k in range(width) if k != column]
    y = rows[:, column]
    return rows[:, keep], y[:, None] if regression else y, column


def numbers(line: str) -> bool:
    try:
        [float(cell) for cell in line.split(",")]
    except ValueError:
        return False
    return True


def label_index(path: Path, label_column: int | str, names: list[str], width: int) -> int:
    """The label's column as an index in [0, width): an index (negative from the end), or
    a name in the header row."""
    if isinstance(label_column, str) and label_column.lstrip("-").isdigit():
        label_column = int(label_column)
    if isinstance(label_column, str):
        if label_column not in names:
            known = ", ".join(names) if names else "none: the file has no header row"
            raise DataError(f"{path}: no column named {label_column!r}; the columns: {known}")
        return names.index(label_column)
    if not -width <= label_column < width:
        raise DataError(f"{path}: --label-column {label_column}, but a row has {width} columns")
    return label_column % width


def read_pt(path: Path, features: int, input_shape: tuple[int, ...], targets: int = 0) -> Pair:
    """(x, y) of a .pt file: y labels (N,), or with `targets`, float targets (N, targets)."""
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
        x, y = obj["x"], obj["y"]
        real = not any(t.is_complex() or t.dtype == torch.bool for t in (x, y))
        regression = targets and y.is_floating_point() and y.shape[1:] == (targets,)
        fits = real and (y.dim() == 1 or regression) and len(x) == len(y) > 0
        fits = fits and x[0].numel() == features
    except Exception:  # noqa: BLE001 (whatever torch.load or indexing raises, it does not fit)
        fits = False
    if not fits:
        raise DataError(
            f'{path}: expected {{"x": float tensor (N, *{input_shape}), "y": labels (N,)}}'
        )
    return x, y


def held_out_split(y: torch.Tensor) -> Pair:
    """Indices (train, held): 10% of each class (of all examples, for regression targets),
    the same on every run and for every seed."""
    g = torch.Generator().manual_seed(0)
    label = y.reshape(len(y), -1)[:, 0] if not y.is_floating_point() else torch.zeros(len(y))
    held = torch.zeros(len(y), dtype=torch.bool)
    for c in label.unique():
        members = (label == c).nonzero().flatten()
        held[members[torch.randperm(len(members), generator=g)[: round(len(members) / 10)]]] = 1
    if held.all() or not held.any():
        raise DataError(f"{len(y)} examples are too few to hold 10% of each class out")
    return (~held).nonzero().flatten(), held.nonzero().flatten()


def generator(seed: int, index: int) -> torch.Generator:
    """A generator seeded by (seed, index); any seed in [0, 2^64) gives a valid seed."""
    return torch.Generator().manual_seed((seed * 1_000_003 + index) % 2**64)


@functools.lru_cache(maxsize=1)
def epoch_order(n: int, seed: int, epoch: int) -> torch.Tensor:
    return torch.randperm(n, generator=generator(seed, epoch))


def batch_indices(step: int, n: int, batch_size: int, seed: int) -> torch.Tensor:
    """The examples for `step`: each epoch is a fresh shuffle, a function of (seed, epoch)."""
    epoch, i = divmod(step, max(1, n // batch_size))
    return epoch_order(n, seed, epoch)[i * batch_size : (i + 1) * batch_size]


class Examples:
    """Labelled examples: 10% of each class held out, inputs standardised by the rest."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor):
        train, held = held_out_split(y)
        x = (x - x[train].mean()) / x[train].std().clamp_min(1e-8)
        self.x, self.y = x[train], y[train]
        self.held = x[held], y[held]

    def batch(self, step: int, batch_size: int, seed: int) -> Pair:
        idx = batch_indices(step, len(self.x), batch_size, seed)
        return self.x[idx], self.y[idx]

    def held_out(self) -> Pair:
        return self.held


# -- text: one token per byte, the next byte at every position as the label --------------


def is_sequence_model(input_shape: tuple[int, ...], output_shape: tuple[int, ...]) -> bool:
    """Whether the model maps (context,) tokens to (context, vocab) logits."""
    return len(input_shape) == 1 and tuple(output_shape[:-1]) == tuple(input_shape)


def sequence_context(data: str, input_shape: tuple[int, ...], output_shape: tuple[int, ...]) -> int:
    """The model's context, if it maps (context,) tokens to (context, vocab) logits."""
    if not is_sequence_model(input_shape, output_shape):
        raise DataError(
            f"--data {data} is text, for a model from byte tokens of shape (context,) to "
            f"next-byte logits (context, vocab); this model maps {tuple(input_shape)} to "
            f"{tuple(output_shape)}"
        )
    return input_shape[0]


def read_text(path: Path, vocab: int) -> torch.Tensor:
    """The bytes of `path` as uint8 tokens, each below the model's vocab."""
    check_file(path)
    raw = bytearray(path.read_bytes())
    if not raw:
        raise DataError(f"{path}: no text")
    tokens = torch.frombuffer(raw, dtype=torch.uint8)
    high = (tokens.int() >= vocab).nonzero()  # as uint8, a vocab of 256 would wrap to 0
    if len(high):
        offset, ascii_only = high[0].item(), tokens.max().item() < 128
        raise DataError(
            f"{path}: byte {tokens[offset].item()} at offset {offset}; "
            f"the model's vocab is {vocab}: set vocab ≥ {128 if ascii_only else 256}"
        )
    return tokens


def synthetic_text(vocab: int) -> torch.Tensor:
    """65,536 tokens of a fixed random bigram chain over min(vocab, 256) symbols."""
    g = torch.Generator().manual_seed(0)
    symbols = min(vocab, 256)
    table = torch.softmax(3 * torch.randn(symbols, symbols, generator=g), dim=1).cumsum(1)
    u = torch.rand(65536, generator=g).tolist()
    rows = table.tolist()
    tokens, t = [], 0
    for x in u:
        t = min(bisect.bisect(rows[t], x), symbols - 1)
        tokens.append(t)
    return torch.tensor(tokens, dtype=torch.uint8)


class Text:
    """A byte corpus: the first 90% trains on windows at random offsets; up to HELD_WINDOWS
    non-overlapping windows, spread evenly over the last 10%, are held out."""

    def __init__(self, tokens: torch.Tensor, context: int):
        cut = len(tokens) * 9 // 10
        train, held, span = tokens[:cut], tokens[cut:], context + 1
        if len(train) < span or len(held) < span:
            raise DataError(
                f"{len(tokens)} bytes of text are too few: the first 90% and the last 10% "
                f"must each hold a window of context + 1 = {span} bytes"
            )
        count = min(HELD_WINDOWS, len(held) // span)
        starts = torch.tensor([i * (len(held) - span) // max(1, count - 1) for i in range(count)])
        self.span, self.train = span, train
        self.held = self.pairs(held[starts[:, None] + torch.arange(span)])

    def batch(self, step: int, batch_size: int, seed: int) -> Pair:
        g = generator(seed, step)
        starts = torch.randint(len(self.train) - self.span + 1, (batch_size, 1), generator=g)
        offsets = starts + torch.arange(self.span)
        return self.pairs(self.train[offsets])

    def held_out(self) -> Pair:
        return self.held

    @staticmethod
    def pairs(windows: torch.Tensor) -> Pair:
        """(x, y) of windows of context + 1 bytes: y is x shifted on by one byte."""
        return windows[:, :-1].long(), windows[:, 1:].long()
