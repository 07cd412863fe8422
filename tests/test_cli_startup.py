"""The quick CLI: commands that run no tensor never import torch; `modc --version`,
`modc ops`, and a build's provenance (modc's version, its spec files' SHA-256, -p), by
which `modc check --build` and `modc compile` say that a build is stale."""

import hashlib
import json
import subprocess
import sys

import pytest

from modc.ops import OPS
from tests.conftest import ROOT, SPECS
from tests.conftest import modc as run_modc

NO_TENSOR = [
    ["--help"],
    ["ops"],
    ["check", "specs/gpt.modc", "-p", "depth=2"],
    ["bounds", "specs/gpt.modc", "-p", "depth=48"],
    ["bounds", "specs/cnn.modc", "--format", "latex"],
    ["graph", "specs/transformer.modc", "--format", "json"],
    ["convert", "specs/gpt.modc", "--to", "yaml"],
]


@pytest.mark.parametrize("argv", NO_TENSOR, ids=lambda argv: " ".join(argv[:2]))
def test_commands_that_run_no_tensor_do_not_import_torch(argv):
    probe = (
        "import contextlib, io, sys\n"
        "from modc.cli import main\n"
        "with contextlib.redirect_stdout(io.StringIO()):\n"
        "    try:\n"
        f"        code = main({argv!r})\n"
        "    except SystemExit as e:\n"
        "        code = e.code\n"
        "print(code, sorted(m for m in sys.modules if m == 'torch' or m.startswith('torch.')))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, cwd=ROOT, timeout=300
    )
    assert done.stdout == "0 []\n", done.stderr


def test_nn_module_members_read_from_the_source_equal_torchs_own():
    from torch import nn

    from modc.codegen.source import _module_members

    real = set(dir(nn.Module)) | set(vars(nn.Module()))
    public = {name for name in real if not name.startswith("_")}
    assert {name for name in _module_members() if not name.startswith("_")} == public


def test_version_and_ops():
    import modc

    assert run_modc("--version").stdout == f"modc {modc.__version__}\n"
    text = run_modc("ops").stdout
    for name in OPS:
        assert f"\n{name}(" in "\n" + text, name
    listed = json.loads(run_modc("ops", "--format", "json").stdout)
    assert [d["name"] for d in listed] == list(OPS)
    by_name = {d["name"]: d for d in listed}
    assert by_name["Linear"]["args"] == ["out", "mass=1"] and by_name["Linear"]["mass"] != "0"
    assert by_name["Softmax"]["sensitivity"] == "Abs(scale)"
    assert any("RMS norm at least 1" in c for c in by_name["RMSDivide"]["conditions"])
    assert by_name["ReLU"] == {**by_name["ReLU"], "mass": "0", "conditions": []}


def test_a_build_records_its_provenance_and_a_changed_spec_makes_it_stale(tmp_path):
    spec = tmp_path / "net.modc"
    spec.write_text((SPECS / "gpt.modc").read_text())
    build = tmp_path / "build"
    assert run_modc("compile", str(spec), "-p", "depth=1", "-o", str(build)).returncode == 0
    made = json.loads((build / "spec.json").read_text())["provenance"]
    import modc

    assert made["modc"] == modc.__version__ and made["params"] == ["depth=1"]
    assert made["sources"]["net.modc"] == hashlib.sha256(spec.read_bytes()).hexdigest()
    assert set(made["sources"]) == {"net.modc", "std/gpt.modc", "std/attention.modc"}

    same = run_modc("check", str(spec), "-p", "depth=1", "--build", str(build))
    assert same.returncode == 0 and "is up to date" in same.stdout
    other = run_modc("check", str(spec), "-p", "depth=2", "--build", str(build))
    assert other.returncode == 1 and "made with -p depth=1, now depth=2" in other.stdout
    spec.write_text(spec.read_text() + "\n# a comment\n")
    edited = run_modc("check", str(spec), "-p", "depth=1", "--build", str(build))
    assert edited.returncode == 1 and "stale: net.modc changed" in edited.stdout
    again = run_modc("compile", str(spec), "-p", "depth=1", "-o", str(build))
    assert "replaced a stale build: net.modc changed" in again.stdout
    assert run_modc("check", str(spec), "-p", "depth=1", "--build", str(tmp_path)).returncode == 2
