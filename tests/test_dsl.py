"""The DSL front end: statements, operators and their precedence, and parity with YAML."""

from __future__ import annotations

import pytest

from modc.source import Source, Span
from modc.spec import ast, load_spec
from tests.language import SPECS, dsl, yml

AT = Span(Source("x", ""), 1, 1)


def num(text: str) -> ast.Num:
    return ast.Num(text, AT)


def name(id: str) -> ast.Name:
    return ast.Name(id, AT)


def call(op: str, *args: ast.Arg, name: str | None = None, **kwargs: ast.Arg) -> ast.Call:
    return ast.Call(op, args, tuple(kwargs.items()), name)


def net(text: str, defs: str = "") -> ast.Term:
    """The network term of `network = TEXT`."""
    return dsl(f"{defs}\ninput 4\nnetwork = {text}\n").network


@pytest.mark.parametrize("stem", ["mlp", "resmlp"])
def test_shipped_dsl_specs_equal_their_yaml(stem):
    assert load_spec(SPECS / f"{stem}.modc") == load_spec(SPECS / f"{stem}.yaml")


def test_statements():
    spec = dsl(
        """
# a comment
name "demo"
include "lib.modc"
param width = 2 * 8   # trailing comment
param depth = width // 4
input (1, 28, 28)
output 10
def block(d) = Linear(d) > ReLU
def head = Linear(10, name=out)
network = Flatten > block(width) ** depth > head
train { data = mnist, steps = 5 lr = -1e-3 tag = "a \\"b\\"\\n" flag = true none = null }
optimizer { betas = [0.9, 0.99] kind = "dualized" }
"""
    )
    assert spec.name == "demo"
    assert spec.includes == (ast.Include("lib.modc"),)
    assert [p.name for p in spec.params] == ["width", "depth"]
    assert spec.params[1].default == ast.BinOp("//", name("width"), num("4"), AT)
    assert spec.input == (num("1"), num("28"), num("28"))
    assert spec.output == (num("10"),)
    assert spec.defs[0] == ast.Def(
        "block", ("d",), ast.Seq((call("Linear", name("d")), call("ReLU")))
    )
    assert spec.defs[1] == ast.Def("head", (), call("Linear", num("10"), name="out"))
    assert spec.network == ast.Seq(
        (call("Flatten"), ast.Repeat(name("depth"), call("block", name("width"))), call("head"))
    )
    assert dict((s.key, s.value) for s in spec.train) == {
        "data": "mnist",
        "steps": 5,
        "lr": -0.001,
        "tag": 'a "b"\n',
        "flag": True,
        "none": None,
    }
    assert spec.optimizer == (ast.Setting("betas", (0.9, 0.99)), ast.Setting("kind", "dualized"))
    assert isinstance(spec.train[1].value, int) and isinstance(spec.train[2].value, float)


def test_default_name_and_library_files():
    assert dsl("input 4\nnetwork = ReLU\n", name="dir/my_net.modc").name == "my_net"
    lib = dsl("def f = ReLU\n", library=True)
    assert lib.network is None and lib.input == () and lib.defs[0].name == "f"


def test_precedence_table():
    a, b, c = call("a"), call("b"), call("c")
    # > is loosest, then +, then *, then **
    assert net("a > b + c") == ast.Seq((a, ast.Sum((b, c))))
    assert net("a + b > c") == ast.Seq((ast.Sum((a, b)), c))
    assert net("2 * a + b") == ast.Sum((ast.Scale(num("2"), a), b))
    assert net("2 * a ** 3") == ast.Scale(num("2"), ast.Repeat(num("3"), a))
    assert net("a ** 2 > b") == ast.Seq((ast.Repeat(num("2"), a), b))
    # chains are flat; parentheses nest
    assert net("a > b > c") == ast.Seq((a, b, c))
    assert net("a > (b > c)") == ast.Seq((a, ast.Seq((b, c))))
    assert net("a + b + c") == ast.Sum((a, b, c))
    assert net("(a + b) + c") == ast.Sum((ast.Sum((a, b)), c))
    # arithmetic inside factors and counts keeps its own precedence
    assert net("(1 - 1/4) * a") == ast.Scale(
        ast.BinOp("-", num("1"), ast.BinOp("/", num("1"), num("4"), AT), AT), a
    )
    assert net("1/3 * a") == ast.Scale(ast.BinOp("/", num("1"), num("3"), AT), a)
    assert net("a ** 2^-1") == ast.Repeat(ast.BinOp("^", num("2"), ast.Neg(num("1"), AT), AT), a)
    # the factor may follow the network; `net / k` is (1/k) * net
    assert net("a(1) * 2") == ast.Scale(num("2"), call("a", num("1")))
    assert net("a(1) / 2") == ast.Scale(ast.BinOp("/", num("1"), num("2"), AT), call("a", num("1")))
    assert net("(a(1) > b) ** depth") == ast.Repeat(
        name("depth"), ast.Seq((call("a", num("1")), b))
    )


def test_tuples_blocks_and_calls():
    a, b = call("a"), call("b")
    assert net("(a, b)") == ast.Tuple((a, b))
    assert net("(a,)") == ast.Tuple((a,))
    assert net("(a, b,)") == ast.Tuple((a, b))
    assert net("(a)") == a
    assert net("repeat(3, name=r) { a > b }") == ast.Repeat(num("3"), ast.Seq((a, b)), "r")
    assert net("residual(L) { a }") == ast.Residual(name("L"), a)
    assert net("tare(5) { a ** 2 }") == ast.Tare(num("5"), ast.Repeat(num("2"), a))
    assert net("Conv2D(8, 3, padding=1, name=c1)") == call(
        "Conv2D", num("8"), num("3"), padding=num("1"), name="c1"
    )
    assert net("Linear(mass=2, out=4)") == call("Linear", mass=num("2"), out=num("4"))


def test_arguments_are_numbers_when_plain_arithmetic():
    args = net("f(w, 2 * w, max(w, 3), ReLU(), a > b, (a, b), 2 * g(), x ** 2)").args
    assert args[0] == name("w")
    assert args[1] == ast.BinOp("*", num("2"), name("w"), AT)
    assert args[2] == ast.Func("max", (name("w"), num("3")), AT)
    assert args[3] == call("ReLU")
    assert args[4] == ast.Seq((call("a"), call("b")))
    assert args[5] == ast.Tuple((call("a"), call("b")))
    assert args[6] == ast.Scale(num("2"), call("g"))
    assert args[7] == ast.BinOp("^", name("x"), num("2"), AT)


def test_spans_point_at_the_text():
    spec = dsl("input 4\nnetwork = Flatten\n    > Linear(10, name=head) ** depth\n")
    flatten, rep = spec.network.items
    assert (flatten.span.line, flatten.span.col) == (2, 11)
    assert (rep.span.line, rep.span.col, rep.span.width) == (3, 29, 2)
    assert (rep.body.span.line, rep.body.span.col, rep.body.span.width) == (3, 7, 6)
    assert (rep.count.span.line, rep.count.span.col) == (3, 32)


def test_yaml_forms_added_for_parity():
    spec = yml(
        """
include: std/mlp.modc
input: 4
network:
  - Linear: 10
    mass: 2
    name: head
  - f: [[ReLU]]
"""
    )
    assert spec.includes == (ast.Include("std/mlp.modc"),)
    assert spec.network == ast.Seq(
        (call("Linear", num("10"), mass=num("2"), name="head"), call("f", call("ReLU")))
    )
    text = 'include "std/mlp.modc"\ninput 4\nnetwork = Linear(10, mass=2, name=head) > f(ReLU())\n'
    assert dsl(text) == spec


def test_readme_shows_the_same_network_in_both_forms():
    text = (SPECS.parent / "README.md").read_text()
    section = text.split("## Language", 1)[1].split("\n## ", 1)[0]
    modc_text = section.split("```\n", 2)[1].split("```", 1)[0]
    yaml_text = section.split("```yaml\n", 1)[1].split("```", 1)[0]
    assert dsl(modc_text) == yml(yaml_text)
