"""Names whose import waits for their first use, so that the commands that run no tensor
(`modc check`, `bounds`, `graph`, `convert`, `ops`, `--help`) never import torch.

The operation library (modc/ops) states each operation's rules and its runtime code in one
place; the runtime code runs only in a build or an optimizer, so its modules refer to torch
through `LazyModule`, and to runtime functions whose modules import torch as they load
(modc.runtime.polar) through `LazyAttribute`. Code generation reads through both
(`resolve`): the generated files import torch as usual.
"""

from __future__ import annotations

import importlib
from typing import Any


class LazyModule:
    """A module imported on the first use of one of its attributes (`torch`, `torch.nn`);
    each attribute, once read, is kept, so later reads cost a plain attribute lookup."""

    def __init__(self, name: str) -> None:
        self._name = name

    def __getattr__(self, attr: str) -> Any:
        if attr.startswith("__"):
            raise AttributeError(attr)
        value = getattr(importlib.import_module(self._name), attr)
        setattr(self, attr, value)
        return value

    def __repr__(self) -> str:
        return f"<lazy module {self._name!r}>"


class LazyAttribute:
    """A module's attribute (a function), imported when first called or resolved."""

    def __init__(self, module: str, name: str) -> None:
        self.module, self.name, self._value = module, name, None

    def resolve(self) -> Any:
        if self._value is None:
            self._value = getattr(importlib.import_module(self.module), self.name)
        return self._value

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.resolve()(*args, **kwargs)

    def __repr__(self) -> str:
        return f"<lazy {self.module}.{self.name}>"


def resolve(value: Any) -> Any:
    """`value` itself, or what a LazyAttribute stands for."""
    return value.resolve() if isinstance(value, LazyAttribute) else value
