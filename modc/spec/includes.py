"""`include`: bring in the definitions of other spec files, refusing cycles.

A path is relative to the folder of the file that includes it; `std/NAME.modc` names a
file of the standard library shipped in modc/stdlib/. An included file contributes its
definitions (and those of the files it includes); its parameters, input and network are
not used. A file included twice along different paths is read once.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path

from modc.errors import ModcError
from modc.spec import ast

STD = "std/"
STDLIB = Path(__file__).resolve().parent.parent / "stdlib"

Parse = Callable[[Path, "ast.Include"], ast.Spec]


def locate(include: ast.Include, base: Path) -> Path:
    """The file an include names, seen from the file `base`."""
    if "\0" in include.path:
        raise ModcError("an include path cannot contain a NUL character", include.span)
    if include.path.startswith(STD):
        return STDLIB / include.path[len(STD) :]
    return base.parent / include.path


def resolve(spec: ast.Spec, path: Path, parse: Parse) -> ast.Spec:
    """`spec` with the definitions of its includes (transitively) placed before its own."""
    defs: list[ast.Def] = []
    _collect(spec, path, parse, [_key(path)], set(), defs)
    merged: dict[str, ast.Def] = {}
    for d in [*defs, *spec.defs]:
        if d.name in merged:
            first = merged[d.name].span
            where = f"{first}" if first is not None else "elsewhere"
            raise ModcError(f"definition '{d.name}' is already defined at {where}", d.span)
        merged[d.name] = d
    return dataclasses.replace(spec, defs=tuple(merged.values()))


def _collect(
    spec: ast.Spec,
    path: Path,
    parse: Parse,
    stack: list[Path],
    seen: set[Path],
    out: list[ast.Def],
) -> None:
    """Append the definitions of every file `spec` includes, depth first."""
    for inc in spec.includes:
        target = locate(inc, path)
        key = _key(target)
        if key in stack:
            chain = " → ".join(p.name for p in [*stack[stack.index(key) :], key])
            raise ModcError(f"include cycle: {chain}", inc.span)
        if key in seen:
            continue
        seen.add(key)
        sub = parse(target, inc)
        _collect(sub, target, parse, [*stack, key], seen, out)
        out.extend(sub.defs)


def _key(path: Path) -> Path:
    """A path that is the same for every spelling of one file. A path that does not resolve
    (a symlink loop: RuntimeError before Python 3.13, OSError since) keys as written; reading
    it then fails with a positioned error."""
    try:
        return path.resolve()
    except (OSError, RuntimeError):
        return path.absolute()
