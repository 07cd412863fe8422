"""Pieces of Python source shared by the emitters: runtime snippets, imports, literals."""

from __future__ import annotations

import ast
import functools
import inspect
import re
import sys
import textwrap
import types
from collections.abc import Iterable
from dataclasses import dataclass

import sympy

# The only imports generated code may have: the pattern that shows it uses one, its line,
# and whether it is of the standard library (those come first, as isort orders them).
IMPORTS = [
    (r"\bmath\.", "import math", True),
    (r"\bos\.", "import os", True),
    (r"\bCallable\b", "from collections.abc import Callable", True),
    (r"\btimedelta\b", "from datetime import timedelta", True),
    (r"\btorch\.", "import torch", False),
    (r"\bdist\.", "import torch.distributed as dist", False),
    (r"\bF\.", "import torch.nn.functional as F", False),
    (r"\bnn\.", "from torch import nn", False),
]


PLAIN_DATA = (int, float, str, tuple, list, dict)


@dataclass(frozen=True)
class Constant:
    """A module-level assignment of plain data (a coefficient table, say) in a modc module."""

    module: str
    name: str

    def node(self) -> ast.stmt:
        """The assignment statement in the module's source."""
        stmt = _assignments(self.module).get(self.name)
        if stmt is None:
            raise LookupError(f"{self.name} is not assigned at the top level of {self.module}")
        return stmt

    def source(self) -> str:
        """The assignment's lines, with the comment lines right above it and its own."""
        stmt = self.node()
        lines = _module_source(self.module).splitlines()
        first = stmt.lineno - 1
        while first > 0 and lines[first - 1].startswith("#"):
            first -= 1
        return "\n".join(lines[first : stmt.end_lineno])


@functools.cache
def _module_source(module: str) -> str:
    return inspect.getsource(sys.modules[module])


@functools.cache
def _assignments(module: str) -> dict[str, ast.stmt]:
    """The module's top-level assignments to a plain name, by that name (read once)."""
    found = {}
    for stmt in ast.parse(_module_source(module)).body:
        targets = stmt.targets if isinstance(stmt, ast.Assign) else [getattr(stmt, "target", 0)]
        found.update((t.id, stmt) for t in targets if isinstance(t, ast.Name))
    return found


def _code_names(code: types.CodeType) -> set[str]:
    names = set(code.co_names)
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            names |= _code_names(const)
    return names


def _uses(obj: object) -> list[object]:
    """The modc functions, classes and constants that `obj`'s source refers to by name."""
    if isinstance(obj, Constant):
        names = {n.id for n in ast.walk(obj.node()) if isinstance(n, ast.Name)} - {obj.name}
        module = obj.module
    else:
        if isinstance(obj, type):
            methods = [inspect.unwrap(f) for f in vars(obj).values() if inspect.isfunction(f)]
            codes = [f.__code__ for f in methods]  # unwrapped: decorators hide the body
        else:
            codes = [obj.__code__]
        names = set().union(*(_code_names(c) for c in codes)) if codes else set()
        module = obj.__module__
    scope = vars(sys.modules[module])
    found: list[object] = []
    for name in sorted(names):
        value = scope.get(name)
        if (inspect.isfunction(value) or inspect.isclass(value)) and getattr(
            value, "__module__", ""
        ).startswith("modc."):
            found.append(value)
        elif isinstance(value, PLAIN_DATA) and module.startswith("modc.") and name.isupper():
            found.append(Constant(module, name))
    return found


def snippets(objs: Iterable[object]) -> str:
    """Source of `objs` and everything of modc's they use, each once: module by module,
    dependencies' modules first, and within a module in its own order, so that the copy
    reads like the original. (Functions may name globals defined below them; a constant
    computed by a function follows that function in its module, so it follows it here.)"""
    needed: list[object] = []

    def visit(obj: object) -> None:
        if obj in needed:
            return
        for dep in _uses(obj):
            if dep is not obj:
                visit(dep)
        needed.append(obj)

    for obj in objs:
        visit(obj)
    modules = list(dict.fromkeys(_module(o) for o in needed))
    ordered = sorted(needed, key=lambda o: (modules.index(_module(o)), _line(o)))
    parts = []
    for i, o in enumerate(ordered):
        if i:  # constants of one module sit together, as in the source
            both = isinstance(o, Constant) and isinstance(ordered[i - 1], Constant)
            parts.append("\n" if both and _module(o) == _module(ordered[i - 1]) else "\n\n\n")
        parts.append(o.source() if isinstance(o, Constant) else _source(o))
    return "".join(parts)


def _module(obj: object) -> str:
    return obj.module if isinstance(obj, Constant) else obj.__module__


def _line(obj: object) -> int:
    return obj.node().lineno if isinstance(obj, Constant) else inspect.getsourcelines(obj)[1]


def _source(obj: object) -> str:
    return textwrap.dedent(inspect.getsource(obj)).rstrip()


def imports_for(body: str) -> str:
    """The import lines that `body` needs: the standard library's, a blank line, torch's."""
    used = [(line, std) for pattern, line, std in IMPORTS if re.search(pattern, body)]
    std = [line for line, is_std in used if is_std]
    rest = [line for line, is_std in used if not is_std]
    return "\n".join(std + [""] + rest if std and rest else std + rest)


def module(doc: str, body: str) -> str:
    """A whole generated file: docstring, the imports it needs, then the body."""
    body = body.strip()
    gap = "\n\n\n" if body.startswith(("def ", "class ", "@")) else "\n\n"  # as isort
    return f'"""{doc}"""\n\n{imports_for(body)}{gap}{body}\n'


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
