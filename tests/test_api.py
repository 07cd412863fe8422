"""modc.api: a network built in Python equals its `.modc` and YAML forms (AST, module IR,
targets and bounds), over random networks and for the shipped specs; errors point at the
Python line; a Python spec compiles, builds and trains like a spec file."""

from __future__ import annotations

import dataclasses
import random
from fractions import Fraction

import pytest
import torch

from modc import api as m
from modc.errors import ModcError
from modc.graph.elaborate import elaborate
from modc.graph.view import tree
from modc.spec import ast, load_spec
from modc.spec.print_yaml import to_yaml
from modc.theory.analysis import analyze
from tests.language import SPECS, dsl, network_signature, yml

# ---------------------------------------------------------------- the shipped specs in Python


def mlp_spec() -> ast.Spec:
    width, depth = m.param("width", 256), m.param("depth", 3)
    net = (
        m.Flatten
        >> m.repeat(depth - 1, m.Linear(width) >> m.ReLU, name="hidden")
        >> m.Linear(out=10, name="head")
    )
    train = {"data": "mnist", "steps": 500, "batch_size": 128, "lr": 0.05}
    return m.spec(net, name="mlp", input=(1, 28, 28), output=10, train=train)


def resmlp_spec() -> ast.Spec:
    width, depth = m.param("width", 256), m.param("depth", 4)
    block = m.Linear(width) >> m.ReLU >> m.Linear(width)
    net = (
        m.Flatten
        >> m.Linear(out=width, name="embed")
        >> m.tare(2, m.residual(depth, block, name="blocks"))
        >> m.Linear(out=10, name="head")
    )
    train = {"data": "mnist", "steps": 600, "batch_size": 128, "lr": 0.05}
    return m.spec(net, name="resmlp", input=(1, 28, 28), output=10, train=train)


# std/attention.modc and std/gpt.modc, definition by definition


@m.define
def heads_of(width, heads):
    return m.Linear(width) >> m.SplitHeads(heads)


@m.define
def scores(width, heads):
    q, k = heads_of(width, heads) >> m.RoPE, heads_of(width, heads) >> m.RoPE
    return (q, k) >> m.AttentionQK >> m.CausalMask >> m.Softmax


@m.define
def attention(width, heads):
    values = (heads_of(width, heads), scores(width, heads))
    return values >> Fraction(1, 3) * m.ApplyScores >> m.MergeHeads >> m.Linear(width)


@m.define
def gelu_mlp(width):
    return m.Linear(4 * width) >> m.GELU >> m.Linear(width)


@m.define
def transformer_block(width, heads, a):
    return (1 - a) * m.Identity + a * attention(width, heads) >> (
        (1 - a) * m.Identity + a * gelu_mlp(width)
    )


@m.define
def gpt(vocab, width, depth, heads):
    blocks = m.repeat(depth, transformer_block(width, heads, 1 / (2 * depth)), name="blocks")
    return m.Embed(vocab, width, name="embed") >> m.tare(5, blocks) >> m.Linear(vocab, name="head")


def gpt_spec() -> ast.Spec:
    vocab, width, depth = m.param("vocab", 128), m.param("width", 128), m.param("depth", 4)
    heads, context = m.param("heads", 4), m.param("context", 64)
    train = {"data": "shakespeare", "steps": 1000, "batch_size": 32, "lr": 0.05}
    net = gpt(vocab, width, depth, heads)
    return m.spec(net, name="gpt", input=context, train=train)


def gpt_from_the_library() -> ast.Spec:
    """The same GPT, from the standard library's definitions included in Python."""
    std = m.include("std/gpt.modc")
    vocab, width, depth = m.param("vocab", 128), m.param("width", 128), m.param("depth", 4)
    heads, context = m.param("heads", 4), m.param("context", 64)
    train = {"data": "shakespeare", "steps": 1000, "batch_size": 32, "lr": 0.05}
    net = std.gpt(vocab, width, depth, heads)
    return m.spec(net, name="gpt", input=context, train=train)


def attention_spec() -> ast.Spec:
    width = m.param("width", 128)
    heads = m.param("heads", 4)
    context = m.param("context", 64)
    return m.spec(attention(width, heads), name="attention", input=(context, width))


def transformer_spec() -> ast.Spec:
    width = m.param("width", 128)
    depth = m.param("depth", 4)
    heads = m.param("heads", 4)
    context = m.param("context", 64)
    block = transformer_block(width, heads, 1 / (2 * depth))
    net = m.repeat(depth, block, name="blocks")
    return m.spec(net, name="transformer", input=(context, width))


@m.define
def clipped_heads(width, heads):
    return heads_of(width, heads) >> m.RMSClip


@m.define
def clipped_attention(width, heads):
    q, k = clipped_heads(width, heads) >> m.RoPE, clipped_heads(width, heads) >> m.RoPE
    weights = (q, k) >> m.AttentionQK >> m.CausalMask >> m.Softmax
    values = (clipped_heads(width, heads), weights)
    return values >> Fraction(1, 3) * m.ApplyScores >> m.MergeHeads >> m.Linear(width)


@m.define
def clipped_block(width, heads, a):
    return (1 - a) * m.Identity + a * clipped_attention(width, heads) >> (
        (1 - a) * m.Identity + a * gelu_mlp(width)
    )


def gpt_clipped_spec() -> ast.Spec:
    vocab, width, depth = m.param("vocab", 128), m.param("width", 128), m.param("depth", 4)
    heads, context = m.param("heads", 4), m.param("context", 64)
    train = {"data": "shakespeare", "steps": 1000, "batch_size": 32, "lr": 0.05}
    block = clipped_block(width, heads, 1 / (2 * depth))
    blocks = m.repeat(depth, block, name="blocks")
    net = m.Embed(vocab, width, name="embed") >> m.tare(5, blocks) >> m.Linear(vocab, name="head")
    return m.spec(net, name="gpt_clipped", input=context, train=train)


@m.define
def conv_block(channels):
    return m.Conv2D(channels, 3, padding=1) >> m.ReLU >> m.AvgPool(2)


@m.define
def cnn(channels, out):
    blocks = conv_block(channels) >> conv_block(2 * channels)
    return blocks >> m.Flatten >> m.Linear(out, name="head")


def cnn_spec() -> ast.Spec:
    channels = m.param("channels", 16)
    train = {"data": "mnist", "steps": 500, "batch_size": 128, "lr": 0.05}
    return m.spec(cnn(channels, 10), name="cnn", input=(1, 28, 28), output=10, train=train)


SHIPPED = [
    ("attention.modc", attention_spec),
    ("attention.yaml", attention_spec),
    ("transformer.modc", transformer_spec),
    ("transformer.yaml", transformer_spec),
    ("gpt_clipped.modc", gpt_clipped_spec),
    ("cnn.modc", cnn_spec),
    ("cnn.yaml", cnn_spec),
    ("mlp.modc", mlp_spec),
    ("mlp.yaml", mlp_spec),
    ("resmlp.modc", resmlp_spec),
    ("resmlp.yaml", resmlp_spec),
    ("gpt.modc", gpt_spec),
    ("gpt.yaml", gpt_spec),
    ("gpt.modc", gpt_from_the_library),
]


@pytest.mark.parametrize("file, make", SHIPPED, ids=[f"{f}-{make.__name__}" for f, make in SHIPPED])
def test_the_shipped_specs_written_in_python_equal_their_files(file, make):
    from_file = dataclasses.replace(load_spec(SPECS / file), includes=())  # defs resolved
    built = make()
    used = {d.name for d in built.defs}  # a library's definitions the network does not call
    called = dataclasses.replace(from_file, defs=tuple(d for d in from_file.defs if d.name in used))
    assert by_name(built) == by_name(called)
    assert_same_network(built, from_file)


# ---------------------------------------------------------------- random networks


DEPTH = 4  # levels of combinators; the top one is never a single operation


class Recipe:
    """A random network on (3, width) that keeps its input's shape, attention among its
    parts, made twice: with modc.api, and as .modc text written independently here (every
    compound part in parentheses)."""

    def __init__(self, seed: int):
        self.rng = random.Random(seed)
        self.width, self.depth = m.param("width", 8), m.param("depth", 2)
        self.names = 0
        self.defs: dict[str, str] = {}

    def fresh(self) -> str:
        self.names += 1
        return f"n{self.names}"

    def leaf(self) -> tuple[m.Net, str]:
        w, pick = self.width, self.rng.randrange(11)
        if pick == 0:
            return m.Linear(w), "Linear(width)"
        if pick == 1:
            return m.Linear(out=w, mass=Fraction(1, 2)), "Linear(out=width, mass=1 / 2)"
        if pick == 2:
            name = self.fresh()
            return m.Linear(w, name=name, mass=3), f"Linear(width, name={name}, mass=3)"
        if pick == 3:
            self.defs["blk"] = "def blk(d) = Linear(2 * d) > GELU > Linear(d)"
            return blk(w), "blk(width)"
        if pick == 4:
            return m.GELU(), "GELU()"
        if pick == 10:
            self.defs["heads_of"] = "def heads_of(width, heads) = Linear(width) > SplitHeads(heads)"
            self.defs["attn"] = (
                "def attn(d) = (heads_of(d, 2), (heads_of(d, 2), heads_of(d, 2)) > AttentionQK"
                " > CausalMask > Softmax) > ApplyScores > MergeHeads"
            )
            return attn(w), "attn(width)"
        op = ["ReLU", "Bias", "Gain", "Identity", "LayerNorm"][pick - 5]
        return getattr(m, op), f"{op}()"

    def network(self, depth: int) -> tuple[m.Net, str]:
        if depth == 0 or (depth < DEPTH and self.rng.random() < 0.25):
            return self.leaf()
        pick, rng = self.rng.randrange(10), self.rng
        count = rng.randint(2, 3) if pick < 3 else 1  # only parts that are used: their defs
        parts = [self.network(depth - 1) for _ in range(count)]
        nets, texts = [p[0] for p in parts], [f"({p[1]})" for p in parts]
        a, ta = nets[0], texts[0]
        if pick == 0:  # composition, three ways
            if rng.random() < 0.5:
                return m.seq(*nets), " > ".join(texts)
            if rng.random() < 0.5:
                return _fold(lambda x, y: x >> y, [m.group(n) for n in nets]), " > ".join(texts)
            return _fold(lambda x, y: y @ x, [m.group(n) for n in nets]), " > ".join(texts)
        if pick == 1:
            return _fold(lambda x, y: x + y, [m.group(n) for n in nets]), " + ".join(texts)
        if pick == 2:
            return (*nets,) >> m.Add, f"({', '.join(texts)}) > Add"
        if pick == 3:
            factor, text = rng.choice(
                [(0.5, "0.5"), (Fraction(1, 3), "1 / 3"), (1 / m.num(3), "1 / 3"), (2, "2")]
            )
            if rng.random() < 0.5:
                return factor * a, f"{text} * {ta}"
            return a * factor, f"{ta} * ({text})"
        if pick == 4:
            return a / 4, f"{ta} / 4"
        if pick == 5:
            return a**2, f"{ta} ** 2"
        if pick == 6:
            name = self.fresh()
            return m.repeat(self.depth, a, name=name), f"repeat(depth, name={name}) {{ {ta} }}"
        if pick == 7:
            return m.residual(self.depth + 1, a), f"residual(depth + 1) {{ {ta} }}"
        if pick == 8:
            return m.tare(3, a), f"tare(3) {{ {ta} }}"
        self.defs["wrap"] = "def wrap(f) = Gain > f"
        return wrap(a), f"wrap({ta})"

    def forms(self) -> tuple[ast.Spec, str]:
        net, text = self.network(DEPTH)
        shape = (3, self.width)  # three positions: attention has some to mix
        built = m.spec(net, name="rand", input=shape, params=[self.width, self.depth])
        lines = ['name "rand"', "param width = 8", "param depth = 2", "input (3, width)"]
        return built, "\n".join([*lines, *self.defs.values(), f"network = {text}"]) + "\n"


@m.define
def blk(d):
    return m.Linear(2 * d) >> m.GELU >> m.Linear(d)


@m.define
def wrap(f):
    return m.Gain >> f


@m.define
def attn(d):
    weights = (heads_of(d, 2), heads_of(d, 2)) >> m.AttentionQK >> m.CausalMask >> m.Softmax
    return (heads_of(d, 2), weights) >> m.ApplyScores >> m.MergeHeads


def _other_blk(d):
    return m.Linear(d)


_other_blk.__name__ = "blk"  # another definition of the same name


def _fold(op, items):
    out = items[0]
    for item in items[1:]:
        out = op(out, item)
    return out


def by_name(spec: ast.Spec) -> ast.Spec:
    return dataclasses.replace(spec, defs=tuple(sorted(spec.defs, key=lambda d: d.name)))


def test_random_networks_in_python_equal_their_modc_and_yaml_forms(trials):
    for seed in range(trials or 100):
        built, text = Recipe(seed).forms()
        written = dsl(text)
        assert by_name(built) == by_name(written), text
        as_yaml = yml(to_yaml(written))
        assert by_name(as_yaml) == by_name(built), text
        assert_same_network(built, written)


def without_sources(node: dict) -> dict:
    return {
        k: [without_sources(c) for c in v] if k == "children" else v
        for k, v in node.items()
        if k != "source"
    }


def assert_same_network(a: ast.Spec, b: ast.Spec) -> None:
    """The same module IR (as view.tree prints it), mass, sensitivity, targets, bounds (in
    both norms, and the smoothness) and conditions."""
    na, nb = elaborate(a), elaborate(b)
    assert network_signature(na) == network_signature(nb)
    assert without_sources(tree(na.root)) == without_sources(tree(nb.root))
    ta, tb = analyze(na), analyze(nb)
    assert (ta.mass, ta.sensitivity, ta.lipschitz) == (tb.mass, tb.sensitivity, tb.lipschitz)
    assert ta.lipschitz_l2 == tb.lipschitz_l2
    assert ta.sharpness.smoothness == tb.sharpness.smoothness
    atoms_a = [(x.path, x.kind, x.mass, x.target) for x in ta.atoms]
    assert atoms_a == [(x.path, x.kind, x.mass, x.target) for x in tb.atoms]
    assert [(c.op, c.text) for c in ta.conditions] == [(c.op, c.text) for c in tb.conditions]


# ---------------------------------------------------------------- the Python side


def test_a_mistake_is_reported_at_the_python_line():
    net = m.Linear(4) >> m.Conv2D(2, 3)  # the shape mismatch is the point
    line = test_a_mistake_is_reported_at_the_python_line.__code__.co_firstlineno + 1
    with pytest.raises(ModcError) as err:
        m.load(net, input=6)
    assert err.value.span.source.name == __file__
    assert err.value.span.line == line
    rendered = err.value.render()
    assert f"test_api.py:{line}:" in rendered and "m.Conv2D(2, 3)" in rendered
    with pytest.raises(ModcError, match="Linear has no argument 'outs'"):
        m.load(m.Linear(outs=3), input=6)


def test_python_mistakes_are_python_errors():
    with pytest.raises(TypeError, match="write a >> b"):
        m.Linear(4) > m.ReLU  # noqa: B015 - the comparison is the mistake
    with pytest.raises(AttributeError, match="did you mean 'Linear'"):
        m.Lineer  # noqa: B018
    with pytest.raises(TypeError, match="no truth value"):
        bool(m.param("w", 3))
    with pytest.raises(ValueError, match="finite"):
        m.Linear(float("inf"))
    with pytest.raises(AttributeError, match="did you mean 'gpt'"):
        m.include("std/gpt.modc").gtp  # noqa: B018
    with pytest.raises(ModcError, match="cannot include 'std/nope.modc'"):
        m.include("std/nope.modc")
    with pytest.raises(ValueError, match="two different definitions of 'width'"):
        m.param("width", 256) + m.param("width", 128)
    with pytest.raises(ValueError, match="two different definitions of 'blk'"):
        blk(4) >> m.define(_other_blk)(4)

    def twice(repeat):
        return m.Linear(repeat) ** 2

    with pytest.raises(ValueError, match="'repeat' is an operation, a keyword"):
        m.define(twice)
    with pytest.raises(ValueError, match="leaves out width"):
        m.spec(m.Linear(m.param("width", 3)), input=4, params=[])


def test_a_python_spec_builds_trains_and_takes_overrides(tmp_path):
    width = m.param("width", 16)
    net = m.Flatten >> m.Linear(width) >> m.ReLU >> m.Linear(out=3, name="head")
    spec = m.spec(net, name="tiny", input=(2, 4), output=3)
    network, analysis = m.load(spec, params={"width": 32})
    assert network.params["width"] == 32 and len(analysis.atoms) == 2
    build = m.build(spec, out=tmp_path / "tiny", params={"width": 32})
    assert "tiny" in (tmp_path / "tiny" / "model.py").read_text()
    torch.manual_seed(0)
    model = build.model.build_model()
    optimizer = build.optimizer.make_optimizer(model, lr=0.5)
    x, y = torch.randn(64, 2, 4), torch.randint(3, (64,))
    losses = []
    for _ in range(20):
        loss = torch.nn.functional.cross_entropy(model(x), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.7 * losses[0]
