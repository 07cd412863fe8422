"""The nn.Module of each atom: its weight, its initialisation and its forward pass, copied
into a build's model.py. The atom itself (modc/ops) names its class here (`Layer`), so the
compiler's front stages, which never build a module, do not import torch."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


class Linear(nn.Module):
    """y = x Wᵀ; W starts orthogonal, scaled to RMS→RMS norm 1."""

    def __init__(self, fan_in: int, fan_out: int):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(fan_out, fan_in))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        fan_out, fan_in = self.weight.shape
        nn.init.orthogonal_(self.weight)
        with torch.no_grad():
            self.weight.mul_(math.sqrt(fan_out / fan_in))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.weight)


class Conv2D(nn.Module):
    """2-D convolution whose taps start orthogonal, scaled so that the atom's norm is 1."""

    def __init__(self, fan_in: int, fan_out: int, kernel: int, stride: int, padding: int):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(fan_out, fan_in, kernel, kernel))
        self.stride, self.padding = stride, padding
        self.reset_parameters()

    def reset_parameters(self) -> None:
        fan_out, fan_in, k, _ = self.weight.shape
        taps = torch.empty(k * k, fan_out, fan_in)
        for tap in taps:
            nn.init.orthogonal_(tap)
        taps *= math.sqrt(fan_out / fan_in) / (k * k)
        with torch.no_grad():
            self.weight.copy_(taps.reshape(k, k, fan_out, fan_in).permute(2, 3, 0, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(x, self.weight, stride=self.stride, padding=self.padding)


class Embed(nn.Module):
    """y = W[x]; every row starts with ℓ2 norm √dim (RMS 1), so the atom's norm is 1."""

    def __init__(self, num: int, dim: int):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(num, dim))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        dim = self.weight.shape[1]
        nn.init.normal_(self.weight)
        with torch.no_grad():
            self.weight.mul_(math.sqrt(dim) / self.weight.norm(dim=1, keepdim=True))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.embedding(x, self.weight)


class Bias(nn.Module):
    """y = x + b, b starting at zero."""

    def __init__(self, dim: int):
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.weight


class Gain(nn.Module):
    """y = g ⊙ x, g starting at one."""

    def __init__(self, dim: int):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.weight
