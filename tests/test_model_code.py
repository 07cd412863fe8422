"""The generated model.py of a GPT: fused attention with the explicit form's numbers, a class
per definition, parameter names from the spec's structure, conditions checked on the fused
call, and code that passes the project's linter and formatter."""

from __future__ import annotations

import importlib.util
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import torch

import modc
from modc.codegen.model import emit_model
from tests.conftest import SPECS

SMALL = {"vocab": 32, "width": 32, "depth": 2, "heads": 4, "context": 16}
GPT = 'name "gpt"\ninclude "std/gpt.modc"\ninput 16\n'
STACK = """
network = Embed(32, 32, name=embed)
    {extra}> tare(5) {{ repeat(2, name=blocks) {{ transformer_block(32, 4, 1 / 4) }} }}
    > Linear(32, name=head)
"""


def _import(path: Path, name: str):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def gpt(tmp_path_factory) -> modc.Build:
    return modc.build(SPECS / "gpt.modc", SMALL, out=tmp_path_factory.mktemp("gpt"))


@pytest.fixture(scope="module")
def explicit(gpt: modc.Build):
    """The same network's model.py with attention written op by op, as in the spec."""
    network, _ = modc.load(SPECS / "gpt.modc", SMALL)
    path = gpt.path / "model_explicit.py"
    path.write_text(emit_model(network, fuse=False))
    return _import(path, "gpt_model_explicit")


def test_gpt_attention_is_fused_with_the_explicit_forms_logits(gpt, explicit, one_thread):
    text = (gpt.path / "model.py").read_text()
    assert "F.scaled_dot_product_attention(" in text and "y = causal_attention(q, k, v, 1)" in text
    assert "def attention_qk" not in text and "def causal_mask" not in text
    assert "causal_mask(attention_qk(q, k))" in Path(explicit.__file__).read_text()
    torch.manual_seed(0)
    fused = gpt.model.build_model()
    plain = explicit.build_model()
    plain.load_state_dict(fused.state_dict())
    x = torch.randint(0, 32, (8, 16))
    with torch.no_grad():
        a, b = fused(x), plain(x)
    assert a.dtype == torch.float32 and (a - b).abs().max().item() <= 1e-5
    x = torch.randint(0, 32, (2, 5))  # fewer positions than the context: the tables' first rows
    with torch.no_grad():
        assert (fused(x) - plain(x)).abs().max().item() <= 1e-5


def test_every_definition_is_a_class_named_after_it(gpt):
    text = (gpt.path / "model.py").read_text()
    classes = re.findall(r"^class (\w+)\(nn.Module\)", text, re.M)
    assert {"Attention", "GeluMlp", "TransformerBlock", "Network"} <= set(classes)
    assert "self.attention = Attention()" in text and "self.mlp = GeluMlp()" in text
    assert "x = 3 / 4 * x + 1 / 4 * self.attention(x)" in text  # a = 1 / (2 depth)
    assert not re.search(r"\bh\d+\b", text)  # no numbered temporaries
    for line in text.splitlines():  # every atom's and submodule's line leads to the spec
        if re.match(r"\s+self\.\w+ = ([A-Z]\w*\(|nn\.ModuleList)", line):
            assert re.search(r"# \w+\.modc:\d+:\d+", line), line


def test_rope_tables_are_buffers_outside_the_state_dict(gpt):
    model = gpt.model.build_model()
    buffers = dict(model.named_buffers())
    assert {"blocks.0.attention.rope.cos", "blocks.0.attention.rope.sin"} <= set(buffers)
    assert not any(k.endswith((".cos", ".sin")) for k in model.state_dict())


def test_gpt_parameter_names_read_blocks_role_atom(gpt):
    names = [n for n, _ in gpt.model.build_model().named_parameters()]
    role = re.compile(r"blocks\.\d+\.(attention\.[qkvo]|mlp\.(fc|proj))\.weight")
    assert names[0] == "embed.weight" and names[-1] == "head.weight"
    assert all(role.fullmatch(n) for n in names[1:-1]) and len(names) == 2 + 2 * 6
    assert set(gpt.optimizer.TARGETS) == set(gpt.certificate.ATOMS) == set(names)


def test_names_do_not_change_when_a_layer_is_added_before_the_blocks(write_spec, tmp_path):
    def names(extra: str, folder: str) -> list[str]:
        spec = write_spec(GPT + STACK.format(extra=extra), f"{folder}.modc")
        model = modc.build(spec, out=tmp_path / folder).model.build_model()
        return [n for n, _ in model.named_parameters()]

    before, after = names("", "a"), names("> Linear(32) > GELU\n    ", "b")
    assert after == [*before[:1], "linear1.weight", *before[1:]]


def test_conditions_are_checked_on_the_fused_call(gpt):
    cert = gpt.certificate
    assert set(cert.CHECKS) == {"causal_attention"}
    torch.manual_seed(0)
    model = gpt.model.build_model()
    x = torch.randint(0, 32, (4, 16))
    checked = cert.conditions_on(model, x)
    assert all(c["held"] is not None for c in checked)
    assert {c["where"].split(" call")[0] for c in checked} == {"causal_attention"}
    with torch.no_grad():  # queries of RMS well above 1 in the second block
        model.blocks[1].attention.q.weight.mul_(1000)
    query = cert.conditions_on(model, x)[0]
    assert query["condition"].startswith("AttentionQK") and "query" in query["condition"]
    assert (
        query["held"] is False and query["where"] == "causal_attention call 1 in blocks.1.attention"
    )


def test_attention_without_a_mask_fuses_too(write_spec, tmp_path, one_thread):
    text = (
        "input (8, 16)\nnetwork = (Linear(16, name=v) > SplitHeads(2), (Linear(16, name=q) > "
        "SplitHeads(2), Linear(16, name=k) > SplitHeads(2)) > AttentionQK > Softmax(2))\n"
        "    > 1/3 * ApplyScores > MergeHeads\n"
    )
    build = modc.build(write_spec(text, "att.modc"), out=tmp_path / "b")
    assert "= attention(q, k, v, 2)" in (build.path / "model.py").read_text()
    network, _ = modc.load(tmp_path / "att.modc")
    (tmp_path / "b" / "explicit.py").write_text(emit_model(network, fuse=False))
    plain = _import(tmp_path / "b" / "explicit.py", "att_explicit").build_model()
    fused = build.model.build_model()
    plain.load_state_dict(fused.state_dict())
    x = torch.randn(4, 8, 16)
    assert (fused(x) - plain(x)).abs().max().item() <= 1e-5


@pytest.mark.skipif(shutil.which("ruff") is None, reason="ruff is in the test extra")
@pytest.mark.parametrize("spec", ["gpt.modc", "cnn.modc", "resmlp.modc", "transformer.modc"])
def test_model_and_certificate_pass_ruff_check_and_format(spec, tmp_path):
    build = modc.build(SPECS / spec, out=tmp_path / "b")
    files = [str(build.path / "model.py"), str(build.path / "certificate.py")]
    settings = ["--no-cache", "--line-length", "100"]
    check = ["ruff", "check", *settings, "--select", "E,F,W,I,B,UP", *files]
    out = subprocess.run(check, capture_output=True, text=True)
    assert out.returncode == 0, out.stdout
    out = subprocess.run(
        ["ruff", "format", "--check", "--diff", *settings, *files], capture_output=True, text=True
    )
    assert out.returncode == 0, out.stdout + out.stderr
