"""Emit what reversible networks add to a build: each coupling's module with its inverse,
frozen atoms, the network's `inverse`, the inverse's Lipschitz bound in certificate.py, and
the plan of the gauss_newton optimizer in optimizer.py (docs/theory.md §12)."""

from __future__ import annotations

import textwrap
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from modc.codegen.source import camel, commented, docstring, fresh, quote
from modc.graph import ir
from modc.graph.reversible import gauss_newton_plan, invertible, refusal
from modc.ops.base import L2
from modc.theory.lipschitz import inverse_lipschitz

if TYPE_CHECKING:
    from modc.codegen.certificate import Source
    from modc.codegen.model import ClassSource, ModelEmitter


def constructor(leaf: ir.Leaf) -> str:
    """An atom's constructor; a frozen atom's weight takes no gradient (and so no step)."""
    text = leaf.op.constructor()
    return f"{text}.requires_grad_(False)" if leaf.frozen else text


@dataclass
class _Coupling:
    """The lines of a coupling's class as they accumulate: f's body, then g's."""

    name: str
    doc: str
    init: list[str] = field(default_factory=list)
    forward: list[str] = field(default_factory=list)
    g: list[str] = field(default_factory=list)
    temps: int = 0

    def fresh(self) -> str:
        self.temps += 1
        return f"h{self.temps}"

    def text(self) -> str:
        def method(name: str, arg: str, body: list[str]) -> list[str]:
            return ["", f"    def {name}(self, {arg}: torch.Tensor) -> torch.Tensor:"] + [
                f"        {line}" for line in body
            ]

        lines = [
            f"class {self.name}(nn.Module):",
            docstring(self.doc, 4),
            "",
            "    def __init__(self) -> None:",
            "        super().__init__()",
            *(f"        {line}" for line in self.init),
        ]
        lines += method("f", "x", self.forward) + method("g", "x", self.g)
        lines += method(
            "forward",
            "x",
            [
                "x1, x2 = x.chunk(2, dim=-1)",
                "y1 = x1 + self.f(x2)",
                "return torch.cat((y1, x2 + self.g(y1)), dim=-1)",
            ],
        )
        lines += method(
            "inverse",
            "y",
            [
                "y1, y2 = y.chunk(2, dim=-1)",
                "x2 = y2 - self.g(y1)",
                "return torch.cat((y1 - self.f(x2), x2), dim=-1)",
            ],
        )
        return "\n".join(lines)


def emit_coupling(e: ModelEmitter, node: ir.Coupling, ins: list[str], cls: ClassSource) -> str:
    """The class of one coupling, added to `e`; its construction goes into `cls`. Returns the
    expression of its output."""
    from modc.codegen.model import location

    src = _Coupling(
        fresh(camel(node.name), e.globals),
        f"Coupling '{node.name}' ({location(node)}):\ny1 = x1 + f(x2), y2 = x2 + g(y1) on the "
        "two halves of the features;\ninverse() undoes it exactly.",
    )
    out = e.flow(node.f, ["x"], "x", src)
    src.forward.append(f"return {out[0]}")
    f_lines, src.forward = src.forward, []
    out = e.flow(node.g, ["x"], "x", src)
    src.g, src.forward = [*src.forward, f"return {out[0]}"], f_lines
    e.classes.append(src)
    cls.init += commented(f"self.{node.name} = {src.name}()", location(node), 8)
    return f"self.{node.name}({ins[0]})"


def _inverse_lines(node: ir.Node, owner: str, depth: int = 0) -> list[str]:
    """Statements turning `y`, the output of `node`, into its input; `owner` holds it."""
    if isinstance(node, ir.Leaf):
        expr = node.op.inverse("y")[0]
        return [] if expr == "y" else [f"y = {expr}"]
    if isinstance(node, ir.Coupling):
        return [f"y = {owner}.{node.name}.inverse(y)"]
    if isinstance(node, ir.Repeat):
        block = f"block{depth or ''}"
        copies = f"{owner}.{node.name}"
        body = [f"    {line}" for line in _inverse_lines(node.rest, block, depth + 1)]
        if node.first is node.rest:
            return [f"for {block} in reversed({copies}):", *body]
        first = _inverse_lines(node.first, f"{copies}[0]", depth + 1)
        return [f"for {block} in reversed({copies}[1:]):", *body, *first]
    lines: list[str] = []
    for child in reversed(chain_children(node)):
        lines += _inverse_lines(child, owner, depth)
    return lines


def chain_children(node: ir.Node) -> list[ir.Node]:
    return list(node.parts) if isinstance(node, ir.Compose) else list(node.children())


def inverse_method(network: ir.Network) -> str:
    """Network.inverse, for a network that inverts as a whole; else nothing."""
    if not invertible(network.root):
        return ""
    body = _inverse_lines(network.root, "self") + ["return y"]
    return "\n".join(
        [
            "",
            "",
            "    def inverse(self, y: torch.Tensor) -> torch.Tensor:",
            docstring(
                "The input whose output is `y`: each block undone in reverse order\n"
                "(x2 = y2 − g(y1), x1 = y1 − f(x2)); exact up to float rounding.\n",
                8,
            ),
            *(f"        {line}" for line in body),
        ]
    )


def inverse_certificate(network: ir.Network, src: Source) -> str:
    """certificate.py's bound on the inverse's ℓ2 Lipschitz constant, or a stub saying there
    is no inverse."""
    if not invertible(network.root):
        return (
            "def lipschitz_inverse_upper(model: nn.Module) -> None:\n"
            '    """None: this network is not invertible (no bi-Lipschitz bound)."""\n'
            "    return None"
        )
    term = inverse_lipschitz(network.root, src, L2)
    name = src.function(term, "inverse", "Bound for the whole network's inverse, in ℓ2.")
    return (
        "def lipschitz_inverse_upper(model: nn.Module) -> float:\n"
        '    """Sound upper bound on the ℓ2 Lipschitz constant of the inverse, model.inverse:\n'
        "    ‖x − x′‖₂ ≤ bound·‖f(x) − f(x′)‖₂ for every x, x′. With lipschitz_upper it makes\n"
        "    the network bi-Lipschitz: ‖x − x′‖/inverse ≤ ‖f(x) − f(x′)‖ ≤ upper·‖x − x′‖.\n"
        '    (docs/theory.md §12)."""\n'
        f"    return {name}(model) * ROUNDING"
    )


def gauss_newton_table(network: ir.Network) -> str:
    """optimizer.py's plan for gauss_newton: the blocks and head, or why there is none."""
    reason = refusal(network.root)
    if reason is not None:
        chunks = textwrap.wrap(reason, 80, drop_whitespace=False)
        text = "\n".join(f"    {quote(c)}" for c in chunks)
        return (
            "# gauss_newton: this network is not reversible in the way it needs.\n"
            f"GAUSS_NEWTON = None\nGAUSS_NEWTON_REFUSAL = (\n{text}\n)"
        )
    plan = gauss_newton_plan(network.root)
    rows = "\n".join(
        f"        ({quote(b.path)}, ({quote(b.f.linear)}, {literal_or_none(b.f.bias)}), "
        f"({quote(b.g.linear)}, {literal_or_none(b.g.bias)})),"
        for b in plan.blocks
    )
    return (
        "# gauss_newton: each coupling block in data-flow order, with the trainable Linear\n"
        "# (and Bias) of its f and g; the frozen head after the last block; the smallest\n"
        "# number of features M a block's Linear reads (a batch above it is not solved exactly).\n"
        f'GAUSS_NEWTON = {{\n    "blocks": [\n{rows}\n    ],\n'
        f'    "head": {literal_or_none(plan.head)},\n    "features": {plan.features},\n}}\n'
        'GAUSS_NEWTON_REFUSAL = ""'
    )


def literal_or_none(value: str | None) -> str:
    return "None" if value is None else quote(value)
