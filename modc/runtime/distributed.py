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

Fully sharded (FSDP2, `shard`): every weight, gradient and optimizer state is a DTensor
whose rows are split over the ranks (FSDP2 all-gathers the weights for each forward and
backward and reduce-scatters the gradients). The polar factor of a shard is not the shard
of a polar factor, so the dualized optimizer sends each matrix's rows to the rank that
owns it (one all-to-all), which computes the dual map of the whole matrix, and sends each
rank its rows of the update (one all-to-all back). Checkpoints are written by every rank
with torch.distributed.checkpoint (`save_shards`); the certificate and evaluation run on
rank 0 on a copy with the whole weights (`gathered`).
"""

from __future__ import annotations

import math
import os
import shutil
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

import torch
import torch.distributed as dist
import torch.distributed.checkpoint as dcp
import torch.distributed.checkpoint.state_dict as dcp_state
from torch import nn
from torch.distributed.fsdp import fully_shard
from torch.distributed.tensor import DTensor


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


def leave(together: bool = False) -> None:
    """Leave the process group, if this process is in one; `together`: once every rank has
    come to leave it (after a run: a rank that tears its group down while rank 0 still
    writes the run's last files can abort, as seen under FSDP2 on gloo)."""
    if dist.is_available() and dist.is_initialized():
        if together:
            dist.barrier()
        dist.destroy_process_group()


def data_parallel(model: nn.Module, device: torch.device) -> nn.Module:
    """`model` wrapped in DistributedDataParallel when there are several ranks and it is not
    sharded (FSDP2 does its own communication), else itself."""
    if ranks()[1] == 1 or sharded(model):
        return model
    ids = [device.index] if device.type == "cuda" else None
    return nn.parallel.DistributedDataParallel(model, device_ids=ids)


def micro_batches(
    dataset: object, step: int, batch_size: int, accum: int, seed: int
) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """This rank's `accum` micro-batches of `batch_size` examples for `step`.

    The step's global batch, batch_size × ranks × accum examples, is the data set's batch
    of that size for (step, seed); micro-batch k of rank r is its piece k · ranks + r. One
    process with the global batch size therefore sees the very same examples. A data set
    smaller than the global batch gives it all its examples: one micro-batch takes them
    all, but several (processes, --grad-accum or a batch schedule's) would share them
    unevenly, some none (a NaN loss, every step skipped): a ValueError says so.
    """
    rank, world = ranks()
    x, y = dataset.batch(step, batch_size * world * accum, seed)
    if world * accum > 1 and len(x) < batch_size * world * accum:
        raise ValueError(
            f"a step's global batch of {batch_size * world * accum} examples is more than the "
            f"{len(x)} that the data set trains on: lower --batch-size, --grad-accum or the "
            "--batch-schedule's tokens"
        )
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
    of its own shape) spread over the ranks too. `sent` counts the bytes that this rank
    has sent to the others so far (all-gathers, or all-to-alls under FSDP2).
    """

    def __init__(self) -> None:
        self.next = 0
        self.sent = 0

    def split(self, dual_map: Callable) -> Callable:
        """`dual_map` (of a bank, stacked on dim 0) computed as shares across the ranks."""

        def split_dual_map(grads: torch.Tensor, scales: torch.Tensor, **polar) -> torch.Tensor:
            rank, world = ranks()
            if isinstance(grads, DTensor):  # FSDP2: every rank holds rows of every matrix
                # (a mesh of one too: the dual maps see whole, plain matrices)
                return self.owned(dual_map, grads, scales, self.deal(len(grads), world), polar)
            if world == 1:
                return dual_map(grads, scales, **polar)
            owners = self.deal(len(grads), world)
            k, chunk = len(grads), -(-len(grads) // world)
            mine = [i for i, owner in enumerate(owners) if owner == rank]
            share = grads.new_zeros(chunk, *grads.shape[1:])
            if mine:
                part = slice(mine[0], mine[-1] + 1)
                share[: len(mine)] = dual_map(grads[part], scales[part], **polar)
            # rank owners[0] dealt the first chunk: roll the gathered chunks into bank order
            return self.gather(share, world).roll(-owners[0] * chunk, 0)[:k]

        return split_dual_map

    def deal(self, k: int, world: int) -> list[int]:
        """The rank that computes each matrix of a bank of k: chunks of ceil(k / world) to
        consecutive ranks, from the rank after the one that dealt the last chunk before."""
        start, chunk = self.next, -(-k // world)
        self.next = (start + -(-k // chunk)) % world
        return [(start + i // chunk) % world for i in range(k)]

    def owned(
        self,
        dual_map: Callable,
        grads: DTensor,
        scales: torch.Tensor,
        owners: list[int],
        polar: dict,
    ) -> DTensor:
        """The dual map of a bank (k, m, ...) whose matrices FSDP2 shards by rows (dim 1 of
        the bank): one all-to-all gives each matrix's rows to its owner, which computes the
        dual map of the whole matrix; one all-to-all gives each rank its rows of the updates."""
        if len(grads.placements) != 1 or not grads.placements[0].is_shard(dim=1):
            raise ValueError(f"a bank sharded as {grads.placements}; expected by rows")
        group = grads.device_mesh.get_group()
        rank, world = dist.get_rank(group), dist.get_world_size(group)
        k, m, inner = len(grads), grads.shape[1], math.prod(grads.shape[2:])
        rows = [-(-m // world)] * world  # torch.chunk's split, as DTensor's Shard(1)
        rows = [max(0, min(r, m - q * r)) for q, r in enumerate(rows)]
        mine = [i for i, owner in enumerate(owners) if owner == rank]
        counts = [owners.count(q) for q in range(world)]
        local = grads.to_local()
        order = sorted(range(k), key=lambda i: owners[i])  # by owner, then by place in bank
        ours = [len(mine) * r * inner for r in rows]  # the rows of our matrices, by sender
        theirs = [c * rows[rank] * inner for c in counts]  # our rows of theirs, by owner
        got = self.exchange(local[order].flatten(), ours, theirs, group)
        pieces = got.split(ours)
        whole = torch.cat(
            [p.view(len(mine), r, *grads.shape[2:]) for p, r in zip(pieces, rows, strict=True)],
            dim=1,
        )
        update = dual_map(whole, scales[mine], **polar) if mine else whole
        back = torch.cat([u.flatten() for u in update.split(rows, dim=1)])
        out = torch.empty_like(local)
        out[order] = self.exchange(back, theirs, ours, group).view_as(out)
        return DTensor.from_local(
            out, grads.device_mesh, grads.placements, shape=grads.shape, stride=grads.stride()
        )

    @torch.compiler.disable
    def exchange(
        self, data: torch.Tensor, received: list[int], sending: list[int], group: object
    ) -> torch.Tensor:
        """One all-to-all: `data` in pieces of `sending` elements, one for each rank in rank
        order; returns the pieces received, of `received` elements, in rank order."""
        out = data.new_empty(sum(received))
        dist.all_to_all_single(out, data.contiguous(), received, sending, group=group)
        self.sent += (sum(sending) - sending[dist.get_rank(group)]) * data.element_size()
        return out

    @torch.compiler.disable
    def gather(self, share: torch.Tensor, world: int) -> torch.Tensor:
        """Every rank's share, stacked in rank order."""
        out = share.new_empty(world * len(share), *share.shape[1:])
        # all_gather_single since torch 2.13, all_gather_into_tensor before
        gather = getattr(dist, "all_gather_single", None) or dist.all_gather_into_tensor
        gather(out, share.contiguous())
        self.sent += (world - 1) * share.numel() * share.element_size()
        return out


def split_dual_maps(dual_maps: dict, atoms: tuple[str, ...], dealer: Dealer) -> dict:
    """`dual_maps` with those of `atoms` (the polar factors, where the work is) computed
    as shares across the ranks by `dealer`; the others, cheap, on every rank (on the
    shards, under FSDP2: DTensor's operations gather what a norm needs)."""
    return {a: dealer.split(f) if a in atoms else on_shards(f) for a, f in dual_maps.items()}


def on_shards(dual_map: Callable) -> Callable:
    """`dual_map` that also takes a bank of DTensors (FSDP2's shards): its scales, the same
    on every rank, are made a DTensor replicated over the ranks to meet them."""

    def dual_map_on_shards(grads: torch.Tensor, scales: torch.Tensor, **polar) -> torch.Tensor:
        if isinstance(grads, DTensor):
            scales = DTensor.from_local(scales, grads.device_mesh, run_check=False)
        return dual_map(grads, scales, **polar)

    return dual_map_on_shards


def of_whole(norm: Callable) -> Callable:
    """`norm` of a weight taken on the whole weight: a weight that FSDP2 shards is gathered
    first (on every rank), since a norm of a shard is not the norm of the weight."""

    def whole_norm(weight: torch.Tensor) -> float:
        return norm(weight.full_tensor() if isinstance(weight, DTensor) else weight)

    return whole_norm


def share_work(optimizer: torch.optim.Optimizer, polar_atoms: tuple[str, ...]) -> None:
    """Set `optimizer` up for several ranks: the dualized optimizer's polar factors dealt
    out (`split_dual_maps`), the normalized optimizer's norms taken on whole weights. The
    other kinds compute the same update on every rank (under DDP) or work elementwise on
    their shards (AdamW, Adafactor under FSDP2, through DTensor's own operations)."""
    if ranks()[1] == 1:
        return
    if hasattr(optimizer, "dual_maps"):
        optimizer.dual_maps = split_dual_maps(optimizer.dual_maps, polar_atoms, Dealer())
    if hasattr(optimizer, "norms"):
        optimizer.norms = {atom: of_whole(norm) for atom, norm in optimizer.norms.items()}


# -- FSDP2 ------------------------------------------------------------------------------


def shard(model: nn.Module) -> None:
    """Shard `model` with FSDP2 (fully_shard) over all ranks: each block of a ModuleList
    its own unit (its weights gathered for its forward and backward only), then the rest.
    A weight too small to give every rank rows (`rows_for_all`) stays whole on every rank,
    its gradient averaged over the ranks after each backward."""
    whole = {p for p in model.parameters() if not rows_for_all(p.shape, ranks()[1])}
    for p in whole:
        p.register_post_accumulate_grad_hook(average_grad)
    for module in reversed(list(model.modules())):  # inner blocks before outer ones
        if isinstance(module, nn.ModuleList):
            for block in module:
                fully_shard(block, ignored_params=whole)
    fully_shard(model, ignored_params=whole)


def rows_for_all(shape: torch.Size, world: int) -> bool:
    """Whether FSDP2's split of dim 0 (torch.chunk's: ceil(rows / world) a rank) gives
    every rank at least one row; a rank without rows could not take a max over its shard."""
    return len(shape) > 0 and shape[0] > (world - 1) * -(-shape[0] // world)


def average_grad(param: torch.Tensor) -> None:
    """Average `param.grad` over the ranks (a weight that FSDP2 leaves whole)."""
    dist.all_reduce(param.grad)
    param.grad.div_(ranks()[1])


def sharded(model: nn.Module) -> bool:
    """Whether `model`'s weights are sharded (DTensors of FSDP2)."""
    return any(isinstance(p, DTensor) for p in model.parameters())


def gathered(model: nn.Module, build: Callable[[], nn.Module]) -> nn.Module | None:
    """`model` with its whole weights, for evaluation and the certificate on rank 0: a
    sharded model's weights are gathered from every rank (call it on all of them) into a
    plain copy that `build` makes, on rank 0 (None elsewhere); a model that is not sharded
    is itself."""
    if not sharded(model):
        return model
    options = dcp_state.StateDictOptions(full_state_dict=True, cpu_offload=True)
    state = dcp_state.get_model_state_dict(model, options=options)
    if ranks()[0] != 0:
        return None
    device = next(model.parameters()).device
    with torch.random.fork_rng([device] if device.type == "cuda" else []):
        copy = build().to(device)  # the fresh weights' random draws change no training run
    copy.load_state_dict(state)
    return copy


def optimizers(optimizer: torch.optim.Optimizer) -> list[torch.optim.Optimizer]:
    """The torch optimizers whose states make up `optimizer`'s (a Combined one's parts)."""
    return list(getattr(optimizer, "parts", [optimizer]))


def save_shards(
    out: Path, step: int, model: nn.Module, optimizer: torch.optim.Optimizer
) -> str | None:
    """Every rank writes its shards of the model's and the optimizer's state, with
    torch.distributed.checkpoint, to the folder out/shards-STEP (written as
    shards-STEP.partial, renamed by rank 0 once all ranks are done, so that a folder under
    its final name is whole); returns its name, for checkpoint.pt, or None, saving nothing,
    when some rank's weights are not finite (every rank gets the same answer)."""
    ok = torch.tensor(
        [float(all(p.to_local().isfinite().all() for p in model.parameters()))],
        device=next(model.parameters()).device,
    )
    dist.all_reduce(ok, op=dist.ReduceOp.MIN)
    if not ok.item():
        return None
    name = f"shards-{step:08d}"
    partial = out / f"{name}.partial"
    if ranks()[0] == 0:
        shutil.rmtree(partial, ignore_errors=True)  # left by a run killed while saving
    dist.barrier()
    model_state, optimizer_state = dcp_state.get_state_dict(model, optimizers(optimizer))
    dcp.save({"model": model_state, "optimizer": optimizer_state}, checkpoint_id=partial)
    dist.barrier()  # every rank's files are written
    if ranks()[0] == 0:
        shutil.rmtree(out / name, ignore_errors=True)  # not the checkpoint's: it is older
        os.replace(partial, out / name)
    dist.barrier()
    return name


def prune_shards(out: Path, keep: str) -> None:
    """Remove every shards folder in `out` but `keep`, the one that checkpoint.pt names
    (call it after checkpoint.pt is written: until then it names the previous one)."""
    for folder in out.glob("shards-*"):
        if folder.name != keep:
            shutil.rmtree(folder, ignore_errors=True)


def load_shards(folder: Path, model: nn.Module, optimizer: torch.optim.Optimizer) -> None:
    """Load the model's and the optimizer's state from `folder` (save_shards'), on every
    rank; torch.distributed.checkpoint reshards it if the number of ranks changed."""
    model_state, optimizer_state = dcp_state.get_state_dict(model, optimizers(optimizer))
    state = {"model": model_state, "optimizer": optimizer_state}
    dcp.load(state, checkpoint_id=folder)
    dcp_state.set_state_dict(
        model,
        optimizers(optimizer),
        model_state_dict=state["model"],
        optim_state_dict=state["optimizer"],
    )
