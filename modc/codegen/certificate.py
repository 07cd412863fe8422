"""Emit certificate.py: a sound input-Lipschitz bound computed from the live weights."""

from __future__ import annotations

import textwrap

from modc.codegen.settings import optimizer_settings
from modc.codegen.source import WIDTH, docstring, literal, module, plain, quote, snippets
from modc.errors import shown
from modc.graph import ir
from modc.ops.base import exact
from modc.runtime.certify import lipschitz_lower
from modc.theory.analysis import Analysis

TAIL = '''
def lipschitz_upper(model: nn.Module) -> float:
    """Sound upper bound on the ℓ2 Lipschitz constant of the model in its input, per example.

    Every factor is a true upper bound (exact float64 SVD with a rounding margin), and the
    bound follows the network's structure: products along compositions, sums over branches.
    It holds for every input when CONDITIONS is empty, else under those conditions.
    """
    return bound_network(model)


def modular_norm(model: nn.Module, tensors: dict | list) -> float:
    """The modular norm of per-weight tensors (an update, say): max over atoms of the atom's
    norm divided by its target. `tensors` maps names to tensors, or lists them in the order
    of model.parameters(). A dualized step of learning rate lr has modular norm lr."""
    if not isinstance(tensors, dict):
        names = [name for name, _ in model.named_parameters()]
        tensors = dict(zip(names, tensors, strict=True))
    if set(tensors) != set(ATOMS):
        raise ValueError("the tensors do not match the network's atoms")
    return max(ATOM_NORMS[ATOMS[name]](t) / TARGETS[name] for name, t in tensors.items())


def report(model: nn.Module) -> dict:
    """The certificate, the constraint it was built for, and each atom's norms."""
    weights = dict(model.named_parameters())
    upper = lipschitz_upper(model)
    constraint = None
    if ATOM_CAP is not None:
        constraint = {
            "atom_cap": ATOM_CAP,
            "lipschitz_bound": LIPSCHITZ_BOUND,
            "within": upper <= LIPSCHITZ_BOUND,
        }
    return {
        "lipschitz_upper": upper,
        "norm": "l2 to l2, per example",
        "conditions": list(CONDITIONS),
        "constraint": constraint,
        "atoms": {
            name: {
                "kind": kind,
                "target": TARGETS[name],
                "norm": ATOM_NORMS[kind](weights[name]),
                "lipschitz": ATOM_LIPSCHITZ[kind](weights[name]),
            }
            for name, kind in ATOMS.items()
        },
    }
'''


# A bound as an expression tree: Python source of a factor, or (operator, terms).
Term = str | tuple[str, list["Term"]]


def flat(term: Term, parent: str = "") -> str:
    """`term` on one line; a sum inside a product gets parentheses."""
    if isinstance(term, str):
        return term
    op, items = term
    text = f" {op} ".join(flat(t, op) for t in items)
    return f"({text})" if op == "+" and parent == "*" else text


def layout(term: Term, indent: int, head: str, parent: str = "") -> list[str]:
    """`head` then `term`, on one line if it fits in WIDTH at `indent`, else one operand a
    line inside parentheses, each broken the same way if it still does not fit."""
    one = head + flat(term, parent)
    if indent + len(one) <= WIDTH or isinstance(term, str):
        return [one]
    op, items = term
    lines = [head + "("]
    for i, item in enumerate(items):
        lines += ["    " + line for line in layout(item, indent + 4, f"{op} " * (i > 0), op)]
    return [*lines, ")"]


def product(factors: list[Term]) -> Term:
    return factors[0] if len(factors) == 1 else ("*", factors)


class BoundEmitter:
    """One `bound_<scope>` function per generated class, mirroring the IR's structure."""

    def __init__(self) -> None:
        self.functions: list[str] = []
        self.names: set[str] = set()

    def scope(self, node: ir.Node, wanted: str, doc: str) -> str:
        name, n = wanted, 1
        while name in self.names:
            n += 1
            name = f"{wanted}{n}"
        self.names.add(name)
        core = _core(node)
        if isinstance(core, ir.Tuple):
            term: Term = ("+", [self.bound(b, "m") for b in core.branches])
        else:
            term = product(self.factors(node, "m"))
        lines = [f"def {name}(m: nn.Module) -> float:", docstring(doc, 4)]
        lines += ["    " + line for line in layout(term, 4, "return ")]
        self.functions.append("\n".join(lines))
        return name

    def factors(self, node: ir.Node, m: str) -> list[Term]:
        """The bound of `node` as factors to multiply, constants first."""
        if isinstance(node, ir.Compose):
            kept = [f for p in node.parts for f in self.factors(p, m) if f != "1"]
            constants = [f for f in kept if isinstance(f, str) and f[0].isdigit()]
            return [*constants, *(f for f in kept if f not in constants)] or ["1"]
        if isinstance(node, ir.Tare):
            return self.factors(node.body, m)
        if isinstance(node, ir.Repeat):
            return self.copies(node, m)
        return [self.bound(node, m)]

    def copies(self, node: ir.Repeat, m: str) -> list[Term]:
        """A product over the copies of a repeated body, each bounded by its own function."""
        rest = self.scope(node.rest, f"bound_{node.name}", f"Bound for one copy of '{node.name}'.")
        if node.first is node.rest:
            return [f"math.prod({rest}(block) for block in {m}.{node.name})"]
        first = self.scope(
            node.first, f"bound_{node.name}_first", f"Bound for the first copy of '{node.name}'."
        )
        return [
            f"{first}({m}.{node.name}[0])",
            f"math.prod({rest}(block) for block in {m}.{node.name}[1:])",
        ]

    def bound(self, node: ir.Node, m: str) -> Term:
        """An upper bound on `node`'s ℓ2 Lipschitz constant, as an expression tree."""
        if isinstance(node, ir.Leaf):
            if node.is_atom:
                return f"{node.op.lipschitz.__name__}({m}.{node.name}.weight)"
            return exact(node.op.sensitivity())
        if isinstance(node, (ir.Compose, ir.Tare, ir.Repeat)):
            return product(self.factors(node, m))
        if isinstance(node, ir.Tuple):
            return ("+", [self.bound(b, m) for b in node.branches])
        raise TypeError(type(node).__name__)


def _core(node: ir.Node) -> ir.Node:
    """The one part of `node` that matters for its bound, past tares and 1-Lipschitz bonds."""
    if isinstance(node, ir.Tare):
        return _core(node.body)
    if isinstance(node, ir.Compose):
        parts = [
            p
            for p in node.parts
            if not (isinstance(p, ir.Leaf) and not p.is_atom and p.op.sensitivity() == 1)
        ]
        return _core(parts[0]) if len(parts) == 1 else node
    return node


def _string_lines(text: str, indent: int) -> str:
    """`text` as a tuple item: adjacent double-quoted literals, each line within WIDTH."""
    chunks = textwrap.wrap(text, WIDTH - indent - 3, drop_whitespace=False) or [""]
    if "".join(chunks) != text:  # whitespace textwrap would change: keep one literal
        chunks = [text]
    quoted = [quote(chunk) for chunk in chunks]
    return "".join(
        f"{' ' * indent}{q}{',' * (i == len(quoted) - 1)}\n" for i, q in enumerate(quoted)
    )


def emit_certificate(network: ir.Network, analysis: Analysis) -> str:
    """The text of certificate.py."""
    settings = optimizer_settings(network)
    b = BoundEmitter()
    b.scope(network.root, "bound_network", "Bound for the whole network.")
    kinds = {a.kind: type(a.node.op) for a in analysis.atoms}
    atoms = "\n".join(f"    {quote(a.path + '.weight')}: {quote(a.kind)}," for a in analysis.atoms)
    targets = "\n".join(
        f"    {quote(a.path + '.weight')}: {literal(a.target)},  # {plain(str(a.target))}"
        for a in analysis.atoms
    )
    norms = ", ".join(f"{quote(k)}: {op.norm.__name__}" for k, op in kinds.items())
    lipschitz = ", ".join(f"{quote(k)}: {op.lipschitz.__name__}" for k, op in kinds.items())
    conditions = dict.fromkeys(
        c
        for node in ir.walk(network.root)
        if isinstance(node, ir.Leaf)
        for c in node.op.conditions()
    )
    conditions_text = "".join(_string_lines(c, 4) for c in conditions)
    if settings.atom_cap is None:
        constraint = "# No Lipschitz constraint in the spec.\n"
    else:
        constraint = (
            "# The spec's Lipschitz constraint: the optimizer keeps each atom's bound at most\n"
            "# ATOM_CAP, so lipschitz_upper stays at most LIPSCHITZ_BOUND.\n"
        )
    constraint += (
        f"ATOM_CAP: float | None = {settings.atom_cap!r}\n"
        f"LIPSCHITZ_BOUND: float | None = {settings.bound_at_cap!r}"
    )
    body = "\n\n\n".join(
        [
            snippets(
                [
                    lipschitz_lower,
                    *(op.lipschitz for op in kinds.values()),
                    *(op.norm for op in kinds.values()),
                ]
            ),
            "# Conditions the bound relies on; empty when it holds for every input.\n"
            f"CONDITIONS: tuple[str, ...] = ({chr(10) + conditions_text if conditions else ''})\n"
            f"ATOMS = {{\n{atoms}\n}}\n"
            "# Each atom's target: its share of a step in the modular norm.\n"
            f"TARGETS = {{\n{targets}\n}}\n"
            f"ATOM_NORMS = {{{norms}}}\nATOM_LIPSCHITZ = {{{lipschitz}}}\n\n{constraint}",
            *b.functions,
            TAIL.strip(),
        ]
    )
    return module(
        f"A Lipschitz certificate for {shown(network.name)}, compiled by modc: checked on "
        "the live weights.\n",
        body,
    )
