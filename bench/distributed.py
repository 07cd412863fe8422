"""Data-parallel dualized steps on 1, 2 (and 4) processes: the dual map split across ranks
against plain DDP with every polar factor computed on every rank (the baseline).

Each process holds a GPT-like parameter set (per block Q, K, V, O (d × d) and the MLP
(4d × d, d × 4d); an embedding and a head (vocab × d)) with random gradients. A step is
what DDP + Dualized do: the gradients all-reduced (averaged) over the ranks as one flat
tensor, as DDP's buckets do, then the optimizer's step; "split" deals each bank's matrices
out to the ranks and all-gathers the updates (modc.runtime.distributed). Bytes are those
each rank sends per step by the ring algorithms: an all-reduce of P bytes sends
2 (n − 1)/n · P, an all-gather that delivers G bytes to every rank sends (n − 1)/n · G.
Times are medians over the steps, gloo on CPU, one thread a process (so that n processes
use n cores, and 1 process is the single-core baseline).
Usage: python bench/distributed.py [--procs 1 2 4] [--width 256] [--depth 4] [--steps 10]
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from modc.ops.embed import embed_dualize
from modc.ops.linear import linear_dualize
from modc.runtime.distributed import Dealer, split_dual_maps
from modc.runtime.optim import Dualized

VOCAB = 128
MAPS = {"Linear": linear_dualize, "Embed": embed_dualize}


def groups(width: int, depth: int) -> list[dict]:
    """The parameter groups, each weight with a random gradient."""
    d = width
    shapes = {
        "Linear": [s for _ in range(depth) for s in [(d, d)] * 4 + [(4 * d, d), (d, 4 * d)]]
        + [(VOCAB, d)],
        "Embed": [(VOCAB, d)],
    }
    out = []
    for atom, ss in shapes.items():
        ps = [torch.randn(*s, requires_grad=True) for s in ss]
        for p in ps:
            p.grad = torch.randn_like(p)
        out.append({"params": ps, "targets": [1.0 / len(ps)] * len(ps), "atom": atom})
    return out


def worker(rank: int, world: int, rendezvous: str, args: argparse.Namespace, out: str) -> None:
    """Steps of both methods, interleaved (so that a change in the machine's load hits both
    alike), one thread a process; rank 0 writes the medians and the bytes to `out`."""
    dist.init_process_group("gloo", init_method=rendezvous, rank=rank, world_size=world)
    torch.set_num_threads(1)
    torch.manual_seed(0)
    methods = {}
    for name in ("redundant", "split"):
        dealer = Dealer()
        gs = groups(args.width, args.depth)
        maps = split_dual_maps(MAPS, ("Linear",), dealer) if name == "split" else MAPS
        flat = torch.cat([p.grad.flatten() for g in gs for p in g["params"]])
        methods[name] = (Dualized(gs, maps, lr=0.01), flat, dealer, [])
    for step in range(args.steps + 1):  # the first warms up
        for opt, flat, _, times in methods.values():
            dist.barrier()
            t0 = time.perf_counter()
            dist.all_reduce(flat)  # DDP's gradient averaging, in one bucket
            flat.div_(world)
            opt.step()
            if step:
                times.append(time.perf_counter() - t0)
    results = {}
    for name, (_, flat, dealer, times) in methods.items():
        reduce_bytes = 2 * (world - 1) / world * flat.numel() * flat.element_size()
        gather_bytes = (world - 1) / world * dealer.gathered / (args.steps + 1)
        results[name] = {"seconds": statistics.median(times), "bytes": reduce_bytes + gather_bytes}
    if rank == 0:
        Path(out).write_text(json.dumps(results))
    dist.destroy_process_group()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--procs", type=int, nargs="+", default=[1, 2])
    p.add_argument("--width", type=int, default=256)
    p.add_argument("--depth", type=int, default=4)
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--json", action="store_true", help="print the results as JSON")
    args = p.parse_args()
    rows = {}
    for world in args.procs:
        with tempfile.TemporaryDirectory() as tmp:
            out = str(Path(tmp, "result.json"))
            mp.spawn(worker, (world, f"file://{tmp}/rendezvous", args, out), nprocs=world)
            rows[world] = json.loads(Path(out).read_text())
    if args.json:
        print(json.dumps(rows))
        return
    print(f"width {args.width}, depth {args.depth}; gloo on CPU; medians of {args.steps} steps")
    print(
        f"{'procs':>5} {'method':>10} {'MB sent/rank/step':>18} {'step ms':>9} {'vs redundant':>13}"
    )
    for world, r in rows.items():
        base = r["redundant"]
        for name, m in r.items():
            print(
                f"{world:>5} {name:>10} {m['bytes'] / 1e6:>18.2f} {m['seconds'] * 1e3:>9.1f} "
                f"{m['seconds'] / base['seconds']:>12.2f}x"
            )


if __name__ == "__main__":
    main()
