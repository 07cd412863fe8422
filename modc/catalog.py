"""`modc ops`: every operation of the library (modc/ops, found as the compiler finds them)
with its arguments, mass, sensitivity and the conditions its bounds need, read from the
operation classes themselves. Imports no torch."""

from __future__ import annotations

import itertools
import sys

import sympy

from modc.ops import OPS, Op
from modc.ops.base import REQUIRED

# Input shapes tried, in order, until the operation accepts one (its sensitivity and
# conditions may depend on the shapes): images, heads of square scores, tokens, vectors.
C, H, T, D = sympy.symbols("c h t d", positive=True, integer=True)
SHAPES = [(C, H, H), (H, T, T), (H, T, D), (T, D), (D,)]


def describe(op: type[Op]) -> dict:
    """One operation: name, kind, arguments, mass, sensitivity, conditions, summary."""
    symbolic = {
        a.name: sympy.Symbol(a.name, positive=True)
        if a.kind == "size"
        else sympy.Symbol(a.name, real=True)
        for a in op.args
    }
    plain = {a.name: sympy.Integer(1 if a.kind == "size" else 0) for a in op.args}
    sensitivity, conditions = "depends on the input shapes", []
    inputs = 2 if op.arity == 0 else op.arity
    tries = itertools.product([symbolic, plain], itertools.product(SHAPES, repeat=inputs))
    for values, shapes in tries:  # symbolic arguments first, then plain numbers
        try:
            made = op({**values}, shapes)
            sensitivity = str(made.sensitivity())
            conditions = [c.text.split(": ", 1)[-1] for c in made.conditions()]
            break
        except Exception:  # noqa: BLE001 (an operation's rules refuse these inputs: the next)
            continue
    doc = (op.__doc__ or sys.modules[op.__module__].__doc__ or "").strip()
    return {
        "name": op.name,
        "kind": "atom" if op.atom else "bond",
        "args": [a.name if a.default is REQUIRED else f"{a.name}={a.default}" for a in op.args]
        + (["mass=1"] if op.atom else []),
        "mass": "1 (or mass=)" if op.atom else "0",
        "sensitivity": sensitivity,
        "conditions": conditions,
        "summary": " ".join(doc.split("\n\n")[0].split()),
    }


def ops_text() -> str:
    """The table `modc ops` prints: a line per operation, its conditions and summary below."""
    lines = []
    for op in OPS.values():
        d = describe(op)
        lines.append(
            f"{d['name']}({', '.join(d['args'])})  {d['kind']}, mass {d['mass']}, "
            f"sensitivity {d['sensitivity']}"
        )
        if d["summary"]:
            lines.append(f"    {d['summary']}")
        lines += [f"    condition: {c}" for c in d["conditions"]]
    return "\n".join(lines)
