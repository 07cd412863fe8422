"""Pointwise bonds: ReLU and GELU (scaled to slope at most 1), both 1-Lipschitz."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

from modc.ops.base import Bond


def gelu(x: torch.Tensor) -> torch.Tensor:
    """GELU divided by its largest slope (1.1289041 at x = √2), so that it is 1-Lipschitz."""
    return F.gelu(x) / 1.1289042


class ReLU(Bond):
    name = "ReLU"

    def forward(self, inputs: Sequence[str], attr: str | None) -> str:
        return f"F.relu({inputs[0]})"


class GELU(Bond):
    name = "GELU"
    runtime = (gelu,)

    def forward(self, inputs: Sequence[str], attr: str | None) -> str:
        return f"gelu({inputs[0]})"
