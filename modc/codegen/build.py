"""Write a build directory: the generated files, the spec they came from, and the data."""

from __future__ import annotations

import json
import re
from importlib import resources
from pathlib import Path

from modc.codegen.certificate import emit_certificate
from modc.codegen.distributed import emit_distributed
from modc.codegen.gns import emit_gns
from modc.codegen.model import emit_model
from modc.codegen.optimizer import emit_optimizer
from modc.errors import ModcError
from modc.fileio import read_limited, reason, write_atomic
from modc.graph import ir
from modc.graph.view import tree
from modc.theory.analysis import Analysis
from modc.theory.report import to_json

DATASETS = {"mnist": "mnist_5k.csv.gz", "shakespeare": "shakespeare.txt"}
TEMPLATES = ("train.py", "data.py", "options.py", "metrics.py", "generate.py")  # copied verbatim
MARK = {"compiler": "modc"}  # the first key of spec.json: how a folder is known as a build


def spec_json(network: ir.Network, analysis: Analysis, provenance: dict | None = None) -> str:
    """The elaborated spec: parameters, shapes, training defaults, IR and analysis, and
    what the build was made from (modc's version, its spec files' SHA-256, -p)."""
    source = network.source_name.replace("\\", "/").rsplit("/", 1)[-1]
    doc = {
        **MARK,
        "name": network.name,
        "provenance": provenance or {},
        "folder": folder_name(network.name),  # train.py's default run folder: runs/FOLDER
        "source": source,
        "train": network.train,
        "optimizer": network.optimizer,
        "analysis": to_json(network, analysis),
        "network": tree(network.root),
    }
    return json.dumps(doc, indent=2, sort_keys=False) + "\n"


def datasets_for(network: ir.Network) -> list[str]:
    """Shipped data sets this build can train on: the spec's own, and MNIST for 784 inputs."""
    wanted = []
    if network.train.get("data") in DATASETS:
        wanted.append(network.train["data"])
    numel = 1
    for d in network.input_shape:
        numel *= int(d)
    if numel == 784 and "mnist" not in wanted:
        wanted.append("mnist")
    return wanted


def folder_name(name: str) -> str:
    """The spec name as one safe folder name, for the default build/NAME: letters, digits,
    `_`, `-` and `.` kept, every other run of characters made `_`, no leading `.` or `-`
    (so no `..`, no hidden folder, no option), at most 64 characters."""
    safe = re.sub(r"[^\w.-]+", "_", name).lstrip(".-")[:64]
    return safe or "spec"


def check_target(out: Path, name: str, force: bool) -> None:
    """Refuse to write a build into `out` when it is a file, or a folder that holds something
    other than a build of the spec called `name` (unless `force`)."""
    if out.exists() and not out.is_dir():
        raise ModcError(f"cannot write the build to '{out}': it is a file, not a folder")
    if force or not out.is_dir() or not any(out.iterdir()):
        return
    try:
        doc = json.loads(read_limited(out / "spec.json"))
    except (OSError, ValueError, RecursionError):
        doc = None
    if not (isinstance(doc, dict) and doc.get("compiler") == MARK["compiler"]):
        raise ModcError(
            f"'{out}' is not empty and holds no modc build; pass --force to write into it"
        )
    if doc.get("name") != name:
        raise ModcError(
            f"'{out}' holds the build of another spec, {doc.get('name')!r}; pass --force "
            "to replace it"
        )


def write_build(
    network: ir.Network,
    analysis: Analysis,
    out: str | Path,
    force: bool = False,
    provenance: dict | None = None,
) -> Path:
    """Generate every file of the build into `out` (created if needed); returns its path.

    `out` must be empty, missing, or hold an earlier build of the same spec (by name),
    unless `force`: a user's own model.py is never replaced by mistake.
    """
    out = Path(out)
    files = {
        "model.py": emit_model(network),
        "optimizer.py": emit_optimizer(network, analysis),
        "certificate.py": emit_certificate(network, analysis),
        "distributed.py": emit_distributed(),
        "gns.py": emit_gns(),
        "spec.json": spec_json(network, analysis, provenance),
    }
    templates = resources.files("modc.codegen") / "templates"
    files.update({name: (templates / name).read_text("utf-8") for name in TEMPLATES})
    try:
        check_target(out, network.name, force)
        for name, text in files.items():
            write_atomic(out / name, text)
        for key in datasets_for(network):
            _ship(DATASETS[key], out / "data")
    except OSError as e:
        raise ModcError(f"cannot write the build to '{out}': {reason(e)}") from None
    return out


def _ship(dataset: str, folder: Path) -> None:
    """Copy a shipped data set into the build's data/ folder, unless it is there already.

    Only inside the build: a data/ that is a link is refused (it would lead the copy out of
    the folder), and the copy is written atomically under a fresh name, then renamed over
    the data set's name, so a link planted at either is replaced, never followed."""
    if folder.is_symlink():
        raise ModcError(f"'{folder}' is a link: a build writes only inside its own folder")
    target = folder / dataset
    if not target.exists():
        write_atomic(target, (resources.files("modc.data") / dataset).read_bytes())
