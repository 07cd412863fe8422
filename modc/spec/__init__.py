"""Front ends: read a spec file (YAML, or the .modc text language) into the spec AST."""

from __future__ import annotations

from pathlib import Path

from modc.errors import ModcError
from modc.source import MAX_SOURCE_BYTES, Source, TooLarge
from modc.spec import ast
from modc.spec.includes import STD, resolve

__all__ = ["load_spec", "parse_file", "read_source"]

SUFFIXES = (".yaml", ".yml", ".modc")


def load_spec(path: str | Path) -> ast.Spec:
    """Read a spec with its includes resolved: the input of elaboration."""
    path = Path(path)
    return resolve(parse_file(path), path, _parse_included)


def parse_file(
    path: str | Path, library: bool = False, include: ast.Include | None = None
) -> ast.Spec:
    """Parse one spec file as written, includes unresolved; the front end goes by extension.

    A `library` file needs no input and no network. `include`, when given, is the
    statement that names this file: errors in finding it point there.
    """
    path = Path(path)
    source = read_source(path, include)
    if path.suffix.lower() == ".modc":
        from modc.spec.dsl_front import load_dsl

        return load_dsl(source, library)
    from modc.spec.yaml_front import load_yaml

    return load_yaml(source, library)


def read_source(path: str | Path, include: ast.Include | None = None) -> Source:
    """The text of a spec file, or a ModcError saying why it cannot be read.

    The one place where modc reads a spec: a file longer than MAX_SOURCE_BYTES (or one
    that never ends) is refused here.
    """
    path = Path(path)
    at = include.span if include is not None else None
    if path.suffix.lower() not in SUFFIXES:
        what = f"cannot include '{include.path}'" if include else f"cannot read '{path}'"
        raise ModcError(f"{what}: a spec file ends in " + ", ".join(SUFFIXES), at)
    try:
        return Source.read(path)
    except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
        if include is None:
            raise ModcError(f"no such file: {path}") from None
        hint = (
            "the standard library has " + ", ".join(_stdlib_names())
            if include.path.startswith(STD)
            else f"paths are relative to the including file's folder; '{STD}...' is the "
            "standard library"
        )
        raise ModcError(f"cannot include '{include.path}': no such file", at, hint) from None
    except UnicodeDecodeError:
        raise ModcError(f"cannot read '{path}': not UTF-8 text", at) from None
    except TooLarge:
        raise ModcError(
            f"cannot read '{path}': a spec file may have at most {MAX_SOURCE_BYTES:,} bytes",
            at,
        ) from None
    except OSError as err:
        raise ModcError(f"cannot read '{path}': {err.strerror or err}", at) from None


def _parse_included(path: Path, include: ast.Include) -> ast.Spec:
    return parse_file(path, library=True, include=include)


def _stdlib_names() -> list[str]:
    from modc.spec.includes import STDLIB

    return sorted(STD + p.name for p in STDLIB.glob("*.modc"))
