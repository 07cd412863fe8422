"""How often the hard cap's Cholesky certificate fails in a capped training run.

specs/gpt_certified.modc (its own `lipschitz 2`, `constraint cap`) trains on Shakespeare;
after every step the cap checks each matrix by a Cholesky at a guess (docs/theory.md §8).
Per window of steps this prints how many checks there were, on how many the first guess
failed (on a CPU those matrices then take the Gram iteration), and on how many the larger
ones of DEVICE_RUNGS failed too (off a CPU, where they all go into one Cholesky, those would
fall back to the Frobenius norm). A benchmark, not a test: it takes about a minute.
Usage: python bench/cap_failures.py [--steps 300] [--lr 0.5] [--batch-size 12] [--every 50]
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import torch

import modc

ROOT = Path(__file__).resolve().parent.parent
CONTEXT = 64  # specs/gpt_certified.modc's


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--lr", type=float, default=0.5)
    p.add_argument("--batch-size", type=int, default=12)
    p.add_argument("--every", type=int, default=50)
    args = p.parse_args()
    torch.manual_seed(0)
    with tempfile.TemporaryDirectory() as tmp:
        build = modc.build(ROOT / "specs" / "gpt_certified.modc", out=Path(tmp) / "build")
        generated = build.optimizer
        counts = {"checks": 0, "first": 0, "both": 0}

        def counted(w: torch.Tensor, state: dict) -> tuple:
            """The cap's bound, counting its certificate's failures at each guess (the
            two-guess trial from a copy of the same warm start, so the same guesses)."""
            trial = {"block": state["block"].clone()} if "block" in state else {}
            _, either, _ = generated.cholesky_sigma_upper(w, trial, rungs=generated.DEVICE_RUNGS)
            before = state.get("failed", 0)
            out = spectral_sigma_upper(w, state)
            counts["checks"] += either.numel()
            counts["first"] += state.get("failed", 0) - before
            counts["both"] += int((~either).sum())
            return out

        spectral_sigma_upper = generated.spectral_sigma_upper
        generated.spectral_sigma_upper = counted  # what spectral_cap calls
        net = build.model.build_model()
        opt = generated.make_optimizer(net, lr=args.lr, constraint="cap")
        text = (build.path / "data" / "shakespeare.txt").read_bytes()
        data = torch.tensor(list(text), dtype=torch.long).clamp_max(127)
        seen = dict(counts)
        header = ("steps", "loss", "checks", "1st guess failed", "both failed")
        print("{:>9} {:>6} {:>7} {:>17} {:>12}".format(*header))
        for step in range(1, args.steps + 1):
            ix = torch.randint(len(data) - CONTEXT - 1, (args.batch_size,))
            x = torch.stack([data[i : i + CONTEXT] for i in ix])
            y = torch.stack([data[i + 1 : i + CONTEXT + 1] for i in ix])
            logits = net(x)
            loss = torch.nn.functional.cross_entropy(logits.flatten(0, -2), y.flatten())
            opt.zero_grad()
            loss.backward()
            opt.step()
            if step % args.every == 0 or step == args.steps:
                window = {k: counts[k] - seen[k] for k in counts}
                first = step - (step - 1) % args.every
                print(
                    f"{first:>4}-{step:<4} {loss.item():6.3f} {window['checks']:7d} "
                    f"{window['first']:17d} {window['both']:12d}"
                )
                seen = dict(counts)
        print(f"total: {counts['checks']} checks (the first call starts cold), ", end="")
        print(f"{counts['first']} first guesses failed, {counts['both']} both")


if __name__ == "__main__":
    main()
