"""Emit distributed.py: torch.distributed for the generated train.py (modc.runtime.distributed)."""

from __future__ import annotations

from modc.codegen.source import module, snippets
from modc.runtime import distributed


def emit_distributed() -> str:
    """The text of distributed.py: every function and class of modc.runtime.distributed."""
    doc = distributed.__doc__.strip() + "\n\nCopied by modc from modc.runtime.distributed.\n"
    public = [
        distributed.ranks,
        distributed.launched,
        distributed.join,
        distributed.leave,
        distributed.data_parallel,
        distributed.micro_batches,
        distributed.mean_over_ranks,
        distributed.Dealer,
        distributed.split_dual_maps,
        distributed.share_work,
        distributed.shard,
        distributed.rows_for_all,
        distributed.average_grad,
        distributed.sharded,
        distributed.gathered,
        distributed.save_shards,
        distributed.prune_shards,
        distributed.load_shards,
    ]
    return module(doc, snippets(public))
