"""The analysis as JSON (numbers where numeric, sympy text where symbolic) or a text table."""

from __future__ import annotations

import sympy

from modc import errors
from modc.graph import ir
from modc.theory.analysis import Analysis
from modc.theory.conditions import Condition
from modc.theory.printing import TextPrinter

#: What the bounds measure, stated once wherever they are printed.
NORMS = (
    "activations: RMS over features, largest over positions (a tuple: the sum of its parts); "
    "‖site‖: an atom's weight in its own norm, the largest over the copies of a repeated atom"
)
SMOOTHNESS = (
    "a loss σ-Lipschitz and τ-smooth in the output is σα + τω²-smooth in the modular norm, "
    "on inputs where every atom's input has norm at most 1"
)


def json_value(
    e: sympy.Expr | int | None, printer: TextPrinter | None = None
) -> int | float | str | None:
    """A JSON value: an int or float when `e` is a number, else its sympy text."""
    if e is None or isinstance(e, int):
        return e
    if e.is_Integer:
        return int(e)
    if e.is_number:
        return float(e)
    return (printer or TextPrinter()).doprint(e)


def shown(e: sympy.Expr | None, printer: TextPrinter | None = None) -> str:
    """An expression for a person: exact when short, else a number to 6 digits."""
    if e is None:
        return "none"
    written = (printer or TextPrinter()).doprint(e)
    if e.is_number and (len(written) > 24 or e.has(sympy.Pow)):
        return f"{float(e):.6g}" + ("" if e.is_Rational and len(written) > 24 else f" = {written}")
    return written


def free_names(network: ir.Network) -> list[str]:
    """The parameters kept as symbols."""
    return [k for k, v in network.params.items() if isinstance(v, sympy.Symbol)]


def _conditions(items: list[Condition]) -> list[dict]:
    return [{"op": c.op, "condition": c.text, "where": c.where} for c in items]


def to_json(network: ir.Network, a: Analysis) -> dict:
    """`modc bounds --format json`: the network's totals, then one entry per atom."""
    printer = TextPrinter()  # one for the report: shared sub-expressions print once
    text = printer.doprint

    def value(e: sympy.Expr | int | None) -> int | float | str | None:
        return json_value(e, printer)

    s = a.sharpness
    sharpness = None
    if s is not None:
        sharpness = {
            "alpha": value(s.alpha),
            "beta": value(s.beta),
            "gamma": value(s.gamma),
            "omega": value(s.omega),
            "smoothness": value(s.smoothness),
            "missing": s.missing,
            "definitions": {str(k): value(v) for k, v in s.definitions.items()},
            "meaning": SMOOTHNESS,
        }
    return {
        "network": {
            "name": network.name,
            "params": {k: value(v) for k, v in network.params.items()},
            "free": free_names(network),
            "input_shape": [value(d) for d in network.input_shape],
            "output_shape": [value(d) for d in network.output_shape],
            "mass": value(a.mass),
            "sensitivity": value(a.sensitivity),
            "parameters": value(a.parameters),
            "norms": NORMS,
            "modular_norm": text(a.modular_norm),
            "lipschitz": text(a.lipschitz),
            "lipschitz_well_normed": value(a.lipschitz_well_normed),
            "lipschitz_well_normed_exact": text(a.lipschitz_well_normed),
            "lipschitz_norm": "activation: RMS over features, the largest over positions",
            "lipschitz_l2": text(a.lipschitz_l2),
            "lipschitz_l2_norm": "l2 per example, in the same ‖site‖ (activation) symbols",
            "sharpness": sharpness,
            "conditions": _conditions(a.conditions),
            "notes": _conditions(a.notes),
        },
        "atoms": [
            {
                "path": atom.path,
                "kind": atom.kind,
                "shape": [value(d) for d in atom.shape],
                "mass": value(atom.mass),
                "target": value(atom.target),
                "target_exact": text(atom.target),
                "norm": str(atom.norm),
                "source": f"{atom.span.line}:{atom.span.col}" if atom.span else None,
            }
            for atom in a.atoms
        ],
    }


def _table(rows: list[tuple[str, ...]]) -> list[str]:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = []
    for i, row in enumerate(rows):
        lines.append("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())
        if i == 0:
            lines.append("  ".join("-" * w for w in widths))
    return lines


def to_text(network: ir.Network, a: Analysis) -> str:
    """`modc bounds --format text`: a table a person reads in a terminal. What a terminal
    would not show as text (an escape sequence in the spec's name or file name) is shown
    escaped."""
    printer = TextPrinter()  # one for the report: shared sub-expressions print once
    text = printer.doprint

    def show(e: sympy.Expr | None) -> str:
        return shown(e, printer)

    params = ", ".join(
        f"{k} free" if isinstance(v, sympy.Symbol) else f"{k}={v}"
        for k, v in network.params.items()
    )
    rows = [("path", "kind", "shape", "mass", "target", "norm")]
    rows += [
        (
            atom.path,
            atom.kind,
            " × ".join(text(d) for d in atom.shape),
            text(atom.mass),
            text(atom.target),
            str(atom.norm),
        )
        for atom in a.atoms
    ]
    lines = [
        f"{network.name} ({params})",
        f"  mass {text(a.mass)}   sensitivity {text(a.sensitivity)}   "
        f"parameters {text(a.parameters)}",
        "",
        *_table(rows),
        "",
        f"norms: {NORMS}",
        f"modular norm    {text(a.modular_norm)}",
        f"Lipschitz bound {text(a.lipschitz)}   (activation norm)",
        f"  well-normed   {show(a.lipschitz_well_normed)}   (every ‖site‖ = 1)",
        f"ℓ2 bound        {text(a.lipschitz_l2)}   (ℓ2 per example)",
    ]
    s = a.sharpness
    if s is not None and s.smoothness is not None:
        lines += [f"one copy        {k} = {show(v)}" for k, v in s.definitions.items()]
        lines += [
            f"sharpness       α = {show(s.alpha)}",
            f"                β = {show(s.beta)}",
            f"                γ = {show(s.gamma)}",
            f"                ω = {show(s.omega)}",
            f"smoothness      {show(s.smoothness) if s.smoothness.is_number else 'σα + τω²'}",
            f"  ({SMOOTHNESS})",
        ]
    elif s is not None:
        lines.append(f"smoothness      none: not twice differentiable at {', '.join(s.missing)}")
    for title, items in (("conditions", a.conditions), ("notes", a.notes)):
        if items:
            lines += ["", f"{title}:"]
            for c in items:
                lines += [f"  - {c.text}", f"    where: {'; '.join(c.where)}"]
    if not a.conditions:
        lines += ["", "conditions: none (every bound holds for all inputs)"]
    return "\n".join(errors.shown(line) for line in lines)  # names, file names: any text
