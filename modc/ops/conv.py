"""Conv2D: (C_in, H, W) → (C_out, H', W') with a k × k kernel, weight C_out × C_in × k × k.

Norm: k² times the largest Linear norm over the kernel's taps, k²·max_tap √(in/out)·σ(W_tap).
Each output position sums k² taps, each a Linear map of one input position, so with the
activation norm (RMS over channels, maximised over positions) the map is 1-Lipschitz at
norm 1 for any stride and padding. Dual map: per tap, t·(1/k²)·√(out/in)·polar(G_tap).

ℓ2 (docs/theory.md §6): a zero-padded convolution of an H × W input is a restriction of a
circular convolution on any N1 × N2 grid with N1 ≥ H + 2p, N2 ≥ W + 2p (no window wraps),
and striding keeps a subset of outputs; the circular convolution's spectral norm is the
largest σ_max of the kernel's 2-D DFT over the grid's frequencies. So that maximum, from
float64 FFTs and SVDs with rounding margins, is a sound bound; without the input's size,
the smaller of Σ_taps σ_max(W_tap) and k·σ_max(W as out × in·k²) (each input entry sits in
at most k² windows) is.
"""

from __future__ import annotations

import math

import sympy

from modc.lazy import LazyAttribute, LazyModule
from modc.ops.base import L2, Arg, Atom, Layer, Shape, ShapeError, show
from modc.runtime.certify import svd_sigma

torch = LazyModule("torch")
polar = LazyAttribute("modc.runtime.polar", "polar")  # imports torch as it loads


def conv2d_dualize(grad: torch.Tensor, target: float, **polar_options) -> torch.Tensor:
    """Steepest-descent update of norm `target`: per tap, target/k²·√(out/in)·polar(G_tap)."""
    fan_out, fan_in, k, _ = grad.shape[-4:]
    taps = polar(grad.movedim((-2, -1), (-4, -3)), **polar_options)  # (..., k, k, out, in)
    scale = target * math.sqrt(fan_out / fan_in) / (k * k)
    return taps.movedim((-2, -1), (-4, -3)).mul(scale).contiguous()


def conv2d_norm(weight: torch.Tensor) -> float:
    """k² · max over taps of √(in/out)·σ_max(W_tap), from exact float64 SVDs."""
    fan_out, fan_in, k, _ = weight.shape
    sigma = svd_sigma(weight.permute(2, 3, 0, 1)).max().item()
    return k * k * math.sqrt(fan_in / fan_out) * sigma


def conv2d_lipschitz(weight: torch.Tensor, grid: tuple[int, int] | None = None) -> float:
    """Sound ℓ2 bound for any stride and zero padding, with float64 rounding margins.

    Without `grid`: min(Σ_taps σ_max(W_tap), k·σ_max(W as out × in·k²)), valid for every
    input size. With `grid` (N1, N2) at least the padded input's size: also the largest
    σ_max of the kernel's DFT on that grid, the norm of the circular convolution of which
    the layer is a restriction; the smallest of the three is returned.
    """
    fan_out, fan_in, k, _ = weight.shape
    w = weight.detach().double()
    eps = torch.finfo(torch.float64).eps
    svd = 1 + 4 * fan_out * fan_in * k * k * eps  # as spectral_norm_upper, on the largest
    taps = svd_sigma(w.permute(2, 3, 0, 1)).sum().item()
    bound = min(taps * (1 + k * k * eps), k * svd_sigma(w.flatten(1)).item())
    if grid is not None:
        spectrum = torch.fft.fft2(w, s=tuple(grid)).permute(2, 3, 0, 1)
        sigma = svd_sigma(spectrum).max().item()
        # the FFT's rounding: at most ~log2(N)·eps·‖input‖₂ per transform (taken 8× over),
        # each frequency's matrix error below its Frobenius norm
        n = grid[0] * grid[1]
        fft = 8 * math.log2(max(n, 2)) * eps * math.sqrt(n) * w.norm().item()
        bound = min(bound, sigma + fft)
    return bound * svd + torch.finfo(torch.float64).tiny


def conv2d_lipschitz_activation(weight: torch.Tensor) -> float:
    """Sound bound in the activation norm: the atom's norm, k²·max_tap √(in/out)·σ(W_tap)."""
    fan_out, fan_in, k, _ = weight.shape
    eps = torch.finfo(torch.float64).eps
    return conv2d_norm(weight) * (1 + 4 * fan_out * fan_in * eps) + torch.finfo(torch.float64).tiny


class Conv2DOp(Atom):
    """Conv2D(out, kernel, stride=1, padding=0) on (channels, height, width)."""

    name = "Conv2D"
    args = (
        Arg("out"),
        Arg("kernel"),
        Arg("stride", "size", sympy.Integer(1)),
        Arg("padding", "number", sympy.Integer(0)),
    )
    module = Layer("Conv2D")
    dualize = conv2d_dualize
    norm = conv2d_norm
    lipschitz = conv2d_lipschitz
    lipschitz_activation = conv2d_lipschitz_activation

    def l2_factor(self) -> sympy.Expr:
        """Σ_taps σ_max(W_tap) ≤ k²·max_tap σ = √(out/in)·‖W‖."""
        fan_out, fan_in = self.weight_shape()[:2]
        return sympy.sqrt(fan_out / fan_in)

    def grid(self) -> tuple[int, int]:
        """The padded input's size: the circular convolution's grid for the ℓ2 bound."""
        p = int(self.values["padding"])
        h, w = (int(d) + 2 * p for d in self.in_shapes[0][1:])
        return (h, w)

    def lipschitz_call(self, weight: str, space: str) -> str:
        if space != L2:
            return super().lipschitz_call(weight, space)
        return f"conv2d_lipschitz({weight}, {self.grid()})"

    def shape(self, x: Shape) -> Shape:
        if len(x) != 3:
            raise ShapeError(f"Conv2D needs (channels, height, width), got {show(x)}")
        k, s, p = self.values["kernel"], self.values["stride"], self.values["padding"]
        if not (p.is_Integer and p >= 0):
            raise ShapeError(f"Conv2D's padding must be a whole number ≥ 0, got {p}")
        out = []
        for size in x[1:]:
            if (size + 2 * p - k).is_negative:
                raise ShapeError(f"Conv2D's kernel {k} is larger than the input {show(x)}")
            out.append(sympy.floor((size + 2 * p - k) / s) + 1)
        return (self.values["out"], *out)

    def weight_shape(self) -> Shape:
        k = self.values["kernel"]
        return (self.values["out"], self.in_shapes[0][0], k, k)

    def constructor(self) -> str:
        fan_out, fan_in, k, _ = self.weight_shape()
        v = self.values
        return f"Conv2D({fan_in}, {fan_out}, {k}, {v['stride']}, {v['padding']})"
