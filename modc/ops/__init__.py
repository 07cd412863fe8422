"""The operation library: the one place that knows what each operation is.

Every module of this package is imported, and every Op subclass in it that sets its own
`name` is an operation, usable in a spec by that name: a new operation is a class in a
module here, with nothing to register.
"""

from __future__ import annotations

import functools
import importlib
import pkgutil

from modc.ops.base import Arg, Atom, Bond, Op, Shape, ShapeError, show


def _operations() -> dict[str, type[Op]]:
    """Every operation of the package by its name, atoms first, then bonds, each by name."""
    for info in pkgutil.iter_modules(__path__):
        importlib.import_module(f"{__name__}.{info.name}")
    found: dict[str, type[Op]] = {}
    pending = [Op]
    while pending:
        cls = pending.pop()
        pending.extend(cls.__subclasses__())
        if "name" not in vars(cls) or not cls.__module__.startswith(__name__ + "."):
            continue
        if cls.name in found and found[cls.name] is not cls:
            raise TypeError(f"two operations are named {cls.name!r}: {found[cls.name]} and {cls}")
        found[cls.name] = cls
    return dict(sorted(found.items(), key=lambda item: (not item[1].atom, item[0])))


OPS: dict[str, type[Op]] = _operations()


@functools.cache
def argument_names(op: type[Op]) -> tuple[str, ...]:
    """The keyword arguments `op` takes: its own, and `mass` for an atom."""
    return tuple(a.name for a in op.args) + (("mass",) if op.atom else ())


__all__ = [
    "OPS",
    "Arg",
    "Atom",
    "Bond",
    "Op",
    "Shape",
    "ShapeError",
    "argument_names",
    "show",
]
