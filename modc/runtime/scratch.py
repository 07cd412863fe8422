"""Buffers an optimizer keeps from one step to the next, so that a step allocates nothing big.

On a CPU the memory a step frees goes back to the system (glibc unmaps large blocks and
trims the top of its heap), and the next step's fresh buffers pay a page fault for every
4 KiB they touch: `bench/optimizer_step.py` counts them per step. torch.optim.Muon, whose
buffers are each one small matrix, takes almost none; modc's dualized step, whose buffers
are whole banks, took thousands a step before it drew them from a `Scratch`.
"""

from __future__ import annotations

import math
import threading

from modc.lazy import LazyModule

torch = LazyModule("torch")  # imported when first used: certify.py's users may not need it


class Scratch:
    """Storage kept per (role, dtype, device), grown to the largest size asked of it. Banks
    of different shapes use it one after another, so it holds the largest bank's buffers,
    not all of them. `with scratch:` makes it this thread's current scratch, from which
    `Scratch.empty` (and so `polar()`) draws; a tensor drawn for a role is overwritten by
    the next draw of that role, so it must be used before then."""

    _current = threading.local()  # per thread: the scratch of the innermost `with`

    def __init__(self) -> None:
        self.storage: dict[tuple, torch.Tensor] = {}
        self.outer: list[Scratch | None] = []

    def __enter__(self):  # unannotated: generated code evaluates annotations at once
        self.outer.append(getattr(Scratch._current, "scratch", None))
        Scratch._current.scratch = self
        return self

    def __exit__(self, *exc: object) -> None:
        Scratch._current.scratch = self.outer.pop()

    def take(
        self, role: str, shape: tuple[int, ...], dtype: torch.dtype, device: torch.device
    ) -> torch.Tensor:
        """A contiguous tensor of `shape` over the storage of `role`, values as they were."""
        numel, key = math.prod(shape), (role, dtype, device)
        flat = self.storage.get(key)
        if flat is None or flat.numel() < numel:
            flat = self.storage[key] = torch.empty(numel, dtype=dtype, device=device)
        return flat[:numel].view(shape)

    @staticmethod
    def empty(
        role: str, shape: tuple[int, ...], dtype: torch.dtype, device: torch.device
    ) -> torch.Tensor:
        """A buffer from this thread's current scratch, else a fresh tensor (always while
        torch.compile traces: it plans its own buffers)."""
        compiling = torch.compiler.is_compiling()
        scratch = None if compiling else getattr(Scratch._current, "scratch", None)
        if scratch is None:
            return torch.empty(shape, dtype=dtype, device=device)
        return scratch.take(role, shape, dtype, device)
