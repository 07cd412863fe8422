"""Mass, sensitivity and per-atom targets by the composition rules of docs/theory.md §3, and the
analysis that builds on them: the modular norm, the Lipschitz bound, sharpness, conditions.

Masses and sensitivities are computed bottom-up once per node; targets flow top-down from
the network's target 1. A repeated body is analysed once whatever its count, so a free
depth costs no more than a fixed one. Every atom of the IR (a "site", shared by all copies
of a repeated body) gets a norm symbol ‖site‖: the largest norm of its weight over copies.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from math import prod

import sympy

from modc.errors import ModcError
from modc.graph import ir
from modc.ops.base import ACTIVATION, L2
from modc.source import Span
from modc.theory.conditions import Condition, collect_conditions
from modc.theory.lipschitz import Symbolic, lipschitz
from modc.theory.sharpness import Sharpness, network_sharpness

ONE = sympy.Integer(1)
ZERO = sympy.Integer(0)
#: Copy indices of free repeat counts, one per nesting level.
INDICES = tuple(sympy.Symbol(n, integer=True, nonnegative=True) for n in "ijklmn")
INDEX = INDICES[0]


@dataclass
class AtomInfo:
    """One atom of the network: where it is, its mass after tares, and its target.

    With a free repeat count, one entry stands for `copies` copies whose target may depend
    on the copy index; `ranges` gives each index symbol its first and last value.
    """

    path: str
    kind: str
    shape: tuple[sympy.Expr, ...]
    mass: sympy.Expr
    target: sympy.Expr
    copies: sympy.Expr
    span: Span | None
    node: ir.Leaf = field(repr=False)
    site: str = ""
    norm: sympy.Symbol | None = None
    ranges: tuple[tuple[sympy.Symbol, sympy.Expr, sympy.Expr], ...] = ()


@dataclass
class Analysis:
    mass: sympy.Expr
    sensitivity: sympy.Expr
    atoms: list[AtomInfo]
    parameters: sympy.Expr
    norms: dict[str, sympy.Symbol] = field(default_factory=dict)  # site → ‖site‖
    site_targets: dict[str, sympy.Expr] = field(default_factory=dict)  # smallest per site
    modular_norm: sympy.Expr = ONE
    lipschitz: sympy.Expr = ONE  # in the activation norm
    lipschitz_well_normed: sympy.Expr = ONE
    lipschitz_l2: sympy.Expr = ONE  # in ℓ2 per example, in the same norm symbols
    sharpness: Sharpness | None = None
    conditions: list[Condition] = field(default_factory=list)
    notes: list[Condition] = field(default_factory=list)


class Analyzer:
    """Memoised μ and ν per IR node by each combinator's rules (modc/graph/ir.py), then the
    top-down walk that assigns targets by their `split`."""

    def __init__(self) -> None:
        self._mass: dict[int, sympy.Expr] = {}
        self._sens: dict[int, sympy.Expr] = {}
        self.norms: dict[int, sympy.Symbol] = {}  # id(atom leaf) → its site's symbol
        self.sites: dict[str, sympy.Symbol] = {}

    def mass(self, n: ir.Node) -> sympy.Expr:
        if id(n) not in self._mass:
            self._mass[id(n)] = self._compute_mass(n)
        return self._mass[id(n)]

    def sensitivity(self, n: ir.Node) -> sympy.Expr:
        if id(n) not in self._sens:
            self._sens[id(n)] = self._compute_sensitivity(n)
        return self._sens[id(n)]

    def _compute_mass(self, n: ir.Node) -> sympy.Expr:
        return n.mass_of([self.mass(c) for c in n.evaluated()])

    def _compute_sensitivity(self, n: ir.Node) -> sympy.Expr:
        return n.sensitivity_of([self.sensitivity(c) for c in n.evaluated()])

    def norm_symbol(self, leaf: ir.Leaf, site: str) -> sympy.Symbol:
        """The symbol ‖site‖ of an atom, made on its first visit."""
        if id(leaf) not in self.norms:
            name, n = site, 1
            while name in self.sites:
                n += 1
                name = f"{site}~{n}"
            self.sites[name] = self.norms[id(leaf)] = sympy.Symbol(f"‖{name}‖", positive=True)
        return self.norms[id(leaf)]

    def targets(
        self,
        n: ir.Node,
        t: sympy.Expr,
        path: str,
        scale: sympy.Expr,
        copies: sympy.Expr,
        out: list[AtomInfo],
        site: str = "",
        ranges: tuple = (),
    ) -> None:
        """Give node `n` the target `t`, which its rule `split`s among its children (each
        share naming, scaling or counting the atoms inside); `scale` is the product of
        enclosing tare factors, `ranges` the copy indices of enclosing free repeats.

        A node of mass 0 (frozen atoms, atoms of mass 0) has no share of the step: every atom
        inside gets target 0, whatever its split says (t·0/0), and is still listed, since
        the bounds range over every atom."""
        if self.mass(n) == 0:
            t = ZERO
        if n.is_atom:
            info = AtomInfo(
                path + n.name,
                n.op.name,
                n.op.weight_shape(),
                n.mass * scale,
                t,
                copies,
                n.span,
                n,
                site + n.name,
                self.norm_symbol(n, site + n.name),
                ranges,
            )
            out.append(info)
            return
        index = INDICES[min(len(ranges), len(INDICES) - 1)]
        for s in n.split(t, self.mass, self.sensitivity, index):
            inner = ranges if s.index is None else (*ranges, s.index)
            at, times = path + s.path, copies * s.copies
            self.targets(s.node, s.target, at, scale * s.scale, times, out, site + s.site, inner)


def smallest_targets(atoms: list[AtomInfo]) -> dict[str, sympy.Expr]:
    """Each site's smallest target over its copies: targets are geometric in the copy
    index (1/ν per later copy), so the smallest sits at an end of each index range."""
    found: dict[str, list[sympy.Expr]] = {}
    for a in atoms:
        values = [a.target]
        for index, lo, hi in a.ranges:
            if a.target.has(index):
                values = [v.xreplace({index: end}) for v in values for end in (lo, hi)]
        found.setdefault(a.site, []).extend(values)
    out = {}
    for site, values in found.items():
        unique = list(dict.fromkeys(values))
        if len(unique) == 1:
            out[site] = unique[0]
        elif all(v.is_number for v in unique):
            out[site] = min(unique)
        else:
            out[site] = sympy.Min(*unique, evaluate=False)
    return out


def _require_mass(total: sympy.Expr, atoms: list[AtomInfo]) -> None:
    """Refuse a network whose atoms that train all have mass 0: targets are shares `μᵢ/μ` of
    the network's mass (docs/theory.md §3), none when `μ = 0`. Frozen atoms alone are
    fine: nothing trains."""
    trainable = [info for info in atoms if not info.node.frozen]
    if total == 0 and trainable:
        others = len(trainable) - 1
        raise ModcError(
            f"every atom that trains has mass 0 ({trainable[0].path}"
            + (f" and {others} more" if others else "")
            + "): targets are shares of the network's mass, so a total of 0 leaves no step "
            "to share",
            trainable[0].span,
            "give an atom a positive mass, or freeze (frozen=true) the atoms that should not train",
        )


def analyze(network: ir.Network) -> Analysis:
    """The theory of a network: mass, sensitivity, targets, norms, bounds and conditions."""
    a = Analyzer()
    atoms: list[AtomInfo] = []
    a.targets(network.root, ONE, "", ONE, ONE, atoms)
    _require_mass(a.mass(network.root), atoms)
    parameters = sympy.Add(*(info.copies * prod(info.shape) for info in atoms))
    site_targets = smallest_targets(atoms)
    # atoms of mass 0 (frozen) take no step: the modular norm measures the others
    terms = [a.sites[s] / t for s, t in site_targets.items() if t != 0]
    modular = sympy.Max(*terms, evaluate=False) if len(terms) > 1 else sympy.Add(*terms)
    bound = lipschitz(network.root, Symbolic(a.norms), ACTIVATION)
    well_normed = bound.xreplace({s: ONE for s in a.sites.values()})
    conditions, notes = collect_conditions(network.root)
    return Analysis(
        mass=a.mass(network.root),
        sensitivity=a.sensitivity(network.root),
        atoms=atoms,
        parameters=parameters,
        norms=dict(a.sites),
        site_targets=site_targets,
        modular_norm=modular,
        lipschitz=bound,
        lipschitz_well_normed=well_normed,
        lipschitz_l2=lipschitz(network.root, Symbolic(a.norms), L2),
        sharpness=network_sharpness(network.root, a),
        conditions=conditions,
        notes=notes,
    )
