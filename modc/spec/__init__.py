"""Front ends: read a spec file (YAML, or the .modc text language) into the spec AST."""

from __future__ import annotations

from pathlib import Path

from modc.errors import ModcError
from modc.source import Source
from modc.spec import ast

__all__ = ["load_spec"]

SUFFIXES = (".yaml", ".yml", ".modc")


def load_spec(path: str | Path) -> ast.Spec:
    """Read and parse the spec at `path`, choosing the front end by file extension."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in SUFFIXES:
        raise ModcError(f"cannot read '{path}': a spec file ends in " + ", ".join(SUFFIXES))
    try:
        source = Source.read(path)
    except FileNotFoundError:
        raise ModcError(f"no such file: {path}") from None
    except UnicodeDecodeError:
        raise ModcError(f"cannot read '{path}': not UTF-8 text") from None
    except OSError as err:
        raise ModcError(f"cannot read '{path}': {err.strerror or err}") from None
    if suffix == ".modc":
        raise ModcError("the .modc text language is not available yet")
    from modc.spec.yaml_front import load_yaml

    return load_yaml(source)
