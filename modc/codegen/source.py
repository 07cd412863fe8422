"""Pieces of Python source shared by the emitters: runtime snippets, imports, literals, and
the one way that text from a spec enters generated code.

A spec is untrusted input. Its text (the spec's name, the names of its file and of included
files, module names, numbers shown in comments) reaches a generated file only through
`quote` (a string literal), `plain` (through `commented` and `docstring`: comments and
docstrings) or `attribute` and `fresh` (identifiers), so that no name can end a string or
a comment, or shadow a name that generated code relies on.
"""

from __future__ import annotations

import ast
import builtins
import functools
import importlib.util
import inspect
import keyword
import sys
import textwrap
import types
from collections.abc import Collection, Iterable
from dataclasses import dataclass
from pathlib import Path

import sympy

from modc.errors import shown
from modc.lazy import resolve

# The only imports generated code may have: the name that shows it uses one, its line, and
# whether it is of the standard library (those come first, as isort orders them).
IMPORTS = [
    ("math", "import math", True),
    ("os", "import os", True),
    ("shutil", "import shutil", True),
    ("threading", "import threading", True),
    ("warnings", "import warnings", True),
    ("Callable", "from collections.abc import Callable", True),
    ("timedelta", "from datetime import timedelta", True),
    ("Path", "from pathlib import Path", True),
    ("torch", "import torch", False),
    ("dist", "import torch.distributed as dist", False),
    ("dcp", "import torch.distributed.checkpoint as dcp", False),
    ("dcp_state", "import torch.distributed.checkpoint.state_dict as dcp_state", False),
    ("F", "import torch.nn.functional as F", False),
    ("nn", "from torch import nn", False),
    ("fully_shard", "from torch.distributed.fsdp import fully_shard", False),
    ("DTensor", "from torch.distributed.tensor import DTensor", False),
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
        value = resolve(scope.get(name))  # a function imported lazily (modc.lazy): itself
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


@functools.cache
def _line(obj: object) -> int:
    return obj.node().lineno if isinstance(obj, Constant) else inspect.getsourcelines(obj)[1]


@functools.cache
def _source(obj: object) -> str:
    return textwrap.dedent(inspect.getsource(obj)).rstrip()


def imports_for(body: str) -> str:
    """The import lines that `body` needs: the standard library's, a blank line, torch's.
    A name is needed where `body` reads it as a variable (`F.relu`), not where it is an
    attribute or text (`m.F.weight`, `"F.weight"`, for a module a spec calls F)."""
    try:  # top-level pieces one by one, so that the runtime's are read once
        names = set().union(*(_variables(piece) for piece in body.split("\n\n\n")))
    except SyntaxError:
        names = _variables(body)
    used = [(line, std) for name, line, std in IMPORTS if name in names]
    std = [line for line, is_std in used if is_std]
    rest = [line for line, is_std in used if not is_std]
    return "\n".join(std + [""] + rest if std and rest else std + rest)


@functools.lru_cache(maxsize=1024)
def _variables(code: str) -> frozenset[str]:
    return frozenset(n.id for n in ast.walk(ast.parse(code)) if isinstance(n, ast.Name))


def imported_names() -> set[str]:
    """The names that the import lines of generated code bind (`math`, `F`, `nn`, ...)."""
    return defined_names("\n".join(line for _, line, _ in IMPORTS))


def defined_names(code: str) -> set[str]:
    """The names that the top level of `code` binds: functions, classes, assignments, imports."""
    names = set()
    for stmt in ast.parse(code).body:
        if isinstance(stmt, (ast.FunctionDef, ast.ClassDef)):
            names.add(stmt.name)
        elif isinstance(stmt, (ast.Import, ast.ImportFrom)):
            names.update((a.asname or a.name).split(".")[0] for a in stmt.names)
        else:
            targets = stmt.targets if isinstance(stmt, ast.Assign) else [getattr(stmt, "target", 0)]
            names.update(t.id for t in targets if isinstance(t, ast.Name))
    return names


def module(doc: str, body: str) -> str:
    """A whole generated file: docstring, the imports it needs, then the body."""
    body = body.strip()
    gap = "\n\n\n" if body.startswith(("def ", "class ", "@")) else "\n\n"  # as isort
    return f"{docstring(doc)}\n\n{imports_for(body)}{gap}{body}\n"


WIDTH = 100  # generated lines fit the project's line length


def commented(code: str, comment: str, indent: int) -> list[str]:
    """`code  # comment` if it fits in WIDTH at `indent`, else the comment on the line above."""
    if not comment:
        return [code]
    comment = plain(comment)
    if indent + len(code) + 4 + len(comment) <= WIDTH:  # "  # "
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
    """hidden_layers → HiddenLayers, for class names (pass the result to `fresh`)."""
    return "".join(part[:1].upper() + part[1:] for part in name.split("_") if part) or "Block"


# ---------------------------------------------------------------- text from a spec


def plain(text: str) -> str:
    """`text` as one printable line that cannot end a comment or a string: printable
    characters stay; a backslash, a double quote and whatever str.isprintable() refuses
    (newline, CR, NUL, U+2028, bidi controls, lone surrogates) become repr's escapes."""
    return "".join(c if c.isprintable() and c not in '\\"' else _escape(c) for c in text)


def _escape(c: str) -> str:
    return "\\" + c if c in '\\"' else repr(c)[1:-1]


def quote(text: str) -> str:
    """`text` as a double-quoted Python string literal whose value is `text`."""
    return f'"{plain(text)}"'


def docstring(text: str, indent: int = 0) -> str:
    """A triple-quoted docstring at `indent` whose value is `text`, each of its lines made
    printable (`shown`: no control character or lone surrogate gets in; Python refuses a
    class whose docstring holds one). Spec text put in `text` as `shown(name)` stays on
    its line: its own line breaks show as \\n."""
    pad = " " * indent
    first, *rest = (plain(shown(line)) for line in text.split("\n"))
    inner = [pad + line if line or i == len(rest) - 1 else "" for i, line in enumerate(rest)]
    return pad + '"""' + "\n".join([first, *inner]) + '"""'


@functools.cache
def _module_members() -> frozenset[str]:
    """nn.Module's own attributes: its methods and properties, and what its __init__ sets
    (the public ones: names starting with `_` are refused anyway). Read from the source of
    the installed torch, without importing it (slow), so that elaborating a spec never
    imports torch; tests/test_cli_startup.py checks them against dir(nn.Module)."""
    spec = importlib.util.find_spec("torch")
    path = Path(spec.origin).parent / "nn" / "modules" / "module.py"
    tree = ast.parse(path.read_text(encoding="utf-8"))
    module = next(n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == "Module")
    names = set()
    for node in module.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            names.add(node.name)
        elif isinstance(node, ast.Assign):
            names |= {t.id for t in node.targets if isinstance(t, ast.Name)}
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            names.add(node.target.id)
    init = next(n for n in module.body if getattr(n, "name", "") == "__init__")
    for node in ast.walk(init):  # self.x = ... and super().__setattr__("x", ...)
        if isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Store):
            names.add(node.attr)
        elif isinstance(node, ast.Call) and getattr(node.func, "attr", "") == "__setattr__":
            names |= {a.value for a in node.args[:1] if isinstance(a, ast.Constant)}
    return frozenset(names)


def attribute(wanted: str, taken: Collection[str] = ()) -> str:
    """The attribute that holds the module a spec names `wanted` in a generated nn.Module.

    `wanted` itself, with `_` appended while it is a Python keyword (`class`, `None`), a
    member of nn.Module (`forward`, `training`, `named_parameters`, `to`, ...) or `taken`:
    deterministic, so state_dict keys are stable, and the generated line's `# file:line:col`
    comment leads back to the spec. Raises ValueError for a name that is not an ASCII
    identifier, or that starts with `_`: Python keeps `__x` for itself (it is mangled inside
    a class), and nn.Module keeps `_x` (`_parameters`, `_modules`, ... and more in each
    torch release), so no rename of such a name could be trusted to stay clear of them.
    """
    if not (wanted.isascii() and wanted.isidentifier()):
        raise ValueError(
            f"a module name must be an identifier (letters, digits and _), got {wanted!r}"
        )
    if wanted.startswith("_"):
        raise ValueError(
            f"a module name must not start with '_', got '{wanted}': Python and nn.Module "
            "keep such names for themselves"
        )
    name = wanted
    while keyword.iskeyword(name) or name in _module_members() or name in taken:
        name += "_"
    return name


def fresh(wanted: str, taken: set[str]) -> str:
    """A global name for generated code: `wanted`, or `wanted2`, `wanted3`, ..., the first
    that is neither in `taken` (which it joins) nor a keyword or a builtin."""
    name, n = wanted, 1
    while name in taken or keyword.iskeyword(name) or hasattr(builtins, name):
        n += 1
        name = f"{wanted}{n}"
    taken.add(name)
    return name
