"""The `dualized` optimizer: momentum, then each atom's dual map scaled to lr · target."""

from __future__ import annotations

import torch


class Dualized(torch.optim.Optimizer):
    """Steepest descent in the modular norm: every update has atom norm exactly lr · target.

    Groups are {"params": [...], "targets": [float per param], "atom": name}; `dual_maps`
    maps an atom name to `(grad, target) -> update` and is kept off the state dict.
    """

    def __init__(
        self,
        groups: list[dict],
        dual_maps: dict,
        lr: float,
        momentum: float = 0.95,
        nesterov: bool = True,
        weight_decay: float = 0.0,
    ) -> None:
        if lr < 0 or not 0 <= momentum < 1 or weight_decay < 0:
            raise ValueError(
                f"bad hyperparameters lr={lr}, momentum={momentum}, weight_decay={weight_decay}"
            )
        defaults = {
            "lr": lr,
            "momentum": momentum,
            "nesterov": nesterov,
            "weight_decay": weight_decay,
        }
        super().__init__(groups, defaults)
        for group in self.param_groups:
            if group["atom"] not in dual_maps:
                raise ValueError(f"no dual map for atom {group['atom']!r}")
            if len(group["targets"]) != len(group["params"]):
                raise ValueError(
                    f"{len(group['params'])} params but "
                    f"{len(group['targets'])} targets in a {group['atom']} group"
                )
        self.dual_maps = dual_maps

    @torch.no_grad()
    def step(self, closure=None):
        """One step: EMA momentum (Nesterov optional), dual map, decoupled decay by mass."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            dual_map = self.dual_maps[group["atom"]]
            lr, beta = group["lr"], group["momentum"]
            for p, target in zip(group["params"], group["targets"], strict=True):
                if p.grad is None:
                    continue
                state = self.state[p]
                if "momentum_buffer" not in state:
                    state["momentum_buffer"] = torch.zeros_like(p)
                buf = state["momentum_buffer"]
                buf.lerp_(p.grad, 1 - beta)
                u = p.grad.lerp(buf, beta) if group["nesterov"] else buf
                update = dual_map(u, lr * target)
                p.mul_(1 - lr * target * group["weight_decay"])
                p.sub_(update)
        return loss
