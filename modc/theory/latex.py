"""The analysis as LaTeX: an align* block, one line per quantity and per distinct target.

Atom norms print as ‖W_site‖, free parameters upright (\\mathrm{width}), the copy index of
a free repeat count as i. Conditions and notes follow as comments, so that the block pastes
into a paper as it is.
"""

from __future__ import annotations

import sympy

from modc.errors import shown
from modc.graph import ir
from modc.theory import printing
from modc.theory.analysis import INDICES, Analysis
from modc.theory.conditions import Condition
from modc.theory.report import NORMS, SMOOTHNESS, free_names
from modc.theory.sharpness import SIGMA, TAU

GREEK = {
    "Σ": r"\Sigma",
    "Σ2": r"\Sigma^{(2)}",
    "Σ3": r"\Sigma^{(3)}",
    "Σ4": r"\Sigma^{(4)}",
    "α": r"\alpha",
    "β": r"\beta",
    "γ": r"\gamma",
    "ω": r"\omega",
    "ν": r"\nu",
    "ν̂": r"\hat{\nu}",
}


#: How each of TeX's special characters is written in math mode.
_SPECIAL = {
    "\\": r"\backslash{}",
    "{": r"\{",
    "}": r"\}",
    "_": r"\_",
    "&": r"\&",
    "%": r"\%",
    "$": r"\$",
    "#": r"\#",
    "^": r"\hat{}",
    "~": r"\sim{}",
}


def escape(text: str) -> str:
    """Text from a spec (a name, a path, a condition's place) as LaTeX that sets it as
    written, in math mode or in a `%` comment: what a terminal would not show (a newline,
    which would end the comment) is first written as repr writes it, then every special
    character is escaped, so no spec text can run a command."""
    return "".join(_SPECIAL.get(c, c) for c in shown(text))


def _text(name: str) -> str:
    """A name set upright."""
    return rf"\mathrm{{{escape(name)}}}"


def _comment(c: Condition) -> str:
    """A condition or note and where it applies, for a `%` comment."""
    return escape(f"{c.text} ({'; '.join(c.where)})")


def symbol_names(network: ir.Network, a: Analysis) -> dict[sympy.Symbol, str]:
    """How every symbol of the analysis prints."""
    names: dict[sympy.Symbol, str] = {s: rf"\|W_{{{_text(site)}}}\|" for site, s in a.norms.items()}
    for name, v in network.params.items():
        if isinstance(v, sympy.Symbol):
            names[v] = _text(name)
    names.update({SIGMA: r"\sigma", TAU: r"\tau"})
    if a.sharpness is not None:
        for symbol in a.sharpness.definitions:
            letter, _, where = symbol.name.partition("_")
            names[symbol] = rf"{GREEK.get(letter, letter)}_{{{_text(where)}}}"
    names.update({i: i.name for i in INDICES})
    return names


def to_latex(network: ir.Network, a: Analysis) -> str:
    """`modc bounds --format latex`."""
    names = symbol_names(network, a)
    tex = printing.TexPrinter({"symbol_names": names}).doprint

    lines = [(r"\mu", tex(a.mass)), (r"\nu", tex(a.sensitivity)), (r"\#W", tex(a.parameters))]
    targets_at: dict[str, set[sympy.Expr]] = {}
    for atom in a.atoms:
        targets_at.setdefault(atom.site, set()).add(atom.target)
    by_target: dict[sympy.Expr, list[str]] = {}
    for atom in a.atoms:  # a site once when its copies share a target, else every copy
        name = atom.site if len(targets_at[atom.site]) == 1 else atom.path
        labels = by_target.setdefault(atom.target, [])
        if rf"t_{{{_text(name)}}}" not in labels:
            labels.append(rf"t_{{{_text(name)}}}")
    lines += [(" = ".join(labels), tex(t)) for t, labels in by_target.items()]
    lines += [
        (r"\|w\|_M", tex(a.modular_norm)),
        (r"L", tex(a.lipschitz)),
        (r"L\big|_{\|W\| = 1}", tex(a.lipschitz_well_normed)),
    ]
    s = a.sharpness
    if s is not None and s.smoothness is not None:
        lines += [(names[k], tex(v)) for k, v in s.definitions.items()]
        lines += [
            (r"\alpha", tex(s.alpha)),
            (r"\beta", tex(s.beta)),
            (r"\gamma", tex(s.gamma)),
            (r"\omega", tex(s.omega)),
        ]
        if not s.smoothness.free_symbols - {SIGMA, TAU}:  # else it only repeats α and ω
            lines.append((r"\sigma\alpha + \tau\omega^2", tex(s.smoothness)))
    free = free_names(network)
    head = [
        f"% {escape(network.name)}: modc bounds"
        + (f", free parameters {escape(', '.join(free))}" if free else ""),
        f"% norms: {NORMS}",
        r"% L: input-Lipschitz bound; \|w\|_M: the modular norm; t: per-atom targets",
    ]
    if s is not None and s.smoothness is not None:
        head.append(f"% smoothness: {SMOOTHNESS}")
    elif s is not None:
        missing = escape(", ".join(s.missing))
        head.append(f"% no smoothness constant: not twice differentiable at {missing}")
    body = [r"\begin{align*}"]
    body += [
        f"{lhs} &= {rhs}" + (r" \\" if i < len(lines) - 1 else "")
        for i, (lhs, rhs) in enumerate(lines)
    ]
    body.append(r"\end{align*}")
    tail = [f"% condition: {_comment(c)}" for c in a.conditions]
    tail += [f"% note: {_comment(c)}" for c in a.notes]
    return "\n".join(head + body + tail)
