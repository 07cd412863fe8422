"""The YAML front end: the shipped specs, the item forms, and errors at exact positions."""

from __future__ import annotations

from pathlib import Path

import pytest
import sympy

from modc.errors import ModcError
from modc.graph.evaluate import evaluate, require_size
from modc.source import Source, Span
from modc.spec import ast, load_spec
from modc.spec.yaml_front import load_yaml

SPECS = Path(__file__).resolve().parent.parent / "specs"
AT = Span(Source("x", ""), 1, 1)  # spans never take part in equality


def load(text: str) -> ast.Spec:
    return load_yaml(Source("net.yaml", text))


def fails(text: str) -> ModcError:
    with pytest.raises(ModcError) as info:
        load(text)
    return info.value


def where(err: ModcError) -> tuple[int, int]:
    assert err.span is not None
    return err.span.line, err.span.col


def num(text: str) -> ast.Num:
    return ast.Num(text, AT)


def name(id: str) -> ast.Name:
    return ast.Name(id, AT)


def call(op: str, *args: ast.Arg, name: str | None = None, **kwargs: ast.Arg) -> ast.Call:
    return ast.Call(op, args, tuple(kwargs.items()), name)


def seq(*items: ast.Term) -> ast.Seq:
    return ast.Seq(items)


# ---------------------------------------------------------------- the shipped specs


def test_mlp_spec():
    spec = load_spec(SPECS / "mlp.yaml")
    assert spec == ast.Spec(
        name="mlp",
        params=(ast.Param("width", num("256")), ast.Param("depth", num("3"))),
        input=(num("1"), num("28"), num("28")),
        output=(num("10"),),
        network=seq(
            call("Flatten"),
            ast.Repeat(
                ast.BinOp("-", name("depth"), num("1"), AT),
                seq(call("Linear", name("width")), call("ReLU")),
                name="hidden",
            ),
            call("Linear", out=num("10"), name="head"),
        ),
        train=(
            ast.Setting("data", "mnist"),
            ast.Setting("steps", 500),
            ast.Setting("batch_size", 128),
            ast.Setting("lr", 0.05),
        ),
    )
    repeat = spec.network.items[1]
    assert (repeat.span.line, repeat.span.col) == (10, 5)
    assert (repeat.count.right.span.line, repeat.count.right.span.col) == (10, 21)
    assert (spec.params[1].span.line, spec.params[1].default.span.col) == (5, 10)


def test_resmlp_spec():
    spec = load_spec(SPECS / "resmlp.yaml")
    assert spec.name == "resmlp"
    assert [p.name for p in spec.params] == ["width", "depth"]
    flatten, embed, tare, head = spec.network.items
    assert flatten == call("Flatten")
    assert embed == call("Linear", out=name("width"), name="embed")
    assert isinstance(tare, ast.Tare) and tare.mass == num("2")
    residual = tare.body  # a list of one item is that item
    assert residual == ast.Residual(
        name("depth"),
        seq(call("Linear", name("width")), call("ReLU"), call("Linear", name("width"))),
        name="blocks",
    )
    assert head == call("Linear", out=num("10"), name="head")
    assert (residual.span.line, residual.span.col) == (16, 9)


def test_load_spec_errors(tmp_path: Path):
    with pytest.raises(ModcError, match="no such file: .*nope.yaml") as info:
        load_spec(tmp_path / "nope.yaml")
    assert info.value.span is None
    text = tmp_path / "net.modc"
    text.write_text("network = ReLU\n")
    with pytest.raises(ModcError, match="the spec needs an 'input'"):
        load_spec(text)
    other = tmp_path / "net.json"
    other.write_text("{}")
    with pytest.raises(ModcError, match=r"\.yaml, \.yml, \.modc"):
        load_spec(other)


# ---------------------------------------------------------------- item forms


def test_item_forms():
    spec = load(
        """
input: 784
network:
  - Flatten
  - Linear: [10, 20]
  - Conv: {out: 8, name: conv1}
  - [ReLU, [Tanh]]
  - sum: [[Identity], Linear: 4]
  - tuple: [ReLU, [GELU, ReLU]]
  - scale: 1/2
    body: ReLU
  - block: {inner: [ReLU], width: 2 * 3}
  - Dropout:
"""
    )
    assert spec.name == "net"
    assert spec.input == (num("784"),)
    assert spec.output is None
    assert spec.network == seq(
        call("Flatten"),
        call("Linear", num("10"), num("20")),
        call("Conv", out=num("8"), name="conv1"),
        seq(call("ReLU"), call("Tanh")),
        ast.Sum((call("Identity"), call("Linear", num("4")))),
        ast.Tuple((call("ReLU"), seq(call("GELU"), call("ReLU")))),
        ast.Scale(ast.BinOp("/", num("1"), num("2"), AT), call("ReLU")),
        call(
            "block",
            inner=call("ReLU"),
            width=ast.BinOp("*", num("2"), num("3"), AT),
        ),
        call("Dropout"),
    )


def test_defs_params_and_settings():
    spec = load(
        """
name: custom
params:
  width: 1_000
  shift: -3
  lr: 1e-3
  ratio: 5.0e-1
  half: 'width / 2'
input: [width]
network: [block: width]
defs:
  block:
    params: [d]
    body:
      - Linear: d
optimizer:
  lr: 1e-3
  betas: [0.9, 0.99]
  nesterov: true
"""
    )
    assert spec.name == "custom"
    defaults = {p.name: p.default for p in spec.params}
    assert defaults["width"] == num("1000")
    assert defaults["shift"] == ast.Neg(num("3"), AT)
    assert defaults["lr"] == num("1e-3")
    assert defaults["ratio"] == num("5.0e-1")
    assert defaults["half"] == ast.BinOp("/", name("width"), num("2"), AT)
    assert (defaults["half"].right.span.line, defaults["half"].right.span.col) == (
        8,
        18,
    )
    assert spec.defs == (ast.Def("block", ("d",), call("Linear", name("d"))),)
    assert spec.optimizer == (
        ast.Setting("lr", 0.001),
        ast.Setting("betas", (0.9, 0.99)),
        ast.Setting("nesterov", True),
    )
    assert evaluate(defaults["ratio"], {}) == sympy.Rational(1, 2)


# ---------------------------------------------------------------- errors at exact positions


def test_yaml_syntax_error():
    err = fails("input: [1, 2\nnetwork: [ReLU]\n")
    assert err.message == "invalid YAML: expected ',' or ']', but got ':'"
    assert where(err) == (2, 8)
    assert err.hint == "while parsing a flow sequence at line 1, column 8"


def test_duplicate_key_points_at_the_second():
    err = fails("input: 3\nnetwork: [ReLU]\ninput: 4\n")
    assert err.message == "duplicate key 'input'"
    assert where(err) == (3, 1)
    assert err.hint == "first given at line 1, column 1"


def test_unknown_top_level_key():
    err = fails("input: 3\nnetwrok: [ReLU]\n")
    assert err.message == "unknown key 'netwrok'"
    assert err.hint == "did you mean 'network'?"
    assert where(err) == (2, 1)
    assert err.render() == (
        "net.yaml:2:1: error: unknown key 'netwrok'\n"
        "  netwrok: [ReLU]\n"
        "  ^~~~~~~\n"
        "  note: did you mean 'network'?"
    )


def test_missing_network_is_reported_at_the_document_start():
    err = fails("# a comment\ninput: 3\n")
    assert err.message == "the spec needs a 'network'"
    assert where(err) == (2, 1)


def test_unknown_name_in_an_expression():
    spec = load("params:\n  width: 8\ninput: [widht * 2]\nnetwork: [Identity]\n")
    with pytest.raises(ModcError) as info:
        evaluate(spec.input[0], {"width": sympy.Integer(8)})
    assert info.value.message == "unknown name 'widht'"
    assert info.value.hint == "did you mean 'width'?"
    assert where(info.value) == (3, 9)


def test_expression_syntax_error_inside_a_quoted_string():
    err = fails("input: 3\nnetwork:\n  - Linear: 'width * (2 + )'\n")
    assert err.message == "unexpected ')'; expected a number, a name or '('"
    assert where(err) == (3, 27)


def test_bad_construct_keys():
    err = fails("input: 3\nnetwork:\n  - repeat: 2\n    bdy: [ReLU]\n")
    assert err.message == "unknown key 'bdy' in 'repeat'"
    assert err.hint == "did you mean 'body'?"
    assert where(err) == (4, 5)
    err = fails("input: 3\nnetwork:\n  - residual: 2\n    name: blocks\n")
    assert err.message == "'residual' needs a 'body'"
    assert where(err) == (3, 5)


def test_a_value_that_is_not_a_number():
    err = fails("input: 3\nnetwork:\n  - repeat: true\n    body: [ReLU]\n")
    assert err.message == "expected a number or an expression, got true"
    assert where(err) == (3, 13)


def test_call_written_as_text_suggests_a_mapping():
    err = fails("input: 3\nnetwork:\n  - Linear(3, 4)\n")
    assert err.message == "an operation with arguments is written as a mapping, not 'Linear(3, 4)'"
    assert err.hint == "write {Linear: [3, 4]}"
    assert where(err) == (3, 5)


def test_non_positive_size():
    spec = load("input: [1, 0]\nnetwork: [Identity]\n")
    size = spec.input[1]
    with pytest.raises(ModcError) as info:
        require_size(evaluate(size, {}), size.span, "an input size")
    assert info.value.message == "an input size must be a positive integer, got 0"
    assert where(info.value) == (1, 12)
