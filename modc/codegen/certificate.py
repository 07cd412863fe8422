"""Emit certificate.py: a sound input-Lipschitz bound computed from the live weights."""

from __future__ import annotations

from modc.codegen.source import module, snippets, wrapped
from modc.graph import ir
from modc.ops.base import exact
from modc.runtime.certify import lipschitz_lower
from modc.theory.analysis import Analysis

TAIL = '''
def lipschitz_upper(model: nn.Module) -> float:
    """Sound upper bound on the ℓ2 Lipschitz constant of the model in its input, per example.

    Every factor is a true upper bound (exact float64 SVD with a rounding margin), and the
    bound follows the network's structure: products along compositions, sums over branches.
    """
    return bound_network(model)


def report(model: nn.Module) -> dict:
    """The certificate and each atom's norm, for logging and certificate.json."""
    weights = dict(model.named_parameters())
    return {
        "lipschitz_upper": lipschitz_upper(model),
        "norm": "l2 to l2, per example",
        "conditions": list(CONDITIONS),
        "atoms": {name: {"kind": kind, "norm": ATOM_NORMS[kind](weights[name])}
                  for name, kind in ATOMS.items()},
    }
'''


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
            terms, sep = [self.bound(b, "m") for b in core.branches], "+"
        else:
            terms, sep = self.factors(node, "m"), "*"
        lines = [f"def {name}(m: nn.Module) -> float:", f'    """{doc}"""']
        lines += ["    " + line for line in wrapped("return", terms, sep, 4)]
        self.functions.append("\n".join(lines))
        return name

    def factors(self, node: ir.Node, m: str) -> list[str]:
        """The bound of `node` as factors to multiply, constants first."""
        if isinstance(node, ir.Compose):
            kept = [f for p in node.parts for f in self.factors(p, m) if f != "1"]
            constants = [f for f in kept if f[0].isdigit()]
            return [*constants, *(f for f in kept if not f[0].isdigit())] or ["1"]
        if isinstance(node, ir.Tare):
            return self.factors(node.body, m)
        if isinstance(node, ir.Repeat):
            return self.copies(node, m)
        return [self.bound(node, m)]

    def copies(self, node: ir.Repeat, m: str) -> list[str]:
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

    def bound(self, node: ir.Node, m: str) -> str:
        """A Python expression for an upper bound on `node`'s ℓ2 Lipschitz constant."""
        if isinstance(node, ir.Leaf):
            if node.is_atom:
                return f"{node.op.lipschitz.__name__}({m}.{node.name}.weight)"
            return exact(node.op.sensitivity())
        if isinstance(node, (ir.Compose, ir.Tare, ir.Repeat)):
            return " * ".join(self.factors(node, m))
        if isinstance(node, ir.Tuple):
            return f"({' + '.join(self.bound(b, m) for b in node.branches)})"
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


def emit_certificate(network: ir.Network, analysis: Analysis) -> str:
    """The text of certificate.py."""
    b = BoundEmitter()
    b.scope(network.root, "bound_network", "Bound for the whole network.")
    kinds = {a.kind: type(a.node.op) for a in analysis.atoms}
    atoms = "\n".join(f'    "{a.path}.weight": "{a.kind}",' for a in analysis.atoms)
    norms = ", ".join(f'"{k}": {op.norm.__name__}' for k, op in kinds.items())
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
            f"CONDITIONS: tuple[str, ...] = ()\nATOMS = {{\n{atoms}\n}}\n"
            f"ATOM_NORMS = {{{norms}}}",
            *b.functions,
            TAIL.strip(),
        ]
    )
    return module(
        f"A Lipschitz certificate for {network.name}, compiled by modc: checked on "
        "the live weights.\n",
        body,
    )
