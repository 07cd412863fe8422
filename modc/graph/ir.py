"""The module IR: a tree of atoms, bonds and combinators with every shape known.

Combinators follow docs/theory.md §3: Compose (data-flow order), Tuple (branches on one input),
Repeat (composed copies with independent weights) and Tare (mass allocation). Sums,
scalar multiples and residual blocks are written with these during elaboration.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

import sympy

from modc.ops import Op, Shape
from modc.source import Span


@dataclass(eq=False)
class Node:
    in_shape: Shape
    span: Span | None = field(repr=False)

    @property
    def out_shape(self) -> Shape | tuple[Shape, ...]:
        raise NotImplementedError

    def children(self) -> tuple[Node, ...]:
        return ()


@dataclass(eq=False)
class Leaf(Node):
    """An operation of the library. `name` is its attribute in generated code (atoms)."""

    op: Op = None
    name: str | None = None
    mass: sympy.Expr = sympy.Integer(0)

    @property
    def out_shape(self) -> Shape:
        return self.op.out_shape

    @property
    def is_atom(self) -> bool:
        return self.op.atom


@dataclass(eq=False)
class Compose(Node):
    """parts[0] first, then parts[1], ...: μ adds, ν multiplies."""

    parts: tuple[Node, ...] = ()

    @property
    def out_shape(self) -> Shape | tuple[Shape, ...]:
        return self.parts[-1].out_shape if self.parts else self.in_shape

    def children(self) -> tuple[Node, ...]:
        return self.parts


@dataclass(eq=False)
class Tuple(Node):
    """Branches applied to the same input; the output is the tuple of their outputs."""

    branches: tuple[Node, ...] = ()

    @property
    def out_shape(self) -> tuple[Shape, ...]:
        return tuple(b.out_shape for b in self.branches)

    def children(self) -> tuple[Node, ...]:
        return self.branches


@dataclass(eq=False)
class Repeat(Node):
    """`count` composed copies. The first copy may change the shape (`first`); the others
    all map `rest.in_shape` to itself. When the first copy keeps the shape, rest is first.
    """

    count: sympy.Expr = sympy.Integer(1)
    first: Node = None
    rest: Node = None
    name: str = ""

    @property
    def out_shape(self) -> Shape:
        return self.rest.out_shape

    def children(self) -> tuple[Node, ...]:
        return (self.first,) if self.rest is self.first else (self.first, self.rest)


@dataclass(eq=False)
class Tare(Node):
    """Mass allocation: the masses inside `body` are rescaled to total `mass`."""

    mass: sympy.Expr = sympy.Integer(1)
    body: Node = None

    @property
    def out_shape(self) -> Shape | tuple[Shape, ...]:
        return self.body.out_shape

    def children(self) -> tuple[Node, ...]:
        return (self.body,)


@dataclass
class Network:
    """An elaborated spec: parameter values, shapes and the module tree."""

    name: str
    params: dict[str, sympy.Expr]
    input_shape: Shape
    root: Node
    train: dict[str, object]
    optimizer: dict[str, object]
    source_name: str

    @property
    def output_shape(self) -> Shape:
        return self.root.out_shape


def walk(node: Node) -> Iterator[Node]:
    """Every node of the tree, parents before children."""
    yield node
    for child in node.children():
        yield from walk(child)
