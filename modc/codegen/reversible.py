"""Emit what reversible networks add to a build: each coupling's module with its inverse,
frozen atoms, the network's `inverse`, the inverse's Lipschitz bound in certificate.py, and
the plan of the gauss_newton optimizer in optimizer.py (docs/theory.md §12)."""

from __future__ import annotations

import textwrap
from typing import TYPE_CHECKING

from modc.codegen.source import WIDTH, docstring, quote
from modc.graph import ir
from modc.graph.reversible import Block, gauss_newton_plan, invertible, refusal
from modc.ops.base import L2
from modc.theory.lipschitz import inverse_lipschitz

if TYPE_CHECKING:
    from modc.codegen.certificate import Source


def constructor(leaf: ir.Leaf) -> str:
    """An atom's constructor; a frozen atom's weight takes no gradient (and so no step)."""
    text = leaf.op.constructor()
    return f"{text}.requires_grad_(False)" if leaf.frozen else text


def coupling_doc(which: str) -> str:
    """The docstring of a coupling's class; `which` names the coupling and its place."""
    return (
        f"Coupling {which}:\ny1 = x1 + f(x2), y2 = x2 + g(y1) on the two halves of the "
        "features;\ninverse() undoes it exactly."
    )


def coupling_methods(f: list[str], g: list[str]) -> list[tuple[str, list[str], list[str]]]:
    """A coupling's methods after __init__ (name, arguments, statements), from the bodies
    of f and g, each a function of `x`."""
    forward = [
        "x1, x2 = x.chunk(2, dim=-1)",
        "y1 = x1 + self.f(x2)",
        "return torch.cat((y1, x2 + self.g(y1)), dim=-1)",
    ]
    inverse = [
        "y1, y2 = y.chunk(2, dim=-1)",
        "x2 = y2 - self.g(y1)",
        "return torch.cat((y1 - self.f(x2), x2), dim=-1)",
    ]
    return [
        ("f", ["x"], f),
        ("g", ["x"], g),
        ("forward", ["x"], forward),
        ("inverse", ["y"], inverse),
    ]


def _inverse_lines(
    node: ir.Node, owner: str, prefix: str = "", depth: int = 0, root: bool = True
) -> list[str]:
    """Statements turning `y`, the output of `node`, into its input. `owner` is the module
    of the generated class `node` is in (its `root`: the class's own node), and `prefix` the
    part of node names that class's attributes drop, as model.py names them: a use of a
    definition inside a class is a submodule of it."""
    if not root and node.use is not None and node.use.attr is not None:
        owner, prefix = f"{owner}.{node.use.attr}", f"{prefix}{node.use.attr}."
    if isinstance(node, ir.Leaf):
        expr = node.op.inverse("y")[0]
        return [] if expr == "y" else [f"y = {expr}"]
    if isinstance(node, ir.Coupling):
        return [f"y = {owner}.{node.name.removeprefix(prefix)}.inverse(y)"]
    if isinstance(node, ir.Repeat):
        block = f"block{depth or ''}"
        copies = f"{owner}.{node.name.removeprefix(prefix)}"
        body = [f"    {line}" for line in _inverse_lines(node.rest, block, "", depth + 1)]
        if node.first is node.rest:
            return [f"for {block} in reversed({copies}):", *body]
        first = _inverse_lines(node.first, f"{copies}[0]", "", depth + 1)
        return [f"for {block} in reversed({copies}[1:]):", *body, *first]
    lines: list[str] = []
    for child in reversed(chain_children(node)):
        lines += _inverse_lines(child, owner, prefix, depth, root=False)
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
    rows = "\n".join(_block_row(b) for b in plan.blocks)
    return (
        "# gauss_newton: each coupling block in data-flow order, with the trainable Linear\n"
        "# (and Bias) of its f and g; the frozen head after the last block; the smallest\n"
        "# number of features M a block's Linear reads (a batch above it is not solved exactly).\n"
        f'GAUSS_NEWTON = {{\n    "blocks": [\n{rows}\n    ],\n'
        f'    "head": {literal_or_none(plan.head)},\n    "features": {plan.features},\n}}\n'
        'GAUSS_NEWTON_REFUSAL = ""'
    )


def _block_row(b: Block) -> str:
    """One block of the plan: on one line where it fits, else an item a line."""
    items = [
        quote(b.path),
        f"({quote(b.f.linear)}, {literal_or_none(b.f.bias)})",
        f"({quote(b.g.linear)}, {literal_or_none(b.g.bias)})",
    ]
    line = f"        ({', '.join(items)}),"
    if len(line) <= WIDTH:
        return line
    return "\n".join(["        (", *(f"            {item}," for item in items), "        ),"])


def literal_or_none(value: str | None) -> str:
    return "None" if value is None else quote(value)
