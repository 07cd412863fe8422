"""What the bounds assume, collected from the operations: conditions and notes.

A condition is a restriction on inputs under which an operation's constants hold (RMS
division needs inputs away from zero, attention needs bounded queries, keys and values);
a note marks an operation whose nominal sensitivity, used for the targets, is below its
worst-case Lipschitz constant, used for the bound. Each is listed once, with every place
in the spec it comes from.

A condition is met by construction, and not listed, where the operation's input carries
the fact it needs for every input of the network: facts flow forward through the IR, each
operation saying what its output keeps or makes (`Op.facts`; RMSClip makes "RMS ≤ 1",
RoPE keeps it, Softmax makes "rows of ℓ1 ≤ 1"). docs/theory.md §7.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from modc.graph import ir


@dataclass
class Condition:
    """One statement and the operations (with spec positions) it applies to."""

    op: str
    text: str
    where: list[str] = field(default_factory=list)


def place(leaf: ir.Leaf) -> str:
    """`AttentionQK at gpt.yaml:26:15`: an operation and where the spec writes it."""
    if leaf.span is None:
        return leaf.op.describe()
    name = leaf.span.source.name.replace("\\", "/").rsplit("/", 1)[-1]
    return f"{leaf.op.describe()} at {name}:{leaf.span.line}:{leaf.span.col}"


def open_conditions(root: ir.Node) -> list[tuple[ir.Leaf, object]]:
    """Every (operation, condition) whose input does not carry the fact that would meet it.

    The network's input carries no fact; each node passes facts on by its `flow` rule
    (modc/graph/ir.py; an operation by its `facts`), and states its `conditions`.
    """
    found: list[tuple[ir.Leaf, object]] = []
    seen: set[tuple[int, str]] = set()

    def through(n: ir.Node, facts):
        ins = facts if isinstance(facts, tuple) else (facts,)
        for c in n.conditions():
            if (c.fact is None or c.fact not in ins[c.input]) and (id(n), c.text) not in seen:
                seen.add((id(n), c.text))
                found.append((n, c))
        return n.flow(facts, through)

    through(root, frozenset())
    return found


def collect_conditions(root: ir.Node) -> tuple[list[Condition], list[Condition]]:
    """The open conditions and the notes of every operation in the tree, each text once."""
    conditions: dict[str, Condition] = {}
    notes: dict[str, Condition] = {}
    for node, c in open_conditions(root):
        _add(conditions.setdefault(c.text, Condition(node.op.name, c.text)), place(node))
    for node in ir.leaves(root):
        op = node.op
        if not op.atom and op.lipschitz_bound() != op.sensitivity():
            text = (
                f"{op.describe()}: sensitivity {op.sensitivity()} is the modular-norm "
                f"convention (it sets the targets); its worst-case Lipschitz constant is "
                f"{op.lipschitz_bound()}, which the Lipschitz bound uses"
            )
            _add(notes.setdefault(text, Condition(op.name, text)), place(node))
    return list(conditions.values()), list(notes.values())


def _add(c: Condition, where: str) -> None:
    if where not in c.where:
        c.where.append(where)
