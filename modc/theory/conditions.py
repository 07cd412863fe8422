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


Facts = frozenset[str] | tuple  # of one output, or of a tuple's outputs


def open_conditions(root: ir.Node) -> list[tuple[ir.Leaf, object]]:
    """Every (operation, condition) whose input does not carry the fact that would meet it.

    The network's input carries no fact. A repeated body's copies after the first get the
    facts that hold both after the first copy and after the others (a fixed point, found
    by shrinking: facts are few).
    """
    found: list[tuple[ir.Leaf, object]] = []

    def flow(n: ir.Node, facts: Facts, record: bool) -> Facts:
        if isinstance(n, ir.Leaf):
            ins = facts if isinstance(facts, tuple) else (facts,)
            for c in n.op.conditions() if record else ():
                if c.fact is None or c.fact not in ins[c.input]:
                    found.append((n, c))
            return n.op.facts(ins)
        if isinstance(n, ir.Compose):
            for part in n.parts:
                facts = flow(part, facts, record)
            return facts
        if isinstance(n, ir.Tuple):
            return tuple(flow(b, facts, record) for b in n.branches)
        if isinstance(n, ir.Tare):
            return flow(n.body, facts, record)
        if isinstance(n, ir.Repeat):
            out = flow(n.first, facts, record)
            if n.count == 1:
                return out
            ins = out
            while (after := _meet(ins, flow(n.rest, ins, False))) != ins:
                ins = after
            return flow(n.rest, ins, record)
        raise TypeError(type(n).__name__)

    flow(root, frozenset(), True)
    return found


def _meet(a: Facts, b: Facts) -> Facts:
    """The facts that hold in both a and b."""
    if isinstance(a, tuple) and isinstance(b, tuple) and len(a) == len(b):
        return tuple(_meet(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, tuple) or isinstance(b, tuple):
        return frozenset()
    return a & b


def collect_conditions(root: ir.Node) -> tuple[list[Condition], list[Condition]]:
    """The open conditions and the notes of every operation in the tree, each text once."""
    conditions: dict[str, Condition] = {}
    notes: dict[str, Condition] = {}
    for node, c in open_conditions(root):
        _add(conditions.setdefault(c.text, Condition(node.op.name, c.text)), place(node))
    for node in ir.walk(root):
        if not isinstance(node, ir.Leaf):
            continue
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
