"""Reversible networks: which parts of the IR invert, and the structure that exact
Gauss–Newton steps through (docs/theory.md §12).

A node inverts when every part of it does: a coupling always; a composition, a tare or a
repeat when its children do; an operation when it states an inverse (`Op.inverse`:
Identity, Flatten, Mul by a nonzero number). A tuple does not.

Exact Gauss–Newton (Buffelli et al., NeurIPS 2024) needs more: operations without trainable
weights, then coupling blocks whose f and g are fixed features (bonds and frozen atoms)
followed by one trainable Linear and at most a trainable Bias, then at most a frozen Linear
head. Each block then solves its own least-squares problem in the features (`GaussNewtonPlan`).
"""

from __future__ import annotations

from dataclasses import dataclass

from modc.errors import ModcError
from modc.graph import ir

NEEDS = (
    "gauss_newton needs a reversible network: layers without trainable weights, then coupling "
    "blocks whose f and g are fixed features (frozen atoms and bonds) followed by a trainable "
    "Linear and at most a trainable Bias, then at most a frozen Linear head"
)
HINT = (
    "for example Flatten > repeat(2) { coupling(Linear(M, frozen=true) > ReLU > Linear(d/2) "
    "> Bias, Linear(M, frozen=true) > ReLU > Linear(d/2) > Bias) } > Linear(10, frozen=true)"
)


def invertible(node: ir.Node) -> bool:
    """Whether `node` is a bijection whose inverse model.py can write."""
    if isinstance(node, ir.Leaf):
        return node.op.inverse("y") is not None
    if isinstance(node, ir.Tuple):
        return False
    return isinstance(node, ir.Coupling) or all(invertible(c) for c in node.children())


def chain(node: ir.Node) -> list[ir.Node]:
    """The parts `node` composes in data-flow order, through nested compositions and tares."""
    if isinstance(node, ir.Compose):
        return [p for part in node.parts for p in chain(part)]
    if isinstance(node, ir.Tare):
        return chain(node.body)
    return [node]


def _trainable(node: ir.Node) -> list[ir.Leaf]:
    return [n for n in ir.walk(node) if isinstance(n, ir.Leaf) and n.is_atom and not n.frozen]


@dataclass(frozen=True)
class Side:
    """f or g of a coupling: its trainable Linear (and Bias), by attribute in the coupling,
    and the number of features that Linear reads (M)."""

    linear: str
    bias: str | None
    features: int


@dataclass(frozen=True)
class Block:
    """One coupling block: its module path in the model, and its f and g."""

    path: str
    f: Side
    g: Side


@dataclass(frozen=True)
class GaussNewtonPlan:
    blocks: tuple[Block, ...]
    head: str | None  # the frozen Linear after the last block, if any

    @property
    def features(self) -> int:
        """The smallest M: a batch larger than this makes some update inexact."""
        return min(min(b.f.features, b.g.features) for b in self.blocks)


def _refuse(what: str, node: ir.Node) -> ModcError:
    return ModcError(f"{NEEDS}; {what}", node.span, HINT)


def _side(node: ir.Node, which: str, coupling: ir.Coupling) -> Side:
    parts = chain(node)
    trainable = _trainable(node)
    names = [p.op.name if isinstance(p, ir.Leaf) else "" for p in parts]
    bias = parts[-1] if names[-1] == "Bias" and len(parts) > 1 else None
    linear = parts[-2] if bias is not None else parts[-1]
    ok = (
        isinstance(linear, ir.Leaf)
        and linear.op.name == "Linear"
        and not linear.frozen
        and (bias is None or not bias.frozen)
        and len(trainable) == 1 + (bias is not None)
    )
    if not ok:  # point at the first trainable atom out of place, else at the branch
        extra = [a for a in trainable if a is not linear and a is not bias]
        at = extra[0] if extra else node if node.span is not None else coupling
        raise _refuse(
            f"this coupling's {which} is not frozen features > a trainable Linear (> Bias)", at
        )
    return Side(linear.name, bias.name if bias is not None else None, int(linear.in_shape[-1]))


def _block(c: ir.Coupling, prefix: str) -> Block:
    return Block(prefix + c.name, _side(c.f, "f", c), _side(c.g, "g", c))


def gauss_newton_plan(root: ir.Node) -> GaussNewtonPlan:
    """The blocks and head of a network exact Gauss–Newton can train, or a located error
    saying what it lacks."""
    parts = chain(root)
    i = 0
    while i < len(parts) and not _trainable(parts[i]) and not _is_blocks(parts[i]):
        i += 1
    blocks: list[Block] = []
    while i < len(parts) and _is_blocks(parts[i]):
        part = parts[i]
        if isinstance(part, ir.Coupling):
            blocks.append(_block(part, ""))
        else:
            if not part.count.is_Integer:
                raise _refuse("the number of blocks must be known", part)
            for k in range(int(part.count)):
                body = part.first if k == 0 else part.rest
                blocks.append(_block(body, f"{part.name}.{k}."))
        i += 1
    if not blocks:
        at = parts[i] if i < len(parts) else root
        raise _refuse("this network has no coupling block where one is needed", at)
    head = None
    rest = parts[i:]
    if rest:
        last = rest[0]
        is_head = isinstance(last, ir.Leaf) and last.is_atom and last.op.name == "Linear"
        if len(rest) > 1 or not is_head or not last.frozen:
            bad = rest[1] if is_head and last.frozen else last
            raise _refuse("after the coupling blocks only a frozen Linear head may follow", bad)
        head = last.name
    return GaussNewtonPlan(tuple(blocks), head)


def _is_blocks(node: ir.Node) -> bool:
    """A coupling, or a repeat whose copies are each one coupling."""
    if isinstance(node, ir.Coupling):
        return True
    return isinstance(node, ir.Repeat) and all(isinstance(c, ir.Coupling) for c in node.children())


def refusal(root: ir.Node) -> str | None:
    """Why gauss_newton cannot train `root`, in one line; None when it can."""
    try:
        gauss_newton_plan(root)
    except ModcError as err:
        return err.message
    return None
