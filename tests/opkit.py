"""Helpers for testing operations: build one, run the torch code it emits, measure norms.

The norms are those the theory states (modc/ops/attention.py, modc/theory/report.py):
activations by the RMS over features, largest over positions; images by the RMS over
channels, largest over pixels; scores by their largest finite entry; attention weights
by the largest ℓ1 norm of a row. Every function takes a batch and measures per example.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from types import SimpleNamespace

import sympy
import torch
import torch.nn.functional as F
from torch import nn

from modc.ops import OPS, Op

Norm = Callable[[torch.Tensor], torch.Tensor]


def make(name: str, values: dict | None = None, *shapes: tuple) -> Op:
    """The operation `name` with sympy-valued arguments, on inputs of the given shapes."""
    cls = OPS[name]
    given = {k: (v if v is None else sympy.sympify(v)) for k, v in (values or {}).items()}
    full = {a.name: given.get(a.name, a.default) for a in cls.args}
    return cls(full, [tuple(sympy.sympify(d) for d in s) for s in shapes])


def emit(op: Op) -> Callable[..., torch.Tensor]:
    """The op's emitted forward expression as a function of its inputs (batch first).

    For an atom, the function's `.module` is the nn.Module its constructor builds.
    """
    ns: dict = {"torch": torch, "F": F, "nn": nn, "math": math}
    for obj in op.runtime:
        ns[obj.__name__] = obj
    names = [f"x{i}" for i in range(len(op.in_shapes))]
    module = None
    if op.atom:
        ns[op.module.__name__] = op.module
        module = eval(op.constructor(), ns).double()  # noqa: S307 - our own op's code
        ns["self"] = SimpleNamespace(m=module)
    elif op.state() is not None:  # fixed tables (RoPE's), built as model.py builds them
        ns["self"] = SimpleNamespace(m=eval(op.state(), ns).double())  # noqa: S307
    code = op.forward(names, "m" if op.atom or op.state() is not None else None)
    fn = eval(f"lambda {', '.join(names)}: {code}", ns)  # noqa: S307 - our own op's code
    fn.module = module
    return fn


def tok(x: torch.Tensor) -> torch.Tensor:
    """RMS over the last axis, largest over the other axes of each example."""
    r = x.pow(2).mean(-1).sqrt()
    return r.flatten(1).amax(1) if r.dim() > 1 else r


def img(x: torch.Tensor) -> torch.Tensor:
    """(B, C, H, W): RMS over channels, largest over pixels."""
    return x.pow(2).mean(1).sqrt().flatten(1).amax(1)


def entries(x: torch.Tensor) -> torch.Tensor:
    """Largest |entry| among the finite ones (masked scores are −∞ on both sides)."""
    return torch.where(x.isfinite(), x, torch.zeros_like(x)).abs().flatten(1).amax(1)


def rows_l1(x: torch.Tensor) -> torch.Tensor:
    """Largest ℓ1 norm of a row (the last axis)."""
    return x.abs().sum(-1).reshape(len(x), -1).amax(1)


def clip_rms(x: torch.Tensor, at_most: float = 1.0) -> torch.Tensor:
    """Scale down every vector (last axis) whose RMS exceeds `at_most`."""
    r = x.pow(2).mean(-1, keepdim=True).sqrt()
    return x * (at_most / r).clamp(max=1.0)


def lift_rms(x: torch.Tensor, at_least: float = 1.0) -> torch.Tensor:
    """Scale up every vector (last axis) whose RMS is below `at_least`."""
    r = x.pow(2).mean(-1, keepdim=True).sqrt()
    return x * (at_least / r).clamp(min=1.0)


def sym(x: float) -> float:
    """A sympy value as a float."""
    return float(sympy.sympify(x))
