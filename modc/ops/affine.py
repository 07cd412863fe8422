"""Bias (y = x + b) and Gain (y = g ⊙ x) on the feature axis: atoms with a vector weight.

Bias: norm RMS(b); its output moves by exactly RMS(Δb), whatever x: Lipschitz 1 in x, dual
map the gradient scaled to RMS target, init zero. Gain: norm max|g| (an operator norm of
diag(g) in any RMS); dual map target·sign(G), the steepest direction under a max norm;
init one.
"""

from __future__ import annotations

import math

import sympy

from modc.lazy import LazyModule
from modc.ops.base import ACTIVATION, ONE, ZERO, Atom, Layer, Shape, ShapeError

torch = LazyModule("torch")


def bias_dualize(grad: torch.Tensor, target: float) -> torch.Tensor:
    """Steepest-descent update of RMS `target`: the gradient rescaled, zero staying zero."""
    size = grad.norm(dim=-1, keepdim=True)  # a bias is a vector; a bank of them, a matrix
    scale = target * math.sqrt(grad.shape[-1]) / size.clamp_min(1e-30)
    return grad * torch.where(size > 0, scale, torch.zeros_like(scale))


def bias_norm(weight: torch.Tensor) -> float:
    """RMS of the bias, in float64."""
    return weight.detach().double().norm().item() / math.sqrt(weight.numel())


def bias_lipschitz(weight: torch.Tensor) -> float:
    """A translation: ℓ2 Lipschitz constant exactly 1, whatever the bias."""
    return 1.0


def gain_dualize(grad: torch.Tensor, target: float) -> torch.Tensor:
    """Steepest-descent update of max-norm `target`: target·sign(grad)."""
    return torch.sign(grad) * target


def gain_norm(weight: torch.Tensor) -> float:
    """max |g|: exact in any precision."""
    return weight.detach().abs().max().item()


def gain_lipschitz(weight: torch.Tensor) -> float:
    """ℓ2 Lipschitz constant of x ↦ g ⊙ x: max |g|, exact."""
    return weight.detach().abs().max().item()


class _Vector(Atom):
    """An atom whose weight is one vector over the feature axis."""

    def shape(self, x: Shape) -> Shape:
        if not x:
            raise ShapeError(f"{self.name} needs an input with at least one axis")
        return x

    def weight_shape(self) -> Shape:
        return (self.in_shapes[0][-1],)

    def constructor(self) -> str:
        return f"{self.module.__name__}({self.in_shapes[0][-1]})"


class BiasOp(_Vector):
    name = "Bias"
    module = Layer("Bias")
    dualize = bias_dualize
    norm = bias_norm
    lipschitz = bias_lipschitz
    lipschitz_activation = bias_lipschitz

    def lipschitz_bound(self, norm: sympy.Expr = ONE, space: str = ACTIVATION) -> sympy.Expr:
        return ONE

    def sharpness(self) -> tuple[sympy.Expr, sympy.Expr, sympy.Expr | None]:
        return (ZERO, ZERO, ZERO)  # f = x + b: no second derivative at all


class GainOp(_Vector):
    name = "Gain"
    module = Layer("Gain")
    dualize = gain_dualize
    norm = gain_norm
    lipschitz = gain_lipschitz
    lipschitz_activation = gain_lipschitz
