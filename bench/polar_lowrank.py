"""The dual map on low-rank gradients: does polar() give U_r V_rᵀ, and nothing in the null space?

For g = randn(m, r) @ randn(r, n) (default 256 × 784) prints, per rank, the cosine between
the update and g's polar factor U_r V_rᵀ, and σ_max of the update outside g's support (the
part rounding noise can put there), for modc's polar() in bfloat16 and in float32 (8 steps,
default iteration) and for Muon's own bfloat16 quintic, 5 steps (torch.optim.Muon's
arithmetic). Usage: python bench/polar_lowrank.py [--shape 256 784] [--ranks 4 16 64 256]
"""

from __future__ import annotations

import argparse

import torch
from torch.optim._muon import _zeropower_via_newtonschulz

from modc.runtime.polar import MUON, polar


def low_rank(m: int, n: int, rank: int, gen: torch.Generator) -> tuple[torch.Tensor, ...]:
    """g = A B, Gaussian factors, and orthonormal bases U_r, V_r of its column and row spaces."""
    a = torch.randn(m, rank, generator=gen, dtype=torch.float64)
    b = torch.randn(rank, n, generator=gen, dtype=torch.float64)
    qa, ra = torch.linalg.qr(a)
    qb, rb = torch.linalg.qr(b.T)
    uc, _, vch = torch.linalg.svd(ra @ rb.T)
    return (a @ b).float(), qa @ uc, qb @ vch.T


def measure(p: torch.Tensor, u: torch.Tensor, v: torch.Tensor) -> tuple[float, float]:
    """(cos(p, U_r V_rᵀ), σ_max of p − U_r U_rᵀ p V_r V_rᵀ)."""
    p = p.double()
    inside = u.T @ p @ v
    cosine = inside.diagonal().sum() / (p.norm() * u.size(1) ** 0.5)
    outside = torch.linalg.matrix_norm(p - u @ inside @ v.T, ord=2)
    return cosine.item(), outside.item()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--shape", type=int, nargs=2, default=[256, 784])
    p.add_argument("--ranks", type=int, nargs="+", default=[4, 16, 64, 256])
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    m, n = args.shape
    methods = {
        "modc bfloat16": lambda g: polar(g, dtype=torch.bfloat16),
        "modc float32": lambda g: polar(g, dtype=torch.float32),
        "Muon bf16, 5 steps": lambda g: _zeropower_via_newtonschulz(g, MUON[0], 5, 1e-7),
    }
    print(f"g = randn({m}, r) @ randn(r, {n}); cos with U_r V_rᵀ / σ_max outside the support")
    print("| rank r | " + " | ".join(methods) + " |")
    print("|---" * (len(methods) + 1) + "|")
    gen = torch.Generator().manual_seed(args.seed)
    for rank in args.ranks:
        g, u, v = low_rank(m, n, rank, gen)
        cells = [measure(f(g), u, v) for f in methods.values()]
        print(f"| {rank} | " + " | ".join(f"{c:.3f} / {o:.3f}" for c, o in cells) + " |")


if __name__ == "__main__":
    main()
