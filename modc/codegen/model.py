"""Emit model.py: one nn.Module class per scope of the network — the network itself, each
repeated body, each use of a definition (named after it) — with forward code that reads as
written by hand: expressions nested while short, variables named for what they hold, and
attention fused into one scaled_dot_product_attention where the pattern allows.

Each kind of IR node has its own small method (`leaf`, `compose`, `tuple`, `repeat`,
`coupling`, `use`), and `flow` dispatches on the node: a new combinator adds one method.
"""

from __future__ import annotations

import dataclasses
import textwrap
from dataclasses import dataclass, field

import sympy

from modc.codegen.reversible import constructor, coupling_doc, coupling_methods, inverse_method
from modc.codegen.source import (
    attribute,
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
from modc.ops.attention import FUSED, ApplyScores, AttentionQK, CausalMask, Softmax
from modc.ops.base import exact
from modc.source import Span

# The globals of model.py besides the runtime's and the classes of the scopes.
GLOBALS = ("INPUT_SHAPE", "OUTPUT_SHAPE", "Network", "build_model")
# An expression is put in a variable before it grows deeper than this many calls, or
# longer than this many characters.
DEPTH, LENGTH = 2, 48


def location(node: ir.Node | ir.Use) -> str:
    """`mlp.yaml:12:9`: the spec text a line of generated code comes from."""
    return where(node.span)


def where(span: Span | None) -> str:
    """`file:line:col` of a span, the file by its name only."""
    if span is None:
        return ""
    name = span.source.name.replace("\\", "/").rsplit("/", 1)[-1]
    return f"{shown(name)}:{span.line}:{span.col}"


def call(use: ir.Use) -> str:
    """`attention(width=128, heads=4)`: a use of a definition with its numbers."""
    args = ", ".join(f"{k}={exact(v) if v.is_number else v}" for k, v in use.args)
    return f"{use.definition}({args})"


def describe(use: ir.Use) -> str:
    """`attention(width=128, heads=4), defined at attention.modc:7:1`."""
    return f"{call(use)}, defined at {where(use.definition_span)}"


@dataclass
class Value:
    """A forward expression: its text, how many calls deep it is, what it holds, and the
    variable it may overwrite when it is put in one (`owner`: a chain's own variable)."""

    text: str
    depth: int = 0
    holds: str = "h"
    owner: str | None = None


@dataclass
class Scores:
    """Attention scores not computed yet: AttentionQK of (q, k), then maybe CausalMask,
    then maybe Softmax. ApplyScores on softmaxed scores fuses them (`FUSED`); any other
    use computes them op by op (`ModelEmitter.explicit`)."""

    q: Value
    k: Value
    leaves: list[ir.Leaf]
    causal: bool = False
    scale: sympy.Expr | None = None


@dataclass
class ClassSource:
    """The lines of one generated class as they accumulate."""

    root: ir.Node
    base: str  # the name it is wanted under
    doc: str
    prefix: str  # the path of its atoms' names from the enclosing repeat (or network)
    inputs: list[str]
    taken: set[str]  # names a new variable of forward must avoid
    name: str = ""
    init: list[str] = field(default_factory=list)
    forward: list[str] = field(default_factory=list)
    tables: dict[str, str] = field(default_factory=dict)  # state() constructor → attribute

    def variable(self, holds: str) -> str:
        """A new local variable named for what it holds."""
        return fresh(holds, self.taken)

    def methods(self) -> list[tuple[str, list[str], list[str]]]:
        """Each method after __init__: its name, arguments and statements."""
        return [("forward", self.inputs, self.forward)]

    def body(self) -> tuple[str, ...]:
        methods = [line for m in self.methods() for line in ("|", m[0], *m[1], *m[2])]
        return (self.base, self.doc, *self.init, *methods)

    def text(self) -> str:
        lines = [f"class {self.name}(nn.Module):", docstring(self.doc, 4), ""]
        lines += ["    def __init__(self) -> None:", "        super().__init__()"]
        lines += [f"        {line}" for line in self.init]
        for name, inputs, statements in self.methods():
            args = ", ".join(f"{x}: torch.Tensor" for x in inputs)
            lines += ["", f"    def {name}(self, {args}) -> torch.Tensor:"]
            lines += [f"        {line}" for line in statements]
        return "\n".join(lines)


@dataclass
class CouplingSource(ClassSource):
    """A coupling's class: f's statements, then g's, each written in `forward` in turn
    and kept in `branches`; forward and inverse combine them (modc.codegen.reversible)."""

    branches: list[list[str]] = field(default_factory=list)

    def methods(self) -> list[tuple[str, list[str], list[str]]]:
        return coupling_methods(*self.branches)


class ModelEmitter:
    """Walks the IR once, writing each class's constructor lines and forward statements.

    `calls` records, for each operation with a runtime function, the function model.py
    calls for it and where each of its inputs is among that call's arguments (None: not
    there, fused away): the certificate wraps those functions to check conditions on data.
    """

    def __init__(self, network: ir.Network, fuse: bool = True):
        self.network = network
        self.fuse = fuse
        self.classes: list[ClassSource] = []
        self.runtime: list[object] = []
        self.calls: dict[int, tuple[str, tuple[int | None, ...]]] = {}
        # Every global name model.py may have, so that no class or variable takes one.
        leaves = [n for n in ir.walk(network.root) if isinstance(n, ir.Leaf)]
        runtime = dict.fromkeys(o for leaf in leaves for o in _runtime(leaf))
        runtime.update(dict.fromkeys(FUSED.values()))
        self.globals = {*GLOBALS, *imported_names(), *defined_names(snippets(runtime))}

    # ------------------------------------------------------------------ classes

    def scope(
        self, node: ir.Node, wanted: str, doc: str, prefix: str, count: int = 1, fixed: bool = False
    ) -> str:
        """Emit the class of `node`, unless one of the same text exists; its name.
        `fixed`: the class is named `wanted` as it is (the network's)."""
        inputs = ["x"] if count == 1 else [f"x{i}" for i in range(count)]
        taken = {*self.globals, "self", "block", *inputs}
        cls = ClassSource(node, wanted, doc, prefix, inputs, taken)
        ins = [Value(x, owner=x if count == 1 else None) for x in inputs]
        outs = self.flow(node, ins, cls)
        cls.forward += [f"return {', '.join(self.final(v, cls).text for v in outs)}"]
        return self.add(cls, fixed)

    def add(self, cls: ClassSource, fixed: bool = False) -> str:
        """`cls` among the classes, unless one of the same text exists; its name."""
        for other in self.classes:
            if not fixed and other.body() == cls.body():
                return other.name
        cls.name = cls.base if fixed else fresh(camel(cls.base), self.globals)
        self.classes.append(cls)
        return cls.name

    # ------------------------------------------------------------------ values

    def flow(self, node: ir.Node, ins: list, cls: ClassSource) -> list:
        """The values of `node`'s outputs given its inputs'; the statements that compute
        them go into `cls`."""
        if node.use is not None and node.use.attr is not None and node is not cls.root:
            return self.use(node, ins, cls)
        if isinstance(node, ir.Leaf):
            return self.leaf(node, ins, cls)
        if isinstance(node, ir.Compose):
            return self.compose(node, ins, cls)
        if isinstance(node, ir.Tuple):
            return self.tuple(node, ins, cls)
        if isinstance(node, ir.Tare):
            return self.flow(node.body, ins, cls)
        if isinstance(node, ir.Coupling):
            return self.coupling(node, ins, cls)
        if isinstance(node, ir.Repeat):
            return self.repeat(node, ins, cls)
        raise TypeError(type(node).__name__)

    def assign(self, value: Value, cls: ClassSource) -> Value:
        """`value` put in its owner's variable, or in a new one named for what it holds."""
        var = value.owner or cls.variable(value.holds)
        if value.text != var:
            cls.forward += [f"{var} = {value.text}"]
        return Value(var, 0, value.holds, var)

    def ready(self, value: Value | Scores, cls: ClassSource) -> Value:
        """`value` as an expression fit to nest in another: scores computed, and put in a
        variable first where the nesting would grow too deep or long."""
        if isinstance(value, Scores):
            value = self.explicit(value, cls)
        if value.depth >= DEPTH or len(value.text) > LENGTH:
            return self.assign(value, cls)
        return value

    def final(self, value: Value | Scores, cls: ClassSource) -> Value:
        """`value` fit to return: scores computed, put in a variable only if very deep."""
        if isinstance(value, Scores):
            value = self.explicit(value, cls)
        if value.depth > DEPTH or len(value.text) > 2 * LENGTH:
            return self.assign(value, cls)
        return value

    def operand(self, value: Value | Scores, cls: ClassSource) -> Value:
        """`value` as an argument beside others: a variable unless it is a plain term."""
        value = self.ready(value, cls)
        return value if value.depth == 0 else self.assign(value, cls)

    # ------------------------------------------------------------------ nodes

    def compose(self, node: ir.Compose, ins: list, cls: ClassSource) -> list:
        """Parts in order; between two parts the one value in flight may take over the
        chain's variable (nothing else reads it)."""
        var = ins[0].owner if len(ins) == 1 and isinstance(ins[0], Value) else None
        values = ins
        for i, part in enumerate(node.parts):
            if i and var and len(values) == 1 and isinstance(values[0], Value):
                values = [dataclasses.replace(values[0], owner=values[0].owner or var)]
            values = self.flow(part, values, cls)
        return values

    def tuple(self, node: ir.Tuple, ins: list, cls: ClassSource) -> list:
        """Branches on one input: computed once, in a variable, when several read it; no
        branch may overwrite it."""
        value = ins[0]
        if len(node.branches) > 1 and not (isinstance(value, Value) and value.text.isidentifier()):
            value = self.assign(self.ready(value, cls), cls)
        shared = [dataclasses.replace(value, owner=None) if isinstance(value, Value) else value]
        outs = []
        for branch in node.branches:
            for v in self.flow(branch, shared, cls):
                done = isinstance(v, Value) and v.depth and (v.owner or v.depth >= DEPTH)
                outs.append(self.assign(v, cls) if done else v)
        return outs

    def leaf(self, node: ir.Leaf, ins: list, cls: ClassSource) -> list:
        op = node.op
        fused = self.fused(node, ins, cls) if self.fuse else None
        if fused is not None:
            return [fused]
        self.runtime += _runtime(node)
        if op.arity == 1 or _operator(op):
            args = [self.ready(v, cls) for v in ins]
        else:
            args = [self.operand(v, cls) for v in ins]
        attr = self.attribute(node, cls)
        text = op.forward([a.text for a in args], attr)
        if op.runtime and not op.atom:
            self.calls[id(node)] = (op.runtime[0].__name__, tuple(range(len(ins))))
        depth = max(a.depth for a in args) + (0 if _operator(op) else 1)
        holds = attr if op.atom else op.holds or (args[0].holds if len(args) == 1 else "h")
        owner = args[0].owner if len(args) == 1 else None
        return [Value(text, depth, holds, owner)]

    def attribute(self, node: ir.Leaf, cls: ClassSource) -> str | None:
        """The attribute an atom (or an operation's tables) has in `cls`; its line made."""
        if node.is_atom:
            attr = node.name.removeprefix(cls.prefix)
            cls.init += commented(
                f"self.{attr} = {constructor(node)}",
                f"{location(node)} {node.op.describe()}",
                8,
            )
            return attr
        made = node.op.state()
        if made is None:
            return None
        if made not in cls.tables:
            attr = _free(type(node.op).__name__.lower(), cls)
            cls.tables[made] = attr
            comment = f"{location(node)} {node.op.describe()}'s tables"
            cls.init += commented(f"self.{attr} = {made}", comment, 8)
        return cls.tables[made]

    def use(self, node: ir.Node, ins: list, cls: ClassSource) -> list:
        """A use of a definition: a submodule of its own class."""
        use = node.use
        inner = f"{cls.prefix}{use.attr}."
        name = self.scope(node, use.definition, f"{describe(use)}.", inner, len(ins))
        cls.init += commented(f"self.{use.attr} = {name}()", f"{location(use)} {call(use)}", 8)
        args = [self.operand(v, cls) if len(ins) > 1 else self.ready(v, cls) for v in ins]
        text = f"self.{use.attr}({', '.join(a.text for a in args)})"
        out = node.out_shape
        if out and isinstance(out[0], tuple):
            names = [cls.variable(use.attr) for _ in out]
            cls.forward += [f"{', '.join(names)} = {text}"]
            return [Value(n, 0, use.attr) for n in names]
        return [Value(text, max(a.depth for a in args) + 1, use.attr)]

    def coupling(self, node: ir.Coupling, ins: list, cls: ClassSource) -> list:
        """A coupling: a submodule of its own class, whose methods f and g are written here
        from their nodes (their atoms are named in it: `f_linear`)."""
        attr = node.name.removeprefix(cls.prefix)
        doc = coupling_doc(f"'{attr}' ({location(node)})")
        src = CouplingSource(node, attr, doc, "", ["x"], {*self.globals, "self", "block", "x"})
        for branch in (node.f, node.g):
            out = self.final(self.flow(branch, [Value("x", owner="x")], src)[0], src)
            src.branches.append([*src.forward, f"return {out.text}"])
            src.forward = []
        name = self.add(src)
        cls.init += commented(f"self.{attr} = {name}()", location(node), 8)
        x = self.ready(ins[0], cls)
        return [Value(f"self.{attr}({x.text})", x.depth + 1, attr)]

    def repeat(self, node: ir.Repeat, ins: list, cls: ClassSource) -> list:
        attr = node.name.removeprefix(cls.prefix)
        here = f"'{attr}' ({location(node)})"
        rest = self.scope(
            node.rest,
            _class_name(node.rest, node.name),
            _repeat_doc(node.rest, f"One copy of {here}, {node.count} in all."),
            "",
        )
        if node.first is node.rest:
            copies = f"nn.ModuleList({rest}() for _ in range({node.count}))"
        else:
            first = self.scope(
                node.first,
                _class_name(node.first, attr + "_first"),
                _repeat_doc(node.first, f"The first copy of {here}."),
                "",
            )
            copies = f"nn.ModuleList([{first}()] + [{rest}() for _ in range({node.count - 1})])"
        cls.init += commented(f"self.{attr} = {copies}", location(node), 8)
        x = self.assign(self.ready(ins[0], cls), cls)
        cls.forward += [f"for block in self.{attr}:", f"    {x.text} = block({x.text})"]
        return [x]

    # ------------------------------------------------------------------ attention

    def fused(self, node: ir.Leaf, ins: list, cls: ClassSource) -> Value | Scores | None:
        """AttentionQK > [CausalMask >] Softmax > ApplyScores, kept as Scores until
        ApplyScores and then one call of the fused function; None for other operations
        and where the pattern breaks."""
        op = node.op
        if isinstance(op, AttentionQK):
            q, k = (self.operand(v, cls) for v in ins)
            return Scores(q, k, [node])
        if not ins or not isinstance(ins[-1], Scores):
            return None
        s = ins[-1]
        if isinstance(op, CausalMask) and not s.causal and s.scale is None:
            return Scores(s.q, s.k, [*s.leaves, node], True)
        if isinstance(op, Softmax) and s.scale is None:
            return Scores(s.q, s.k, [*s.leaves, node], s.causal, op.values["scale"])
        if isinstance(op, ApplyScores) and s.scale is not None:
            v = self.operand(ins[0], cls)
            fn = FUSED[s.causal]
            self.runtime.append(fn)
            self.calls[id(s.leaves[0])] = (fn.__name__, (0, 1))
            self.calls[id(node)] = (fn.__name__, (2, None))
            text = f"{fn.__name__}({s.q.text}, {s.k.text}, {v.text}, {exact(s.scale)})"
            return self.assign(Value(text, 1, op.holds), cls)
        return None

    def explicit(self, s: Scores, cls: ClassSource) -> Value:
        """Scores computed op by op, as written."""
        fuse, self.fuse = self.fuse, False
        try:
            values: list = [s.q, s.k]
            for leaf in s.leaves:
                values = self.leaf(leaf, values, cls)
            return values[0]
        finally:
            self.fuse = fuse


def _free(wanted: str, cls: ClassSource) -> str:
    """An attribute of `cls` for tables of its own, clear of its atoms' and submodules'
    (all of them: those not emitted yet too)."""
    taken = set()
    for n in ir.walk(cls.root):
        name = n.use.attr if n.use is not None and n is not cls.root else getattr(n, "name", None)
        if isinstance(name, str) and name:
            taken.add(name.removeprefix(cls.prefix).split(".", 1)[0])
    name = wanted
    while name in taken or not attribute_ok(name):
        name += "_"
    return name


def attribute_ok(name: str) -> bool:
    """Whether `name` is clear of nn.Module's own members and of keywords."""
    return attribute(name) == name


def _operator(op: object) -> bool:
    """Whether the op's forward is an arithmetic operator rather than a call."""
    return type(op).__name__ in ("Mul", "Add", "Identity")


def _class_name(body: ir.Node, fallback: str) -> str:
    """A repeated body that is a use of a definition is named after the definition."""
    return body.use.definition if body.use is not None else fallback


def _repeat_doc(body: ir.Node, doc: str) -> str:
    return doc if body.use is None else f"{describe(body.use)}.\n\n{doc}"


def _runtime(leaf: ir.Leaf) -> list[object]:
    """What model.py copies from modc for `leaf`: its helpers, and an atom's nn.Module."""
    return [*leaf.op.runtime, *([leaf.op.module] if leaf.is_atom else [])]


def emitted(network: ir.Network, fuse: bool = True) -> ModelEmitter:
    """The emitter after writing the network's classes (the network's last)."""
    e = ModelEmitter(network, fuse)
    doc = f"The network of {shown(network.name)}; see the module docstring."
    if network.root.use is not None:
        doc = f"{describe(network.root.use)}.\n\n{doc}"
    e.scope(network.root, "Network", doc, "", fixed=True)
    return e


def emit_model(network: ir.Network, fuse: bool = True) -> str:
    """The text of model.py; `fuse=False` writes attention op by op, as in the spec."""
    e = emitted(network, fuse)
    params = ", ".join(f"{k}={v}" for k, v in network.params.items())
    shapes = (
        f"INPUT_SHAPE = {tuple(int(d) for d in network.input_shape)!r}\n"
        f"OUTPUT_SHAPE = {tuple(int(d) for d in network.output_shape)!r}"
    )
    body = "\n\n\n".join(
        filter(
            None,
            [
                shapes,
                snippets(dict.fromkeys(e.runtime)),
                *(c.text() for c in e.classes[:-1]),
                e.classes[-1].text() + inverse_method(network),
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


def fused_calls(network: ir.Network) -> dict[int, tuple[str, tuple[int | None, ...]]]:
    """Per operation (by id) with a runtime function: the function model.py calls for it
    and where its inputs are among that call's arguments (see ModelEmitter)."""
    return emitted(network).calls
