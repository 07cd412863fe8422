"""Data-parallel dualized steps on 1, 2 (and 4) processes: four ways to share the work,
against plain DDP with every polar factor computed on every rank (the baseline).

Each process holds a GPT-like parameter set (per block Q, K, V, O (d × d) and the MLP
(4d × d, d × 4d); an embedding and a head (vocab × d)) with random gradients. A step is the
gradients' communication and the optimizer's step:
  redundant  DDP: the gradients all-reduced (averaged) as one flat tensor, as DDP's buckets
             do; every rank computes every polar factor
  split      DDP as above, then each bank's matrices dealt out to the ranks and the updates
             all-gathered (modc.runtime.distributed.Dealer; what train.py does under torchrun)
  bank       modded-nanogpt's: each bank's gradients reduce-scattered by whole matrices, so a
             rank receives the averaged gradients of its own matrices only, and keeps their
             momentum; it steps them and the updated weights are all-gathered (the rest, the
             embedding, all-reduced). Measured here only: train.py leaves gradients to DDP
  fsdp       FSDP2's (train.py --fsdp): weights sharded by rows, all-gathered for the forward
             and again for the backward, gradients reduce-scattered by rows; the dual map
             sends each matrix's rows to its owner and the update's rows back (all-to-alls)
Bytes are those each rank sends per step, by the ring algorithms: an all-reduce of P bytes
sends 2 (n − 1)/n · P, a reduce-scatter or an all-gather of P bytes (n − 1)/n · P; the
all-to-alls' and the Dealer's all-gathers' bytes are counted as sent. Times are medians over
the steps, gloo on CPU, one thread a process (so that n processes use n cores, and 1
process is the single-core baseline).
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
from torch.distributed.device_mesh import init_device_mesh
from torch.distributed.tensor import DTensor, Shard

from modc.ops.embed import embed_dualize
from modc.ops.linear import linear_dualize
from modc.runtime.distributed import Dealer, rows_for_all, split_dual_maps
from modc.runtime.optim import Dualized, banks

VOCAB = 128
MAPS = {"Linear": linear_dualize, "Embed": embed_dualize}
METHODS = ("redundant", "split", "bank", "fsdp")


def shapes(width: int, depth: int) -> dict[str, list[tuple[int, int]]]:
    d = width
    hidden = [s for _ in range(depth) for s in [(d, d)] * 4 + [(4 * d, d), (d, 4 * d)]]
    return {"Linear": [*hidden, (VOCAB, d)], "Embed": [(VOCAB, d)]}


def groups(width: int, depth: int) -> list[dict]:
    """The parameter groups, each weight with a random gradient (the same on every rank:
    the averaged gradient of a step)."""
    out = []
    for atom, ss in shapes(width, depth).items():
        ps = [torch.randn(*s, requires_grad=True) for s in ss]
        for p in ps:
            p.grad = torch.randn_like(p)
        out.append({"params": ps, "targets": [1.0 / len(ps)] * len(ps), "atom": atom})
    return out


def ring(collective: str, nbytes: float, world: int) -> float:
    """Bytes one rank sends in a ring `collective` of `nbytes`."""
    return (2 if collective == "all_reduce" else 1) * (world - 1) / world * nbytes


def nbytes(t: torch.Tensor) -> int:
    return t.numel() * t.element_size()


class Step:
    """One method's step, its bytes sent per step (`sent`), and its step times."""

    def __init__(self, method: str, args: argparse.Namespace, world: int) -> None:
        self.method, self.world, self.times = method, world, []
        self.dealer = Dealer()
        gs = groups(args.width, args.depth)
        self.params = [p for g in gs for p in g["params"]]
        self.flat = torch.cat([p.grad.flatten() for p in self.params])
        if method == "bank":
            self.setup_bank(gs)
        elif method == "fsdp":
            self.setup_fsdp(gs)
        if method != "bank":
            split = method != "redundant"
            maps = split_dual_maps(MAPS, ("Linear",), self.dealer) if split else MAPS
            self.optimizer = Dualized(gs, maps, lr=0.01)
        self.fixed = self.fixed_bytes(nbytes(self.flat))

    def fixed_bytes(self, size: int) -> float:
        """Bytes a rank sends per step in the collectives of gradients and weights (those
        of the Dealer, which depend on the deal, are counted by it)."""
        world = self.world
        if self.method == "bank":
            stacks = sum(2 * ring("reduce_scatter", nbytes(s), world) for s, _, _ in self.banks)
            return stacks + ring("all_reduce", sum(nbytes(p) for p in self.rest), world)
        if self.method == "fsdp":  # the weights gathered twice, the gradients reduce-scattered
            return 3 * ring("reduce_scatter", size, world)
        return ring("all_reduce", size, world)  # DDP

    def setup_bank(self, gs: list[dict]) -> None:
        """Per Linear bank: a stack of its gradients, padded to whole chunks, and this
        rank's chunk of matrices, stepped by an optimizer of its own with the embedding."""
        linear, world = gs[0], self.world
        self.banks, owned = [], {"params": [], "targets": [], "atom": "Linear"}
        for bank in banks(linear["params"]):
            shape = linear["params"][bank[0]].shape
            stack = torch.zeros(-(-len(bank) // world) * world, *shape)
            own = [torch.nn.Parameter(torch.zeros(shape)) for _ in range(len(stack) // world)]
            self.banks.append((stack, [linear["params"][i] for i in bank], own))
            owned["params"] += own
            owned["targets"] += [linear["targets"][bank[0]]] * len(own)
        self.rest = gs[1]["params"]
        self.optimizer = Dualized([owned, gs[1]], MAPS, lr=0.01)

    def setup_fsdp(self, gs: list[dict]) -> None:
        """Every weight and gradient a DTensor of this rank's rows (as FSDP2's)."""
        mesh = init_device_mesh("cpu", (self.world,))
        for g in gs:
            for i, p in enumerate(g["params"]):
                if not rows_for_all(p.shape, self.world):
                    continue
                rows = [len(c) for c in p.detach().chunk(self.world)]
                start = sum(rows[: dist.get_rank()])
                local = p.detach()[start : start + rows[dist.get_rank()]].clone()
                grad = p.grad[start : start + len(local)].clone()
                layout = {"shape": p.shape, "stride": p.stride()}
                g["params"][i] = torch.nn.Parameter(
                    DTensor.from_local(local, mesh, [Shard(0)], **layout)
                )
                g["params"][i].grad = DTensor.from_local(grad, mesh, [Shard(0)], **layout)
        self.params = [p for g in gs for p in g["params"]]

    def __call__(self, timed: bool) -> None:
        dist.barrier()
        t0 = time.perf_counter()
        world = self.world
        if self.method in ("redundant", "split"):
            dist.all_reduce(self.flat)  # DDP's gradient averaging, in one bucket
            self.flat.div_(world)
            self.optimizer.step()
        elif self.method == "fsdp":
            padded = -(-self.flat.numel() // world) * world
            full = torch.zeros(padded)
            full[: self.flat.numel()] = self.flat
            for _ in range(2):  # the weights, gathered for the forward and the backward
                dist.all_gather_into_tensor(full, full[: padded // world].clone())
            piece = torch.empty(padded // world)
            dist.reduce_scatter_tensor(piece, full)  # the gradients, by rows
            self.optimizer.step()
        else:
            self.bank_step()
        if timed:
            self.times.append(time.perf_counter() - t0)

    def bank_step(self) -> None:
        """Reduce-scatter each bank by whole matrices, step this rank's, all-gather them."""
        for stack, params, own in self.banks:
            torch._foreach_copy_(list(stack[: len(params)].unbind(0)), [p.grad for p in params])
            mine = torch.empty(len(own), *stack.shape[1:])
            dist.reduce_scatter_tensor(mine, stack)
            for p, g in zip(own, mine.div_(self.world).unbind(0), strict=True):
                p.grad = g
        for p in self.rest:
            dist.all_reduce(p.grad)
            p.grad.div_(self.world)
        self.optimizer.step()
        with torch.no_grad():
            for stack, params, own in self.banks:
                dist.all_gather_into_tensor(stack, torch.stack([p.detach() for p in own]))
                torch._foreach_copy_(params, list(stack[: len(params)].unbind(0)))

    def report(self, steps: int) -> dict:
        return {
            "seconds": statistics.median(self.times),
            "bytes": self.fixed + self.dealer.sent / (steps + 1),
        }


def worker(rank: int, world: int, rendezvous: str, args: argparse.Namespace, out: str) -> None:
    """Steps of every method, interleaved (so that a change in the machine's load hits all
    alike), one thread a process; rank 0 writes the medians and the bytes to `out`."""
    dist.init_process_group("gloo", init_method=rendezvous, rank=rank, world_size=world)
    torch.set_num_threads(1)
    torch.manual_seed(0)
    steps = {m: Step(m, args, world) for m in METHODS}
    for step in range(args.steps + 1):  # the first warms up
        for s in steps.values():
            s(timed=step > 0)
    results = {m: s.report(args.steps) for m, s in steps.items()}
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
