"""Operator-norm bounds: a sound upper bound per weight, an empirical lower bound per model."""

from __future__ import annotations

import torch
from torch import nn


def spectral_norm_upper(w: torch.Tensor) -> float:
    """Sound upper bound on σ_max(w) for w of shape (m, n); for (..., m, n), the max over all.

    Exact SVD in float64 (the cast is exact): LAPACK's SVD is backward stable, so by Weyl
    |σ̂ − σ| ≤ p(m, n)·eps·σ_max with p modest (LAPACK Users' Guide §4.9); we take p = 4mn,
    far above the ~max(m, n) seen in practice, plus the smallest normal float64.
    """
    m, n = w.shape[-2:]
    sigma = torch.linalg.svdvals(w.detach().to(torch.float64)).max().item()
    eps = torch.finfo(torch.float64).eps
    return sigma * (1 + 4 * m * n * eps) + torch.finfo(torch.float64).tiny


def lipschitz_lower(model: nn.Module, x: torch.Tensor, iters: int = 30) -> float:
    """Empirical lower bound on the ℓ2 Lipschitz constant of model (per example, flattened).

    Valid because every candidate is attained: ‖J(a)v‖/‖v‖ after power iteration on each
    example's JᵀJ, and secant ratios ‖f(a) − f(b)‖/‖a − b‖ for pairs near x. Runs a float64
    copy of the weights, so rounding (≤ 100 ulps, taken off) cannot lift it above a true
    upper bound. Examples must be independent through the model (eval mode is used);
    the model's weights, grads and train/eval modes are left as they were.
    """
    modes = [(module, module.training) for module in model.modules()]
    model.eval()
    try:
        named = [*model.named_parameters(), *model.named_buffers()]
        weights = {k: t.detach().double() if t.is_floating_point() else t for k, t in named}
        x = x.detach().double()
        gen = torch.Generator(device=x.device).manual_seed(0)

        def f(inp: torch.Tensor) -> torch.Tensor:
            return torch.func.functional_call(model, weights, (inp,))

        def unit(v: torch.Tensor) -> torch.Tensor:
            norms = v.flatten(1).norm(dim=1).clamp_min(1e-300)
            return v / norms.view(-1, *[1] * (v.dim() - 1))

        with torch.no_grad():
            fx, vjp_fn = torch.func.vjp(f, x)
            v = unit(torch.randn(x.shape, generator=gen, device=x.device, dtype=x.dtype))
            for _ in range(iters):
                v = unit(vjp_fn(torch.func.jvp(f, (x,), (v,))[1])[0])  # JᵀJ v
            jv = torch.func.jvp(f, (x,), (v,))[1]
            ratio = jv.flatten(1).norm(dim=1) / v.flatten(1).norm(dim=1).clamp_min(1e-300)
            best = ratio.max().item()
            size = x.flatten(1).norm(dim=1).clamp_min(1.0).view(-1, *[1] * (x.dim() - 1))
            noise = unit(torch.randn(x.shape, generator=gen, device=x.device, dtype=x.dtype))
            for direction in (v, noise):
                for h in (1.0, 1e-1, 1e-2):
                    b = x + h * size * direction
                    num = (f(b) - fx).flatten(1).norm(dim=1)
                    ratio = num / (b - x).flatten(1).norm(dim=1).clamp_min(1e-300)
                    best = max(best, ratio.max().item())
        return best * (1 - 100 * torch.finfo(torch.float64).eps)
    finally:
        for module, training in modes:
            module.train(training)
