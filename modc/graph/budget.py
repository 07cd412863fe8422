"""Refuse networks too large to build or to hold in memory, before anything is allocated.

Elaboration counts operations (atoms and bonds, every copy of a repeated body counted) as
it goes, so that no spec makes it, or anything after it, work without bound. The weights'
size comes from the module IR alone (weight shapes times copies), so it is cheap for any
depth and runs before the analysis.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

import sympy

from modc.errors import ModcError
from modc.graph import ir
from modc.source import Span

#: Bytes per parameter: weights are float32.
BYTES = 4
#: Most operations (atoms and bonds, every copy counted) a network may have.
MAX_OPERATIONS = 100_000
#: Environment variable that sets the memory limit in bytes (default: physical memory).
LIMIT_VARIABLE = "MODC_MAX_BYTES"


@dataclass
class Largest:
    """The atom holding the most parameters (counting its copies), to point the error at."""

    leaf: ir.Leaf | None = None
    count: sympy.Expr = sympy.Integer(0)


@dataclass
class Operations:
    """The operations elaborated so far, every copy counted; refuses more than `limit`."""

    used: int = 0
    limit: int = field(default_factory=lambda: MAX_OPERATIONS)

    def add(self, n: int, span: Span | None) -> None:
        """Count `n` more operations, made by the text at `span`."""
        self.used += n
        if self.used > self.limit:
            raise ModcError(
                f"this network has at least {self.used:,} operations (atoms and bonds, every "
                f"copy counted); modc handles at most {self.limit:,}",
                span,
                "lower the depth or the repeat counts",
            )


def memory_limit() -> int:
    """Bytes the weights may take: $MODC_MAX_BYTES, else the machine's physical memory."""
    text = os.environ.get(LIMIT_VARIABLE, "").strip()
    if text.isdigit():
        return int(text)
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return 64 * 2**30


def count(node: ir.Node, copies: sympy.Expr, largest: Largest) -> sympy.Expr:
    """The parameters under `node`, each copy counted (a node applies each child as many
    times as its `uses` say); tracks the largest atom."""
    if node.is_atom:
        n = node.parameters()
        if (n * copies).is_number and (largest.leaf is None or n * copies > largest.count):
            largest.leaf, largest.count = node, n * copies
        return n
    total = sympy.Integer(0)
    for child, times in node.uses():
        total += count(child, copies * times, largest) * times
    return total


def check_budget(network: ir.Network, limit: int | None = None) -> sympy.Expr:
    """The network's parameter count; a ModcError if its weights would not fit in memory."""
    largest = Largest()
    params = count(network.root, sympy.Integer(1), largest)
    at = largest.leaf.span if largest.leaf is not None else None
    limit = memory_limit() if limit is None else limit
    if params.is_number and params * BYTES > limit:
        part = largest.leaf.op.describe() if largest.leaf is not None else "the network"
        raise ModcError(
            f"this network would need {int(params):,} parameters "
            f"({_bytes(int(params) * BYTES)} as float32), more than the "
            f"{_bytes(limit)} of memory available",
            at,
            f"the largest part is {part} with {int(largest.count):,} parameters; lower the "
            f"sizes (-p NAME=VALUE) or set {LIMIT_VARIABLE}",
        )
    return params


def _bytes(n: int) -> str:
    """A byte count for people: 1.5 GiB."""
    size = float(n)
    for unit in ("bytes", "KiB", "MiB", "GiB", "TiB", "PiB"):
        if size < 1024 or unit == "PiB":
            return f"{size:.0f} {unit}" if unit == "bytes" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{n} bytes"
