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
dual map's own products run in. Usage: python bench/cap_gram.py [--width 256] [--repeats 15]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from modc.runtime.certify import _gram, _power_of_two


def banks(width: int, depth: int) -> list[torch.Tensor]:
    """The capped banks of bench/optimizer_step.py, scaled like a weight held at cap 1."""
    d, gen = width, torch.Generator().manual_seed(0)
    shapes = [(4 * depth, d, d), (depth, 4 * d, d), (depth, d, 4 * d), (1, 128, d)]
    return [torch.randn(*s, generator=gen) / (s[-1] ** 0.5 + s[-2] ** 0.5) for s in shapes]


def digits(w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Int8 digits of Y = W·2^t on the short side last, stacked (D₀, D₁, D₀) along the long
    side so that [D₀; D₁] and [D₁; D₀] are views; and ‖R‖_F per matrix."""
    h = w.mT if w.shape[-2] < w.shape[-1] else w  # (b, k, n), n the short side
    largest = torch.maximum(h.amax((-2, -1)), -h.amin((-2, -1)))
    _, top = torch.frexp(largest)
    y = h * _power_of_two(14 - top, torch.float32)[:, None, None]  # entries below 2^14
    d = torch.empty(len(h), 3, *h.shape[-2:], dtype=torch.int8)
    high = (y / 128).round_().clamp_(-127, 127)
    d[:, 0], d[:, 2] = high, high
    y.sub_(high, alpha=128)
    low = y.round().clamp_(-127, 127)
    d[:, 1] = low
    return d, torch.linalg.vector_norm(y.sub_(low), dim=(-2, -1))


def int8_gram(w: torch.Tensor) -> torch.Tensor:
    """QᵀQ of the digits, in float32 (each int32 product rounded once into it)."""
    d, _ = digits(w)
    b, _, k, n = d.shape
    g = torch.empty(b, n, n)
    products = torch.empty(3, n, n, dtype=torch.int32)
    for i in range(b):
        x = d[i].flatten(0, 1)  # (3k, n): D₀, D₁, D₀
        torch._int_mm(x[:k].mT, x[:k], out=products[0])
        torch._int_mm(x[: 2 * k].mT, x[k:], out=products[1])  # D₀ᵀD₁ + D₁ᵀD₀
        torch._int_mm(x[k : 2 * k].mT, x[k : 2 * k], out=products[2])
        torch.mul(products[0], 2.0**14, out=g[i]).add_(products[1], alpha=128).add_(products[2])
    return g


def exact_check(w: torch.Tensor) -> float:
    """Largest |int8 Gram − QᵀQ| / max |QᵀQ|, QᵀQ exact in float64: float32's one rounding."""
    d, _ = digits(w)
    q = 128 * d[:, 0].double() + d[:, 1].double()
    exact = q.mT @ q  # integers below 2^53: exact
    return ((int8_gram(w).double() - exact).abs().amax() / exact.abs().amax()).item()


def median_ms(run, repeats: int) -> float:
    for _ in range(3):
        run()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return 1e3 * statistics.median(times)


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
    times = {name: median_ms(run, args.repeats) for name, run in kernels.items()}
    base = times["float32 Gram (the cap's, on a CPU)"]
    for name, ms in times.items():
        print(f"  {name:40s} {ms:7.2f} ms  ({ms / base:.2f} of float32's)")


if __name__ == "__main__":
    main()
