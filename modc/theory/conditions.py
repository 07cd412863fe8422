"""What the bounds assume, collected from the operations: conditions and notes.

A condition is a restriction on inputs under which an operation's sensitivity holds (RMS
division needs inputs away from zero, attention needs bounded queries, keys and values);
a note marks an operation whose nominal sensitivity, used for the targets, is below its
worst-case Lipschitz constant, used for the bound. Each is listed once, with every place
in the spec it comes from.
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


def collect_conditions(root: ir.Node) -> tuple[list[Condition], list[Condition]]:
    """The conditions and the notes of every operation in the tree, each text once."""
    conditions: dict[str, Condition] = {}
    notes: dict[str, Condition] = {}
    for node in ir.walk(root):
        if not isinstance(node, ir.Leaf):
            continue
        op = node.op
        for c in op.conditions():
            _add(conditions.setdefault(c.text, Condition(op.name, c.text)), place(node))
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
