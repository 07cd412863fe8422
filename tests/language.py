"""Helpers for the spec-language tests: parse text in either form, compare module IR."""

from __future__ import annotations

from pathlib import Path

from modc.graph import ir
from modc.source import Source
from modc.spec import ast
from modc.spec.dsl_front import load_dsl
from modc.spec.yaml_front import load_yaml

ROOT = Path(__file__).resolve().parent.parent
SPECS = ROOT / "specs"
STDLIB = ROOT / "modc" / "stdlib"


def dsl(text: str, name: str = "net.modc", library: bool = False) -> ast.Spec:
    """The AST of DSL text."""
    return load_dsl(Source(name, text), library)


def yml(text: str, name: str = "net.yaml", library: bool = False) -> ast.Spec:
    """The AST of YAML text."""
    return load_yaml(Source(name, text), library)


def signature(node: ir.Node) -> tuple:
    """Everything about an IR node and its subtree except source positions."""
    own: tuple = (type(node).__name__, str(node.in_shape), str(node.out_shape))
    own += (node.label(), str(node.attributes()), node.is_atom)
    return own + tuple(signature(c) for c in node.children())


def network_signature(n: ir.Network) -> tuple:
    """The signature of a whole elaborated network."""
    params = tuple((k, str(v)) for k, v in n.params.items())
    return (n.name, params, str(n.input_shape), signature(n.root), str(n.train), str(n.optimizer))
