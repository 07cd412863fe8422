"""`modc check`: validate a spec and print its modules with shapes, parameters, mass and
sensitivity, one row per node of the module tree (a repeated body once, marked ×count)."""

from __future__ import annotations

import sympy

from modc.errors import shown
from modc.graph import ir
from modc.graph.budget import Largest, count
from modc.ops import show
from modc.theory.analysis import Analysis, Analyzer

_HEAD = ("module", "in → out", "params", "mass", "sensitivity")


def check_table(network: ir.Network, analysis: Analysis) -> str:
    """The table `modc check` prints: a header line, then the module tree. What a terminal
    would not show as text (an escape sequence in the spec's name) is shown escaped."""
    a = Analyzer()
    rows: list[tuple[str, ...]] = [_HEAD]
    _rows(network.root, a, sympy.Integer(1), 0, "", rows)
    widths = [max(len(r[i]) for r in rows) for i in range(len(_HEAD))]
    params = ", ".join(f"{k}={v}" for k, v in network.params.items())
    lines = [
        f"{network.name} ({params}): ok",
        f"  input {show(network.input_shape)}   output {_shape(network.output_shape)}   "
        f"parameters {_count(analysis.parameters)}   mass {analysis.mass}   "
        f"sensitivity {analysis.sensitivity}",
        "",
    ]
    for i, row in enumerate(rows):
        cells = [row[0].ljust(widths[0]), row[1].ljust(widths[1])]
        cells += [c.rjust(w) for c, w in zip(row[2:], widths[2:], strict=True)]
        lines.append("  ".join(cells).rstrip())
        if i == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(shown(line) for line in lines)  # the spec's name is any text


def _rows(
    node: ir.Node,
    a: Analyzer,
    scale: sympy.Expr,
    depth: int,
    prefix: str,
    rows: list[tuple[str, ...]],
) -> None:
    """Append the row of `node` and of its children; `scale` is the enclosing tares' factor."""
    name = node.label()
    if given := node.attributes().get("name"):
        name = f"{given}: {name}"
    mass = a.mass(node) * scale
    rows.append(
        (
            "  " * depth + prefix + name,
            f"{_shape(node.in_shape)} → {_shape(node.out_shape)}",
            _count(count(node, sympy.Integer(1), Largest())),
            str(sympy.nsimplify(mass) if mass.is_number else mass),
            str(a.sensitivity(node)),
        )
    )
    scale = scale * node.mass_scale(a.mass)
    for child, shown_as in node.shown():
        _rows(child, a, scale, depth + 1, shown_as, rows)


def _shape(shape: tuple) -> str:
    if shape and isinstance(shape[0], tuple):
        return "(" + ", ".join(show(s) for s in shape) + ")"
    return show(shape)


def _count(n: sympy.Expr) -> str:
    return f"{int(n):,}" if n.is_Integer else str(n)
