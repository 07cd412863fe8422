"""The grid of a sweep: which spec variants, optimizers, learning rates and seeds to run."""

from __future__ import annotations

import math
from dataclasses import dataclass

from modc.errors import ModcError
from modc.graph.evaluate import evaluate
from modc.source import Source, Span
from modc.spec.expr import parse_arithmetic


@dataclass(frozen=True)
class Run:
    """One training run of the grid."""

    variant: tuple[tuple[str, int], ...]  # (parameter, value) pairs of the spec variant
    optimizer: str
    lr: float
    seed: int

    @property
    def variant_id(self) -> str:
        return ",".join(f"{k}={v}" for k, v in self.variant)

    @property
    def id(self) -> str:
        """A directory name that identifies the run, stable across reruns."""
        opt = self.optimizer.replace(":", "-")
        return f"{self.variant_id}_{opt}_lr={self.lr:.6g}_seed={self.seed}"


def _number(text: str, what: str, source: Source, col: int) -> float:
    span = Span(source, 1, col, max(len(text), 1))
    value = evaluate(parse_arithmetic(text, span), {})
    if not value.is_number or not value.is_real:
        raise ModcError(f"{what} must be a number, got '{text}'", span)
    return float(value)


def parse_vary(text: str) -> tuple[str, list[int]]:
    """`width=32,64,128`: the parameter and its values."""
    source = Source("<--vary>", text)
    name, eq, values = text.partition("=")
    if not eq or not name.strip().isidentifier() or not values.strip():
        raise ModcError(f"expected --vary NAME=V1,V2,..., got '{text}'", Span(source, 1, 1))
    out, col = [], len(name) + 2
    for item in values.split(","):
        v = _number(item, "a value to vary", source, col)
        if v != int(v) or v <= 0:
            raise ModcError(
                f"values to vary must be positive integers, got '{item}'",
                Span(source, 1, col, max(len(item), 1)),
            )
        out.append(int(v))
        col += len(item) + 1
    return name.strip(), out


def parse_lrs(text: str) -> list[float]:
    """`2^-8:2^2` (a geometric grid, factor 2, or `LO:HI:FACTOR`) or `0.01,0.1,1`."""
    source = Source("<--lr>", text)
    if ":" not in text:
        out, col = [], 1
        for item in text.split(","):
            out.append(_number(item, "a learning rate", source, col))
            col += len(item) + 1
        return out
    parts = text.split(":")
    if len(parts) > 3:
        raise ModcError(f"expected LO:HI or LO:HI:FACTOR, got '{text}'", Span(source, 1, 1))
    cols = [1 + sum(len(p) + 1 for p in parts[:i]) for i in range(len(parts))]
    lo, hi = (_number(parts[i], "a learning rate", source, cols[i]) for i in (0, 1))
    factor = _number(parts[2], "a factor", source, cols[2]) if len(parts) == 3 else 2.0
    if not 0 < lo <= hi or factor <= 1:
        raise ModcError(f"need 0 < LO <= HI and FACTOR > 1, got '{text}'", Span(source, 1, 1))
    n = int(math.floor(math.log(hi / lo, factor) + 1e-9))
    return [lo * factor**i for i in range(n + 1)]


def plan(
    vary: list[tuple[str, list[int]]], optimizers: list[str], lrs: list[float], seeds: int
) -> list[Run]:
    """Every combination, variants outermost, so that each variant compiles once."""
    variants: list[tuple[tuple[str, int], ...]] = [()]
    for name, values in vary:
        variants = [(*v, (name, x)) for v in variants for x in values]
    return [
        Run(v, opt, lr, seed)
        for v in variants
        for opt in optimizers
        for lr in lrs
        for seed in range(seeds)
    ]
