"""Spec mistakes that used to pass silently are errors at their place: settings, names,
argument names, errors inside library definitions; `check` accepts what `compile` does."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

import modc
from modc.check import check_table
from modc.codegen.build import write_build
from modc.compiler import load
from modc.errors import ModcError
from modc.ops import OPS
from modc.spec.includes import STDLIB
from modc.spec.settings import train_rules
from tests.conftest import SPECS

# name: (file name, text, line:col of the error, message, hint or None)
MISTAKES = {
    "train_misspelled_key": (
        "net.modc",
        "input 3\nnetwork = Linear(3)\ntrain {\n  stpes = 10\n}\n",
        "4:3",
        "unknown train setting 'stpes'",
        "did you mean 'steps'?",
    ),
    "train_unknown_key_yaml": (
        "net.yaml",
        "input: 3\nnetwork: [Linear: 3]\ntrain:\n  objective: mse\n",
        "4:3",
        "unknown train setting 'objective'",
        "the train settings are adamw_lr, batch_schedule, batch_size,",
    ),
    "train_fractional_steps": (
        "net.modc",
        "input 3\nnetwork = Linear(3)\ntrain { steps = 10.5 }\n",
        "3:9",
        "train.steps must be an integer",
        None,
    ),
    "train_schedule": (
        "net.yaml",
        "input: 3\nnetwork: [Linear: 3]\ntrain:\n  schedule: cosin\n",
        "4:3",
        "train.schedule must be constant, cosine or linear",
        "did you mean 'cosine'?",
    ),
    "train_lr_text": (
        "net.modc",
        'input 3\nnetwork = Linear(3)\ntrain { lr = "fast" }\n',
        "3:9",
        "train.lr must be a finite number",
        None,
    ),
    "optimizer_misspelled_key": (
        "net.modc",
        "input 3\nnetwork = Linear(3)\noptimizer { knd = adamw }\n",
        "3:13",
        "unknown optimizer setting 'knd'",
        "did you mean 'kind'?",
    ),
    "optimizer_kind": (
        "net.modc",
        "input 3\nnetwork = Linear(3)\noptimizer { kind = adamx }\n",
        "3:13",
        "optimizer.kind must be one of",
        "did you mean 'adamw'?",
    ),
    "optimizer_constraint_without_bound": (
        "net.yaml",
        "input: 3\nnetwork: [Linear: 3]\noptimizer:\n  momentum: 0.9\n  constraint: cap\n",
        "5:3",
        "optimizer.constraint cap needs a bound",
        None,
    ),
    "optimizer_lipschitz_out_of_reach": (
        "net.modc",
        "input 3\nnetwork = Linear(3) + 4 * Identity\n"
        "optimizer {\n  constraint = cap\n  lipschitz = 2\n}\n",
        "5:3",
        "optimizer.lipschitz 2 cannot be met",
        None,
    ),
    "name_on_a_bond": (
        "net.modc",
        "input 3\nnetwork = Linear(3) > ReLU(name=act)\n",
        "2:23",
        "ReLU has no weights to name",
        None,
    ),
    "unknown_argument_yaml": (
        "net.yaml",
        "input: 3\nnetwork:\n  - Linear: {out: 4, bias: true}\n",
        "3:22",
        "Linear has no argument 'bias'",
        "Linear takes out, mass",
    ),
    "misspelled_argument_yaml": (
        "net.yaml",
        "input: 3\nnetwork:\n  - Linear: {outt: 4}\n",
        "3:20",
        "Linear has no argument 'outt'",
        "did you mean 'out'?",
    ),
    "misspelled_definition_argument": (
        "net.modc",
        "input 3\ndef block(width) = Linear(width)\nnetwork = block(widht=4)\n",
        "3:23",
        "'block' has no argument 'widht'",
        "did you mean 'width'?",
    ),
    "same_use_name_twice": (
        "net.modc",
        "input 4\ndef block = Linear(4, name=out)\nnetwork = block(name=a) > block(name=a)\n",
        "3:27",
        "the name 'a' is used twice in the same block",
        None,
    ),
    "zero_scale": (
        "net.modc",
        "input 4\nnetwork = Linear(4) > 0 * Linear(4)\n",
        "2:23",
        "a scale of 0 makes the term's output 0 whatever its input: it contributes nothing",
        "remove the term",
    ),
    "zero_scaled_branch": (
        "net.modc",
        "input 4\nnetwork = Linear(4) > (1 * Identity + 0 * Linear(4))\n",
        "2:39",
        "a scale of 0",
        None,
    ),
    "negative_mass": (
        "net.modc",
        "input 4\nnetwork = Linear(4, mass=-1) > Linear(4, mass=3)\n",
        "2:26",
        "a mass must be 0 or more (an atom's share of a training step), got -1",
        None,
    ),
    "negative_mass_yaml": (
        "net.yaml",
        "input: [4]\nnetwork: [{Linear: 4, mass: 1}, {Linear: 4, mass: -1}]\n",
        "2:51",
        "a mass must be 0 or more",
        None,
    ),
    "masses_all_zero": (
        "net.yaml",
        "input: [4]\nnetwork: [{Linear: 4, mass: 0}, {Linear: 4, mass: 0}]\n",
        "2:12",
        "every atom that trains has mass 0 (linear1 and 1 more): targets are shares",
        "give an atom a positive mass, or freeze",
    ),
    "lone_atom_of_mass_zero": (
        "net.modc",
        "input 4\nnetwork = Linear(4, mass=0)\n",
        "2:11",
        "every atom that trains has mass 0 (linear1)",
        None,
    ),
    "tuple_output": (
        "net.modc",
        "input 3\nnetwork = (Linear(3), Linear(5))\n",
        "2:11",
        "the network's output must be one tensor",
        None,
    ),
}


def _write(tmp_path: Path, file: str, text: str) -> Path:
    path = tmp_path / file
    path.write_text(text)
    return path


@pytest.mark.parametrize("name", MISTAKES)
def test_mistake_is_located(tmp_path: Path, name: str):
    file, text, where, message, hint = MISTAKES[name]
    spec = _write(tmp_path, file, text)
    with pytest.raises(ModcError) as info:
        load(spec)
    err = info.value
    assert err.message.startswith(message), err.message
    assert f"{err.span.line}:{err.span.col}" == where
    assert err.span.source.name == str(spec)
    if hint is not None:
        assert err.hint is not None and hint in err.hint, err.hint
    lines = err.render().splitlines()
    assert lines[0].startswith(f"{spec}:{where}: error: ") and "^" in lines[2]


def _specs() -> list[Path]:
    return sorted(SPECS.glob("*")) + sorted(STDLIB.glob("*.modc"))


@pytest.mark.parametrize("path", _specs(), ids=lambda p: p.name)
def test_check_accepts_what_compile_accepts(tmp_path: Path, path: Path):
    """`check` and `compile` share `load`; what it accepts must also generate a build."""
    try:
        network, analysis = load(path)
    except ModcError as err:
        assert path.parent == STDLIB, err.render()  # a library has no network
        return
    check_table(network, analysis)
    write_build(network, analysis, tmp_path / "build")


@pytest.mark.parametrize("name", MISTAKES)
def test_compile_refuses_the_mistakes_as_check_does(tmp_path: Path, name: str):
    file, text, *_ = MISTAKES[name]
    spec = _write(tmp_path, file, text)
    with pytest.raises(ModcError) as from_check:
        load(spec)
    with pytest.raises(ModcError) as from_compile:
        modc.compile_spec(spec, tmp_path / "build")
    assert from_compile.value.render() == from_check.value.render()
    assert not (tmp_path / "build").exists()


def test_train_settings_are_train_py_rules():
    """The keys and checks are train.py's own table, options.rules(): one table."""
    rules = train_rules()
    assert {"steps", "batch_size", "lr", "data", "schedule", "seed"} <= set(rules)
    assert "objective" not in rules and rules["loss"].choices == ("cross_entropy", "mse")
    assert rules["steps"].check(10) and not rules["steps"].check(10.5)
    assert rules["schedule"].choices == ("constant", "cosine", "linear")
    assert rules["momentum"].optional and not rules["steps"].optional


def test_every_shipped_train_section_is_valid():
    for path in sorted(SPECS.glob("*")):
        load(path)  # raises on an unknown or bad setting


def test_name_on_a_use_names_its_parameters(tmp_path: Path):
    spec = _write(
        tmp_path,
        "net.modc",
        "input 4\ndef block(d) = Linear(d) > ReLU > Linear(4, name=out)\n"
        "def wrap(f) = f(name=inner) > Linear(4)\n"
        "network = block(8, name=enc) > block(6, name=dec) > wrap(Linear(4))\n",
    )
    model = modc.build(spec, out=tmp_path / "build").model.build_model()
    assert sorted(model.state_dict()) == [
        "dec.linear1.weight",
        "dec.out.weight",
        "enc.linear1.weight",
        "enc.out.weight",
        "wrap.inner.linear1.weight",
        "wrap.linear1.weight",
    ]


def test_error_in_the_library_leads_back_to_the_user(tmp_path: Path):
    with pytest.raises(ModcError) as info:
        load(SPECS / "gpt.modc", ["heads=3"])
    err = info.value
    assert err.span.source.name.endswith("attention.modc")
    calls = [what for what, _ in err.trace]
    assert calls[0] == "definition 'attention'" and calls[-1] == "definition 'gpt'"
    outermost = err.trace[-1][1]
    assert (Path(outermost.source.name), outermost.line) == (SPECS / "gpt.modc", 12)
    text = err.render()
    assert f"in definition 'gpt' called at {SPECS / 'gpt.modc'}:12:11" in text


def test_zero_scale_in_the_library_leads_back_to_the_user(tmp_path: Path):
    """`transformer_block(width, heads, 0)` scales its attention by 0 inside gpt.modc."""
    spec = _write(
        tmp_path,
        "net.yaml",
        "include: [std/gpt.modc]\ninput: [8, 16]\nnetwork:\n  - transformer_block: [16, 2, 0]\n",
    )
    with pytest.raises(ModcError) as info:
        modc.compile_spec(spec, tmp_path / "build")
    err = info.value
    assert err.message.startswith("a scale of 0")
    assert Path(err.span.source.name).name == "gpt.modc" and err.span.line == 11
    assert err.trace[-1][0] == "definition 'transformer_block'"
    assert f"called at {spec}:4:5" in err.render()
    assert not (tmp_path / "build").exists()


def test_operations_are_found_without_a_list(tmp_path: Path, monkeypatch):
    import modc.ops as ops

    (tmp_path / "twice_op.py").write_text(
        "from modc.ops.base import Bond\n\n\nclass Twice(Bond):\n    name = 'Twice'\n"
    )
    monkeypatch.setattr(ops, "__path__", [*ops.__path__, str(tmp_path)])
    try:
        found = ops._operations()
    finally:
        sys.modules.pop("modc.ops.twice_op", None)
    assert found["Twice"].__module__ == "modc.ops.twice_op"
    assert set(OPS) < set(found)
    assert "Twice" not in OPS  # the test's operation stays out of the library


def test_a_definition_may_take_its_own_use_as_argument(tmp_path: Path):
    """wrap(wrap(x)) nests two uses; only a definition that calls itself is a recursion."""
    head = 'name "t"\ninput 4\noutput 4\n'
    nested = _write(
        tmp_path, "n.modc", head + "def wrap(f) = Gain > f\nnetwork = wrap(wrap(Linear(4)))\n"
    )
    network, _ = load(nested)
    assert sum(1 for _ in network.root.children()) == 2
    looping = _write(tmp_path, "r.modc", head + "def f(g) = Gain > f(g)\nnetwork = f(Linear(4))\n")
    with pytest.raises(ModcError, match="recursive definition: f → f"):
        load(looping)


def test_name_on_a_use_names_its_parameters_in_yaml(tmp_path: Path):
    spec = _write(
        tmp_path,
        "net.yaml",
        "input: 3\ndefs:\n  block:\n    params: [d]\n    body: [Linear: d]\n"
        "network:\n  - block: {d: 4, name: enc}\n  - residual: 2\n    name: res\n"
        "    body: [Linear: 4]\n",
    )
    network, analysis = load(spec)
    assert [a.path for a in analysis.atoms] == ["enc.linear1", "res.0.linear1", "res.1.linear1"]
