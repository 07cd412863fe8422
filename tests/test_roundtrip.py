"""`modc convert` round trips: DSL → YAML → DSL and back give the same AST and module IR,
for generated specs (hypothesis, derandomized) and for every shipped spec."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from modc.cli import main
from modc.graph.elaborate import elaborate
from modc.source import Source, Span
from modc.spec import ast, load_spec, parse_file
from modc.spec.print_dsl import to_dsl
from modc.spec.print_yaml import to_yaml
from tests.language import SPECS, STDLIB, dsl, network_signature, yml

AT = Span(Source("gen", ""), 1, 1)
SETTINGS = settings(
    max_examples=200,
    derandomize=True,
    phases=[Phase.explicit, Phase.generate],  # no shrinking: CI time stays bounded
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

# Names a researcher might use, and some that YAML would read as something else.
PARAMS = ["width", "depth", "on", "yes", "null", "input", "name", "train", "x1", "_h"]
OPS = ["Linear", "ReLU", "GELU", "Identity", "Conv2D", "blk", "f_2", "no", "true"]
KEYS = ["out", "mass", "padding", "body", "stride", "inner", "off"]
NUMBERS = ["0", "1", "10", "256", "0.5", "1e-3", "2.", ".25", "010", "1e+5"]


def exprs() -> st.SearchStrategy[ast.Expr]:
    """Arithmetic expressions as the front ends build them (numbers unsigned)."""
    leaves = st.one_of(
        st.sampled_from(NUMBERS).map(lambda t: ast.Num(t, AT)),
        st.sampled_from(PARAMS).map(lambda n: ast.Name(n, AT)),
    )

    def grow(inner):
        return st.one_of(
            st.builds(
                lambda op, a, b: ast.BinOp(op, a, b, AT),
                st.sampled_from(["+", "-", "*", "/", "//", "%", "^"]),
                inner,
                inner,
            ),
            inner.map(lambda a: ast.Neg(a, AT)),
            st.builds(lambda a: ast.Func("sqrt", (a,), AT), inner),
            st.lists(inner, min_size=1, max_size=3).map(lambda xs: ast.Func("max", tuple(xs), AT)),
        )

    return st.recursive(leaves, grow, max_leaves=5)


EXPRS = exprs()


def terms() -> st.SearchStrategy[ast.Term]:
    """Network terms in the form both front ends produce (no sequences of fewer than two)."""
    names = st.none() | st.sampled_from(["head", "blocks", "off", "q"])
    bare = st.sampled_from(OPS).map(lambda op: ast.Call(op, span=AT))

    def grow(inner):
        args = st.lists(EXPRS | inner, max_size=3)
        kwargs = st.dictionaries(st.sampled_from(KEYS), EXPRS | inner, max_size=2)
        call = st.builds(
            lambda op, a, k, n: ast.Call(op, tuple(a), tuple(k.items()), n, AT),
            st.sampled_from(OPS),
            args,
            kwargs,
            names,
        )
        several = st.lists(inner, min_size=2, max_size=3).map(tuple)
        return st.one_of(
            call,
            several.map(lambda xs: ast.Seq(xs, AT)),
            several.map(lambda xs: ast.Sum(xs, AT)),
            st.lists(inner, min_size=1, max_size=3).map(lambda xs: ast.Tuple(tuple(xs), AT)),
            st.builds(lambda f, b: ast.Scale(f, b, AT), EXPRS, inner),
            st.builds(lambda c, b, n: ast.Repeat(c, b, n, AT), EXPRS, inner, names),
            st.builds(lambda c, b, n: ast.Residual(c, b, n, AT), EXPRS, inner, names),
            st.builds(lambda m, b: ast.Tare(m, b, AT), EXPRS, inner),
        )

    return st.recursive(bare, grow, max_leaves=8)


TERMS = terms()


values = st.one_of(
    st.integers(-(10**20), 10**20),
    st.floats(allow_nan=False, allow_infinity=False),
    st.booleans(),
    st.none(),
    st.text(min_size=0, max_size=12),
    st.sampled_from(["mnist", "true", "yes", "1e5", "a b", "x: y", "#", "é", "\u2028"]),
)
plain_values = values | st.lists(values.filter(lambda v: True), max_size=3).map(tuple)


SECTION = st.dictionaries(
    st.sampled_from(["lr", "steps", "data", "on", "name", "train", "betas"]),
    plain_values,
    max_size=4,
).map(lambda d: tuple(ast.Setting(k, v, AT) for k, v in d.items()))


@st.composite
def specs(draw) -> ast.Spec:
    """Whole specs: parameters, sizes, definitions, a network, settings and includes."""
    params = draw(st.lists(st.sampled_from(PARAMS), unique=True, max_size=4))
    def_names = draw(st.lists(st.sampled_from(["block", "head", "mlp_2", "att"]), unique=True))
    defs = tuple(
        ast.Def(
            n,
            tuple(draw(st.lists(st.sampled_from(PARAMS), unique=True, max_size=3))),
            draw(TERMS),
            AT,
        )
        for n in def_names
    )
    return ast.Spec(
        name=draw(st.text(min_size=1, max_size=10) | st.sampled_from(["gpt", "yes", "a-b"])),
        params=tuple(ast.Param(p, draw(EXPRS), AT) for p in params),
        input=tuple(draw(st.lists(EXPRS, min_size=1, max_size=3))),
        network=draw(TERMS),
        defs=defs,
        output=draw(st.none() | st.lists(EXPRS, min_size=1, max_size=2).map(tuple)),
        train=draw(SECTION),
        optimizer=draw(SECTION),
        includes=tuple(
            ast.Include(p, AT)
            for p in draw(st.lists(st.sampled_from(["std/mlp.modc", "lib/a b.yaml"]), max_size=2))
        ),
    )


def _settings_typed(spec: ast.Spec) -> list:
    """Setting values with their types (1 == 1.0 == True in Python; the types must match)."""
    return [(s.key, type(s.value), s.value) for s in (*spec.train, *spec.optimizer)]


@SETTINGS
@given(specs())
def test_generated_specs_round_trip_through_both_forms(spec):
    as_dsl = dsl(to_dsl(spec))
    assert as_dsl == spec
    as_yaml = yml(to_yaml(spec))
    assert as_yaml == spec
    assert _settings_typed(as_dsl) == _settings_typed(spec) == _settings_typed(as_yaml)
    assert dsl(to_dsl(as_yaml)) == spec and yml(to_yaml(as_dsl)) == spec


SHIPPED = sorted(SPECS.glob("*.modc")) + sorted(SPECS.glob("*.yaml"))


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.name)
def test_shipped_specs_convert_to_identical_ir(path: Path, tmp_path: Path, capsys):
    there, back = ("yaml", "modc") if path.suffix == ".modc" else ("modc", "yaml")
    middle = tmp_path / f"{path.stem}.{there}"
    again = tmp_path / f"again.{back}"
    assert main(["convert", str(path), "--to", there, "-o", str(middle)]) == 0
    assert main(["convert", str(middle), "--to", back, "-o", str(again)]) == 0
    original = load_spec(path)
    assert load_spec(middle) == original
    assert load_spec(again) == original
    ir = [network_signature(elaborate(load_spec(p))) for p in (path, middle, again)]
    assert ir[0] == ir[1] == ir[2]


@pytest.mark.parametrize("path", sorted(STDLIB.glob("*.modc")), ids=lambda p: p.name)
def test_standard_library_converts_to_yaml_and_back(path: Path):
    spec = parse_file(path, library=True)
    assert yml(to_yaml(spec), library=True) == spec
    assert dsl(to_dsl(spec), library=True) == spec
