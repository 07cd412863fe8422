"""Training on several processes with torch.distributed, as torchrun launches them.

Data parallel: every rank holds the whole model (wrapped in DDP, which averages the
gradients over the ranks in backward) and a share of each step's batch; the global batch
of a step is a function of (seed, step), so rank r's share is one of (seed, step, r) and a
run is the same whichever ranks draw it. After DDP every rank holds the same gradients, so
Dualized would compute every polar factor on every rank. `split_dual_maps` deals each
bank's matrices out to the ranks instead: a rank computes the dual map of its share only,
and one all-gather per bank gives every rank the whole bank's update, the update of one
process. Momentum stays on every rank (elementwise, cheap), so the optimizer's state is
the same everywhere and rank 0's checkpoint is the run's.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from datetime import timedelta

import torch
import torch.distributed as dist
from torch import nn


def ranks() -> tuple[int, int]:
    """(this process's rank, the number of ranks): (0, 1) outside a process group."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def launched() -> bool:
    """Whether torchrun (or another launcher of its kind) started this process."""
    return "RANK" in os.environ and "WORLD_SIZE" in os.environ


def join(device: torch.device, timeout_s: float) -> torch.device:
    """Join the process group that torchrun's environment describes; returns this rank's
    device. nccl on CUDA (one GPU a rank: LOCAL_RANK), gloo on CPU. A collective that waits
    longer than `timeout_s` for another rank fails, so a rank that died or hangs stops
    the others."""
    if device.type == "cuda":
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
        torch.cuda.set_device(device)
    backend = "nccl" if device.type == "cuda" else "gloo"
    dist.init_process_group(backend, timeout=timedelta(seconds=timeout_s))
    return device


def leave() -> None:
    """Leave the process group, if this process is in one."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def data_parallel(model: nn.Module, device: torch.device) -> nn.Module:
    """`model` wrapped in DistributedDataParallel when there are several ranks, else itself."""
    if ranks()[1] == 1:
        return model
    ids = [device.index] if device.type == "cuda" else None
    return nn.parallel.DistributedDataParallel(model, device_ids=ids)


def micro_batches(
    dataset: object, step: int, batch_size: int, accum: int, seed: int
) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """This rank's `accum` micro-batches of `batch_size` examples for `step`.

    The step's global batch, batch_size × ranks × accum examples, is the data set's batch
    of that size for (step, seed); micro-batch k of rank r is its piece k · ranks + r. One
    process with the global batch size therefore sees the very same examples.
    """
    rank, world = ranks()
    x, y = dataset.batch(step, batch_size * world * accum, seed)
    pieces = [(k * world + rank) * batch_size for k in range(accum)]
    return [(x[i : i + batch_size], y[i : i + batch_size]) for i in pieces]


def mean_over_ranks(value: float, device: torch.device) -> float:
    """The mean of `value` over the ranks (every rank gets it); `value` alone on one rank."""
    if ranks()[1] == 1:
        return value
    t = torch.tensor([value], dtype=torch.float64, device=device)
    dist.all_reduce(t)
    return t.item() / ranks()[1]


class Dealer:
    """Which rank computes which matrices of a bank, over all the banks of a step.

    The matrices of a bank of k go in chunks of ceil(k / ranks) to consecutive ranks,
    starting where the previous bank stopped, so that banks of one matrix (every matrix
    of its own shape) spread over the ranks too. `gathered` counts the bytes that the
    all-gathers have delivered to each rank so far (its own chunk included).
    """

    def __init__(self) -> None:
        self.next = 0
        self.gathered = 0

    def split(self, dual_map: Callable) -> Callable:
        """`dual_map` (of a bank, stacked on dim 0) computed as shares across the ranks."""

        def split_dual_map(grads: torch.Tensor, scales: torch.Tensor, **polar) -> torch.Tensor:
            rank, world = ranks()
            if world == 1:
                return dual_map(grads, scales, **polar)
            k, start = len(grads), self.next
            chunk = -(-k // world)
            first = (rank - start) % world * chunk  # rank `start` deals the first chunk
            mine = slice(min(first, k), min(first + chunk, k))
            share = grads.new_zeros(chunk, *grads.shape[1:])
            if mine.start < mine.stop:
                share[: mine.stop - mine.start] = dual_map(grads[mine], scales[mine], **polar)
            self.next = (start + -(-k // chunk)) % world
            return self.gather(share, world).roll(-start * chunk, 0)[:k]  # in the deal's order

        return split_dual_map

    @torch.compiler.disable
    def gather(self, share: torch.Tensor, world: int) -> torch.Tensor:
        """Every rank's share, stacked in rank order."""
        out = share.new_empty(world * len(share), *share.shape[1:])
        # all_gather_single since torch 2.13, all_gather_into_tensor before
        gather = getattr(dist, "all_gather_single", None) or dist.all_gather_into_tensor
        gather(out, share.contiguous())
        self.gathered += out.numel() * out.element_size()
        return out


def split_dual_maps(dual_maps: dict, atoms: tuple[str, ...], dealer: Dealer) -> dict:
    """`dual_maps` with those of `atoms` (the polar factors, where the work is) computed
    as shares across the ranks by `dealer`; the others, cheap, on every rank."""
    return {a: dealer.split(f) if a in atoms else f for a, f in dual_maps.items()}
