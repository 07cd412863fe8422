"""Generated packages: deterministic, standalone, lint-clean, and faithful to the theory."""

from __future__ import annotations

import ast
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import modc
from tests.conftest import SPECS
from tests.conftest import modc as run_modc

GENERATED = (
    "model.py",
    "optimizer.py",
    "certificate.py",
    "train.py",
    "data.py",
    "options.py",
    "metrics.py",
    "generate.py",
    "distributed.py",
    "gns.py",
    "spec.json",
)


@pytest.fixture(scope="module")
def mlp(tmp_path_factory) -> modc.Build:
    return modc.build(
        SPECS / "mlp.yaml",
        {"width": 64, "depth": 3},
        out=tmp_path_factory.mktemp("mlp"),
    )


@pytest.fixture(scope="module")
def resmlp(tmp_path_factory) -> modc.Build:
    return modc.build(
        SPECS / "resmlp.yaml",
        {"width": 32, "depth": 3},
        out=tmp_path_factory.mktemp("resmlp"),
    )


def test_same_spec_compiled_twice_gives_identical_files(tmp_path):
    for spec in ("mlp.yaml", "resmlp.yaml"):
        a, b = tmp_path / "a" / spec, tmp_path / "b" / spec
        for out in (a, b):
            result = run_modc("compile", f"specs/{spec}", "-o", str(out))
            assert result.returncode == 0, result.stderr
        for name in GENERATED:
            assert (a / name).read_bytes() == (b / name).read_bytes(), name


BLOCKER = """
import importlib.abc, sys
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in {"modc", "lark", "yaml"}:
            raise ImportError(f"generated code must not import {name}")
sys.meta_path.insert(0, Block())
sys.path.insert(0, sys.argv[1])
import model, optimizer, certificate, data, train
net = model.build_model()
opt = optimizer.make_optimizer(net, lr=0.1)
print(certificate.lipschitz_upper(net))
"""


@pytest.mark.parametrize("name", ["mlp", "resmlp"])
def test_generated_files_import_with_only_torch(name, request):
    build = request.getfixturevalue(name)
    out = subprocess.run(
        [sys.executable, "-c", BLOCKER, str(build.path)],
        capture_output=True,
        text=True,
        cwd=build.path.parent,
    )
    assert out.returncode == 0, out.stderr
    assert float(out.stdout) > 0


@pytest.mark.parametrize("name", ["mlp", "resmlp"])
def test_generated_files_import_only_torch_and_the_standard_library(name, request):
    build = request.getfixturevalue(name)
    allowed = set(sys.stdlib_module_names) | {
        "torch",
        "model",
        "optimizer",
        "certificate",
        "data",
        "distributed",
        "gns",
        "options",
        "metrics",
        "generate",
    }
    for file in GENERATED:
        if not file.endswith(".py"):
            continue
        tree = ast.parse((build.path / file).read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                roots = {alias.name.split(".")[0] for alias in node.names}
            elif isinstance(node, ast.ImportFrom):
                roots = {(node.module or "").split(".")[0]}
            else:
                continue
            assert roots <= allowed, f"{file} imports {roots - allowed}"


@pytest.mark.skipif(shutil.which("ruff") is None, reason="ruff is in the test extra")
@pytest.mark.parametrize("name", ["mlp", "resmlp"])
def test_generated_code_passes_the_linter(name, request):
    build = request.getfixturevalue(name)
    files = [str(build.path / f) for f in GENERATED if f.endswith(".py")]
    out = subprocess.run(
        ["ruff", "check", "--no-cache", "--select", "E,F,W,I,B,UP", "--line-length", "100", *files],
        capture_output=True,
        text=True,
    )
    assert out.returncode == 0, out.stdout


def atom_updates(build: modc.Build, lr: float, grads: str = "random") -> list[tuple]:
    """One step with momentum 0 from fresh weights: (name, update, target) per atom."""
    torch.manual_seed(0)
    net = build.model.build_model()
    opt = build.optimizer.make_optimizer(net, lr=lr, momentum=0.0, nesterov=False)
    before = {n: p.detach().clone() for n, p in net.named_parameters()}
    for p in net.parameters():
        p.grad = torch.randn_like(p) if grads == "random" else torch.zeros_like(p)
    opt.step()
    return [
        (n, before[n] - p.detach(), build.optimizer.TARGETS[n][1])
        for n, p in net.named_parameters()
    ]


@pytest.mark.parametrize("name", ["mlp", "resmlp"])
def test_each_linear_update_has_norm_lr_times_target(name, request):
    build = request.getfixturevalue(name)
    lr = 0.37
    for param, update, target in atom_updates(build, lr):
        norm = build.certificate.ATOM_NORMS["Linear"](update)
        assert norm == pytest.approx(lr * target, rel=0.02), param


def test_zero_gradient_gives_zero_update(mlp):
    for param, update, _ in atom_updates(mlp, 0.5, grads="zero"):
        assert torch.isfinite(update).all(), param
        assert torch.count_nonzero(update) == 0, param


def test_targets_in_optimizer_match_the_analysis(resmlp):
    network, analysis = modc.load(SPECS / "resmlp.yaml", {"width": 32, "depth": 3})
    table = resmlp.optimizer.TARGETS
    assert list(table) == [f"{a.path}.weight" for a in analysis.atoms]
    assert [t for _, t in table.values()] == pytest.approx(
        [float(a.target) for a in analysis.atoms]
    )


def test_optimizer_refuses_a_model_it_was_not_built_for(mlp, resmlp):
    with pytest.raises(ValueError, match="do not match"):
        mlp.optimizer.make_optimizer(resmlp.model.build_model(), lr=0.1)


def test_build_api_loads_the_files_compile_writes(tmp_path):
    b = modc.build(SPECS / "mlp.yaml", {"width": 16}, out=tmp_path / "api")
    assert Path(b.model.__file__).resolve() == (tmp_path / "api" / "model.py").resolve()
    out = run_modc("compile", "specs/mlp.yaml", "-p", "width=16", "-o", str(tmp_path / "cli"))
    assert out.returncode == 0
    for name in GENERATED:
        assert (tmp_path / "api" / name).read_bytes() == (tmp_path / "cli" / name).read_bytes()
