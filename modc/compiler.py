"""The pipeline end to end: spec file → AST → IR → analysis → build directory."""

from __future__ import annotations

import hashlib
import importlib.util
import sys
import tempfile
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

from modc.codegen.build import write_build
from modc.graph import ir
from modc.graph.budget import check_budget
from modc.graph.elaborate import elaborate
from modc.graph.params import parse_override
from modc.spec import ast, load_spec, read_source
from modc.theory.analysis import Analysis, analyze


def load(
    path: str | Path | ast.Spec,
    params: Iterable[str] | Mapping[str, object] = (),
    free: Collection[str] = (),
) -> tuple[ir.Network, Analysis]:
    """Parse, elaborate and analyse a spec (a file, or an AST such as modc.api builds).
    `params` holds `name=value` overrides."""
    overrides = {}
    for text in _texts(params):
        name, expr, span = parse_override(text)
        overrides[name] = (expr, span)
    spec = path if isinstance(path, ast.Spec) else load_spec(path)
    network = elaborate(spec, overrides, free)
    check_budget(network)  # before the analysis, whose work grows with the copies
    return network, analyze(network)


def compile_spec(
    path: str | Path | ast.Spec,
    out: str | Path | None = None,
    params: Iterable[str] | Mapping[str, object] = (),
) -> Path:
    """`modc compile`: write the build of a spec; returns the build directory."""
    network, analysis = load(path, params)
    return write_build(network, analysis, out or Path("build") / network.name)


@dataclass
class Build:
    """A compiled spec, loaded: the generated modules as written on disk."""

    path: Path
    model: ModuleType
    optimizer: ModuleType
    certificate: ModuleType


def build(
    path: str | Path | ast.Spec,
    params: Iterable[str] | Mapping[str, object] = (),
    out: str | Path | None = None,
) -> Build:
    """Compile a spec and import the generated files: one source of truth with `modc compile`.

    Without `out`, the build goes to a cache directory keyed by the spec and parameters.
    """
    params = _texts(params)
    if out is None:
        # a file is read as compile reads it: refused if too long, before reading it all
        text = repr(path) if isinstance(path, ast.Spec) else read_source(path).text
        key = hashlib.sha256(repr((text, params)).encode())
        out = Path(tempfile.gettempdir()) / "modc-builds" / key.hexdigest()[:16]
    where = compile_spec(path, out, params)
    tag = hashlib.sha256(str(where.resolve()).encode()).hexdigest()[:12]
    modules = [
        _import(where / f"{name}.py", f"modc_build_{tag}_{name}")
        for name in ("model", "optimizer", "certificate")
    ]
    return Build(where, *modules)


def _texts(params: Iterable[str] | Mapping[str, object]) -> list[str]:
    """Overrides as `name=value` texts, from either form the API accepts."""
    if isinstance(params, Mapping):
        return [f"{k}={v}" for k, v in params.items()]
    return list(params)


def _import(file: Path, name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, file)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module
