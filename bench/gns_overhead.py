"""The cost of --gns: step time of specs/gpt_prenorm.modc with the norm atoms' per-example
gradient norms measured (gns.py's GradientNoise: hooks in the backward pass, one estimate
per step) against the same step without them.

Two copies of one model (the same initial weights, the same batches of byte tokens), one
with GradientNoise attached; steps alternate between them (each first on every other
step) so machine noise hits both alike, and the medians of the step times are compared.
A step is what train.py does: zero_grad, forward, loss, backward, the dualized optimizer's
step.
Usage: python bench/gns_overhead.py [--size cpu|small] [--rounds 7] [--steps 10] [--json]
"""

from __future__ import annotations

import argparse
import copy
import importlib.util
import json
import statistics
import time
from pathlib import Path

import torch
import torch.nn.functional as F

import modc

SPEC = Path(__file__).resolve().parent.parent / "specs" / "gpt_prenorm.modc"
SIZES = {  # width, depth, heads, context, batch size
    "cpu": (128, 4, 4, 64, 32),  # the spec's own size and batch
    "small": (64, 2, 2, 64, 16),  # examples/gns
}


def step_time(model, optimizer, tokens: torch.Tensor) -> float:
    t = time.perf_counter()
    optimizer.zero_grad(set_to_none=True)
    logits = model(tokens[:, :-1])
    loss = F.cross_entropy(logits.flatten(0, 1), tokens[:, 1:].flatten())
    loss.backward()
    optimizer.step()
    return time.perf_counter() - t


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--size", choices=SIZES, default="cpu")
    p.add_argument("--steps", type=int, default=10, help="timed steps per round")
    p.add_argument("--rounds", type=int, default=7)
    p.add_argument("--json", action="store_true")
    args = p.parse_args()
    torch.set_num_threads(1)
    width, depth, heads, context, batch = SIZES[args.size]
    build = modc.build(SPEC, {"width": width, "depth": depth, "heads": heads, "context": context})
    spec = importlib.util.spec_from_file_location("build_gns", build.path / "gns.py")
    gns = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(gns)
    torch.manual_seed(0)
    plain = build.model.build_model()
    measured = copy.deepcopy(plain)
    runs = {}
    for name, model in [("without", plain), ("with --gns", measured)]:
        optimizer = build.optimizer.make_optimizer(model, 0.02)
        if model is measured:
            noise = gns.GradientNoise(model, optimizer)
        runs[name] = (model, optimizer, [])
    gen = torch.Generator().manual_seed(0)
    order = list(runs.values())
    for i in range(args.rounds * args.steps + 2):  # step by step, alternating which goes first
        tokens = torch.randint(0, 128, (batch, context + 1), generator=gen)
        for model, optimizer, times in order[:: 1 if i % 2 else -1]:
            t = step_time(model, optimizer, tokens)
            if i >= 2:  # two steps warm up
                times.append(t)
    medians = {name: statistics.median(times) for name, (_, _, times) in runs.items()}
    ratio = medians["with --gns"] / medians["without"]
    result = {
        "size": args.size,
        "width, depth, heads, context, batch": SIZES[args.size],
        "median step s": medians,
        "ratio": ratio,
        "steps timed each": args.rounds * args.steps,
        "norm B_simple at the end": noise.b_simple("norm"),
    }
    if args.json:
        print(json.dumps(result))
        return
    print(f"gpt_prenorm {args.size} {SIZES[args.size]} (width, depth, heads, context, batch)")
    for name, m in medians.items():
        print(f"  {name:<11} median step {m * 1e3:8.2f} ms")
    print(
        f"  ratio with/without: {ratio:.4f} ({(ratio - 1) * 100:+.2f}% step time), "
        f"{args.rounds * args.steps} steps each"
    )


if __name__ == "__main__":
    main()
