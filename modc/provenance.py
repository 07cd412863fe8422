"""What a build was made from, and whether a build is stale: the record in a build's
spec.json that `modc check --build` and `modc compile` compare with the present. Imports
no torch."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

from modc.fileio import read_limited
from modc.spec import ast


def provenance(spec: ast.Spec, params: list[str]) -> dict:
    """What a build was made from: modc's version, the SHA-256 of each spec file whose text
    it used (the spec and the files whose definitions it uses, by file name), and the
    parameters set on the command line. A build whose provenance differs is stale."""
    from modc import __version__

    sources = {}
    for span in [spec.span, *(d.span for d in spec.defs)]:
        if span is not None and span.source.name not in sources:
            sources[span.source.name] = hashlib.sha256(span.source.text.encode()).hexdigest()
    home = Path(spec.span.source.name).parent if spec.span is not None else Path()
    files = {_shown(Path(name), home): digest for name, digest in sources.items()}
    return {"modc": __version__, "sources": dict(sorted(files.items())), "params": sorted(params)}


def _shown(path: Path, home: Path) -> str:
    """A spec file's name in a build's provenance: std/NAME for the standard library, else
    its path from the spec's folder (so that it does not depend on where the build is)."""
    from modc.spec.includes import STD, STDLIB

    if path.resolve().parent == STDLIB.resolve():
        return STD + path.name
    return Path(os.path.relpath(path, home)).as_posix()


def stale(out: str | Path, provenance: dict) -> list[str] | None:
    """How the build in `out` differs from one made now with `provenance` (modc's version,
    a spec file's text, -p): [] if it does not, None if `out` holds no readable build."""
    try:
        doc = json.loads(read_limited(Path(out) / "spec.json"))
        old = doc["provenance"] if doc.get("compiler") == "modc" else None
    except (OSError, ValueError, RecursionError, KeyError, TypeError):
        old = None
    if not isinstance(old, dict):
        return None
    why = []
    if old.get("modc") != provenance["modc"]:
        why.append(f"made by modc {old.get('modc')}, this is {provenance['modc']}")
    was, now = old.get("sources") or {}, provenance["sources"]
    why += [f"{name} changed" for name in now if name in was and was[name] != now[name]]
    why += [f"{name} is new" for name in now if name not in was]
    why += [f"{name} is no longer used" for name in was if name not in now]
    if sorted(old.get("params") or []) != provenance["params"]:
        shown = " ".join(provenance["params"]) or "none"
        why.append(f"made with -p {' '.join(old.get('params') or []) or 'none'}, now {shown}")
    return why
