"""Emit model.py: one nn.Module class for the network and one per repeated body."""

from __future__ import annotations

import textwrap
from dataclasses import dataclass, field

from modc.codegen.reversible import constructor, emit_coupling, inverse_method
from modc.codegen.source import (
    camel,
    commented,
    defined_names,
    docstring,
    fresh,
    imported_names,
    module,
    snippets,
)
from modc.errors import shown
from modc.graph import ir

# The globals of model.py besides the runtime's and the classes of repeated bodies.
GLOBALS = ("INPUT_SHAPE", "OUTPUT_SHAPE", "Network", "build_model")


def location(node: ir.Node) -> str:
    """`mlp.yaml:12:9`: the spec text a line of generated code comes from."""
    if node.span is None:
        return ""
    name = node.span.source.name.replace("\\", "/").rsplit("/", 1)[-1]
    return f"{shown(name)}:{node.span.line}:{node.span.col}"


@dataclass
class ClassSource:
    """The lines of one generated class as they accumulate."""

    name: str
    doc: str
    init: list[str] = field(default_factory=list)
    forward: list[str] = field(default_factory=list)
    temps: int = 0

    def fresh(self) -> str:
        self.temps += 1
        return f"h{self.temps}"

    def text(self) -> str:
        lines = [
            f"class {self.name}(nn.Module):",
            docstring(self.doc, 4),
            "",
            "    def __init__(self) -> None:",
            "        super().__init__()",
        ]
        lines += [f"        {line}" for line in self.init]
        lines += ["", "    def forward(self, x: torch.Tensor) -> torch.Tensor:"]
        lines += [f"        {line}" for line in self.forward]
        return "\n".join(lines)


class ModelEmitter:
    """Walks the IR once, writing each scope's constructor lines and forward statements."""

    def __init__(self, network: ir.Network):
        self.network = network
        self.classes: list[ClassSource] = []
        self.runtime: list[object] = []
        # Every global name model.py will have, so that no class of a repeat takes one:
        # a repeat `linear` gets `Linear2` beside the runtime's Linear, `f` gets `F2`.
        leaves = [n for n in ir.walk(network.root) if isinstance(n, ir.Leaf)]
        runtime = dict.fromkeys(o for leaf in leaves for o in _runtime(leaf))
        self.globals = {*GLOBALS, *imported_names(), *defined_names(snippets(runtime))}

    def scope(self, node: ir.Node, name: str, doc: str) -> ClassSource:
        cls = ClassSource(name, doc)
        out = self.flow(node, ["x"], "x", cls)
        cls.forward.append(f"return {out[0]}")
        self.classes.append(cls)
        return cls

    def assign(self, cls: ClassSource, var: str, exprs: list[str]) -> list[str]:
        if len(exprs) == 1 and exprs[0] != var:
            cls.forward.append(f"{var} = {exprs[0]}")
            return [var]
        return exprs

    def flow(self, node: ir.Node, ins: list[str], var: str, cls: ClassSource) -> list[str]:
        """Expressions for `node`'s outputs; statements that compute them go into `cls`."""
        if isinstance(node, ir.Leaf):
            self.runtime += _runtime(node)
            if node.is_atom:
                cls.init += commented(
                    f"self.{node.name} = {constructor(node)}",
                    f"{location(node)} {node.op.describe()}",
                    8,
                )
            return [node.op.forward(ins, node.name)]
        if isinstance(node, ir.Compose):
            cur = ins
            for i, part in enumerate(node.parts):
                cur = self.flow(part, cur, var, cls)
                if i < len(node.parts) - 1:
                    cur = self.assign(cls, var, cur)
            return cur
        if isinstance(node, ir.Tuple):
            outs = []
            for branch in node.branches:
                if isinstance(branch, ir.Leaf):
                    outs += self.flow(branch, ins, var, cls)
                else:
                    temp = cls.fresh()
                    outs += self.assign(cls, temp, self.flow(branch, ins, temp, cls))
            return outs
        if isinstance(node, ir.Tare):
            return self.flow(node.body, ins, var, cls)
        if isinstance(node, ir.Coupling):
            return [emit_coupling(self, node, ins, cls)]
        if isinstance(node, ir.Repeat):
            return self.repeat(node, ins, var, cls)
        raise TypeError(type(node).__name__)

    def repeat(self, node: ir.Repeat, ins: list[str], var: str, cls: ClassSource) -> list[str]:
        base = camel(node.name)
        rest = self.scope(
            node.rest,
            fresh(base, self.globals),
            f"One copy of '{node.name}' ({location(node)}), {node.count} in all.",
        )
        if node.first is node.rest:
            copies = f"nn.ModuleList({rest.name}() for _ in range({node.count}))"
        else:
            first = self.scope(
                node.first,
                fresh(base + "First", self.globals),
                f"The first copy of '{node.name}' ({location(node)}).",
            )
            copies = (
                f"nn.ModuleList([{first.name}()] + "
                f"[{rest.name}() for _ in range({node.count - 1})])"
            )
        cls.init += commented(f"self.{node.name} = {copies}", location(node), 8)
        self.assign(cls, var, ins)
        cls.forward += [f"for block in self.{node.name}:", f"    {var} = block({var})"]
        return [var]


def _runtime(leaf: ir.Leaf) -> list[object]:
    """What model.py copies from modc for `leaf`: its helpers, and an atom's nn.Module."""
    return [*leaf.op.runtime, *([leaf.op.module] if leaf.is_atom else [])]


def emit_model(network: ir.Network) -> str:
    """The text of model.py."""
    e = ModelEmitter(network)
    params = ", ".join(f"{k}={v}" for k, v in network.params.items())
    root = e.scope(
        network.root, "Network", f"The network of {shown(network.name)}; see the module docstring."
    )
    shapes = (
        f"INPUT_SHAPE = {tuple(int(d) for d in network.input_shape)!r}\n"
        f"OUTPUT_SHAPE = {tuple(int(d) for d in network.output_shape)!r}"
    )
    helpers = [c.text() for c in e.classes if c is not root]
    body = "\n\n\n".join(
        filter(
            None,
            [
                shapes,
                snippets(dict.fromkeys(e.runtime)),
                *helpers,
                root.text() + inverse_method(network),
                'def build_model() -> Network:\n    """A freshly initialised network; seed torch '
                'first for a fixed initialisation."""\n    return Network()',
            ],
        )
    )
    source = network.source_name.replace("\\", "/").rsplit("/", 1)[-1]
    doc = (
        f"{shown(network.name)}: the network, compiled by modc from {shown(source)}.\n\n"
        + textwrap.fill(f"Parameters: {params or 'none'}.", 92)
        + "\nRegenerate with `modc compile` rather than edit.\n"
    )
    return module(doc, body)
