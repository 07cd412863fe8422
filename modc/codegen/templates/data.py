"""The data train.py trains on: labelled examples or a text corpus, behind one interface.

A data set gives `batch(step, batch_size, seed)`, the training batch of `step` (0-based),
a function of (seed, step) alone, so that a resumed run sees exactly the batches of an
unbroken one; and `held_out()`, a fixed evaluation split that no seed changes. Both return
(x, y) on the training device. Imports torch and the Python standard library only.
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
    data: str, input_shape: tuple[int, ...], output_shape: tuple[int, ...], device: torch.device
) -> Dataset:
    """The data set that --data names (one of NAMES, else a path) for a model of these shapes."""
    if data == "synthetic" and is_sequence_model(input_shape, output_shape):
        return Text(synthetic_text(output_shape[-1]), input_shape[0], device)
    if data == "synthetic":
        return Examples(*synthetic(input_shape, output_shape[-1]), device)
    path = HERE / "data" / SHIPPED[data] if data in SHIPPED else Path(data)
    if path.suffix == ".txt":
        context = sequence_context(data, input_shape, output_shape)
        return Text(read_text(path, output_shape[-1]), context, device)
    x, y = read_examples(path, input_shape, output_shape[-1])
    x = x / 255 if data == "mnist" else x
    return Examples(x.reshape(len(x), *input_shape).float(), y.long(), device)


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


def read_examples(path: Path, input_shape: tuple[int, ...], classes: int) -> Pair:
    """Features and labels from a .csv, .csv.gz or .pt file, checked against the model."""
    check_file(path)
    features = math.prod(input_shape)
    if path.suffix == ".pt":
        x, y = read_pt(path, features, input_shape)
    else:
        x, y = read_csv(path, features, input_shape)
    if (y != y.round()).any() or y.min() < 0 or y.max() >= classes:
        raise DataError(
            f"{path}: labels must be integers in [0, {classes}); found "
            f"{y.min().item():g} to {y.max().item():g}"
        )
    if not x.isfinite().all():
        raise DataError(f"{path}: features must be finite numbers")
    return x, y


def read_csv(path: Path, features: int, input_shape: tuple[int, ...]) -> Pair:
    try:
        with (gzip.open if path.suffix == ".gz" else open)(path, "rt", encoding="utf-8") as f:
            lines = [line for line in f.read().splitlines() if line.strip()]
    except UnicodeDecodeError as e:
        raise DataError(f"{path}: not UTF-8 text: byte 0x{e.object[e.start]:02x}") from None
    except (OSError, EOFError) as e:  # not gzip, truncated, unreadable
        raise DataError(f"{path}: cannot be read: {e}") from None
    if not lines:
        raise DataError(f"{path}: no rows")
    for n, line in enumerate(lines, start=1):
        if line.count(",") != features:
            raise DataError(
                f"{path}, row {n}: {line.count(',')} features; the model takes {features} "
                f"(INPUT_SHAPE {input_shape}), then the label"
            )
    try:  # one flat array of float64: much faster than a list of lists
        flat = array.array("d", map(float, ",".join(lines).split(",")))
    except ValueError as e:
        raise DataError(f"{path}: not a number: {str(e).split(': ', 1)[-1]}") from None
    rows = torch.frombuffer(flat, dtype=torch.float64).view(-1, features + 1)
    return rows[:, :-1], rows[:, -1]


def read_pt(path: Path, features: int, input_shape: tuple[int, ...]) -> Pair:
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
        x, y = obj["x"], obj["y"]
        real = not any(t.is_complex() or t.dtype == torch.bool for t in (x, y))
        fits = real and y.dim() == 1 and len(x) == len(y) > 0 and x[0].numel() == features
    except Exception:  # noqa: BLE001 (whatever torch.load or indexing raises, it does not fit)
        fits = False
    if not fits:
        raise DataError(
            f'{path}: expected {{"x": float tensor (N, *{input_shape}), "y": labels (N,)}}'
        )
    return x, y


def held_out_split(y: torch.Tensor) -> Pair:
    """Indices (train, held): 10% of each class, the same on every run and for every seed."""
    g = torch.Generator().manual_seed(0)
    label = y.reshape(len(y), -1)[:, 0]
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

    def __init__(self, x: torch.Tensor, y: torch.Tensor, device: torch.device):
        train, held = held_out_split(y)
        x = (x - x[train].mean()) / x[train].std().clamp_min(1e-8)
        self.device = device
        self.x, self.y = x[train].to(device), y[train].to(device)
        self.held = x[held].to(device), y[held].to(device)

    def batch(self, step: int, batch_size: int, seed: int) -> Pair:
        idx = batch_indices(step, len(self.x), batch_size, seed).to(self.device)
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

    def __init__(self, tokens: torch.Tensor, context: int, device: torch.device):
        cut = len(tokens) * 9 // 10
        train, held, span = tokens[:cut], tokens[cut:], context + 1
        if len(train) < span or len(held) < span:
            raise DataError(
                f"{len(tokens)} bytes of text are too few: the first 90% and the last 10% "
                f"must each hold a window of context + 1 = {span} bytes"
            )
        count = min(HELD_WINDOWS, len(held) // span)
        starts = torch.tensor([i * (len(held) - span) // max(1, count - 1) for i in range(count)])
        self.span, self.device = span, device
        self.train = train.to(device)
        self.held = self.pairs(held[starts[:, None] + torch.arange(span)].to(device))

    def batch(self, step: int, batch_size: int, seed: int) -> Pair:
        g = generator(seed, step)
        starts = torch.randint(len(self.train) - self.span + 1, (batch_size, 1), generator=g)
        offsets = starts + torch.arange(self.span)
        return self.pairs(self.train[offsets.to(self.device)])

    def held_out(self) -> Pair:
        return self.held

    @staticmethod
    def pairs(windows: torch.Tensor) -> Pair:
        """(x, y) of windows of context + 1 bytes: y is x shifted on by one byte."""
        return windows[:, :-1].long(), windows[:, 1:].long()
