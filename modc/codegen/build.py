"""Write a build directory: the generated files, the spec they came from, and the data."""

from __future__ import annotations

import json
import shutil
from importlib import resources
from pathlib import Path

from modc.codegen.certificate import emit_certificate
from modc.codegen.distributed import emit_distributed
from modc.codegen.model import emit_model
from modc.codegen.optimizer import emit_optimizer
from modc.fileio import write_atomic
from modc.graph import ir
from modc.graph.view import tree
from modc.theory.analysis import Analysis
from modc.theory.report import to_json

DATASETS = {"mnist": "mnist_5k.csv.gz", "shakespeare": "shakespeare.txt"}
TEMPLATES = ("train.py", "data.py")  # copied verbatim


def spec_json(network: ir.Network, analysis: Analysis) -> str:
    """The elaborated spec: parameters, shapes, training defaults, IR and analysis."""
    source = network.source_name.replace("\\", "/").rsplit("/", 1)[-1]
    doc = {
        "name": network.name,
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


def write_build(network: ir.Network, analysis: Analysis, out: str | Path) -> Path:
    """Generate every file of the build into `out` (created if needed); returns its path."""
    out = Path(out)
    files = {
        "model.py": emit_model(network),
        "optimizer.py": emit_optimizer(network, analysis),
        "certificate.py": emit_certificate(network, analysis),
        "distributed.py": emit_distributed(),
        "spec.json": spec_json(network, analysis),
    }
    templates = resources.files("modc.codegen") / "templates"
    files.update({name: (templates / name).read_text("utf-8") for name in TEMPLATES})
    for name, text in files.items():
        write_atomic(out / name, text)
    for key in datasets_for(network):
        target = out / "data" / DATASETS[key]
        if not target.exists():
            target.parent.mkdir(parents=True, exist_ok=True)
            with resources.as_file(resources.files("modc.data") / DATASETS[key]) as src:
                tmp = target.with_suffix(".tmp")
                shutil.copyfile(src, tmp)
                tmp.replace(target)
    return out
