"""The analysis as JSON (numbers where numeric, sympy text where symbolic) or a text table."""

from __future__ import annotations

import sympy

from modc.graph import ir
from modc.theory.analysis import Analysis


def value(e: sympy.Expr) -> int | float | str:
    """A JSON value: an int or float when `e` is a number, else its sympy text."""
    if isinstance(e, int):
        return e
    if e.is_Integer:
        return int(e)
    if e.is_number:
        return float(e)
    return str(e)


def to_json(network: ir.Network, a: Analysis) -> dict:
    """`modc bounds --format json`: the network's totals, then one entry per atom."""
    return {
        "network": {
            "name": network.name,
            "params": {k: value(v) for k, v in network.params.items()},
            "input_shape": [value(d) for d in network.input_shape],
            "output_shape": [value(d) for d in network.output_shape],
            "mass": value(a.mass),
            "sensitivity": value(a.sensitivity),
            "parameters": value(a.parameters),
        },
        "atoms": [
            {
                "path": atom.path,
                "kind": atom.kind,
                "shape": [value(d) for d in atom.shape],
                "mass": value(atom.mass),
                "target": value(atom.target),
                "target_exact": str(atom.target),
                "source": f"{atom.span.line}:{atom.span.col}" if atom.span else None,
            }
            for atom in a.atoms
        ],
    }


def to_text(network: ir.Network, a: Analysis) -> str:
    """`modc bounds --format text`: a table a person reads in a terminal."""
    params = ", ".join(f"{k}={v}" for k, v in network.params.items())
    rows = [("path", "kind", "shape", "mass", "target")]
    rows += [
        (
            atom.path,
            atom.kind,
            " × ".join(str(d) for d in atom.shape),
            str(atom.mass),
            str(atom.target),
        )
        for atom in a.atoms
    ]
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = [
        f"{network.name} ({params})",
        f"  mass {a.mass}   sensitivity {a.sensitivity}   parameters {a.parameters}",
        "",
    ]
    for i, row in enumerate(rows):
        lines.append("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())
        if i == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)
