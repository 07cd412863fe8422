"""Median optimizer-step time: modc's dualized step against torch.optim.Muon and AdamW.

The parameter set is GPT-like: per block Q, K, V, O (d × d) and the MLP (4d × d, d × 4d);
an embedding and an output head (vocab × d). modc's step is the code that generated
optimizers contain (modc.runtime: banks of same-shape matrices, polar() in its default
dtype and iteration); Muon orthogonalises the same hidden matrices with the same number of
Newton–Schulz iterations, with AdamW for the embedding and head, as its documentation
advises. "modc dualized capped" is the same step with `--constraint cap`'s hook (every
matrix's sound bound, a Cholesky certificate, checked, and those over the cap scaled into
it: here all of them, each step, the worst case), on a copy of the weights that no other
optimizer moves; its ratio to the uncapped step is printed, and how many of its
certificates failed (those matrices then take the Gram iteration). It also times the two
operations the cap's proof is made of, alone (each bank's Gram as the certificate forms it,
and a Cholesky of c·I − G, the data already in cache): 1 + their time over the uncapped
step is a floor under the capped ratio, and the rest is the cap's other work. It counts
each optimizer's page faults per step (fresh pages touched: what buffers allocated anew
each step cost on a CPU, where freed memory goes back to the system). On
CUDA it also times modc's orthogonalisation alone and prints its TFLOP/s and the fraction
of the device's bf16 dense peak.
Usage: python bench/optimizer_step.py [--size cpu|gpu] [--compile] [--turns round|step] [--json]
       [--profile]
"""

from __future__ import annotations

import argparse
import functools
import json
import resource
import statistics
import sys
import time

import torch

from modc.ops.embed import embed_dualize
from modc.ops.linear import linear_dualize
from modc.runtime.certify import _bound_dtype, _gram, spectral_cap, spectral_norm_upper
from modc.runtime.optim import Constrain, Dualized, banks
from modc.runtime.polar import fast_dtype, gram_flops, polar, standard_flops

SIZES = {"cpu": (256, 4), "gpu": (768, 12)}
VOCAB = 128
# bf16 dense tensor-core peaks (FLOP/s, no sparsity), by a substring of the device name.
PEAKS = [("H100 PCIe", 756e12), ("H100", 989e12), ("H200", 989e12), ("A100", 312e12)]


def parameters(width: int, depth: int, device: torch.device) -> tuple[list, list]:
    """(hidden matrices, embedding and head) with random gradients."""
    d = width
    hidden = [
        torch.randn(*s, device=device)
        for _ in range(depth)
        for s in [(d, d)] * 4 + [(4 * d, d), (d, 4 * d)]
    ]
    other = [torch.randn(VOCAB, d, device=device), torch.randn(VOCAB, d, device=device)]
    for p in hidden + other:
        p.requires_grad_(True)
        p.grad = torch.randn_like(p)
    return hidden, other


def copy_of(p: torch.Tensor) -> torch.Tensor:
    """A parameter with p's values and gradient, stepped on its own."""
    q = p.detach().clone().requires_grad_(True)
    q.grad = p.grad.clone()
    return q


def steps_per_polar() -> int:
    """The Newton–Schulz iterations modc's polar runs by default."""
    import inspect

    from modc.runtime.polar import polar

    return inspect.signature(polar).parameters["steps"].default


def optimizers(hidden: list, other: list, compile: bool) -> dict[str, list]:
    ns = steps_per_polar()
    n = len(hidden)
    groups = [
        {"params": hidden + other[1:], "targets": [1.0 / n] * (n + 1), "atom": "Linear"},
        {"params": other[:1], "targets": [1.0 / n], "atom": "Embed"},
    ]
    dual_maps = {"Linear": linear_dualize, "Embed": embed_dualize}
    # The capped step on weights of its own, as in training: no other optimizer moves them
    # between its steps (its certificate's warm start follows them).
    own = {id(p): copy_of(p) for p in hidden + other}
    groups_own = [{**g, "params": [own[id(p)] for p in g["params"]]} for g in groups]
    capped = Dualized(groups_own, dual_maps, lr=0.02, compile=compile)
    cap = [(own[id(p)], 1.0, spectral_norm_upper, spectral_cap) for p in hidden + other[1:]]
    capped.constrain = Constrain(cap)
    capped.register_step_post_hook(capped.constrain)
    return {
        "modc dualized": [Dualized(groups, dual_maps, lr=0.02, compile=compile)],
        "modc dualized capped": [capped],
        "torch Muon": [
            torch.optim.Muon(hidden, lr=0.02, ns_steps=ns),
            torch.optim.AdamW(other, lr=1e-3),
        ],
        "AdamW": [torch.optim.AdamW(hidden + other, lr=1e-3)],
    }


def orthogonalization(hidden: list, device: torch.device, repeats: int) -> tuple[float, float]:
    """(seconds, multiply-adds) of modc's polar() over the hidden matrices' banks."""
    ns = steps_per_polar()
    bank_list = [torch.stack([hidden[i].grad for i in b]) for b in banks(hidden)]
    macs = 0
    for bank in bank_list:
        short, long = sorted(bank.shape[-2:])
        cost = min(gram_flops(short, long, ns), standard_flops(short, long, ns))
        macs += len(bank) * cost

    def run() -> None:
        for bank in bank_list:
            polar(bank, steps=ns)
        if device.type == "cuda":
            torch.cuda.synchronize()

    return median_of(run, repeats), macs


def certificate_core(constrain: Constrain, device: torch.device, repeats: int) -> float:
    """Seconds of the two operations the cap's proof cannot do without, over its banks: each
    bank's Gram, as `cholesky_sigma_upper` forms it (stacked, short side, in the dtype the
    certificate computes in), and a batched Cholesky of c·I − G that completes."""
    stacks = []
    for weights in constrain.banks.values():
        bank = torch.stack([w.detach() for w in weights]).to(_bound_dtype(weights[0]))
        stacks.append(bank.mT if bank.shape[-2] < bank.shape[-1] else bank)  # a view

    def run() -> None:
        for bank in stacks:
            g = _gram(bank)
            trace = g.diagonal(dim1=-2, dim2=-1).sum(-1)  # c = tr G ≥ λ_max: it completes
            a = g.neg_()
            a.diagonal(dim1=-2, dim2=-1).add_(trace[:, None])
            info = torch.empty(len(a), dtype=torch.int32, device=a.device)
            torch.linalg.cholesky_ex(a.mT, out=(a.mT, info))
        if device.type == "cuda":
            torch.cuda.synchronize()

    return median_of(run, repeats)


def profile_cap(constrain: Constrain, calls: int = 20, rows: int = 12) -> str:
    """torch.profiler's table of the cap's hook alone, `calls` calls after 5 to warm up: the
    operations its time goes to (milliseconds are totals over the calls)."""
    from torch.profiler import profile

    for _ in range(5):
        constrain()
    with profile() as prof:
        for _ in range(calls):
            constrain()
    return prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=rows)


def parts(hidden: list, device: torch.device, repeats: int) -> dict[str, tuple[float, float]]:
    """Per bank shape: (seconds of modc's polar() on the bank, seconds of Muon's own
    iteration over its matrices one by one), with the same number of steps."""
    from torch.optim._muon import _zeropower_via_newtonschulz

    ns, muon = steps_per_polar(), (3.4445, -4.775, 2.0315)

    def synced(fn, *args) -> None:
        fn(*args)
        if device.type == "cuda":
            torch.cuda.synchronize()

    def each(bank: torch.Tensor) -> None:
        for g in bank:
            _zeropower_via_newtonschulz(g, muon, ns, 1e-7)

    out = {}
    for b in banks(hidden):
        bank = torch.stack([hidden[i].grad for i in b])
        ours = median_of(functools.partial(synced, polar, bank, ns), repeats)
        theirs = median_of(functools.partial(synced, each, bank), repeats)
        out[f"{len(b)} x {tuple(bank.shape[-2:])}"] = (ours, theirs)
    return out


def median_of(run, repeats: int) -> float:
    for _ in range(3):
        run()
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        run()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def step_times(
    opts: dict[str, list], device: torch.device, repeats: int, turns: str
) -> tuple[dict, dict]:
    """Median seconds of a step of each optimizer, the optimizers taking turns so that a
    shared machine's noise falls on all of them alike: 3 rounds of a block of `repeats`
    steps each, each block after 3 warm-up steps ("round"), or one step each at a time,
    3·repeats steps after 3 warm-up steps ("step"). In a block an optimizer finds its own
    tensors in cache, as in training it would not after a forward and backward pass; taking
    turns step by step it never does. Also the median number of page faults (minor: fresh
    pages the process touched) in a step of each: what allocating its buffers anew costs."""
    faults: dict[str, list[int]] = {name: [] for name in opts}

    def step(name: str) -> float:
        before, start = resource.getrusage(resource.RUSAGE_SELF).ru_minflt, time.perf_counter()
        for opt in opts[name]:
            opt.step()
        if device.type == "cuda":
            torch.cuda.synchronize()
        seconds = time.perf_counter() - start
        faults[name].append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
        return seconds

    times: dict[str, list[float]] = {name: [] for name in opts}
    if turns == "round":
        for _ in range(3):
            for name in opts:
                times[name].append(median_of(functools.partial(step, name), repeats))
    else:
        for k in range(3 + 3 * repeats):
            for name in opts:
                seconds = step(name)
                if k >= 3:
                    times[name].append(seconds)
    median = {name: statistics.median(v) for name, v in times.items()}
    return median, {name: statistics.median(v) for name, v in faults.items()}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--size", choices=SIZES, default=None, help="default: gpu on CUDA, else cpu")
    p.add_argument("--repeats", type=int, default=15)
    p.add_argument("--compile", action="store_true", help="modc's step through torch.compile")
    p.add_argument("--parts", action="store_true", help="also time each bank's polar alone")
    p.add_argument("--json", action="store_true")
    p.add_argument("--profile", action="store_true", help="profile the cap's hook (stderr)")
    p.add_argument(
        "--turns",
        choices=["round", "step"],
        default="round",
        help="optimizers take turns by blocks of --repeats steps, or step by step (cold caches)",
    )
    args = p.parse_args()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    size = args.size or ("gpu" if device.type == "cuda" else "cpu")
    width, depth = SIZES[size]
    hidden, other = parameters(width, depth, device)
    opts = optimizers(hidden, other, args.compile)
    t, faults = step_times(opts, device, args.repeats, args.turns)
    constrain = opts["modc dualized capped"][0].constrain
    calls = 3 * (3 + args.repeats) if args.turns == "round" else 3 + 3 * args.repeats
    checks = sum(len(w) for w in constrain.banks.values()) * calls
    failed = sum(state.get("failed", 0) for state in constrain.state.values())
    core = certificate_core(constrain, device, args.repeats)
    out = {
        "device": torch.cuda.get_device_name() if device.type == "cuda" else "cpu",
        "threads": torch.get_num_threads(),
        "polar_dtype": str(fast_dtype(device)).removeprefix("torch."),
        "size": size,
        "width": width,
        "depth": depth,
        "ns_steps": steps_per_polar(),
        "compile": args.compile,
        "turns": args.turns,
        "seconds": t,
        "page_faults_per_step": faults,
        "ratio_vs_torch_muon": t["modc dualized"] / t["torch Muon"],
        "ratio_vs_adamw": t["modc dualized"] / t["AdamW"],
        "ratio_capped_vs_uncapped": t["modc dualized capped"] / t["modc dualized"],
        # the Gram and the Cholesky alone: a floor under the cap's cost
        "cap_core_seconds": core,
        "ratio_floor_from_core": 1 + core / t["modc dualized"],
        # matrices whose Cholesky certificate failed (counted on a CPU only)
        "cap_certificates_failed": f"{failed} of {checks}",
    }
    if device.type == "cuda":
        seconds, macs = orthogonalization(hidden, device, args.repeats)
        peak = next((f for name, f in PEAKS if name in out["device"]), None)
        out["orthogonalization_tflops"] = 2 * macs / seconds / 1e12
        out["fraction_of_bf16_peak"] = 2 * macs / seconds / peak if peak else None
    if args.parts:
        out["parts_seconds"] = {
            name: {"modc polar": a, "muon iteration": b}
            for name, (a, b) in parts(hidden, device, args.repeats).items()
        }
    if args.profile:
        print("the cap's hook alone, 20 calls:\n" + profile_cap(constrain), file=sys.stderr)
    if args.json:
        print(json.dumps(out))
        return
    print(
        f"device {out['device']} ({out['threads']} threads), width {width}, depth {depth}, "
        f"{out['ns_steps']} iterations, polar in {out['polar_dtype']}, turns by {args.turns}"
    )
    for name, sec in t.items():
        print(f"  {name:<20} {1e3 * sec:8.2f} ms/step (median)")
    faults = ", ".join(f"{name} {n:g}" for name, n in out["page_faults_per_step"].items())
    print(f"  page faults per step (median): {faults}")
    print(f"  modc / torch Muon = {out['ratio_vs_torch_muon']:.2f}")
    print(f"  capped / uncapped = {out['ratio_capped_vs_uncapped']:.2f}")
    print(f"  cap certificates failed: {out['cap_certificates_failed']}")
    print(
        f"  the cap's Gram and Cholesky alone {1e3 * core:.2f} ms: "
        f"capped / uncapped >= {out['ratio_floor_from_core']:.2f} with them"
    )
    print(f"  modc / AdamW      = {out['ratio_vs_adamw']:.2f}")
    for name, part in out.get("parts_seconds", {}).items():
        a, b = part["modc polar"], part["muon iteration"]
        print(f"  {name}: modc polar {1e3 * a:.1f} ms, Muon's iteration {1e3 * b:.1f} ms")
    if "orthogonalization_tflops" in out:
        fraction = out["fraction_of_bf16_peak"]
        print(
            f"  orthogonalisation {out['orthogonalization_tflops']:.1f} TFLOP/s"
            + (f", {fraction:.0%} of bf16 dense peak" if fraction else "")
        )


if __name__ == "__main__":
    main()
