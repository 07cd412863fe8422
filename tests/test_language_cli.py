"""`modc check`, `modc graph` and `modc convert`, includes, and the memory refusal."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from modc.cli import main
from modc.compiler import load
from modc.errors import ModcError
from modc.graph.budget import check_budget
from modc.spec import load_spec
from tests.language import SPECS


def run(capsys, *args: str) -> str:
    assert main(list(args)) == 0
    return capsys.readouterr().out


def test_check_prints_a_table_of_modules(capsys):
    out = run(capsys, "check", str(SPECS / "resmlp.modc"), "-p", "depth=2")
    lines = out.splitlines()
    assert lines[0] == "resmlp (width=256, depth=2): ok"
    assert "parameters 465,408" in lines[1] and "mass 4" in lines[1]
    assert lines[3].split() == ["module", "in", "→", "out", "params", "mass", "sensitivity"]
    embed = next(line for line in lines if "embed: Linear(256)" in line)
    assert embed.split()[-4:] == ["(256,)", "200,704", "1", "1"]
    assert any("blocks: Repeat(2)" in line for line in lines)


def test_graph_json_is_the_networkx_view(capsys):
    data = json.loads(run(capsys, "graph", str(SPECS / "mlp.modc"), "--format", "json"))
    assert data["directed"] is True
    labels = {n["id"]: n["label"] for n in data["nodes"]}
    assert labels["0"] == "Compose" and labels["0.2"] == "Linear(10)"
    assert {"source": "0", "target": "0.2"}.items() <= next(
        e for e in data["edges"] if e["target"] == "0.2"
    ).items()


def test_graph_dot(capsys, tmp_path: Path):
    out = tmp_path / "mlp.dot"
    run(capsys, "graph", str(SPECS / "mlp.yaml"), "--format", "dot", "-o", str(out))
    text = out.read_text()
    assert text.startswith('digraph "mlp" {')
    assert '"0.2" [label="head: Linear(10)\\n(256,) → (10,)\\nmass 1"];' in text
    assert '"0" -> "0.2";' in text
    if shutil.which("dot"):
        svg = subprocess.run(["dot", "-Tsvg", str(out)], capture_output=True, text=True)
        assert svg.returncode == 0 and "<svg" in svg.stdout


def test_convert_prints_the_other_form(capsys):
    text = run(capsys, "convert", str(SPECS / "mlp.yaml"), "--to", "modc")
    assert text.splitlines()[:3] == ['name "mlp"', "param width = 256", "param depth = 3"]
    text = run(capsys, "convert", str(SPECS / "gpt.modc"), "--to", "yaml")
    assert "include: [std/gpt.modc]" in text and "  - gpt: [vocab, width, depth, heads]" in text


def test_includes_diamond_and_yaml_to_dsl(tmp_path: Path):
    (tmp_path / "lib").mkdir()
    (tmp_path / "lib" / "base.modc").write_text("def act = ReLU\n")
    (tmp_path / "lib" / "a.modc").write_text('include "base.modc"\ndef f(d) = Linear(d) > act\n')
    (tmp_path / "lib" / "b.yaml").write_text(
        "include: [base.modc]\ndefs:\n  g:\n    params: [d]\n    body: [{f: d}, act]\n"
    )
    spec = tmp_path / "net.yaml"
    spec.write_text(
        "include: [lib/a.modc, lib/b.yaml, std/mlp.modc]\ninput: 4\nnetwork:\n"
        "  - g: 8\n  - mlp: [8, 2, 3]\n"
    )
    resolved = load_spec(spec)
    assert [d.name for d in resolved.defs] == ["act", "f", "g", "mlp", "resblock", "resmlp"]
    network, analysis = load(spec)
    assert network.output_shape == (3,)
    assert analysis.mass == 3


def test_a_definition_defined_twice_across_includes(tmp_path: Path):
    (tmp_path / "a.modc").write_text("def f = ReLU\n")
    spec = tmp_path / "net.modc"
    spec.write_text('include "a.modc"\ninput 4\ndef f = GELU\nnetwork = f\n')
    with pytest.raises(ModcError) as info:
        load_spec(spec)
    assert (info.value.span.line, info.value.span.col) == (3, 5)
    assert info.value.message.startswith(f"definition 'f' is already defined at {tmp_path}")


def test_networks_are_refused_before_allocation(monkeypatch):
    network, _ = load(SPECS / "mlp.yaml")
    assert check_budget(network) == 268_800
    with pytest.raises(ModcError) as info:
        check_budget(network, limit=268_800 * 4 - 1)
    assert "would need 268,800 parameters (1.0 MiB as float32)" in info.value.message
    assert (info.value.span.line, info.value.span.col) == (13, 9)  # Linear(width), the largest
    monkeypatch.setenv("MODC_MAX_BYTES", "1000")
    with pytest.raises(ModcError, match="more than the 1000 bytes of memory"):
        load(SPECS / "mlp.yaml")


def test_too_many_layers_is_refused(tmp_path: Path):
    spec = tmp_path / "deep.modc"
    spec.write_text("input 2\nnetwork = Linear(2) ** 1000000\n")
    with pytest.raises(ModcError, match="at least 1,000,000 operations .*; modc handles at most"):
        load(spec)
