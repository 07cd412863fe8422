"""The grid of a sweep: which spec variants, optimizer settings, learning rates and seeds.

Every optimizer has its own learning-rate grid (`DEFAULT_LRS`, or `--lr KIND=LO:HI`): kinds
differ by orders of magnitude in their good lr, and one shared grid puts some optimum on its
edge. Grids are bounded: at most `MAX_LRS` learning rates per optimizer, `MAX_VALUES` values
per `--vary` or `--set`, `MAX_RUNS` runs in all, and `MAX_STEPS` steps a run.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

from modc.codegen.settings import KEYS, KINDS
from modc.errors import ModcError, did_you_mean
from modc.graph.evaluate import evaluate
from modc.source import Source, Span
from modc.spec.expr import parse_arithmetic

MAX_LRS = 64
MAX_VALUES = 64
MAX_RUNS = 4096
#: Steps of one run: a sweep compares short runs; a longer one is trained alone (train.py).
MAX_STEPS = 10**6

# Where each kind's good learning rate usually lies, as a starting range (factor 2): the
# dualized and normalized kinds take lr as the modular norm of the step; AdamW and Muon take
# torch's; Adafactor's lr caps its relative step min(lr, 1/√t).
DEFAULT_LRS = {
    "dualized": "2^-8:2^2",
    "normalized:sgd": "2^-8:2^2",
    "normalized:adam": "2^-8:2^2",
    "normalized:adafactor": "2^-8:2^2",
    "adamw": "2^-14:2^-4",
    "muon": "2^-12:2^-2",
    "adafactor": "2^-10:2^0",
}

Value = int | float | str | bool


@dataclass(frozen=True)
class Run:
    """One training run of the grid: spec sizes, optimizer settings, kind, lr and seed."""

    sizes: tuple[tuple[str, int], ...]  # (parameter, value) pairs of the spec variant
    settings: tuple[tuple[str, Value], ...]  # (optimizer setting, value) pairs
    optimizer: str
    lr: float
    seed: int

    @property
    def variant_id(self) -> str:
        """The build this run trains: its sizes and settings."""
        return ",".join(f"{k}={show(v)}" for k, v in (*self.sizes, *self.settings))

    @property
    def size_id(self) -> str:
        return ",".join(f"{k}={v}" for k, v in self.sizes) or "default"

    @property
    def config(self) -> str:
        """The optimizer and its settings: one transfer curve family in the report."""
        return ", ".join([self.optimizer, *(f"{k}={show(v)}" for k, v in self.settings)])

    @property
    def id(self) -> str:
        """A directory name that identifies the run, stable across reruns."""
        opt = self.optimizer.replace(":", "-")
        return f"{self.variant_id or 'default'}_{opt}_lr={self.lr:.6g}_seed={self.seed}"


def show(value: Value) -> str:
    """A setting's value as the command line writes it."""
    if isinstance(value, bool):
        return str(value).lower()
    return f"{value:g}" if isinstance(value, float) else str(value)


def _number(text: str, what: str, source: Source, col: int) -> float:
    span = Span(source, 1, col, max(len(text), 1))
    value = evaluate(parse_arithmetic(text, span), {})
    if not value.is_number or not value.is_real or not math.isfinite(float(value)):
        raise ModcError(f"{what} must be a finite number, got '{text.strip()}'", span)
    return float(value)


def _items(text: str, source: Source, start: int) -> list[tuple[str, int]]:
    """The comma-separated items of `text` with their columns, at most MAX_VALUES."""
    items, col = [], start
    for item in text.split(","):
        items.append((item, col))
        col += len(item) + 1
    if len(items) > MAX_VALUES:
        raise ModcError(
            f"{len(items)} values; a sweep takes at most {MAX_VALUES} per list",
            Span(source, 1, start),
        )
    return items


def parse_vary(text: str) -> tuple[str, list[int]]:
    """`width=32,64,128`: the parameter and its values."""
    source = Source("<--vary>", text)
    name, eq, values = text.partition("=")
    if not eq or not name.strip().isidentifier() or not values.strip():
        raise ModcError(f"expected --vary NAME=V1,V2,..., got '{text}'", Span(source, 1, 1))
    out = []
    for item, col in _items(values, source, len(name) + 2):
        v = _number(item, "a value to vary", source, col)
        if v != int(v) or v <= 0:
            raise ModcError(
                f"values to vary must be positive integers, got '{item}'",
                Span(source, 1, col, max(len(item), 1)),
            )
        out.append(int(v))
    return name.strip(), out


_NUMBER = re.compile(r"[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?")


def parse_set(text: str) -> tuple[str, list[Value]]:
    """`decay=0.5,0.8,1.0` or `clip=none,1`: an optimizer setting and its values.

    A value is a number, true/false, or a word (`none`, `alpha=2`); the spec's checks of the
    `optimizer:` section judge it when the variant compiles, before any run starts.
    """
    source = Source("<--set>", text)
    name, eq, values = text.partition("=")
    name = name.strip()
    if not eq or not name.isidentifier() or not values.strip():
        raise ModcError(f"expected --set NAME=V1,V2,..., got '{text}'", Span(source, 1, 1))
    if name == "kind":
        raise ModcError("the kinds of a sweep are its --optimizer list", Span(source, 1, 1, 4))
    if name not in KEYS:
        raise ModcError(
            f"unknown optimizer setting '{name}'",
            Span(source, 1, 1, len(name)),
            did_you_mean(name, KEYS),
        )
    out: list[Value] = []
    for item, _ in _items(values, source, len(name) + 2):
        word = item.strip()
        if _NUMBER.fullmatch(word):
            out.append(float(word))
        elif word in ("true", "false"):
            out.append(word == "true")
        else:
            out.append(word)
    return name, out


def parse_lrs(text: str, source: Source | None = None, start: int = 1) -> list[float]:
    """`2^-8:2^2` (a geometric grid, factor 2, or `LO:HI:FACTOR`) or `0.01,0.1,1`."""
    source = source or Source("<--lr>", text)
    whole = Span(source, 1, start, max(len(text), 1))
    if ":" not in text:
        out = [
            _number(item, "a learning rate", source, col)
            for item, col in _items(text, source, start)
        ]
        if any(lr <= 0 for lr in out):
            raise ModcError(f"learning rates must be positive, got '{text}'", whole)
        return out
    parts = text.split(":")
    if len(parts) > 3:
        raise ModcError(f"expected LO:HI or LO:HI:FACTOR, got '{text}'", whole)
    cols = [start + sum(len(p) + 1 for p in parts[:i]) for i in range(len(parts))]
    lo, hi = (_number(parts[i], "a learning rate", source, cols[i]) for i in (0, 1))
    factor = _number(parts[2], "a factor", source, cols[2]) if len(parts) == 3 else 2.0
    if not 0 < lo <= hi or factor <= 1:
        raise ModcError(f"need 0 < LO <= HI and FACTOR > 1, got '{text}'", whole)
    # In logs: HI/LO itself overflows for ranges such as 1e-300:1e300.
    n = math.floor((math.log(hi) - math.log(lo)) / math.log(factor) + 1e-9) + 1
    if n > MAX_LRS:
        raise ModcError(
            f"'{text}' has {n:.3g} learning rates; a grid takes at most {MAX_LRS} "
            "(use a larger FACTOR or a narrower range)",
            whole,
        )
    if math.isinf(hi / lo):  # then FACTOR**i overflows before the grid reaches HI
        raise ModcError(f"'{text}': HI/LO must be a finite number, got {hi:g}/{lo:g}", whole)
    return [lo * factor**i for i in range(n)]


def lr_grids(texts: list[str], optimizers: list[str]) -> dict[str, list[float]]:
    """Each optimizer's lr grid: `--lr KIND=GRID` for that kind, `--lr GRID` for the kinds
    without one of their own, else the kind's default range."""
    shared: list[float] | None = None
    own: dict[str, list[float]] = {}
    for text in texts:
        source = Source("<--lr>", text)
        kind, eq, grid = text.rpartition("=")
        if not eq:
            if shared is not None:
                raise ModcError("two --lr grids for every optimizer; give one", Span(source, 1, 1))
            shared = parse_lrs(text, source)
            continue
        kind = kind.strip()
        if kind not in optimizers:
            raise ModcError(
                f"--lr for '{kind}', which this sweep does not run "
                f"(--optimizer {','.join(optimizers)})",
                Span(source, 1, 1, max(len(kind), 1)),
                did_you_mean(kind, optimizers),
            )
        if kind in own:
            raise ModcError(f"two --lr grids for {kind}", Span(source, 1, 1, len(kind)))
        own[kind] = parse_lrs(grid, source, len(kind) + 2)
    return {
        opt: own.get(opt) or shared or parse_lrs(DEFAULT_LRS.get(opt, "2^-8:2^2"))
        for opt in optimizers
    }


def check_optimizers(optimizers: list[str]) -> None:
    """Every kind is one that train.py knows, named once."""
    if not optimizers:
        raise ModcError("--optimizer names no optimizer kind")
    for opt in optimizers:
        if opt not in KINDS:
            raise ModcError(
                f"unknown optimizer kind '{opt}'; expected one of {', '.join(KINDS)}",
                hint=did_you_mean(opt, KINDS),
            )
        if optimizers.count(opt) > 1:
            raise ModcError(f"--optimizer names {opt} twice")


def plan(
    vary: list[tuple[str, list[int]]],
    optimizers: list[str],
    grids: dict[str, list[float]],
    seeds: int,
    settings: list[tuple[str, list[Value]]] = (),
) -> list[Run]:
    """Every combination, variants outermost, so that each variant compiles once."""
    names = [name for name, _ in [*vary, *settings]]
    if dup := sorted({n for n in names if names.count(n) > 1}):
        raise ModcError(f"{', '.join(dup)}: given twice in --vary/--set")
    count = math.prod(len(v) for _, v in [*vary, *settings]) * seeds
    count *= sum(len(grids[opt]) for opt in optimizers)
    if count > MAX_RUNS:
        raise ModcError(f"this grid has {count} runs; a sweep takes at most {MAX_RUNS}")
    sizes: list[tuple[tuple[str, int], ...]] = [()]
    for name, values in vary:
        sizes = [(*v, (name, x)) for v in sizes for x in values]
    chosen: list[tuple[tuple[str, Value], ...]] = [()]
    for name, values in settings:
        chosen = [(*s, (name, x)) for s in chosen for x in values]
    return [
        Run(size, setting, opt, lr, seed)
        for size in sizes
        for setting in chosen
        for opt in optimizers
        for lr in grids[opt]
        for seed in range(seeds)
    ]
