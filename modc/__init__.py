"""modc: compile a network spec into a model, a certified optimizer and a training script.

The names below are imported on first use (PEP 562), so that `import modc` and the
commands that run no tensor stay quick and never import torch."""

from __future__ import annotations

import importlib
from typing import Any

from modc.errors import ModcError

__all__ = ["Build", "ModcError", "atoms", "build", "compile_spec", "dualized", "load"]
__version__ = "0.1.0"

_LAZY = {
    "Build": "modc.compiler",
    "build": "modc.compiler",
    "compile_spec": "modc.compiler",
    "load": "modc.compiler",
    "atoms": "modc.optim",
    "dualized": "modc.optim",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'modc' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *_LAZY])
