"""Linear: y = W x on the last axis, W of shape fan_out × fan_in.

Norm: the RMS→RMS operator norm sqrt(fan_in/fan_out)·σ_max(W). Dual map: the polar
factor of the gradient, scaled so that the update has norm `target`.
"""

from __future__ import annotations

import math

import sympy

from modc.lazy import LazyAttribute, LazyModule
from modc.ops.base import Arg, Atom, Layer, Shape, ShapeError
from modc.runtime.certify import spectral_cap, spectral_norm_upper, svd_sigma

torch = LazyModule("torch")
polar = LazyAttribute("modc.runtime.polar", "polar")  # imports torch as it loads


def linear_dualize(grad: torch.Tensor, target: float, **polar_options) -> torch.Tensor:
    """Steepest-descent update of RMS→RMS norm `target`: target·sqrt(fan_out/fan_in)·UVᵀ."""
    fan_out, fan_in = grad.shape[-2:]
    return polar(grad, **polar_options).mul_(target * math.sqrt(fan_out / fan_in))


def linear_norm(weight: torch.Tensor) -> float:
    """RMS→RMS operator norm: sqrt(fan_in/fan_out)·σ_max(W), from an exact float64 SVD."""
    fan_out, fan_in = weight.shape
    return math.sqrt(fan_in / fan_out) * svd_sigma(weight).item()


def linear_lipschitz(weight: torch.Tensor) -> float:
    """Sound upper bound on the ℓ2 Lipschitz constant of x ↦ Wx: σ_max(W) with a margin."""
    return spectral_norm_upper(weight)


def linear_lipschitz_activation(weight: torch.Tensor) -> float:
    """Sound upper bound in the activation (RMS) norm: √(in/out)·σ_max(W) with a margin."""
    fan_out, fan_in = weight.shape
    return math.sqrt(fan_in / fan_out) * spectral_norm_upper(weight) * (1 + 2**-50)


class LinearOp(Atom):
    name = "Linear"
    args = (Arg("out"),)
    module = Layer("Linear")
    dualize = linear_dualize
    norm = linear_norm
    lipschitz = linear_lipschitz
    lipschitz_activation = linear_lipschitz_activation
    cap = spectral_cap  # hard cap from matmuls (optimizer constraint)

    def shape(self, x: Shape) -> Shape:
        if not x:
            raise ShapeError("Linear needs an input with at least one axis")
        return (*x[:-1], self.values["out"])

    def weight_shape(self) -> Shape:
        return (self.values["out"], self.in_shapes[0][-1])

    def l2_factor(self) -> sympy.Expr:
        """σ_max(W) = √(out/in)·‖W‖."""
        fan_out, fan_in = self.weight_shape()
        return sympy.sqrt(fan_out / fan_in)

    def constructor(self) -> str:
        fan_out, fan_in = self.weight_shape()
        return f"Linear({fan_in}, {fan_out})"
