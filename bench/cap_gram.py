"""The cap's Gram, three ways: what a sound G ≈ WᵀW costs per kernel, against the float32 one.

The hard cap's proof starts from each matrix's Gram (docs/theory.md §8). On a CPU it is a
float32 product whose rounding the bound counts (`_gram`); off a CPU the bound takes it in
float64. An exact Gram can also come from int8 products, whose int32 sums do not round:
Y = W·2^t (entries below 2^14) is split into int8 digits, Y = 128·D₀ + D₁ + R with |R| ≤ 1,
and Q = 128·D₀ + D₁ has the integer Gram 2^14·D₀ᵀD₀ + 2^7·[D₀; D₁]ᵀ[D₁; D₀] + D₁ᵀD₁: three
int8 products (`torch._int_mm`, one matrix at a time), the middle one of twice the length,
and ‖R‖_F to add to the bound. This times each, with the digits' making, on the banks of
`bench/optimizer_step.py` (GPT-like, width 256, depth 4), checks the int8 Gram against an
exact float64 one, and prints each kernel's median time and its ratio to float32's. A
bfloat16 product, rounded where no bound counts it, is timed for scale: it is the dtype the
dual map's own products run in. Buffers are kept between calls (`Scratch`), as in the cap.
Usage: python bench/cap_gram.py [--width 256] [--repeats 15]
"""

from __future__ import annotations

import argparse

import torch
from optimizer_step import median_of  # bench/, the script's own folder

from modc.runtime.certify import _gram, _power_of_two
from modc.runtime.scratch import Scratch


def banks(width: int, depth: int) -> list[torch.Tensor]:
    """The capped banks of bench/optimizer_step.py, scaled like a weight held at cap 1."""
    d, gen = width, torch.Generator().manual_seed(0)
    shapes = [(4 * depth, d, d), (depth, 4 * d, d), (depth, d, 4 * d), (1, 128, d)]
    return [torch.randn(*s, generator=gen) / (s[-1] ** 0.5 + s[-2] ** 0.5) for s in shapes]


def digits(w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Int8 digits of Y = W·2^t in w's own layout, stacked (D₀, D₁, D₀) along the long side,
    as a (b, 3k, n) view whose slices [D₀; D₁] and [D₁; D₀] are views too; and ‖R‖_F per
    matrix. Buffers from the current `Scratch`, as the cap's own."""
    (b, m, n), wide = w.shape, w.shape[-2] < w.shape[-1]
    largest = torch.maximum(w.amax((-2, -1)), -w.amin((-2, -1)))
    _, top = torch.frexp(largest)
    y = Scratch.empty("y", (b, m, n), torch.float32, w.device)
    torch.mul(w, _power_of_two(14 - top, torch.float32)[:, None, None], out=y)  # below 2^14
    d = Scratch.empty("digits", (b, m, 3, n) if wide else (b, 3, m, n), torch.int8, w.device)
    slot = [d[:, :, j] if wide else d[:, j] for j in range(3)]
    digit = Scratch.empty("digit", (b, m, n), torch.float32, w.device)
    torch.mul(y, 2**-7, out=digit).round_().clamp_(-127, 127)
    slot[0].copy_(digit)
    slot[2].copy_(digit)
    y.sub_(digit, alpha=128)
    torch.round(y, out=digit).clamp_(-127, 127)
    slot[1].copy_(digit)
    stacked = d.flatten(2, 3).mT if wide else d.flatten(1, 2)  # (b, 3k, n)
    return stacked, torch.linalg.vector_norm(y.sub_(digit), dim=(-2, -1))


def int8_gram(w: torch.Tensor) -> torch.Tensor:
    """QᵀQ of the digits on the short side, in float32 (each int32 product rounded once)."""
    d, _ = digits(w)
    b, k, n = d.shape[0], d.shape[1] // 3, d.shape[2]
    g = Scratch.empty("gram", (b, n, n), torch.float32, w.device)
    products = Scratch.empty("products", (3, n, n), torch.int32, w.device)
    for i in range(b):
        x = d[i]  # (3k, n): D₀, D₁, D₀
        torch._int_mm(x[:k].mT, x[:k], out=products[0])
        torch._int_mm(x[: 2 * k].mT, x[k:], out=products[1])  # D₀ᵀD₁ + D₁ᵀD₀
        torch._int_mm(x[k : 2 * k].mT, x[k : 2 * k], out=products[2])
        torch.mul(products[0], 2.0**14, out=g[i]).add_(products[1], alpha=128).add_(products[2])
    return g


def exact_check(w: torch.Tensor) -> float:
    """Largest |int8 Gram − QᵀQ| / max |QᵀQ|, QᵀQ exact in float64: float32's one rounding."""
    with Scratch():
        d, _ = digits(w)
        k = d.shape[1] // 3
        q = 128 * d[:, :k].double() + d[:, k : 2 * k].double()
        exact = q.mT @ q  # integers below 2^53: exact
        return ((int8_gram(w).double() - exact).abs().amax() / exact.abs().amax()).item()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--width", type=int, default=256)
    p.add_argument("--depth", type=int, default=4)
    p.add_argument("--repeats", type=int, default=15)
    args = p.parse_args()
    bs = banks(args.width, args.depth)
    short = [w.mT if w.shape[-2] < w.shape[-1] else w for w in bs]
    wide64 = [w.double() for w in short]
    short16 = [w.bfloat16() for w in short]
    kernels = {
        "float32 Gram (the cap's, on a CPU)": lambda: [_gram(w) for w in short],
        "float64 Gram (the cap's, off a CPU)": lambda: [_gram(w) for w in wide64],
        "int8 digits, exact (3 products)": lambda: [int8_gram(w) for w in bs],
        "  of which the digits": lambda: [digits(w) for w in bs],
        "bfloat16 product (rounded, unbounded)": lambda: [w.mT @ w for w in short16],
    }
    print(f"{torch.get_num_threads()} threads; banks {[tuple(w.shape) for w in bs]}")
    print(f"int8 Gram vs exact: largest relative difference {max(map(exact_check, bs)):.1e}")
    with Scratch():  # buffers kept between calls, as the cap's (fresh ones fault pages in)
        times = {name: 1e3 * median_of(run, args.repeats) for name, run in kernels.items()}
    base = times["float32 Gram (the cap's, on a CPU)"]
    for name, ms in times.items():
        print(f"  {name:40s} {ms:7.2f} ms  ({ms / base:.2f} of float32's)")


if __name__ == "__main__":
    main()
