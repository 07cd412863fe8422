"""modc.dualized on models written in plain torch: placement, the norm of every update,
torch.optim conventions, and a nanoGPT-style model that trains on Shakespeare."""

from __future__ import annotations

import copy
import io
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import modc
from modc.ops import OPS
from modc.optim import PlacementError
from modc.runtime.optim import WEIGHT_AXES, Combined, Dualized
from tests.conftest import SPECS

pytestmark = pytest.mark.usefixtures("one_thread")

SHAKESPEARE = Path(modc.__file__).parent / "data" / "shakespeare.txt"

# --- a nanoGPT-style model, in plain torch -------------------------------------------------


class SelfAttention(nn.Module):
    def __init__(self, width: int, heads: int):
        super().__init__()
        self.heads = heads
        self.q, self.k, self.v = (nn.Linear(width, width) for _ in range(3))
        self.proj = nn.Linear(width, width)

    def qkv(self) -> tuple[nn.Linear, ...]:
        return self.q, self.k, self.v

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, c = x.shape
        q, k, v = (f(x).view(b, t, self.heads, -1).transpose(1, 2) for f in self.qkv())
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        return self.proj(y.transpose(1, 2).reshape(b, t, c))


class Block(nn.Module):
    def __init__(self, width: int, heads: int):
        super().__init__()
        self.ln1, self.ln2 = nn.LayerNorm(width), nn.LayerNorm(width)
        self.attn = SelfAttention(width, heads)
        self.mlp = nn.Sequential(
            nn.Linear(width, 4 * width), nn.GELU(), nn.Linear(4 * width, width)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.ln1(x))
        return x + self.mlp(self.ln2(x))


class GPT(nn.Module):
    def __init__(self, vocab=256, width=64, depth=2, heads=4, context=32, tied=False):
        super().__init__()
        self.tok = nn.Embedding(vocab, width)
        self.pos = nn.Embedding(context, width)
        self.blocks = nn.Sequential(*(Block(width, heads) for _ in range(depth)))
        self.ln_f = nn.LayerNorm(width)
        self.head = nn.Linear(width, vocab, bias=False)
        if tied:
            self.head.weight = self.tok.weight
        for m in self.modules():  # nanoGPT's initialisation
            if isinstance(m, (nn.Linear, nn.Embedding)):
                nn.init.normal_(m.weight, std=0.02)

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        x = self.tok(idx) + self.pos(torch.arange(idx.shape[1]))
        return self.head(self.ln_f(self.blocks(x)))


TEXT = torch.frombuffer(bytearray(SHAKESPEARE.read_bytes()), dtype=torch.uint8).long()


def batch(step: int, size: int = 16, context: int = 32) -> tuple[torch.Tensor, torch.Tensor]:
    """Random windows of Shakespeare's bytes, a function of the step."""
    gen = torch.Generator().manual_seed(step)
    starts = torch.randint(len(TEXT) - context - 1, (size,), generator=gen)
    x = torch.stack([TEXT[s : s + context] for s in starts])
    y = torch.stack([TEXT[s + 1 : s + context + 1] for s in starts])
    return x, y


def loss_of(model: GPT, step: int) -> torch.Tensor:
    x, y = batch(step, context=model.pos.num_embeddings)
    return F.cross_entropy(model(x).flatten(0, 1), y.flatten())


@pytest.mark.parametrize("tied", [False, True])
def test_a_plain_torch_gpt_trains_with_the_documented_api(tied):
    torch.manual_seed(0)
    model = GPT(tied=tied)
    optimizer = modc.dualized(model, lr=1.0)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: min(1, (step + 1) / 5))
    losses = []
    for step in range(40):
        loss = loss_of(model, step)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        schedule.step()
        losses.append(loss.item())
    first, last = losses[0], sum(losses[-5:]) / 5
    assert first > 5.3  # ln 256 ≈ 5.55: uniform over bytes at the start
    assert last < first - 2.0, losses


def test_every_update_has_norm_lr_times_its_target():
    """Each atom's update, computed and measured in float32, has norm lr · target in its
    own norm: the step has modular norm lr. The tied weight is a Linear atom, its Embed norm
    under the target. (Polar Express in float32 puts every singular value within 1e-5 of 1
    from above: tests/test_polar.py.)"""
    torch.manual_seed(1)
    model = GPT(tied=True, width=32, context=16)
    lr = 0.3
    optimizer = modc.dualized(model, lr=lr, polar={"dtype": torch.float32})
    placed = modc.atoms(model)
    kinds = {a.kind for a in placed}
    assert kinds == {"Linear", "Bias", "Embed", "Gain"}
    assert [a.kind for a in placed if a.name == "tok.weight"] == ["Linear"]
    assert sum(a.target for a in placed) == pytest.approx(1)
    for step in range(3):  # with momentum: the dual map of the Nesterov direction
        before = {a.name: a.param.detach().clone() for a in placed}
        loss_of(model, step).backward()
        optimizer.step()
        optimizer.zero_grad()
        ratios = []
        for a in placed:
            update = before[a.name] - a.param.detach()
            size = OPS[a.kind].norm(update)
            assert size == pytest.approx(lr * a.target, rel=1e-4), a
            ratios.append(size / a.target)
        assert max(ratios) == pytest.approx(lr, rel=1e-4)  # the modular norm of the step
        tied = before["tok.weight"] - model.tok.weight.detach()
        assert OPS["Embed"].norm(tied) <= lr * placed[0].target * (256**0.5 / 32) * 1.02


def test_conv_networks_are_placed_per_tap():
    torch.manual_seed(2)
    model = nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(8 * 6 * 6, 4)
    )
    optimizer = modc.dualized(model, lr=0.5, masses={"0": 2})
    placed = modc.atoms(model, masses={"0": 2})
    assert [(a.name, a.kind) for a in placed] == [
        ("0.weight", "Conv2D"),
        ("0.bias", "Bias"),
        ("3.weight", "Linear"),
        ("3.bias", "Bias"),
    ]
    assert [a.mass for a in placed] == [1, 1, 1, 1]  # the conv's two atoms tared to 2
    before = [a.param.detach().clone() for a in placed]
    model(torch.randn(5, 3, 6, 6)).square().mean().backward()
    optimizer.step()
    for a, old in zip(placed, before, strict=True):
        assert OPS[a.kind].norm(old - a.param.detach()) == pytest.approx(0.5 * a.target, rel=0.02)


def test_masses_tare_modules_and_set_atoms():
    model = GPT(depth=2)
    placed = {a.name: a for a in modc.atoms(model, {"blocks": 5, "head.weight": 2})}
    inside = [a for n, a in placed.items() if n.startswith("blocks.")]
    assert sum(a.mass for a in inside) == pytest.approx(5)
    assert len({a.mass for a in inside}) == 1  # shared equally: every atom had mass 1
    assert placed["head.weight"].mass == 2 and placed["tok.weight"].mass == 1
    total = 5 + 2 + 1 + 1 + 2  # blocks, head, tok, pos, ln_f's gain and bias
    assert placed["head.weight"].target == pytest.approx(2 / total)
    nested = modc.atoms(model, {"blocks": 5, "blocks.0.attn": 3})
    attn = [a for a in nested if a.name.startswith("blocks.0.attn.")]
    blocks = [a for a in nested if a.name.startswith("blocks.")]
    assert sum(a.mass for a in blocks) == pytest.approx(5)
    share = sum(a.mass for a in attn) / sum(a.mass for a in blocks)
    assert share == pytest.approx(3 / (3 + 8 + 16))  # 8 other atoms in block 0, 16 in block 1


def test_a_parameter_it_cannot_place_is_named_with_the_ways_to_place_it():
    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.pos = nn.Parameter(torch.zeros(8, 16))
            self.attn = nn.MultiheadAttention(16, 2)
            self.norm = nn.BatchNorm1d(16)
            self.out = nn.Linear(16, 4)

    with pytest.raises(PlacementError) as err:
        modc.dualized(Net(), lr=0.1)
    message = str(err.value)
    for name in ("pos (8, 16)", "attn.in_proj_weight", "attn.in_proj_bias", "norm.weight"):
        assert name in message
    assert "attn.out_proj.weight" not in message  # an nn.Linear inside: placed
    assert "kinds=" in message and "extra=" in message
    optimizer = modc.dualized(
        Net(), lr=0.1, kinds={"pos": "Embed"}, extra=["attn.in_proj_*", "norm.*"]
    )
    assert isinstance(optimizer, Combined)
    adamw = optimizer.parts[1]
    assert isinstance(adamw, torch.optim.AdamW) and len(adamw.param_groups[0]["params"]) == 4
    with pytest.raises(PlacementError, match="a Bias weight has 1 axes"):
        modc.atoms(Net(), kinds={"pos": "Bias"}, extra=["attn.*", "norm.*"])
    with pytest.raises(PlacementError, match="did you mean 'blocks'"):
        modc.atoms(GPT(), masses={"block": 5})
    with pytest.raises(PlacementError, match="must be positive"):
        modc.atoms(GPT(), masses={"blocks": 0})
    grouped = nn.Sequential(nn.Conv2d(4, 4, 3, groups=2))
    with pytest.raises(PlacementError, match="groups=1 and a square kernel"):
        modc.atoms(grouped)


def test_frozen_parameters_are_left_alone_and_shared_modules_are_one_atom():
    model = nn.Sequential(nn.Linear(4, 4), nn.Linear(4, 2))
    model[0].requires_grad_(False)
    assert [a.name for a in modc.atoms(model)] == ["1.weight", "1.bias"]
    layer = nn.Linear(4, 4, bias=False)
    shared = nn.Sequential(layer, nn.ReLU(), layer)
    assert [(a.name, a.kind, a.target) for a in modc.atoms(shared)] == [("0.weight", "Linear", 1)]


def test_state_dict_round_trips_and_schedulers_set_every_lr():
    def run(model, optimizer, steps):
        for step in steps:
            optimizer.zero_grad()
            loss_of(model, step).backward()
            optimizer.step()

    def make(model):
        return modc.dualized(model, lr=0.5, extra=["pos.weight"], weight_decay=0.1)

    torch.manual_seed(3)
    model_a = GPT(width=16, depth=1, context=8)
    opt_a = make(model_a)
    run(model_a, opt_a, range(2))
    saved = copy.deepcopy(model_a.state_dict())
    blob = io.BytesIO()
    torch.save(opt_a.state_dict(), blob)
    run(model_a, opt_a, range(2, 4))

    model_b = GPT(width=16, depth=1, context=8)
    model_b.load_state_dict(saved)
    opt_b = make(model_b)
    blob.seek(0)
    opt_b.load_state_dict(torch.load(blob, weights_only=True))
    run(model_b, opt_b, range(2, 4))
    for a, b in zip(model_a.parameters(), model_b.parameters(), strict=True):
        assert torch.equal(a, b)

    schedule = torch.optim.lr_scheduler.StepLR(opt_b, step_size=1, gamma=0.5)
    opt_b.step()
    schedule.step()
    assert [g["lr"] for g in opt_b.param_groups] == pytest.approx([0.25] * 4 + [5e-4])


def test_dualized_refuses_a_bias_in_a_linear_group():
    layer = nn.Linear(4, 3)
    dual_maps = {"Linear": OPS["Linear"].dualize}
    with pytest.raises(ValueError, match=r"shape \(3,\) in a Linear group"):
        Dualized(
            [{"params": [layer.weight, layer.bias], "targets": [0.5, 0.5], "atom": "Linear"}],
            dual_maps,
            lr=0.1,
        )


def test_weight_axes_are_those_of_the_operation_library(write_spec):
    """The runtime's table of weight axes agrees with each atom's weight shape."""
    spec = write_spec(
        "input: [3, 6, 6]\nnetwork: [Conv2D: {out: 2, kernel: 3}, Bias, Gain, Flatten, Linear: 4]"
    )
    text = write_spec("input: [5]\nnetwork: [Embed: [7, 4]]", "text.yaml")
    shapes = {a.kind: a.shape for path in (spec, text) for a in modc.load(path)[1].atoms}
    assert set(shapes) == set(WEIGHT_AXES) == {n for n, op in OPS.items() if op.atom}
    assert {kind: len(shape) for kind, shape in shapes.items()} == WEIGHT_AXES


def test_on_a_chain_it_steps_exactly_as_the_compiled_spec():
    """specs/mlp (a chain of sensitivity-1 parts) written in plain torch: the same targets
    as modc's analysis and, from the same weights and data, the same steps as the build."""
    build = modc.build(SPECS / "mlp.yaml", {"width": 32})
    compiled = build.model.build_model()
    plain = nn.Sequential(
        nn.Flatten(),
        nn.Linear(784, 32, bias=False),
        nn.ReLU(),
        nn.Linear(32, 32, bias=False),
        nn.ReLU(),
        nn.Linear(32, 10, bias=False),
    )
    with torch.no_grad():
        for p, q in zip(plain.parameters(), compiled.parameters(), strict=True):
            p.copy_(q)
    targets = [target for _, target in build.optimizer.TARGETS.values()]
    assert [a.target for a in modc.atoms(plain)] == pytest.approx(targets)
    ours = modc.dualized(plain, lr=0.5, weight_decay=0.1)
    theirs = build.optimizer.make_optimizer(compiled, lr=0.5, weight_decay=0.1)
    gen = torch.Generator().manual_seed(0)
    for _ in range(3):
        x, y = torch.randn(32, 1, 28, 28, generator=gen), torch.randint(10, (32,), generator=gen)
        for model, optimizer in ((plain, ours), (compiled, theirs)):
            optimizer.zero_grad()
            F.cross_entropy(model(x), y).backward()
            optimizer.step()
    for p, q in zip(plain.parameters(), compiled.parameters(), strict=True):
        torch.testing.assert_close(p, q)
