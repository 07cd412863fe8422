"""Views of the module IR: a JSON tree (for spec.json) and a networkx graph."""

from __future__ import annotations

import networkx as nx
import sympy

from modc.errors import shown
from modc.graph import ir


def _dims(shape: tuple) -> list:
    if shape and isinstance(shape[0], tuple):
        return [_dims(s) for s in shape]
    return [int(d) if getattr(d, "is_Integer", False) else str(d) for d in shape]


def _number(e: sympy.Expr) -> int | float | str:
    if e.is_Integer:
        return int(e)
    return float(e) if e.is_number else str(e)


def _attributes(node: ir.Node) -> dict:
    """The node's `attributes` as JSON values."""
    return {k: _number(v) if isinstance(v, sympy.Expr) else v for k, v in node.attributes().items()}


def tree(node: ir.Node) -> dict:
    """The IR as nested dicts of kind, name, shapes, source position and children."""
    out: dict = {
        "kind": node.label(),
        "in": _dims(node.in_shape),
        "out": _dims(node.out_shape),
    }
    out.update(_attributes(node))
    if node.span is not None:
        out["source"] = f"{node.span.line}:{node.span.col}"
    if node.children():
        out["children"] = [tree(c) for c in node.children()]
    return out


def to_networkx(network: ir.Network) -> nx.DiGraph:
    """The module tree as a DiGraph: node ids are paths like `0.2.1`, edges parent → child,
    and each node carries its label, shapes and attributes (an atom's name and mass, a
    repeat's name)."""
    g = nx.DiGraph(name=network.name)

    def add(node: ir.Node, path: str) -> None:
        g.add_node(
            path,
            label=node.label(),
            shape_in=_dims(node.in_shape),
            shape_out=_dims(node.out_shape),
        )
        g.nodes[path].update(_attributes(node))
        for i, child in enumerate(node.children()):
            add(child, f"{path}.{i}")
            g.add_edge(path, f"{path}.{i}", order=i)

    add(network.root, "0")
    return g


def to_dot(network: ir.Network) -> str:
    """The module tree in Graphviz DOT: one box per node (label, shapes), edges in order."""
    g = to_networkx(network)
    lines = [
        f"digraph {_dot_quote(shown(network.name))} {{",  # the name is any text
        "  node [shape=box, fontname=Helvetica];",
    ]
    for node, data in g.nodes(data=True):
        text = data["label"]
        if data.get("name"):
            text = f"{data['name']}: {text}"
        text += f"\n{_dims_text(data['shape_in'])} → {_dims_text(data['shape_out'])}"
        if "mass" in data:
            text += f"\nmass {data['mass']}"
        lines.append(f"  {_dot_quote(node)} [label={_dot_quote(text)}];")
    for parent, child in g.edges():
        lines.append(f"  {_dot_quote(parent)} -> {_dot_quote(child)};")
    lines.append("}")
    return "\n".join(lines) + "\n"


def to_graph_json(network: ir.Network) -> dict:
    """The networkx view as node-link JSON (nodes with their attributes, then edges)."""
    g = to_networkx(network)
    try:
        return nx.node_link_data(g, edges="edges")
    except TypeError:  # networkx < 3.4 names them "links" and has no such argument
        return nx.node_link_data(g)


def _dims_text(dims: list) -> str:
    if dims and isinstance(dims[0], list):
        return "(" + ", ".join(_dims_text(d) for d in dims) + ")"
    return "(" + ", ".join(str(d) for d in dims) + ("," if len(dims) == 1 else "") + ")"


def _dot_quote(text: str) -> str:
    """A DOT double-quoted string: backslashes and quotes escaped, newlines as \\n."""
    escaped = text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
    return f'"{escaped}"'
