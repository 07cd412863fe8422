"""A GPT trained under `lipschitz: 2` with `--constraint cap`, against the same run uncapped.

Compiles specs/gpt.modc (attention's ℓ2 constants need queries, keys and values of RMS
≤ 1, checked on the held-out data), specs/gpt_clipped.modc or specs/gpt_fused.modc (RMSClip
meets them for every input) or specs/gpt_certified.modc (gpt_fused with a Bias on the
logits, whose own `optimizer` section sets the bound) at their default size (width 128,
depth 4, context 64, vocab 128), with `optimizer { lipschitz = 2 }` appended to a spec
that has no `optimizer` section, and trains it twice with the build's own train.py
on the shipped Shakespeare split: `--constraint cap` (each atom at its own cap,
docs/theory.md §9) and, as the baseline, `--constraint none`, same seed, lr and batches.
Every --every steps train.py logs the certificate's report (its conditions checked on the
held-out windows). It prints the solved caps (a repeated body's copies once), then per
logged step each run's held-out loss (nats per byte), its certified ℓ2 bound
(lipschitz_upper), and for the capped run whether the conditions held (and the worst value
of the tightest one, whose limit is 1). The last line says whether the capped bound stayed
at most 2 at every logged step with its conditions held, and the capped/uncapped held-out
loss at the end. --reference adds the held-out loss of the best bigram table of the same
ℓ2 bound, fitted to the training text, with and without a free logit offset, and of the
offset alone (the prior); with --steps 0 it prints only that.

Usage: python bench/capped_gpt.py [--spec specs/gpt.modc] [--steps 500] [--every 50]
       [--lr LR] [--lipschitz 2] [--reference] [-p NAME=VALUE ...]
       python bench/capped_gpt.py --reference --steps 0
"""

from __future__ import annotations

import argparse
import csv
import json
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from modc.spec import load_spec

ROOT = Path(__file__).resolve().parent.parent


def train(build: Path, constraint: str, args: argparse.Namespace) -> dict:
    """One run; its logged rows (step → eval loss) and reports (step → certificate)."""
    out = build / "runs" / constraint
    cmd = [sys.executable, str(build / "train.py"), "--data", "shakespeare", "--quiet"]
    cmd += ["--steps", str(args.steps), "--seed", str(args.seed)]
    cmd += ["--lr", str(args.lr)] if args.lr is not None else []
    cmd += ["--eval-every", str(args.every), "--certify-every", str(args.every)]
    cmd += ["--constraint", constraint, "--out", str(out)]
    start = time.perf_counter()
    subprocess.run(cmd, check=True)
    wall = time.perf_counter() - start
    with open(out / "metrics.csv") as f:
        losses = {
            int(r["step"]): float(r["eval_loss"]) for r in csv.DictReader(f) if r["eval_loss"]
        }
    reports = {}
    for line in (out / "certificates.jsonl").read_text().splitlines():
        r = json.loads(line)
        reports[r["step"]] = r
    return {"losses": losses, "reports": reports, "wall": wall}


def tightest(report: dict) -> str:
    """`yes (0.41)`: whether every condition held, and the worst value of the tightest."""
    checked = report["conditions_checked"]
    if not checked:
        return "none needed"
    worst = max(c["worst"] for c in checked)  # every condition here is "at most 1"
    return f"{'yes' if report['conditions_held'] else 'NO'} ({worst:.3f})"


def caps_line(report: dict) -> str:
    """The solved caps, a repeated body's copies shown once (`blocks.*.`: they share it)."""
    shown: dict[str, float] = {}
    for name, cap in report["constraint"]["atom_caps"].items():
        shown.setdefault(re.sub(r"\.\d+\.", ".*.", name).removesuffix(".weight"), cap)
    return ", ".join(f"{name} {cap:.3g}" for name, cap in shown.items())


def bigram_counts(text: bytes) -> torch.Tensor:
    """The distribution of (byte, next byte) pairs of `text`, bytes above 127 as 127."""
    x = torch.tensor(list(text), dtype=torch.long).clamp(max=127)
    counts = torch.zeros(128, 128, dtype=torch.float64)
    counts.index_put_((x[:-1], x[1:]), torch.ones(len(x) - 1, dtype=torch.float64), True)
    return counts / counts.sum()


def bigram_reference(train: bytes, held: bytes, bound: float, offset: bool) -> float:
    """Held-out cross-entropy (nats per byte) of the bigram logit table B, fitted to the
    training text, whose ℓ2 norm as a map of one-hot codes, σ_max(B), is at most `bound`,
    plus a free logit offset when `offset`: what a network of that ℓ2 bound reaches by the
    last byte alone. Projected Adam (the projection clips B's singular values)."""
    fit, test = bigram_counts(train), bigram_counts(held)
    table = torch.zeros(128, 128, dtype=torch.float64, requires_grad=True)
    shift = torch.zeros(128, dtype=torch.float64, requires_grad=offset)
    opt = torch.optim.Adam([table, shift] if offset else [table], lr=0.05)
    for _ in range(400):
        loss = -(fit * torch.log_softmax(table + shift, 1)).sum()
        opt.zero_grad()
        loss.backward()
        opt.step()
        with torch.no_grad():
            u, sigma, v = torch.linalg.svd(table)
            table.copy_(u @ torch.diag(sigma.clamp(max=bound)) @ v)
    with torch.no_grad():
        return -(test * torch.log_softmax(table + shift, 1)).sum().item()


def references(bound: float) -> str:
    """The bigram references on train.py's split of the shipped text, and the prior alone."""
    text = (ROOT / "modc" / "data" / "shakespeare.txt").read_bytes()
    cut = len(text) * 9 // 10  # train.py's split: the last tenth held out
    train, held = text[:cut], text[cut:]
    plain, shifted = (bigram_reference(train, held, bound, o) for o in (False, True))
    prior = bigram_reference(train, held, 0.0, True)
    return (
        f"held-out loss of the best bigram table of ℓ2 norm ≤ {bound:g}: {plain:.4f} without "
        f"a logit offset, {shifted:.4f} with a free one; the offset alone (prior) {prior:.4f}"
    )


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--spec", default=str(ROOT / "specs" / "gpt.modc"))
    p.add_argument("--steps", type=int, default=500)
    p.add_argument("--every", type=int, default=50)
    p.add_argument("--lr", type=float, help="default: the spec's own (0.05 in the GPT specs)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--lipschitz",
        type=float,
        help="the bound (default: the spec's own, else 2)",
    )
    p.add_argument("-p", dest="params", action="append", default=[], metavar="NAME=VALUE")
    p.add_argument(
        "--reference",
        action="store_true",
        help="also the best bigram table of that ℓ2 bound (alone with --steps 0)",
    )
    args = p.parse_args()
    own = {s.key: s.value for s in load_spec(args.spec).optimizer}.get("lipschitz")
    if own is not None and args.lipschitz not in (None, own):
        p.error(f"{args.spec} sets optimizer.lipschitz = {own:g} itself")
    args.lipschitz = args.lipschitz or own or 2.0
    if args.steps == 0:  # --reference alone
        print(references(args.lipschitz))
        return
    with tempfile.TemporaryDirectory() as tmp:
        spec = Path(tmp) / Path(args.spec).name
        bound = f"\noptimizer {{ lipschitz = {args.lipschitz:g} }}\n"
        spec.write_text(Path(args.spec).read_text() + ("" if own is not None else bound))
        build = Path(tmp) / "build"
        flags = [x for kv in args.params for x in ("-p", kv)]
        compile_cmd = [sys.executable, "-m", "modc", "compile", str(spec), *flags, "-o", str(build)]
        subprocess.run(compile_cmd, check=True, stdout=subprocess.DEVNULL)
        capped = train(build, "cap", args)
        free = train(build, "none", args)
    print(
        f"{Path(args.spec).name} {' '.join(args.params)}: lipschitz {args.lipschitz:g}, "
        f"lr {args.lr or 'from the spec'}, {args.steps} steps on Shakespeare "
        "(held-out loss in nats per byte)"
    )
    print(f"caps: {caps_line(capped['reports'][min(capped['reports'])])}")
    print(
        "| step | capped loss | capped ℓ2 bound | conditions held (worst) | "
        "uncapped loss | uncapped ℓ2 bound |"
    )
    print("|---|---|---|---|---|---|")
    for step in sorted(capped["reports"]):
        rc, rf = capped["reports"][step], free["reports"][step]
        print(
            f"| {step} | {capped['losses'][step]:.4f} | {rc['lipschitz_upper']:.4f} | "
            f"{tightest(rc)} | {free['losses'][step]:.4f} | {rf['lipschitz_upper']:.4g} |"
        )
    reports = capped["reports"].values()
    ok = all(r["lipschitz_upper"] <= args.lipschitz and r["within"] for r in reports)
    last = max(capped["losses"])
    first = min(capped["losses"])
    print(
        f"capped bound ≤ {args.lipschitz:g} with conditions held at every logged step: {ok}; "
        f"capped held-out loss {capped['losses'][first]:.4f} (step {first}) → "
        f"{capped['losses'][last]:.4f}; capped/uncapped at the end "
        f"{capped['losses'][last] / free['losses'][last]:.3f}; wall "
        f"{capped['wall']:.0f} s capped, {free['wall']:.0f} s uncapped"
    )
    if args.reference:
        print(references(args.lipschitz))


if __name__ == "__main__":
    main()
