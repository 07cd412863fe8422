"""A spec is untrusted input: no name in it reaches generated code except as codegen means.

Each hostile name goes into every place a spec names something (the spec's name, its file
name, an included file's name, a definition, an atom's `name=`, a repeat), in YAML and in
.modc. Each case is either refused with a located error, or compiles to files whose ASTs
are those of the same network built with a benign name, up to identifiers and string
constants; the build then imports, takes a step and certifies without creating a file.
"""

from __future__ import annotations

import ast
import importlib.util
import itertools
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import modc
from modc.codegen.source import defined_names
from modc.compiler import compile_spec
from modc.errors import ModcError

# Text that must stay text: quotes of every kind, escapes, line breaks of every kind, NUL,
# bidi controls, comment and f-string syntax, and payloads that run if they get out.
TEXTS = [
    'X""" and open("PWNED","w") or """',
    'X"""\nopen("PWNED","w")\n"""',
    "X'''\nopen('PWNED','w')\n'''",
    "X'\nopen('PWNED','w')#",
    'q"',
    "q'",
    "trail\\",
    "back\\slash\\N{BULLET}\\x41\\u0042",
    "new\nline",
    "cr\rret",
    "crlf\r\nx",
    "ls\u2028ps\u2029x",
    "nel\x85x",
    "vt\x0bff\x0c",
    "nul\x00x",
    "esc\x1b[31m",
    "bidi\u202eevil\u2066x\u2069\u200f",
    "bom\ufeff",
    "lone\ud800surrogate",
    "# -*- coding: latin-1 -*-",
    "{f}{{}}{0!r}",
    "#x",
    "tab\tx",
    "__import__('os').system('touch PWNED')",
    "class",
    "torch",
    "F",
]
# Identifiers that would collide with Python, torch or what codegen writes, and names
# that are no identifier at all.
IDENTS = [
    "class",
    "None",
    "none",
    "true",
    "lambda",
    "match",
    "print",
    "open",
    "exec",
    "type",
    "object",
    "value_error",
    "torch",
    "nn",
    "f",
    "F",
    "math",
    "Callable",
    "callable",
    "Network",
    "network",
    "build_model",
    "INPUT_SHAPE",
    "input_shape",
    "TARGETS",
    "linear",
    "Linear",
    "block",
    "x",
    "h1",
    "self",
    "bound_network",
    "lipschitz_upper",
    "forward",
    "training",
    "named_parameters",
    "parameters",
    "state_dict",
    "to",
    "T_destination",
    "call_super_init",
    "dump_patches",
    "register_module",
    "_parameters",
    "_modules",
    "__init__",
    "__class__",
    "__dict__",
    "__x",
    "_",
    'a"b',
    "a b",
    "a\nb",
    "a#b",
    "é",
]

BENIGN = "benign"


def yaml_text(text: str) -> str:
    return json.dumps(text)  # a JSON string is a YAML double-quoted scalar


def modc_text(text: str) -> str:
    """A .modc string literal, every character outside printable ASCII escaped."""
    out = []
    for c in text:
        if c in '"\\':
            out.append("\\" + c)
        elif " " <= c <= "~":
            out.append(c)
        else:
            out.append(f"\\U{ord(c):08x}")
    return '"' + "".join(out) + '"'


BODY_YAML = (
    "input: [4]\nnetwork:\n  - Linear: {out: 4, name: a}\n  - repeat: 2\n    name: r\n"
    "    body:\n      - Linear: 4\n      - ReLU\n"
)
BODY_MODC = "input 4\nnetwork = Linear(4, name=a) > repeat(2, name=r) { Linear(4) > ReLU }\n"
LIB_YAML = "defs:\n  blk:\n    params: [k]\n    body:\n      - Linear: k\n      - ReLU\n"
LIB_MODC = "def blk(k) = Linear(k) > ReLU\n"


def spec_files(place: str, n: str) -> tuple[dict[str, str], str]:
    """The files of a spec that puts the name `n` in `place`, and the main file's name."""
    if place == "yaml_name":
        return {"net.yaml": f"name: {yaml_text(n)}\n" + BODY_YAML}, "net.yaml"
    if place == "modc_name":
        return {"net.modc": f"name {modc_text(n)}\n" + BODY_MODC}, "net.modc"
    if place in ("yaml_file", "modc_file"):
        file = n + (".yaml" if place == "yaml_file" else ".modc")
        return {file: BODY_YAML if place == "yaml_file" else BODY_MODC}, file
    if place == "yaml_include":
        main = f"include: [{yaml_text(n + '.yaml')}]\ninput: [4]\nnetwork:\n  - blk: 4\n"
        return {"net.yaml": main, n + ".yaml": LIB_YAML}, "net.yaml"
    if place == "modc_include":
        main = f"include {modc_text(n + '.modc')}\ninput 4\nnetwork = blk(4)\n"
        return {"net.modc": main, n + ".modc": LIB_MODC}, "net.modc"
    if place == "yaml_atom":
        text = f"input: [4]\nnetwork:\n  - Linear: {{out: 4, name: {yaml_text(n)}}}\n  - ReLU\n"
        return {"net.yaml": text}, "net.yaml"
    if place == "modc_atom":
        return {"net.modc": f"input 4\nnetwork = Linear(4, name={n}) > ReLU\n"}, "net.modc"
    if place == "yaml_repeat":
        text = (
            f"input: [4]\nnetwork:\n  - repeat: 2\n    name: {yaml_text(n)}\n"
            "    body:\n      - Linear: 4\n"
        )
        return {"net.yaml": text}, "net.yaml"
    if place == "modc_repeat":
        return {"net.modc": f"input 4\nnetwork = repeat(2, name={n}) {{ Linear(4) }}\n"}, "net.modc"
    if place == "yaml_def":
        key = yaml_text(n)
        text = (
            f"defs:\n  {key}:\n    params: [k]\n    body:\n      - Linear: k\n"
            f"input: [4]\nnetwork:\n  - {{{key}: 4}}\n"
        )
        return {"net.yaml": text}, "net.yaml"
    if place == "modc_use_def":  # a submodule of its own class, named after the definition
        text = f"def {n}(k) = Linear(k) > ReLU\ninput 4\nnetwork = Linear(4) > {n}(4) > {n}(4)\n"
        return {"net.modc": text}, "net.modc"
    assert place == "modc_def"
    return {"net.modc": f"def {n}(k) = Linear(k)\ninput 4\nnetwork = {n}(4)\n"}, "net.modc"


TEXT_PLACES = ["yaml_name", "modc_name", "yaml_file", "modc_file", "yaml_include", "modc_include"]
IDENT_PLACES = [
    "yaml_atom",
    "modc_atom",
    "yaml_repeat",
    "modc_repeat",
    "yaml_def",
    "modc_def",
    "modc_use_def",
]
FILE_PLACES = {"yaml_file", "modc_file", "yaml_include", "modc_include"}


def surrogate(n: str) -> bool:
    return any("\ud800" <= c <= "\udfff" for c in n)


def can_name_a_file(n: str) -> bool:
    return "/" not in n and "\x00" not in n and not surrogate(n) and len(n.encode()) < 200


CASES = [
    (place, n)
    for place, names in [(p, TEXTS) for p in TEXT_PLACES] + [(p, IDENTS) for p in IDENT_PLACES]
    for n in names
    if place not in FILE_PLACES or can_name_a_file(n)
]


NAMES = {ast.Name: "id", ast.FunctionDef: "name", ast.ClassDef: "name", ast.arg: "arg"}
ATTRS = {ast.Attribute: "attr", ast.keyword: "arg"}


def file_difference(hostile: str, benign: str) -> str | None:
    """How the source `hostile` differs from `benign` (see `difference`), or None. Top-level
    statements of identical text are the same; the names they define keep their names."""
    if hostile == benign:
        return None
    trees = ast.parse(hostile), ast.parse(benign)
    if len(trees[0].body) != len(trees[1].body):
        return f"{len(trees[0].body)} top-level statements, not {len(trees[1].body)}"
    lines = hostile.splitlines(), benign.splitlines()
    names: dict[str, str] = {}
    changed = []
    for h, b in zip(trees[0].body, trees[1].body, strict=True):
        text_h = lines[0][h.lineno - 1 : h.end_lineno]
        if text_h == lines[1][b.lineno - 1 : b.end_lineno]:
            names.update((n, n) for n in defined_names("\n".join(text_h)))
        else:
            changed.append((h, b))
    for h, b in changed:
        why = difference(h, b, names)
        if why:
            return why
    return None


def difference(hostile: ast.AST, benign: ast.AST, names: dict[str, str]) -> str | None:
    """How `hostile` differs from `benign` beyond string constants and a renaming, or None.

    Both trees are walked in step: every node must be of the same type with the same
    non-identifier fields, so no statement, call, import or operator is added or lost.
    Variable names (names, functions, classes, arguments, imports) must correspond one to
    one, also with `names` (benign to hostile, filled as it goes), so a renamed name shadows
    none; attribute names may be renamed (a module called
    `linear` is `self.linear`, beside `F.linear`): whether a spec's module shadows a member
    of nn.Module is tested by running the build.
    """
    back = {h: b for b, h in names.items()}
    attrs: dict[str, str] = {}
    for h, b in itertools.zip_longest(ast.walk(hostile), ast.walk(benign)):
        if type(h) is not type(b):
            return f"{type(b).__name__} became {type(h).__name__}"
        for field, bv in ast.iter_fields(b):
            hv = getattr(h, field)
            if isinstance(bv, list):
                if len(hv) != len(bv):
                    return f"{type(b).__name__}.{field} has {len(hv)} items, not {len(bv)}"
                if bv and isinstance(bv[0], ast.AST):
                    continue  # the walk visits them
            if isinstance(bv, ast.AST) or (bv is None) != (hv is None):
                if (bv is None) != (hv is None):
                    return f"{type(b).__name__}.{field} is {hv!r}, not {bv!r}"
                continue
            if isinstance(b, ast.Constant) and isinstance(bv, str) and isinstance(hv, str):
                continue
            if NAMES.get(type(b)) == field or isinstance(b, ast.alias):
                if names.setdefault(bv, hv) != hv or back.setdefault(hv, bv) != bv:
                    return f"names {bv!r} and {hv!r} do not correspond one to one"
            elif ATTRS.get(type(b)) == field:
                if attrs.setdefault(bv, hv) != hv:
                    return f"attribute {bv!r} became both {attrs[bv]!r} and {hv!r}"
            elif hv != bv:
                return f"{type(b).__name__}.{field} is {hv!r}, not {bv!r}"
    return None


def write(folder: Path, files: dict[str, str]) -> None:
    folder.mkdir(parents=True)
    for name, text in files.items():
        (folder / name).write_text(text, encoding="utf-8")


def compile_case(folder: Path, place: str, n: str) -> Path | ModcError:
    """Compile the case in `folder` (the default build/NAME there), or the error."""
    files, main = spec_files(place, n)
    write(folder, files)
    try:
        return compile_spec(folder / main, folder / "build" / "x")
    except ModcError as e:
        return e


_references: dict[str, dict[str, str]] = {}


def reference(place: str, root: Path) -> dict[str, str]:
    """The generated Python files of the benign build of `place`, which works."""
    if place not in _references:
        build = compile_case(root / f"benign-{place}", place, BENIGN)
        assert isinstance(build, Path), build.render()
        exercise(build, f"benign_{place}", optimize=True)
        _references[place] = {f.name: f.read_text("utf-8") for f in build.glob("*.py")}
    return _references[place]


def load(build: Path, name: str, tag: str) -> object:
    spec = importlib.util.spec_from_file_location(f"hostile_{tag}_{name}", build / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def exercise(build: Path, tag: str, optimize: bool = False) -> None:
    """Import the build, run and certify the network: its weights are the ones the
    optimizer and the certificate name. With `optimize`, take an optimizer step too."""
    model, optimizer, certificate = (
        load(build, n, tag) for n in ("model", "optimizer", "certificate")
    )
    torch.manual_seed(0)
    net = model.build_model()
    weights = set(dict(net.named_parameters()))
    assert weights == set(optimizer.TARGETS) == set(certificate.ATOMS)
    out = net(torch.randn(3, *model.INPUT_SHAPE))
    if optimize:
        opt = optimizer.make_optimizer(net, lr=0.1)
        out.square().sum().backward()
        opt.step()
    assert 0 < certificate.lipschitz_upper(net) < float("inf")


LOCATED = re.compile(r"^.+:\d+:\d+: error: ", re.S)


def check_refusal(e: ModcError) -> None:
    assert e.span is not None, f"refused without a location: {e.render()}"
    rendered = e.render()
    assert LOCATED.match(rendered), rendered
    assert "^" in rendered.splitlines()[-1] or "note:" in rendered.splitlines()[-1], rendered


def must_compile(place: str, n: str) -> bool | None:
    """Whether the case must compile (True), must be refused (False), or may do either."""
    if place in TEXT_PLACES:  # a lone surrogate is no character: either front end may refuse it
        return None if surrogate(n) else True
    if place.endswith("_def"):
        return None  # keywords and builtins are refused as definition names, others pass
    if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", n):
        return False
    return not n.startswith("_")


@pytest.fixture
def sandbox(tmp_path, monkeypatch):
    """An empty working folder, and no bytecode written: importing a build writes nothing.
    (Files are not synced to disk here: durability is not what these tests are about.)"""
    work = tmp_path / "cwd"
    work.mkdir()
    monkeypatch.chdir(work)
    monkeypatch.setattr(sys, "dont_write_bytecode", True)
    monkeypatch.setattr(os, "fsync", lambda fd: None)
    return work


@pytest.mark.parametrize("place", TEXT_PLACES + IDENT_PLACES)
def test_hostile_names_compile_to_what_codegen_writes_or_are_refused(
    place, sandbox, tmp_path_factory
):
    root = tmp_path_factory.mktemp(place)
    expected = reference(place, tmp_path_factory.getbasetemp() / "references")
    cases = [n for p, n in CASES if p == place]
    for i, n in enumerate(cases):
        folder = root / str(i)
        result = compile_case(folder, place, n)
        rule = must_compile(place, n)
        if isinstance(result, ModcError):
            assert rule is not True, f"{place} {n!r} refused: {result.render()}"
            check_refusal(result)
            continue
        assert rule is not False, f"{place} {n!r} compiled"
        files, _ = spec_files(place, n)
        assert sorted(p.name for p in folder.iterdir()) == sorted([*files, "build"])
        before = sorted(p.name for p in result.iterdir())
        got = {f.name: f.read_text("utf-8") for f in result.glob("*.py")}
        assert got.keys() == expected.keys()
        for file in got:
            why = file_difference(got[file], expected[file])
            assert why is None, f"{place} {n!r}: {file}: {why}"
        if got == expected:
            continue  # the benign build, which works
        if place in IDENT_PLACES:  # modules renamed: they must still be the weights
            exercise(result, f"{place}_{i}")
        else:
            for module in ("model", "optimizer", "certificate"):
                load(result, module, f"{place}_{i}")
        assert sorted(p.name for p in result.iterdir()) == before
        assert not any(sandbox.iterdir()), f"{place} {n!r}: importing wrote a file"


def test_default_build_folder_stays_under_build(sandbox):
    """Without -o, a build goes to build/NAME with NAME reduced to one safe folder name."""
    for i, n in enumerate(["..", ".", "../../escape", "/tmp/abs", "a/../../b", "-rf", *TEXTS]):
        spec = sandbox.parent / f"spec{i}.yaml"
        spec.write_text(f"name: {yaml_text(n)}\n" + BODY_YAML, encoding="utf-8")
        try:
            out = compile_spec(spec)
        except ModcError as e:  # another spec's name reduced to the same folder, or no text
            assert "holds the build of another spec" in e.message or surrogate(n), e.message
            continue
        assert out.parent == Path("build") and out.name not in ("", ".", ".."), out
        assert out.resolve().parent == (sandbox / "build").resolve()
        assert json.loads((out / "spec.json").read_text())["name"] == n
    assert [p.name for p in sandbox.iterdir()] == ["build"]


def test_python_api_build_is_safe(sandbox):
    """modc.build() compiles and imports in-process: a payload in the name stays text."""
    spec = sandbox.parent / "payload.yaml"
    spec.write_text(f"name: {yaml_text(TEXTS[0])}\n" + BODY_YAML, encoding="utf-8")
    built = modc.build(spec, out=sandbox.parent / "api-build")
    net = built.model.build_model()
    assert set(dict(net.named_parameters())) == set(built.optimizer.TARGETS)
    cached = modc.build(spec)  # this user's private cache
    assert cached.path.parent.stat().st_mode & 0o077 == 0
    assert not any(sandbox.iterdir())


def test_default_run_folder_stays_under_runs(sandbox):
    """train.py's default --out is runs/FOLDER, the spec name reduced as for build/."""
    spec = sandbox.parent / "escape.yaml"
    spec.write_text("name: ../../escape\n" + BODY_YAML, encoding="utf-8")
    build = compile_spec(spec)
    got = subprocess.run(
        [sys.executable, str(build / "train.py"), "--steps", "1", "--quiet", "--data", "synthetic"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert got.returncode == 0, got.stderr
    assert sorted(p.name for p in sandbox.iterdir()) == ["build", "runs"]
    assert [p.name for p in (sandbox / "runs").iterdir()] == ["_.._escape"]
    assert not (sandbox.parent.parent / "escape").exists()


def test_hostile_names_print_as_text(tmp_path):
    """check, bounds (text and LaTeX) and graph print a spec's name with what a terminal
    would not show escaped; in LaTeX no name ends its `%` comment or runs a command."""
    from modc.check import check_table
    from modc.compiler import load
    from modc.graph.view import to_dot
    from modc.theory.latex import to_latex
    from modc.theory.report import to_text

    def outputs(name: str) -> list[str]:
        spec = tmp_path / "net.yaml"
        spec.write_text(f"name: {yaml_text(name)}\n" + BODY_YAML, encoding="utf-8")
        network, analysis = load(spec)
        texts = [check_table(network, analysis), to_text(network, analysis), to_dot(network)]
        return [*texts, to_latex(network, analysis)]

    benign = [len(text.splitlines()) for text in outputs("benign")]
    commands = re.compile(r"\\(backslash|hat|sim)\{\}|\\[{}_&%$#]")
    for name in [n for n in TEXTS if not surrogate(n)] + ["x\n\\input{/etc/passwd}%"]:
        *plain, latex = outputs(name)
        assert [len(text.splitlines()) for text in [*plain, latex]] == benign, name
        for text in plain:
            assert all(line.isprintable() for line in text.splitlines()), name
        head = latex.splitlines()[0]
        assert head.startswith("% ") and head.endswith(": modc bounds"), name
        assert "\\" not in commands.sub("", head), name
