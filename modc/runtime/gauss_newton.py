"""Exact Gauss–Newton steps for reversible networks (Buffelli et al., NeurIPS 2024), copied
into a build's optimizer.py: imports torch and the standard library only.

The network is: layers without trainable weights, coupling blocks y1 = x1 + f(x2),
y2 = x2 + g(y1) whose f and g are fixed features a(·) followed by a trainable Linear W (and
Bias b), then at most a frozen Linear head H. One step, on a batch of n examples:

1. The function-space target δ_L, one row per example: the loss's gradient in the outputs z
   over its Hessian taken as c·I: δ_L = n·∂L/∂z / c, with L the batch mean. For the mean
   cross-entropy (c = 1, the Hessian replaced by the identity, as the reference does) that
   is softmax(z) − y; for F.mse_loss, a mean over n·k entries (c = 2/k), it is z − y.
2. Through the head: δ_y = δ_L (H⁺)ᵀ, the least-norm change of the last block's output that
   moves z by δ_L.
3. Block by block from the last: with the target δ = (δ1, δ2) at the block's output, the
   update of f solves A_f [ΔW_f; Δb_f]ᵀ = δ1 in least squares, A_f = [a_f(x2), 1] (n × M),
   by a truncated pseudo-inverse; g then solves A_g [ΔW_g; Δb_g]ᵀ = δ2 − J_g Δy1, where
   Δy1 = A_f [ΔW_f; Δb_f]ᵀ is what f's update does to y1 and J_g its effect on y2 (a JVP).
   The target of the block before is the JVP of this block's inverse at its output, in the
   direction δ: the change of its input that moves the network's output by δ_y.
4. w ← w − lr·Δw for every block at once.

When n ≤ M and A has full row rank, each block's update alone moves the outputs by −lr·δ_L
to first order, so the step moves them by −lr·(number of blocks)·δ_L: the Gauss–Newton
step in function space, taken once per block (tests/test_gauss_newton.py checks this
against a dense solve with the full Jacobian).
"""

from __future__ import annotations

import math
import warnings

import torch
from torch import nn

LOSSES = ("cross_entropy", "mse")


def truncated_solve(a: torch.Tensor, rhs: torch.Tensor, rtol: float, atol: float) -> torch.Tensor:
    """A⁺·rhs with A⁺ the pseudo-inverse of `a` (n × M) keeping the singular values above
    max(atol, rtol·σ_max): the least-norm least-squares solution, damped by truncation.

    From the eigenvectors of the smaller Gram matrix: with A = UΣWᵀ, AAᵀ = UΣ²Uᵀ and
    A⁺ = AᵀUΣ⁻²Uᵀ (n ≤ M), or AᵀA = WΣ²Wᵀ and A⁺ = WΣ⁻²WᵀAᵀ: an n × n eigenproblem instead
    of an n × M SVD. The eigenvalues err by about u·σ_max² (u the unit roundoff, float32 at
    least), small beside the σ² ≥ rtol²·σ_max² that truncation keeps when rtol² ≫ u.
    """
    dtype = torch.promote_types(a.dtype, torch.float32)
    a64, rhs64 = a.to(dtype), rhs.to(dtype)
    wide = a.shape[0] <= a.shape[1]
    lam, v = torch.linalg.eigh(a64 @ a64.mT if wide else a64.mT @ a64)
    sigma = lam.clamp_min(0).sqrt()
    keep = sigma > max(atol, rtol * (sigma.max().item() if sigma.numel() else 0.0))
    v, inverse = v[:, keep], 1 / lam[keep].unsqueeze(-1)
    if wide:
        out = a64.mT @ (v @ (inverse * (v.mT @ rhs64)))
    else:
        out = v @ (inverse * (v.mT @ (a64.mT @ rhs64)))
    return out.to(rhs.dtype)


class GaussNewton(torch.optim.Optimizer):
    """Exact Gauss–Newton for a reversible network, as a torch.optim.Optimizer.

    Use it as any optimizer: forward with gradients on, `loss.backward()`, `step()`. Hooks
    keep what a step needs from the forward pass: the network's input and output (whose
    gradient gives δ_L), each block's input and output, and the features each trainable
    Linear reads. `blocks` lists (module path, (f's Linear, f's Bias or None), (g's Linear,
    g's Bias or None)); `head` is the frozen Linear after the last block, or None.
    """

    def __init__(
        self,
        model: nn.Module,
        blocks: list,
        head: str | None,
        features: int,
        lr: float,
        loss: str = "cross_entropy",
        rtol: float = 1e-2,
        atol: float = 1e-5,
    ):
        if loss not in LOSSES:
            raise ValueError(f"gauss_newton: loss must be one of {', '.join(LOSSES)}, got {loss!r}")
        if not (rtol >= 0 and atol >= 0 and math.isfinite(rtol + atol)):
            raise ValueError("gauss_newton: rtol and atol must be finite numbers ≥ 0")
        self.model, self.loss, self.rtol, self.atol = model, loss, rtol, atol
        self.features, self.skipped, self.warned = features, 0, False
        self.head = None if head is None else model.get_submodule(head)
        self.blocks = []
        params = []
        for path, *sides in blocks:
            module = model.get_submodule(path)
            parts = [
                (module.get_submodule(lin), None if b is None else module.get_submodule(b))
                for lin, b in sides
            ]
            self.blocks.append((module, parts))
            params += [p.weight for pair in parts for p in pair if p is not None]
        super().__init__(params, {"lr": lr})
        self.seen: dict[str, list[torch.Tensor]] = {}
        self.handles = [model.register_forward_hook(self._keep("network"))]
        for i, (module, parts) in enumerate(self.blocks):
            self.handles.append(module.register_forward_hook(self._keep(f"block{i}")))
            for j, (linear, _) in enumerate(parts):
                self.handles.append(linear.register_forward_hook(self._keep(f"a{i}.{j}")))

    def _keep(self, key: str):
        """A forward hook keeping the input and output of a training forward pass."""

        def hook(module: nn.Module, args: tuple, out: torch.Tensor) -> None:
            if not torch.is_grad_enabled() or not out.requires_grad:
                return  # evaluation, or the step's own passes
            if torch._C._functorch.is_functorch_wrapped_tensor(out):
                return  # a torch.func transform of the model (train.py's --gns-total)
            if key == "network":
                out.retain_grad()
                self.seen.setdefault(key, []).append(out)
                self.seen.setdefault("input", []).append(args[0].detach())
            else:
                self.seen.setdefault(key, []).append(args[0].detach())
                self.seen.setdefault(key + ".out", []).append(out.detach())

        return hook

    def remove_hooks(self) -> None:
        """Take this optimizer's hooks off the model (before torch.func transforms of it, or
        to train it with another optimizer)."""
        for handle in self.handles:
            handle.remove()
        self.handles = []

    def zero_grad(self, set_to_none: bool = True) -> None:
        super().zero_grad(set_to_none)
        self.seen = {}

    def _targets(self) -> torch.Tensor | None:
        """δ_L from the kept outputs' gradients; None when some is not finite."""
        outs = self.seen.get("network", [])
        if not outs or any(z.grad is None for z in outs):
            raise RuntimeError(
                "gauss_newton steps from the last forward pass: run the model with gradients "
                "on and call loss.backward() before step()"
            )
        grad = torch.cat([z.grad for z in outs])
        n, k = grad.shape[0], grad.shape[-1]
        scale = n if self.loss == "cross_entropy" else n * k / 2
        delta = grad.reshape(n, -1) * scale
        return delta if torch.isfinite(delta).all() else None

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        delta = self._targets()
        seen, self.seen = self.seen, {}
        if delta is None:
            self.skipped += 1
            return loss
        n = delta.shape[0]
        if n > self.features and not self.warned:
            warnings.warn(
                f"gauss_newton: a batch of {n} is larger than the {self.features} features a "
                "block's Linear reads, so its least-squares solve is no longer exact",
                stacklevel=2,
            )
            self.warned = True
        if self.head is not None:
            delta = delta @ torch.linalg.pinv(self.head.weight.double()).mT.to(delta.dtype)
        updates = []
        for i in reversed(range(len(self.blocks))):
            module, ((f_lin, f_bias), (g_lin, g_bias)) = self.blocks[i]
            y = torch.cat(seen[f"block{i}.out"])
            d1, d2 = delta.chunk(2, dim=-1)
            a_f, step_f = self._solve(seen[f"a{i}.0"], f_bias, d1)
            dy1 = a_f @ step_f
            y1 = y.chunk(2, dim=-1)[0]
            dy2 = torch.func.jvp(module.g, (y1,), (dy1,))[1]
            _, step_g = self._solve(seen[f"a{i}.1"], g_bias, d2 - dy2)
            updates += [(f_lin, f_bias, step_f), (g_lin, g_bias, step_g)]
            if i:  # the target at the block's input: through its inverse, at its output
                delta = torch.func.jvp(module.inverse, (y,), (delta,))[1]
        lr = self.param_groups[0]["lr"]
        for linear, bias, s in updates:
            fan_in = linear.weight.shape[1]
            linear.weight.sub_(s[:fan_in].mT, alpha=lr)
            if bias is not None:
                bias.weight.sub_(s[fan_in], alpha=lr)
        return loss

    def _solve(self, kept: list[torch.Tensor], bias: nn.Module | None, rhs: torch.Tensor):
        """(A, [ΔW; Δb]ᵀ): the features with a ones column for a bias, and A⁺·rhs."""
        a = torch.cat(kept).reshape(rhs.shape[0], -1)
        if bias is not None:
            a = torch.cat([a, a.new_ones(a.shape[0], 1)], dim=1)
        return a, truncated_solve(a, rhs, self.rtol, self.atol)
