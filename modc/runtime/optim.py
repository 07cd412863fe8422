"""The optimizers that generated packages use, all `torch.optim.Optimizer`s.

`Dualized`: momentum, then each atom's dual map scaled to lr · target (steepest descent in
the modular norm). `Normalized`: SGD, Adam or Adafactor, each update rescaled per atom to
norm lr · target. `Adafactor`: Shazeer & Stern's method itself, relative steps and all.
`Combined`: torch optimizers over disjoint parameters stepped as one (the AdamW and Muon +
AdamW baselines). All four are `SkipNonFinite`: a step whose gradients hold a NaN or an
infinity is skipped, so a non-finite gradient never reaches the weights.
`Constrain`: a step post-hook that keeps each atom's Lipschitz bound under its cap. Weight
decay in Dualized and Normalized is decoupled and shared by mass: atom i decays by
lr · target_i · weight_decay per step, so heavier atoms (larger targets) decay more.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.distributed as dist
from torch.distributed.tensor import DTensor

from modc.runtime.certify import constrain
from modc.runtime.scratch import Scratch

# Axes of each library atom's weight. A group of such an atom refuses a parameter with
# other axes: a bias in a Linear group would otherwise be dualized as a 1 × n matrix (or,
# banked with other biases, as one k × n matrix).
WEIGHT_AXES = {"Linear": 2, "Embed": 2, "Conv2D": 4, "Bias": 1, "Gain": 1}


def check_groups(groups: list[dict], table: dict, what: str) -> None:
    """Every group names an atom that `table` knows, has one target per parameter, and
    (for a library atom) only parameters with that atom's axes."""
    for group in groups:
        if group["atom"] not in table:
            raise ValueError(f"no {what} for atom {group['atom']!r}")
        if len(group["targets"]) != len(group["params"]):
            raise ValueError(
                f"{len(group['params'])} params but "
                f"{len(group['targets'])} targets in a {group['atom']} group"
            )
        axes = WEIGHT_AXES.get(group["atom"])
        for p in group["params"]:
            if axes is not None and p.dim() != axes:
                raise ValueError(
                    f"a parameter of shape {tuple(p.shape)} in a {group['atom']} group, whose "
                    f"weights have {axes} axes (biases go in a Bias group, gains in a Gain group)"
                )


def all_finite(tensors: list[torch.Tensor]) -> bool:
    """Whether every entry of `tensors` is finite, with one host sync per device.

    Each tensor's max |entry| (NaN if it holds a NaN) comes from one fused reduction per
    device and dtype; only the device's verdict, one bool, is copied to the host. A DTensor
    (FSDP2's shards) is checked where it lies, and the verdict is then every rank's (one
    all-reduce), so that all ranks skip a step alike.
    """
    shards = [t for t in tensors if isinstance(t, DTensor)]
    groups: dict[torch.device, dict[torch.dtype, list[torch.Tensor]]] = {}
    for t in tensors:
        t = t.to_local() if isinstance(t, DTensor) else t
        if t.numel():
            groups.setdefault(t.device, {}).setdefault(t.dtype, []).append(t)
    finite = True
    for by_dtype in groups.values():
        maxes = [extremes(ts) for ts in by_dtype.values()]
        finite = finite and bool(torch.stack([m.isfinite().all() for m in maxes]).all())
    if shards:
        verdict = torch.tensor([float(finite)], device=shards[0].device)
        dist.all_reduce(verdict, dist.ReduceOp.MIN, group=shards[0].device_mesh.get_group())
        finite = bool(verdict.item())
    return finite


def extremes(tensors: list[torch.Tensor]) -> torch.Tensor:
    """Numbers that are all finite exactly when every entry of `tensors` is: each tensor's
    max |entry| from one fused reduction (NaN propagates), or on a CPU each one's largest
    and smallest entry, as torch's ∞-norm is not vectorised there (docs/performance.md)."""
    if tensors[0].device.type == "cpu":
        return torch.stack([torch.stack((t.amax(), t.amin())) for t in tensors])
    return torch.stack(torch._foreach_norm(tensors, math.inf))


class SkipNonFinite(torch.optim.Optimizer):
    """An optimizer that skips every step whose gradients are not all finite.

    Subclasses write `update()`, the step proper. `step()` checks all gradients at once
    (`all_finite`): if one holds a NaN or an infinity it leaves the weights and every bit
    of optimizer state (momentum, moments, step counts) as they were and adds one to
    `skipped`, the steps skipped since the optimizer was made; the next step goes on.
    """

    def __init__(self, params: object, defaults: dict) -> None:
        super().__init__(params, defaults)
        self.skipped = 0

    def update(self) -> None:
        """One step on the current gradients, all of them finite."""
        raise NotImplementedError

    @torch.no_grad()
    def step(self, closure=None):
        """update() if every gradient is finite, else count the step as skipped."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        grads = [p.grad for g in self.param_groups for p in g["params"] if p.grad is not None]
        if all_finite(grads):
            self.update()
        else:
            self.skipped += 1
        return loss


def check_lr(lr: float) -> None:
    """A learning rate is a finite number ≥ 0 (NaN fails every comparison, so it fails)."""
    if not 0 <= lr < math.inf:
        raise ValueError(f"lr must be a finite number ≥ 0, got {lr}")


class Dualized(SkipNonFinite):
    """Steepest descent in the modular norm: every update has atom norm lr · target.

    "lr · target" holds to the dual map's accuracy, which is polar()'s for matrices: with
    Polar Express (the default) the update's atom norm is within 1e-5 of lr · target in
    float32 and within 2% in bfloat16 (tests/test_polar.py); with polar {"method": "muon",
    "steps": 5} it is Muon's quintic's σ_max, from about 0.7 up to at most 1.2024 · lr ·
    target (its supremum over [0, 1], plus bfloat16 rounding: tests/test_polar.py), as in
    torch.optim.Muon, whose arithmetic it keeps. A zero direction gives a zero update.

    Groups are {"params": [...], "targets": [float per param], "atom": name}; `dual_maps`
    maps an atom name to `(grad, target, **polar) -> update`, a function of grad's direction
    alone (as every dual map is), and is kept off the state dict;
    `polar` options (e.g. {"method": "muon", "steps": 5}: Muon's Newton–Schulz iteration)
    reach every dual map. Momentum is an EMA of gradients (buf ← β·buf + (1 − β)·g), Nesterov
    optional; decoupled weight decay shared by mass: w ← (1 − lr·target·weight_decay)·w − update.
    Same-shape weights of a group form a bank, dualized by one batched call (bank_step);
    `compile=True` runs bank_step through torch.compile: the learning rate reaches it as a
    tensor, so changing it (a schedule) never recompiles. Eager, the buffers of a step (the
    bank of directions, polar()'s products) are kept for the next in a `Scratch`, about
    three times the largest bank in all: a CPU then pays no page faults for fresh memory.
    """

    def __init__(
        self,
        groups: list[dict],
        dual_maps: dict,
        lr: float,
        momentum: float = 0.95,
        nesterov: bool = True,
        weight_decay: float = 0.0,
        polar: dict | None = None,
        compile: bool = False,
    ) -> None:
        check_lr(lr)
        if not 0 <= momentum < 1 or not 0 <= weight_decay < math.inf:
            raise ValueError(
                f"bad hyperparameters momentum={momentum}, weight_decay={weight_decay}"
            )
        defaults = {
            "lr": lr,
            "momentum": momentum,
            "nesterov": nesterov,
            "weight_decay": weight_decay,
            "polar": dict(polar or {}),
        }
        super().__init__(groups, defaults)
        check_groups(self.param_groups, dual_maps, "dual map")
        self.dual_maps = dual_maps
        self.bank_step = torch.compile(bank_step, dynamic=False) if compile else bank_step
        self.scratch = Scratch()  # a step's buffers, kept for the next: not state

    def update(self) -> None:
        """EMA momentum (Nesterov optional), dual map, decoupled decay by mass."""
        with self.scratch:  # the step's buffers, kept for the next
            for group in self.param_groups:
                for bank in banks(group["params"]):
                    params = [group["params"][i] for i in bank]
                    for p in params:
                        if "momentum_buffer" not in self.state[p]:
                            self.state[p]["momentum_buffer"] = torch.zeros_like(p)
                    scales = torch.tensor(
                        [group["lr"] * group["targets"][i] for i in bank], device=params[0].device
                    )
                    self.bank_step(
                        params,
                        [p.grad for p in params],
                        [self.state[p]["momentum_buffer"] for p in params],
                        scales.view(-1, *[1] * params[0].dim()),
                        self.dual_maps[group["atom"]],
                        group["momentum"],
                        group["nesterov"],
                        group["weight_decay"],
                        group["polar"],
                    )


def banks(params: list[torch.Tensor]) -> list[list[int]]:
    """Indices of the params that have a gradient, grouped by shape, dtype and device."""
    groups: dict[tuple, list[int]] = {}
    for i, p in enumerate(params):
        if p.grad is not None:
            groups.setdefault((p.shape, p.dtype, p.device), []).append(i)
    return list(groups.values())


def bank_step(
    params: list[torch.Tensor],
    grads: list[torch.Tensor],
    buffers: list[torch.Tensor],
    scales: torch.Tensor,
    dual_map: Callable,
    beta: float,
    nesterov: bool,
    weight_decay: float,
    polar: dict,
) -> None:
    """Momentum, the dual map and the update, for one bank of same-shape weights at once.

    scales holds lr · target per weight, shaped (k, 1, ..., 1) to broadcast over the bank.
    A dual map depends only on the direction of its argument, so each weight's direction
    reaches it scaled to max |entry| 1: a huge but finite gradient cannot overflow the
    norms inside the dual map (‖g‖² of g = 3e38 is inf in float32).
    """
    torch._foreach_lerp_(buffers, grads, 1 - beta)
    if isinstance(params[0], DTensor) or torch.compiler.is_compiling():
        # FSDP2's shards, stacked as DTensors; or traced: torch.compile plans the buffers
        directions = torch.stack(torch._foreach_lerp(grads, buffers, beta) if nesterov else buffers)
    else:  # written straight into a buffer that the next step reuses
        shape, first = (len(params), *buffers[0].shape), buffers[0]
        directions = Scratch.empty("directions", shape, first.dtype, first.device)
        for direction, grad, buffer in zip(directions, grads, buffers, strict=True):
            if nesterov:  # g + β(buf − g)
                torch.lerp(grad, buffer, beta, out=direction)
            else:
                direction.copy_(buffer)
    axes = tuple(range(1, directions.dim()))  # max |entry| without a |directions| temporary
    peak = torch.maximum(directions.amax(axes, keepdim=True), -directions.amin(axes, keepdim=True))
    directions.div_(peak.clamp_min(torch.finfo(directions.dtype).tiny))
    updates = dual_map(directions, scales, **polar).to(params[0].dtype)
    if weight_decay:
        torch._foreach_mul_(params, list((1 - scales * weight_decay).flatten().unbind(0)))
    torch._foreach_sub_(params, list(updates.unbind(0)))


def squares(g: torch.Tensor) -> torch.Tensor:
    """g², each entry capped at the dtype's max / numel, so that sums of them stay finite:
    (3e38)² is inf in float32, and an inf in a second moment would stay there for good."""
    return (g * g).clamp_(max=torch.finfo(g.dtype).max / max(1, g.numel()))


class Normalized(SkipNonFinite):
    """A base method's update rescaled per atom to atom norm lr · target (normed SGD/Adam).

    Groups as for Dualized; `norms` maps an atom name to `weight -> its norm` (kept off the
    state dict). `base`:
      "sgd"        momentum buffer (EMA with β1 = momentum), Nesterov optional;
      "adam"       bias-corrected m / (sqrt(v) + eps), β1 = momentum, β2 = beta2;
      "adafactor"  g / sqrt(v̂) with v̂ the factored (row × column) second moment of g² + 1e-30
                   over the last two axes, decay β2_t = 1 − t^(−decay) (decay 1 by default,
                   as the convergence analysis of Adafactor advises), update clipping as in
                   Adafactor (`clip`, `clip_alpha`), then momentum β1 on that. Clipping scales
                   a whole tensor, which the rescaling undoes: it matters only through β1.
    A zero (or non-finite) direction gives no update. Weight decay as in Dualized.
    """

    BASES = ("sgd", "adam", "adafactor")

    def __init__(
        self,
        groups: list[dict],
        norms: dict,
        lr: float,
        base: str = "adam",
        momentum: float = 0.9,
        nesterov: bool = False,
        beta2: float = 0.999,
        eps: float = 1e-8,
        decay: float = 1.0,
        weight_decay: float = 0.0,
        clip: float | None = None,
        clip_alpha: float | None = None,
    ) -> None:
        if base not in self.BASES:
            raise ValueError(f"unknown base {base!r}; expected one of {', '.join(self.BASES)}")
        check_lr(lr)
        if not 0 <= momentum < 1 or not 0 <= beta2 < 1 or not 0 <= weight_decay < math.inf:
            raise ValueError(
                f"bad hyperparameters momentum={momentum}, beta2={beta2}, "
                f"weight_decay={weight_decay}"
            )
        if not 0 <= eps < math.inf or not 0 < decay < math.inf:
            raise ValueError(f"bad hyperparameters eps={eps}, decay={decay}")
        defaults = {
            "lr": lr,
            "base": base,
            "momentum": momentum,
            "nesterov": nesterov,
            "beta2": beta2,
            "eps": eps,
            "decay": decay,
            "weight_decay": weight_decay,
            "clip": clip,
            "clip_alpha": clip_alpha,
        }
        check_clip(clip, clip_alpha)
        super().__init__(groups, defaults)
        check_groups(self.param_groups, norms, "norm")
        self.norms = norms

    def direction(self, p: torch.Tensor, group: dict) -> torch.Tensor:
        """The base method's update direction for p, before rescaling; updates p's state."""
        g, state = p.grad, self.state[p]
        beta1, beta2 = group["momentum"], group["beta2"]
        state["step"] = t = state.get("step", 0) + 1
        if group["base"] == "sgd":
            buf = state.setdefault("momentum_buffer", torch.zeros_like(p))
            buf.lerp_(g, 1 - beta1)
            return g.lerp(buf, beta1) if group["nesterov"] else buf
        if group["base"] == "adam":
            m = state.setdefault("exp_avg", torch.zeros_like(p))
            v = state.setdefault("exp_avg_sq", torch.zeros_like(p))
            m.lerp_(g, 1 - beta1)
            v.lerp_(squares(g), 1 - beta2)
            denom = (v / (1 - beta2**t)).sqrt_().add_(group["eps"])
            return (m / (1 - beta1**t)).div_(denom)
        u = factored_step(g, state, beta2=1 - t ** -group["decay"], eps1=1e-30)
        if (d := threshold(group["clip"], group["clip_alpha"], group["decay"], t)) is not None:
            u = clip_rms(u, d)
        if beta1 == 0:
            return u
        m = state.setdefault("exp_avg", torch.zeros_like(p))
        return m.lerp_(u, 1 - beta1)

    def update(self) -> None:
        """The base direction, rescaled to atom norm lr · target; decay by mass."""
        for group in self.param_groups:
            norm, lr = self.norms[group["atom"]], group["lr"]
            for p, target in zip(group["params"], group["targets"], strict=True):
                if p.grad is None:
                    continue
                d = self.direction(p, group)
                size = norm(d)
                p.mul_(1 - lr * target * group["weight_decay"])
                if size > 0 and math.isfinite(size):
                    p.sub_(d, alpha=lr * target / size)


class Adafactor(SkipNonFinite):
    """Adafactor (Shazeer & Stern, 2018, Algorithms 4 and 5), with the second-moment decay
    that its convergence analysis recommends (Hong & Lin, 2024).

    At step t, for each weight W with gradient G:
      ρ_t = min(lr, 1/√t)                   relative step (S&S §8; lr caps it, as in torch)
      α_t = max(eps2, RMS(W_{t−1})) · ρ_t   step scaled by the weight's RMS (S&S §8)
      β2_t = 1 − t^(−decay)                 (S&S §7.2 use decay 0.8; decay 1.0, the default
                                             here, gives the Õ(1/√T) rate of Hong & Lin)
      V̂ = R Cᵀ / mean(R)                    R, C: EMAs (β2_t) of the row and column means of
                                             G² + eps1 over the last two axes (S&S Alg. 4);
                                             a vector (or scalar) keeps V̂ unfactored (Alg. 5)
      U = G / √V̂, then Û = U / max(1, RMS(U)/d) with d = clip (S&S §6; d = 1 there), or
        d_t = t^(decay / (2(clip_alpha − 1))) (Hong & Lin's time-varying threshold), or no
        clipping (clip None, the default: the analysis finds no benefit in it)
      m = β1·m + (1 − β1)·Û if momentum β1 > 0 (S&S §7.1; off by default), else m = Û
      W ← (1 − lr·weight_decay)·W − α_t · m  (decay decoupled, by lr as torch does)
    With decay 0.8, clip 1 and weight decay by lr, this is torch.optim.Adafactor, except
    that eps1 is added to G² (as the paper does) where torch clamps the factors and V̂ at eps1
    (its default: the dtype's machine epsilon); the two differ only where G² < eps1.
    """

    def __init__(
        self,
        params,
        lr: float = 1e-2,
        decay: float = 1.0,
        clip: float | None = None,
        clip_alpha: float | None = None,
        eps1: float = 1e-30,
        eps2: float = 1e-3,
        momentum: float = 0.0,
        weight_decay: float = 0.0,
    ) -> None:
        if not lr >= 0 or not decay > 0 or not 0 <= momentum < 1 or not weight_decay >= 0:
            raise ValueError(
                f"bad hyperparameters lr={lr}, decay={decay}, momentum={momentum}, "
                f"weight_decay={weight_decay}"
            )
        if not eps1 > 0 or not eps2 >= 0:
            raise ValueError(f"bad hyperparameters eps1={eps1} (must be > 0), eps2={eps2}")
        check_lr(lr)
        check_clip(clip, clip_alpha)
        defaults = {
            "lr": lr,
            "decay": decay,
            "clip": clip,
            "clip_alpha": clip_alpha,
            "eps1": eps1,
            "eps2": eps2,
            "momentum": momentum,
            "weight_decay": weight_decay,
        }
        super().__init__(params, defaults)

    def update(self) -> None:
        """One step of Adafactor on every weight that has a gradient."""
        for group in self.param_groups:
            lr, decay = group["lr"], group["decay"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                state = self.state[p]
                state["step"] = t = state.get("step", 0) + 1
                size = p.norm().div(math.sqrt(max(p.numel(), 1))).clamp_(min=group["eps2"])
                size.mul_(min(lr, t**-0.5))
                if group["weight_decay"]:
                    p.mul_(1 - lr * group["weight_decay"])
                u = factored_step(p.grad, state, 1 - t**-decay, group["eps1"])
                d = threshold(group["clip"], group["clip_alpha"], decay, t)
                if d is not None:
                    u = clip_rms(u, d)
                if group["momentum"]:
                    u = state.setdefault("exp_avg", torch.zeros_like(p)).lerp_(
                        u, 1 - group["momentum"]
                    )
                p.sub_(u * size)


def factored_step(g: torch.Tensor, state: dict, beta2: float, eps1: float) -> torch.Tensor:
    """G / √V̂ with V̂ Adafactor's second moment of G² + eps1 (EMA with weight beta2 on the
    past): factored over the last two axes as R Cᵀ / mean(R) for two or more axes, whole for
    fewer. √V̂ is taken as a product of roots, which does not underflow."""
    g2 = squares(g) + eps1
    if g.dim() >= 2:
        row = state.setdefault("row", torch.zeros_like(g2.mean(-1)))
        col = state.setdefault("col", torch.zeros_like(g2.mean(-2)))
        row.lerp_(g2.mean(-1), 1 - beta2)
        col.lerp_(g2.mean(-2), 1 - beta2)
        root = (row / row.mean(-1, keepdim=True)).sqrt().unsqueeze(-1) * col.sqrt().unsqueeze(-2)
    else:
        root = state.setdefault("exp_avg_sq", torch.zeros_like(g)).lerp_(g2, 1 - beta2).sqrt()
    return g / root


def threshold(clip: float | None, clip_alpha: float | None, decay: float, t: int) -> float | None:
    """The update-clipping threshold at step t: the constant `clip`, the time-varying
    t^(decay / (2(clip_alpha − 1))), or None (no clipping)."""
    if clip_alpha is not None:
        return t ** (decay / (2 * (clip_alpha - 1)))
    return clip


def clip_rms(u: torch.Tensor, d: float) -> torch.Tensor:
    """u / max(1, RMS(u) / d), without a host sync."""
    rms = u.norm().div(math.sqrt(max(u.numel(), 1)) * d)
    return u / rms.clamp(min=1)


def check_clip(clip: float | None, clip_alpha: float | None) -> None:
    """At most one kind of clipping, with d > 0 or α > 1."""
    if clip is not None and clip_alpha is not None:
        raise ValueError("give clip (a constant threshold) or clip_alpha, not both")
    if (clip is not None and not clip > 0) or (clip_alpha is not None and not clip_alpha > 1):
        raise ValueError(f"bad clipping clip={clip} (must be > 0), clip_alpha={clip_alpha} (> 1)")


class Combined(SkipNonFinite):
    """Torch optimizers over disjoint parameters, stepped, scheduled and saved as one.

    `param_groups` are the parts' own group dicts, so an LR scheduler on this optimizer
    sets every part's learning rates; the state dict holds each part's state dict.
    """

    def __init__(self, parts: list[torch.optim.Optimizer]) -> None:
        self.parts = [p for p in parts if p.param_groups]
        super().__init__([g for part in self.parts for g in part.param_groups], {})

    def update(self) -> None:
        """One step of every part (a SkipNonFinite part's gradients are checked already)."""
        for part in self.parts:
            if isinstance(part, SkipNonFinite):
                part.update()
            else:
                part.step()

    def state_dict(self) -> dict:
        return {"parts": [part.state_dict() for part in self.parts]}

    def load_state_dict(self, state_dict: dict) -> None:
        if len(state_dict["parts"]) != len(self.parts):
            raise ValueError("the state dict is for a different set of optimizers")
        for part, state in zip(self.parts, state_dict["parts"], strict=True):
            part.load_state_dict(state)
        self.param_groups = [g for part in self.parts for g in part.param_groups]


class Constrain:
    """Step post-hook: after each step, each listed atom's Lipschitz bound is at most its cap.

    `atoms` holds (weight, cap, lipschitz, project) per atom: `lipschitz(weight)` is the sound
    bound the certificate composes, `project(weight, cap)` the atom's hard cap or None (then
    the weight is rescaled: spectral normalisation). A hard cap works on a bank (k, ...) of
    same-shape weights at once (as `spectral_cap` does): the weights that share a shape,
    dtype, device, cap and cap function are stacked and capped by one call,
    `project(bank, cap, state)`, so on a GPU the whole bank's bound is a few batched matmuls
    and a batched Cholesky with no host sync; `state` is a dict kept per bank between calls
    (`spectral_cap` keeps its warm start there; the bound it certifies, and so how far a
    weight over its cap is scaled, depends on it, so `state_dict()` and `load_state_dict()`
    carry it through a checkpoint: a resumed run caps as the unbroken one did); the stacked
    bank, its scaled copy and its Gram come from a `Scratch` kept between calls. The banks
    are formed anew on each call, from the weights' dtype and device as they are then: a
    model cast or moved after the hook was made is capped in its new dtype (a bank stacked
    in the old one would round on the way back, unaccounted). A weight that FSDP2 shards (a
    DTensor) is gathered whole on every rank, capped there, and each rank keeps its rows: a
    cap proves σ_max of a whole matrix, which no shard has. Register it with
    `optimizer.register_step_post_hook(Constrain(atoms))`; calling it with no arguments
    applies it once, e.g. to the initial weights. make_optimizer keeps its own as
    `optimizer.constrain`.
    """

    def __init__(self, atoms: list[tuple]) -> None:
        self.atoms = atoms
        self.state: dict[tuple, dict] = {}  # per bank, what its cap keeps between calls
        self.scratch = Scratch()  # its buffers, kept from call to call
        self.hard = [(w, cap, project) for w, cap, _, project in atoms if project is not None]
        self.each = [(w, cap, lips) for w, cap, lips, project in atoms if project is None]

    @property
    def banks(self) -> dict[tuple, list[torch.Tensor]]:
        """The hard-capped weights by (shape, dtype, device, cap, cap function), as now."""
        banks: dict[tuple, list[torch.Tensor]] = {}
        for weight, cap, project in self.hard:
            key = (weight.shape, weight.dtype, weight.device, cap, project)
            banks.setdefault(key, []).append(weight)
        return banks

    def state_dict(self) -> list[dict]:
        """What each bank's cap keeps between calls (its warm start), in the banks' order."""
        return [dict(self.state.get(key, {})) for key in self.banks]

    def load_state_dict(self, state: list[dict]) -> None:
        """Take back `state_dict()`'s banks, each tensor moved to its bank's device."""
        banks = list(self.banks)
        if len(state) != len(banks):
            raise ValueError(f"{len(state)} banks of caps saved, {len(banks)} here")
        self.state = {
            key: {k: v.to(key[2]) if isinstance(v, torch.Tensor) else v for k, v in kept.items()}
            for key, kept in zip(banks, state, strict=True)
        }

    def __call__(self, *hook_args: object) -> None:
        with torch.no_grad(), self.scratch:
            for key, weights in self.banks.items():
                *_, cap, project = key
                shape, dtype, device = (len(weights), *key[0]), *key[1:3]
                bank = Scratch.empty("cap.bank", shape, dtype, device)
                torch.stack([whole(w) for w in weights], out=bank)
                project(bank, cap, self.state.setdefault(key, {}))
                put_back(weights, list(bank.unbind(0)))
        for weight, cap, lipschitz in self.each:
            constrain(weight, cap, lipschitz)


def whole(weight: torch.Tensor) -> torch.Tensor:
    """All of `weight`'s entries: a DTensor (FSDP2's shards) gathered from every rank, as a
    cap proves σ_max of whole matrices (call it on every rank)."""
    return weight.full_tensor() if isinstance(weight, DTensor) else weight.detach()


def put_back(weights: list[torch.Tensor], values: list[torch.Tensor]) -> None:
    """Copy each whole value into its weight: plain weights by one foreach copy; a DTensor
    (FSDP2's shards) from the value replicated over its ranks (each holds the same), from
    which the copy takes this rank's rows and sends nothing."""
    if not any(isinstance(w, DTensor) for w in weights):
        torch._foreach_copy_([w.detach() for w in weights], values)
        return
    for weight, value in zip(weights, values, strict=True):
        if isinstance(weight, DTensor):
            value = DTensor.from_local(value, weight.device_mesh, run_check=False)
        weight.detach().copy_(value)
