"""Median optimizer-step time: modc's dualized step against torch.optim.Muon and AdamW.

The parameter set is GPT-like: per block Q, K, V, O (d × d) and the MLP (4d × d, d × 4d);
an embedding and an output head (vocab × d). modc's step is the code that generated
optimizers contain (modc.runtime); Muon orthogonalises the same hidden matrices with the
same number of Newton–Schulz iterations, with AdamW for the embedding and head, as its
documentation advises. Usage: python bench/optimizer_step.py [--size cpu|gpu] [--json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch

from modc.ops.linear import linear_dualize
from modc.runtime.optim import Dualized

SIZES = {"cpu": (256, 4), "gpu": (768, 12)}
VOCAB = 128


def parameters(width: int, depth: int, device: torch.device) -> tuple[list, list]:
    """(hidden matrices, embedding and head) with random gradients."""
    d = width
    hidden = [torch.randn(*s, device=device) for _ in range(depth)
              for s in [(d, d)] * 4 + [(4 * d, d), (d, 4 * d)]]
    other = [torch.randn(VOCAB, d, device=device), torch.randn(VOCAB, d, device=device)]
    for p in hidden + other:
        p.requires_grad_(True)
        p.grad = torch.randn_like(p)
    return hidden, other


def steps_per_polar() -> int:
    """The Newton–Schulz iterations modc's polar runs by default."""
    import inspect

    from modc.runtime.polar import polar

    return inspect.signature(polar).parameters["steps"].default


def optimizers(hidden: list, other: list) -> dict[str, list[torch.optim.Optimizer]]:
    ns = steps_per_polar()
    groups = [{"params": hidden, "targets": [1.0 / len(hidden)] * len(hidden), "atom": "Linear"},
              {"params": other, "targets": [1.0 / len(hidden)] * len(other), "atom": "Linear"}]
    return {
        "modc dualized": [Dualized(groups, {"Linear": linear_dualize}, lr=0.02)],
        "torch Muon": [torch.optim.Muon(hidden, lr=0.02, ns_steps=ns),
                       torch.optim.AdamW(other, lr=1e-3)],
        "AdamW": [torch.optim.AdamW(hidden + other, lr=1e-3)],
    }


def median_step(opts: list[torch.optim.Optimizer], device: torch.device, repeats: int) -> float:
    def step() -> None:
        for opt in opts:
            opt.step()
        if device.type == "cuda":
            torch.cuda.synchronize()

    for _ in range(3):
        step()
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        step()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--size", choices=SIZES, default=None, help="default: gpu on CUDA, else cpu")
    p.add_argument("--repeats", type=int, default=15)
    p.add_argument("--json", action="store_true")
    args = p.parse_args()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    size = args.size or ("gpu" if device.type == "cuda" else "cpu")
    width, depth = SIZES[size]
    hidden, other = parameters(width, depth, device)
    # Interleave the optimizers round by round, so that machine noise hits all alike.
    rounds: dict[str, list[float]] = {}
    opts = optimizers(hidden, other)
    for _ in range(3):
        for name, group in opts.items():
            rounds.setdefault(name, []).append(median_step(group, device, args.repeats))
    t = {name: statistics.median(v) for name, v in rounds.items()}
    out = {
        "device": torch.cuda.get_device_name() if device.type == "cuda" else "cpu",
        "size": size, "width": width, "depth": depth, "ns_steps": steps_per_polar(),
        "seconds": t,
        "ratio_vs_torch_muon": t["modc dualized"] / t["torch Muon"],
        "ratio_vs_adamw": t["modc dualized"] / t["AdamW"],
    }
    if args.json:
        print(json.dumps(out))
        return
    print(f"device {out['device']}, width {width}, depth {depth}, {out['ns_steps']} iterations")
    for name, sec in t.items():
        print(f"  {name:<14} {1e3 * sec:8.2f} ms/step (median)")
    print(f"  modc / torch Muon = {out['ratio_vs_torch_muon']:.2f}")
    print(f"  modc / AdamW      = {out['ratio_vs_adamw']:.2f}")


if __name__ == "__main__":
    main()
