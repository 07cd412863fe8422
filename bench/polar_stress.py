"""Stress the polar factor on random matrices: shapes, spectra and scales a gradient may have.

Prints how many results were non-finite and the worst singular-value band over the directions
the dtype resolves (σ(g) > 1e-3·σ_max in float32, 0.1·σ_max in bfloat16, as
tests/test_polar.py states), for the chosen dtype and iteration.
Usage: python bench/polar_stress.py [--n 1500] [--dtype bfloat16] [--iteration gram|standard]
[--seed 1] [--restarts 2,4,6]
"""

from __future__ import annotations

import argparse
import random

import torch

import modc.runtime.polar
from modc.runtime.polar import polar


def matrix(rng: random.Random, gen: torch.Generator) -> torch.Tensor:
    """A random matrix: Gaussian, condition 1e4, low rank, or gradient-like, at any scale."""
    short = rng.randint(2, 160)
    long = int(short * rng.uniform(1.5, 8))
    kind = rng.choice(["gauss", "ill", "rank1", "rank3", "rank20", "grad"])
    if kind == "gauss":
        g = torch.randn(short, long, generator=gen)
    elif kind == "grad":  # a few strong directions, noise, and rows of very different size
        g = torch.randn(short, 3, generator=gen) @ torch.randn(3, long, generator=gen)
        g = g + 0.1 * torch.randn(short, long, generator=gen)
        g = g * torch.rand(short, 1, generator=gen) ** 3
    else:
        u = torch.linalg.qr(torch.randn(short, short, generator=gen, dtype=torch.float64))[0]
        v = torch.linalg.qr(torch.randn(long, short, generator=gen, dtype=torch.float64))[0]
        if kind == "ill":
            s = torch.logspace(0, -4, short, dtype=torch.float64)
        else:
            s = torch.zeros(short, dtype=torch.float64)
            r = min(int(kind.removeprefix("rank")), short)
            s[:r] = 0.5 + torch.rand(r, generator=gen, dtype=torch.float64)
        g = ((u * s) @ v.T).float()
    g = g.mT if rng.random() < 0.5 else g
    return g * 10 ** rng.uniform(-6, 3)


RESOLVED = {"float32": 1e-3, "bfloat16": 0.1}  # σ(g)/σ_max(g) above which σ(p) is banded


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=1500)
    p.add_argument("--dtype", choices=["bfloat16", "float32"], default="bfloat16")
    p.add_argument("--iteration", choices=["gram", "standard"], default="gram")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument(
        "--restarts",
        default=None,
        help="Gram steps that form X again, e.g. 3 or 2,4,6 (default: GRAM_RESTARTS)",
    )
    args = p.parse_args()
    if args.restarts is not None:
        modc.runtime.polar.GRAM_RESTARTS = tuple(int(v) for v in args.restarts.split(","))
    rng, gen = random.Random(args.seed), torch.Generator().manual_seed(args.seed)
    dtype = getattr(torch, args.dtype)
    failed, low, high = 0, float("inf"), 0.0
    for _ in range(args.n):
        g = matrix(rng, gen)
        out = polar(g, dtype=dtype, gram=args.iteration == "gram")
        if not out.isfinite().all():
            failed += 1
            continue
        sg = torch.linalg.svdvals(g.double())
        sp = torch.linalg.svdvals(out.double())
        keep = sg > RESOLVED[args.dtype] * sg[0]
        low, high = min(low, sp[keep].min().item()), max(high, sp[keep].max().item())
    print(
        f"{args.n} matrices, {args.dtype}, {args.iteration} iteration: {failed} non-finite; "
        f"singular values (where σ(g) > {RESOLVED[args.dtype]}·σ_max) in [{low:.4f}, {high:.4f}]"
    )


if __name__ == "__main__":
    main()
