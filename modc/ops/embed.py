"""Embed: token ids → rows of a (num × dim) table.

Norm: the largest row RMS, max_r ‖W_r‖₂ / √dim, which bounds the output's RMS per token
(inputs measured as one-hot codes in ℓ1). Dual map: every row of the gradient scaled to
ℓ2 norm target·√dim, zero rows left at zero: the steepest direction under a max of row
norms moves every row as far as allowed.
"""

from __future__ import annotations

import math

import sympy

from modc.lazy import LazyModule
from modc.ops.base import Arg, Atom, Layer, Shape
from modc.runtime.certify import spectral_norm_upper

torch = LazyModule("torch")


def embed_dualize(grad: torch.Tensor, target: float) -> torch.Tensor:
    """Steepest-descent update of norm `target`: each nonzero row of grad to ℓ2 target·√dim."""
    rows = grad.norm(dim=-1, keepdim=True)
    scale = (target * math.sqrt(grad.shape[-1])) / rows.clamp_min(1e-30)
    return grad * torch.where(rows > 0, scale, torch.zeros_like(scale))


def embed_norm(weight: torch.Tensor) -> float:
    """The largest row RMS, max_r ‖W_r‖₂ / √dim, in float64."""
    rows = weight.detach().double().norm(dim=-1)
    return rows.max().item() / math.sqrt(weight.shape[-1])


def embed_lipschitz(weight: torch.Tensor) -> float:
    """Sound ℓ2 bound for the table as a linear map of one-hot codes: σ_max(W) with a margin."""
    return spectral_norm_upper(weight)


def embed_lipschitz_activation(weight: torch.Tensor) -> float:
    """Sound bound from one-hot codes (ℓ1) to RMS per token: the largest row RMS, with a margin."""
    eps = torch.finfo(torch.float64).eps
    return embed_norm(weight) * (1 + 4 * weight.shape[-1] * eps) + torch.finfo(torch.float64).tiny


class EmbedOp(Atom):
    """Embed(num, dim): ids in [0, num) of any shape → vectors of `dim` features."""

    name = "Embed"
    args = (Arg("num"), Arg("dim"))
    module = Layer("Embed")
    dualize = embed_dualize
    norm = embed_norm
    lipschitz = embed_lipschitz
    lipschitz_activation = embed_lipschitz_activation

    def l2_factor(self) -> sympy.Expr:
        """σ_max(W) ≤ ‖W‖_F ≤ √(num·dim)·(largest row RMS)."""
        return sympy.sqrt(self.values["num"] * self.values["dim"])

    def l2_reference(self) -> sympy.Expr:
        """√max(num, dim): the least σ_max(W) of a table whose rows all have RMS 1 (norm 1),
        attained by a tight frame; each code then moves the output by √dim. The bound
        above, √(num·dim), is met only when all rows are equal."""
        return sympy.sqrt(sympy.Max(self.values["num"], self.values["dim"]))

    def shape(self, x: Shape) -> Shape:
        return (*x, self.values["dim"])

    def weight_shape(self) -> Shape:
        return (self.values["num"], self.values["dim"])

    def constructor(self) -> str:
        num, dim = self.weight_shape()
        return f"Embed({num}, {dim})"
