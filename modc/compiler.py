"""The pipeline end to end: spec file → AST → IR → analysis → build directory."""

from __future__ import annotations

import hashlib
import importlib.util
import os
import stat
import sys
import tempfile
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

from modc.errors import ModcError
from modc.graph import ir
from modc.graph.budget import check_budget
from modc.graph.elaborate import elaborate
from modc.graph.params import parse_override
from modc.provenance import provenance
from modc.spec import ast, load_spec
from modc.theory.analysis import Analysis, analyze


def load(
    path: str | Path | ast.Spec,
    params: Iterable[str] | Mapping[str, object] = (),
    free: Collection[str] = (),
) -> tuple[ir.Network, Analysis]:
    """Parse, elaborate and analyse a spec (a file, or an AST such as modc.api builds).
    `params` holds `name=value` overrides."""
    return load_with_provenance(path, params, free)[1:]


def load_with_provenance(
    path: str | Path | ast.Spec,
    params: Iterable[str] | Mapping[str, object] = (),
    free: Collection[str] = (),
) -> tuple[dict, ir.Network, Analysis]:
    """`load`, and the provenance of what it loaded (see `provenance`)."""
    overrides = {}
    for text in _texts(params):
        name, expr, span = parse_override(text)
        overrides[name] = (expr, span)
    spec = path if isinstance(path, ast.Spec) else load_spec(path)
    network = elaborate(spec, overrides, free)
    check_budget(network)  # before the analysis, whose work grows with the copies
    return provenance(spec, _texts(params)), network, analyze(network)


def compile_spec(
    path: str | Path | ast.Spec,
    out: str | Path | None = None,
    params: Iterable[str] | Mapping[str, object] = (),
    force: bool = False,
) -> Path:
    """`modc compile`: write the build of a spec; returns the build directory.

    Without `out`, the build goes to build/NAME, NAME the spec's name made a safe folder
    name. A folder that holds anything but a build of this spec is refused unless `force`.
    """
    from modc.codegen.build import folder_name, write_build  # torch: only when writing

    made, network, analysis = load_with_provenance(path, params)
    out = Path("build") / folder_name(network.name) if out is None else out
    return write_build(network, analysis, out, force, made)


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

    Without `out`, the build goes to this user's private cache, keyed by the spec and the
    parameters.
    """
    from modc.codegen.build import write_build

    params = _texts(params)
    if out is None:
        made, network, analysis = load_with_provenance(path, params)
        ast_text = repr(path) if isinstance(path, ast.Spec) else ""  # files: their hashes
        key = hashlib.sha256(repr((ast_text, made)).encode())
        where = write_build(network, analysis, _cache() / key.hexdigest()[:16], provenance=made)
    else:
        where = compile_spec(path, out, params)
    tag = hashlib.sha256(str(where.resolve()).encode()).hexdigest()[:12]
    modules = [
        _import(where / f"{name}.py", f"modc_build_{tag}_{name}")
        for name in ("model", "optimizer", "certificate")
    ]
    return Build(where, *modules)


def _cache() -> Path:
    """This user's folder of cached builds: private (0700, owned by the user), since what is
    written there is imported, and the temporary folder is shared with other users."""
    root = Path(tempfile.gettempdir()) / f"modc-builds-{os.getuid()}"
    root.mkdir(mode=0o700, exist_ok=True)
    info = root.lstat()
    if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.getuid() or info.st_mode & 0o077:
        raise ModcError(f"{root} is not a private folder of this user; remove it or pass out=")
    return root


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
