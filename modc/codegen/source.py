"""Pieces of Python source shared by the emitters: runtime snippets, imports, literals."""

from __future__ import annotations

import inspect
import re
import sys
import textwrap
import types
from collections.abc import Iterable

import sympy

# The only modules generated code may import, by the name it uses them under.
IMPORTS = {
    "math": "import math",
    "torch": "import torch",
    "nn": "from torch import nn",
    "F": "import torch.nn.functional as F",
}


def _code_names(code: types.CodeType) -> set[str]:
    names = set(code.co_names)
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            names |= _code_names(const)
    return names


def _uses(obj: object) -> list[object]:
    """The modc functions and classes that `obj`'s source refers to by global name."""
    if isinstance(obj, type):
        codes = [f.__code__ for f in vars(obj).values() if isinstance(f, types.FunctionType)]
    else:
        codes = [obj.__code__]
    names = set().union(*(_code_names(c) for c in codes)) if codes else set()
    scope = vars(sys.modules[obj.__module__])
    found = []
    for name in sorted(names):
        value = scope.get(name)
        if (inspect.isfunction(value) or inspect.isclass(value)) and getattr(
            value, "__module__", ""
        ).startswith("modc."):
            found.append(value)
    return found


def snippets(objs: Iterable[object]) -> str:
    """Source of `objs` and everything of modc's they call, dependencies first, each once."""
    ordered: list[object] = []

    def visit(obj: object) -> None:
        if obj in ordered:
            return
        for dep in _uses(obj):
            if dep is not obj:
                visit(dep)
        ordered.append(obj)

    for obj in objs:
        visit(obj)
    return "\n\n\n".join(textwrap.dedent(inspect.getsource(o)).rstrip() for o in ordered)


def imports_for(body: str) -> str:
    """The import lines that `body` needs, in a fixed order."""
    lines = [line for name, line in IMPORTS.items() if re.search(rf"\b{name}\.", body)]
    std = [line for line in lines if line == "import math"]
    return "\n".join(
        std
        + ([""] if std and len(lines) > len(std) else [])
        + [line for line in lines if line not in std]
    )


def module(doc: str, body: str) -> str:
    """A whole generated file: docstring, the imports it needs, then the body."""
    return f'"""{doc}"""\n\n{imports_for(body)}\n\n{body.strip()}\n'


WIDTH = 100  # generated lines fit the project's line length


def commented(code: str, comment: str, indent: int) -> list[str]:
    """`code  # comment` if it fits in WIDTH at `indent`, else the comment on the line above."""
    if not comment:
        return [code]
    if indent + len(code) + 3 + len(comment) <= WIDTH:
        return [f"{code}  # {comment}"]
    return [f"# {comment}", code]


def wrapped(keyword: str, terms: list[str], sep: str, indent: int) -> list[str]:
    """`keyword a sep b sep c` on one line, or one term a line inside parentheses."""
    flat = f"{keyword} {f' {sep} '.join(terms)}"
    if indent + len(flat) <= WIDTH or len(terms) == 1:
        return [flat]
    return [
        f"{keyword} (",
        *(f"    {'' if i == 0 else sep + ' '}{t}" for i, t in enumerate(terms)),
        ")",
    ]


def literal(e: sympy.Expr) -> str:
    """A Python literal for a number: ints stay ints, everything else becomes a float."""
    if isinstance(e, int) or getattr(e, "is_Integer", False):
        return str(int(e))
    return repr(float(e))


def camel(name: str) -> str:
    """hidden_layers → HiddenLayers, for class names."""
    return "".join(part[:1].upper() + part[1:] for part in name.split("_") if part) or "Block"
