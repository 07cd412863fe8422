"""Orthogonal polar factor U Vᵀ by an odd polynomial (Newton–Schulz style) iteration."""

from __future__ import annotations

import torch


def polar(g: torch.Tensor, steps: int = 8, method: str = "polar_express") -> torch.Tensor:
    """Approximate the polar factor U Vᵀ of g, shape (m, n) or a batch (..., m, n), by matmuls.

    It is the spectral norm's dual map. Default: the Polar Express degree-5 coefficients with
    their 1.01 safety factor (Amsel, Persson, Musco, Gower 2025, arXiv:2505.16932, Alg. 1);
    "muon": Muon's fixed quintic and scaling (g / max(‖g‖_F, 1e-7)), exactly the iteration of
    torch.optim.Muon but in float32 on CPU; it plateaus near, not at, 1 (about 0.7 to 1.2).
    Polar Express: after the Frobenius scaling, g is rescaled by (Σσ⁴)^¼ ≥ σ_max, read off
    the first Gram for free, to lift small σ.
    Measured in float32 with 8 steps on Gaussian, condition-1e4 and rank-1..5 matrices
    (784x256, 256x256, 10x256, 256x10, 1024x1024): σ_max within 1e-6 of 1 and every σ above
    1e-3·σ_max(g) in [0.999, 1 + 1e-6]; worst seen, 3/4 of σ at σ_max and the rest down to
    1e-4: 0.96 (256 wide), 0.87 (1024²). steps=10: [1 - 1e-6, 1 + 1e-6] on all of these.
    In bfloat16 (used on CUDA; float32 on CPU) all of these are within 1% of 1. Zero g gives
    zeros, never NaN. Returns g's dtype.
    """
    if method == "polar_express":
        coeffs = [
            (8.28721201814563, -23.595886519098837, 17.300387312530933),
            (4.107059111542203, -2.9478499167379106, 0.5448431082926601),
            (3.9486908534822946, -2.908902115962949, 0.5518191394370137),
            (3.3184196573706015, -2.488488024314874, 0.51004894012372),
            (2.300652019954817, -1.6689039845747493, 0.4188073119525673),
            (1.891301407787398, -1.2679958271945868, 0.37680408948524835),
            (1.8750014808534479, -1.2500016453999487, 0.3750001645474248),
            (1.875, -1.25, 0.375),
        ]
        coeffs = [(a / 1.01, b / 1.01**3, c / 1.01**5) for a, b, c in coeffs[:-1]] + coeffs[-1:]
    elif method == "muon":
        coeffs = [(3.4445, -4.7750, 2.0315)]
    else:
        raise ValueError(f"unknown polar method {method!r}; expected 'polar_express' or 'muon'")
    coeffs = (coeffs + coeffs[-1:] * steps)[:steps]  # the last polynomial repeats
    x = g.to(torch.bfloat16 if g.is_cuda else torch.float32)
    tall = x.size(-2) > x.size(-1)
    if tall:  # iterate on the smaller Gram matrix
        x = x.mT
    if method == "muon":  # Muon's own scaling: divide by ‖g‖_F, at least 1e-7
        x = x / x.norm(dim=(-2, -1), keepdim=True).clamp_min(1e-7)
        gram = x @ x.mT
    else:
        x = x / (x.norm(dim=(-2, -1), keepdim=True) + 1e-30)  # ‖x‖_F ≤ 1, 0 only if g is 0
        gram = x @ x.mT
        scale = gram.norm(dim=(-2, -1), keepdim=True).sqrt() * 1.01 + 1e-15
        x, gram = x / scale, gram / scale**2
    for i, (a, b, c) in enumerate(coeffs):
        if i > 0:
            gram = x @ x.mT
        x = a * x + (b * gram + c * gram @ gram) @ x  # a x + b x³ + c x⁵ on singular values
    if tall:
        x = x.mT
    return x.to(g.dtype)
