"""`modc convert`: a spec file in the other front end's form, as written (includes kept)."""

from __future__ import annotations

from pathlib import Path

from modc.spec import parse_file
from modc.spec.print_dsl import to_dsl
from modc.spec.print_yaml import to_yaml

FORMATS = ("yaml", "modc")


def convert(path: str | Path, to: str) -> str:
    """The text of the spec at `path` written as `to` ('yaml' or 'modc')."""
    spec = parse_file(path, library=True)
    return to_yaml(spec) if to == "yaml" else to_dsl(spec)
