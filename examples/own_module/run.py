"""modc's optimizer on your own nn.Module, in your own training loop: `modc.dualized`.

    python examples/own_module/run.py            # a small char-level transformer, minutes
    python examples/own_module/run.py --quick    # a smoke test, seconds

The model is plain torch, written without modc: token and position embeddings, pre-norm
blocks of causal attention (q, k, v and o Linears, torch's SDPA) and a GELU MLP,
LayerNorms, an untied head. `modc.dualized(model, lr=...)` recognises each weight
by its module (Linear: polar factor; Embedding: rows normalised; LayerNorm gain: sign;
biases: rescaled), gives each atom its share of the step (`modc.atoms` lists them), and is
a torch.optim.Optimizer: a torch LR scheduler drives it, and AdamW runs beside it on the
same model and data for comparison. Text: the Shakespeare shipped with modc, byte tokens.
"""

from __future__ import annotations

import argparse
import math
from importlib import resources

import torch
import torch.nn.functional as F
from torch import nn

import modc


class Block(nn.Module):
    def __init__(self, width: int, heads: int):
        super().__init__()
        self.heads = heads
        self.norm1, self.norm2 = nn.LayerNorm(width), nn.LayerNorm(width)
        self.q, self.k, self.v, self.o = (nn.Linear(width, width, bias=False) for _ in range(4))
        self.up, self.down = nn.Linear(width, 4 * width), nn.Linear(4 * width, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, d = x.shape
        h = self.norm1(x)
        q, k, v = (
            f(h).view(b, t, self.heads, -1).transpose(1, 2) for f in (self.q, self.k, self.v)
        )
        a = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        x = x + self.o(a.transpose(1, 2).reshape(b, t, d))
        return x + self.down(F.gelu(self.up(self.norm2(x))))


class TinyGPT(nn.Module):
    def __init__(self, vocab: int, width: int, depth: int, heads: int, context: int):
        super().__init__()
        self.tokens, self.positions = nn.Embedding(vocab, width), nn.Embedding(context, width)
        self.blocks = nn.ModuleList(Block(width, heads) for _ in range(depth))
        self.norm, self.head = nn.LayerNorm(width), nn.Linear(width, vocab, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.tokens(x) + self.positions(torch.arange(x.shape[1]))
        for block in self.blocks:
            h = block(h)
        return self.head(self.norm(h))


def batches(text: torch.Tensor, context: int, size: int, seed: int):
    g = torch.Generator().manual_seed(seed)
    while True:
        starts = torch.randint(len(text) - context - 1, (size, 1), generator=g)
        window = text[starts + torch.arange(context + 1)]
        yield window[:, :-1], window[:, 1:]


def train(make_optimizer, text: torch.Tensor, steps: int, size: dict) -> float:
    torch.manual_seed(0)
    model = TinyGPT(128, **size)
    optimizer = make_optimizer(model)
    warmup = max(1, steps // 10)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: min(1, (s + 1) / warmup) * (1 - s / steps)
    )
    data = batches(text[: len(text) * 9 // 10], size["context"], 32, 0)
    for _ in range(steps):
        x, y = next(data)
        loss = F.cross_entropy(model(x).flatten(0, 1), y.flatten())
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        schedule.step()
    held = text[len(text) * 9 // 10 :]
    x, y = next(batches(held, size["context"], 256, 1))
    with torch.no_grad():
        return F.cross_entropy(model(x).flatten(0, 1), y.flatten()).item()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--quick", action="store_true", help="a smoke test: small and short")
    args = p.parse_args()
    torch.set_num_threads(1)
    raw = (resources.files("modc.data") / "shakespeare.txt").read_bytes()
    text = torch.tensor(list(raw[: 200_000 if args.quick else None]), dtype=torch.long)
    size = (
        dict(width=32, depth=1, heads=2, context=32)
        if args.quick
        else dict(width=128, depth=4, heads=4, context=64)
    )
    steps = 10 if args.quick else 1000

    model = TinyGPT(128, **size)
    print("atoms (each weight's atom, mass and target):")
    print(*(f"  {a}" for a in modc.atoms(model)[:6]), "  ...", sep="\n")
    results = {
        "modc.dualized lr 0.5": train(lambda net: modc.dualized(net, lr=0.5), text, steps, size),
        "AdamW lr 3e-3": train(
            lambda net: torch.optim.AdamW(net.parameters(), lr=3e-3), text, steps, size
        ),
    }
    for name, loss in results.items():
        print(f"{name:<22} held-out loss {loss:.3f} nats/byte ({loss / math.log(2):.3f} bits)")


if __name__ == "__main__":
    main()
