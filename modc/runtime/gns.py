"""The gradient noise scale during training, and batch-size schedules that follow it.

McCandlish et al. (2018): with per-example gradients g_i of mean G and covariance Σ, the
simple noise scale B_simple = tr(Σ)/|G|² is the batch size beyond which a larger batch
buys little. From the batch-mean gradient G_B of B examples and the mean per-example
squared norm E|g_i|², unbiased estimates are |G|² ≈ (B·|G_B|² − E|g_i|²)/(B − 1) and
tr(Σ) ≈ (E|g_i|² − |G_B|²)/(1 − 1/B); B_simple is the ratio of their exponential moving
averages (decay 0.99), not an average of ratios. Restricting both sums to some weights
gives those weights' noise scale.

Gray et al. (2024): the noise scale of a transformer's normalisation layers alone tracks
the whole network's, and their per-example gradients cost almost nothing. In modc a
normalisation's learnable part is its Gain (y = g ⊙ x) and Bias (y = x + b) atoms, whose
per-example gradients are Σ_t ∂ℓ/∂y ⊙ x and Σ_t ∂ℓ/∂y (sums over every axis but the
example's and the feature's). `GradientNoise` hooks every Gain and Bias module: the
forward hook keeps a reference to the input (which autograd keeps anyway) and hangs a
hook on the output's gradient, which reduces it to one squared norm per example during
the backward pass. No second backward, nothing per example of any other layer. Micro-batches
of gradient accumulation add their examples; under DDP the ranks' sums are all-reduced
(the gradient itself is already the all-reduced mean). The estimate is taken in a step
pre-hook of the optimizer: after the last backward, before the optimizer clips anything.
`observe_total` adds exact per-example gradients of every weight (torch.func), slow, to
validate the cheap estimate against.

Schedules (`BatchPlan`) set each step's batch in examples, a whole number of micro-batches,
and the learning rate from the tokens consumed, so runs of different batches compare at
equal tokens. A dualized step has a fixed norm, the learning rate; on a quadratic model
with gradient noise, the expected decrease of a step of norm η along the dual of G_B is
η·|G|/√(1 + B_noise/B) − η²·h/2, so the best η moves with the batch as
1/√(1 + B_noise/B): as √B for batches well under the noise scale, not at all well above it
(`lr_scale`; docs/theory.md §11).
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable

import torch
import torch.distributed as dist
from torch import nn

#: The atoms whose per-example gradients the backward pass yields: a normalisation's gain
#: and bias (the names of their classes in model.py).
NORM_ATOMS = ("Gain", "Bias")


def unbiased(batch_sq: float, small_sq: float, batch: int, small: int = 1) -> tuple[float, float]:
    """(|G|², tr(Σ)) estimated without bias from the squared norms of mean gradients over
    `batch` and over `small` < `batch` examples (McCandlish et al. 2018, appendix A; since
    E|G_b|² = |G|² + tr(Σ)/b). With `small` 1, `small_sq` is the mean E|g_i|² of the
    per-example gradients; with `small` the examples of one rank, the ranks' mean."""
    g2 = (batch * batch_sq - small * small_sq) / (batch - small)
    trace = (small_sq - batch_sq) / (1 / small - 1 / batch)
    return g2, trace


class NoiseScale:
    """B_simple of one group of weights: the ratio of the moving averages of the unbiased
    |G|² and tr(Σ). Both averages start at zero with the same decay, so their ratio needs
    no bias correction."""

    def __init__(self, decay: float = 0.99):
        self.decay, self.g2, self.trace, self.count = decay, 0.0, 0.0, 0

    def update(self, batch_sq: float, small_sq: float, batch: int, small: int = 1) -> None:
        """Take one step's |G_B|² over `batch` examples and its mean over `small` (1: the
        per-example E|g_i|²)."""
        if batch <= small or not (math.isfinite(batch_sq) and math.isfinite(small_sq)):
            return
        g2, trace = unbiased(batch_sq, small_sq, batch, small)
        self.g2 = self.decay * self.g2 + (1 - self.decay) * g2
        self.trace = self.decay * self.trace + (1 - self.decay) * trace
        self.count += 1

    @property
    def b_simple(self) -> float:
        """tr(Σ)/|G|² from the averages; nan before the first update or while |G|² ≤ 0."""
        return self.trace / self.g2 if self.count and self.g2 > 0 else math.nan


def _per_example_gain(grad: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """|Σ_t grad ⊙ x|² per example: the squared norm of each example's gain gradient."""
    d = x.shape[-1]
    g, x = grad.reshape(len(grad), -1, d).float(), x.reshape(len(x), -1, d).float()
    return (g * x).sum(1).square().sum(1)  # an einsum makes B·D tiny matmuls of it


def _per_example_bias(grad: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """|Σ_t grad|² per example: the squared norm of each example's bias gradient."""
    return grad.reshape(len(grad), -1, grad.shape[-1]).float().sum(1).square().sum(1)


PER_EXAMPLE = {"Gain": _per_example_gain, "Bias": _per_example_bias}


class GradientNoise:
    """B_simple of `model`'s norm atoms ("norm"; and "Gain", "Bias" apart), measured on
    every step of `optimizer`; with `total`, also of all weights ("total") and of each
    atom kind ("total_Linear", ...) from exact per-example gradients (`observe_total`).
    Only trained weights count: a frozen one (requires_grad off) has no gradient in |G_B|²,
    so its per-example gradients would bias E|g_i|².

    A per-example gradient is that of the example's own loss (the mean over its
    positions), the batch's loss being the mean over examples: so the gradients the
    hooks see are 1/n of them, n the examples of this rank's step. Every micro-batch must
    have the same number of examples. `last` holds the latest step's per-example squared
    norms of each group (this rank's examples, in order) and its |G_B|².
    """

    def __init__(
        self,
        model: nn.Module,
        optimizer: torch.optim.Optimizer,
        total: bool = False,
        decay: float = 0.99,
    ):
        self.kinds = {}  # trained parameter -> the class name of the module that holds it
        for m in model.modules():
            trained = [p for p in m.parameters(recurse=False) if p.requires_grad]
            self.kinds.update((p, type(m).__name__) for p in trained)
        norm = [m for m in model.modules() if type(m).__name__ in NORM_ATOMS]
        norm = [m for m in norm if m.weight in self.kinds]  # a frozen one has no gradient
        self.groups = {"norm": [m.weight for m in norm]}
        for kind in NORM_ATOMS:
            self.groups[kind] = [m.weight for m in norm if type(m).__name__ == kind]
        if total:
            self.groups["total"] = list(self.kinds)
            for kind in dict.fromkeys(self.kinds.values()):
                self.groups[f"total_{kind}"] = [p for p, k in self.kinds.items() if k == kind]
        self.scales = {g: NoiseScale(decay) for g, ps in self.groups.items() if ps}
        self.rank_sq: list[torch.Tensor] = []  # this rank's gradient, squared, by bucket
        self.model, self.active, self.decay = model, True, decay
        self.micro = 0  # forward passes with gradients so far
        self.seen = 0  # examples of this step's forward passes, on this rank
        self.parts: dict[tuple[str, int], torch.Tensor] = {}  # (kind, micro) -> (examples,)
        self.exact: dict[str, list[torch.Tensor]] = {}  # group -> [(examples,)], observe_total
        self.last: dict[str, tuple[torch.Tensor, float]] = {}
        model.register_forward_pre_hook(self._begin)
        for m in norm:
            m.register_forward_hook(self._record)
        optimizer.register_step_pre_hook(self._measure)

    def _begin(self, module: nn.Module, inputs: tuple) -> None:
        """A forward pass of the whole model: number it; the first of a step (every
        gradient unset) drops what a step that never came left behind."""
        if not (self.active and torch.is_grad_enabled()):
            return
        if all(p.grad is None for p in self.kinds):  # zero_grad came: a new step
            self.parts, self.rank_sq, self.seen = {}, [], 0
        self.micro += 1
        self.seen += len(inputs[0])

    def _record(self, module: nn.Module, inputs: tuple, output: torch.Tensor) -> None:
        """Hang the per-example reduction of `module` on its output's gradient."""
        if not (self.active and torch.is_grad_enabled() and output.requires_grad):
            return
        micro, kind = self.micro, type(module).__name__
        x = inputs[0].detach() if kind == "Gain" else None  # autograd keeps it for Gain anyway

        def reduce(grad: torch.Tensor) -> None:
            sq, key = PER_EXAMPLE[kind](grad, x), (kind, micro)
            self.parts[key] = self.parts[key] + sq if key in self.parts else sq

        output.register_hook(reduce)

    def observe_total(self, batches: list[tuple[torch.Tensor, torch.Tensor]], loss) -> None:
        """Exact per-example gradients of every weight on this step's micro-batches, one
        example at a time under torch.func.vmap: `loss(logits, y)` of one example. Slow:
        for validating the norm atoms' estimate against the whole network's."""
        trained = [(k, p) for k, p in self.model.named_parameters() if p in self.kinds]
        params = {k: p.detach() for k, p in trained}  # frozen weights: the model's own
        kinds = {k: self.kinds[p] for k, p in trained}

        def one(w: dict, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
            return loss(torch.func.functional_call(self.model, w, (x[None],)), y[None])

        per_example = torch.func.vmap(torch.func.grad(one), in_dims=(None, 0, 0))
        self.active, self.exact = False, {}
        try:
            for x, y in batches:
                for i in range(0, len(x), 8):  # 8 examples' gradients at a time
                    grads = per_example(params, x[i : i + 8], y[i : i + 8])
                    sums: dict[str, torch.Tensor] = {}
                    for k, g in grads.items():
                        sq = g.double().flatten(1).square().sum(1)
                        for group in ("total", f"total_{kinds[k]}"):
                            sums[group] = sums[group] + sq if group in sums else sq
                    for group, sq in sums.items():
                        self.exact.setdefault(group, []).append(sq)
        finally:
            self.active = True

    def _examples(self) -> dict[str, torch.Tensor]:
        """Each group's per-example squared gradient norms on this rank, in order: exact
        ones where observed; else the hooks', scaled from the batch's loss to the example's
        (the norm atoms' are the sum of their kinds')."""
        out = {g: torch.cat(parts) for g, parts in self.exact.items()}
        for kind in NORM_ATOMS:
            micros = sorted(m for k, m in self.parts if k == kind)
            if micros:
                out[kind] = torch.cat([self.parts[kind, m] for m in micros]).double()
        if self.parts:
            out["norm"] = sum(out[k] for k in NORM_ATOMS if k in out)
            n = len(out["norm"])
            for g in ("norm", *NORM_ATOMS):
                if g in out:
                    out[g] = out[g] * n**2
        return {g: v for g, v in out.items() if g in self.scales}

    @torch.no_grad()
    def _measure(self, optimizer: torch.optim.Optimizer, args: tuple, kwargs: dict) -> None:
        """After the step's last backward: each group's |G_B|² and E|g_i|², into its
        average. One all-reduce of the sums over the ranks; |G_B|² is the gradient's own,
        already the same on every rank."""
        examples = self._examples()
        self.parts, self.exact = {}, {}
        if self.rank_sq:
            self._measure_ranks()
        if not examples:
            return
        names = list(examples)
        params = list(dict.fromkeys(p for g in names for p in self.groups[g] if p.grad is not None))
        norms = torch._foreach_norm([p.grad for p in params]) if params else []
        square = {p: v.double().square() for p, v in zip(params, norms, strict=True)}
        zero = torch.zeros((), dtype=torch.float64)
        sums = [examples[g].sum() for g in names]
        counts = [torch.tensor(float(len(examples[g])), dtype=torch.float64) for g in names]
        batch = [sum((square[p] for p in self.groups[g] if p in square), zero) for g in names]
        device = next(self.model.parameters()).device
        reduced = torch.stack([t.to(device) for t in sums + counts])
        if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
            dist.all_reduce(reduced)
        values = reduced.tolist() + torch.stack([b.to(device) for b in batch]).tolist()
        k = len(names)
        for i, g in enumerate(names):
            total, count, batch_sq = values[i], int(values[k + i]), values[2 * k + i]
            self.scales[g].update(batch_sq, total / max(count, 1), count)
            self.last[g] = (examples[g], batch_sq)

    def watch_ranks(self, ddp: nn.parallel.DistributedDataParallel) -> None:
        """Also estimate all weights' noise scale ("ranks") from each rank's gradient (the
        mean over its examples) against the all-reduced one: two batch sizes, so
        `unbiased` applies, at the cost of one squared norm per bucket (Gray et al.'s
        DDP estimate). DDP's reduction is kept: a sum over the ranks, divided by them."""
        self.scales["ranks"] = NoiseScale(self.decay)
        self.groups["ranks"] = list(self.kinds)

        def reduce(state: object, bucket: dist.GradBucket) -> torch.futures.Future[torch.Tensor]:
            self.rank_sq.append(bucket.buffer().double().square().sum())
            world = dist.get_world_size()
            work = dist.all_reduce(bucket.buffer(), async_op=True)
            return work.get_future().then(lambda f: f.value()[0].div_(world))

        ddp.register_comm_hook(None, reduce)

    def _measure_ranks(self) -> None:
        """The "ranks" estimate: |G_B|² of the all-reduced gradient over n·ranks examples,
        and the ranks' mean squared norm of their own gradients over n each."""
        params = [p for p in self.groups["ranks"] if p.grad is not None]
        batch_sq = sum(v.double().square() for v in torch._foreach_norm([p.grad for p in params]))
        world = dist.get_world_size()
        rank_sq = torch.stack(self.rank_sq).sum().reshape(1)
        dist.all_reduce(rank_sq)
        self.rank_sq, n = [], self.seen
        self.scales["ranks"].update(batch_sq.item(), rank_sq.item() / world, n * world, n)

    def b_simple(self, group: str = "norm") -> float:
        """The group's current B_simple; nan while unmeasured."""
        scale = self.scales.get(group)
        return scale.b_simple if scale else math.nan

    def row(self) -> dict[str, float]:
        """Each group's B_simple, |G|² and tr(Σ) averages, for a metrics row."""
        out = {}
        for g, s in self.scales.items():
            out.update({f"{g}_bsimple": s.b_simple, f"{g}_g2": s.g2, f"{g}_trace": s.trace})
        return out

    def state_dict(self) -> dict:
        return {g: [s.g2, s.trace, s.count] for g, s in self.scales.items()}

    def load_state_dict(self, state: dict) -> None:
        for g, (g2, trace, count) in state.items():
            if g in self.scales:
                self.scales[g].g2, self.scales[g].trace, self.scales[g].count = g2, trace, count


def lr_scale(batch: float, reference: float, noise: float) -> float:
    """The factor on a dualized step's learning rate, tuned at batch `reference`, for a
    batch of `batch` when the noise scale is `noise`: √((1 + noise/reference)/(1 +
    noise/batch)). A noise scale that is unknown (nan) or not positive counts as infinite:
    √(batch/reference)."""
    if not (noise > 0) or math.isinf(noise):
        return math.sqrt(batch / reference)
    return math.sqrt((1 + noise / reference) / (1 + noise / batch))


class BatchPlan:
    """Each step's batch and learning rate, counted in tokens.

    `schedule` is ("fixed", tokens, None): every step the same batch; ("linear", start,
    end): the batch goes from `start` to `end` tokens linearly in the tokens consumed; or
    ("gns", low, high): the batch follows the measured norm-atom B_simple (in examples),
    only ever grows, and stays within [low, high] tokens, after `warm` measured steps. A
    batch is a whole number of micro-batches of `unit` examples (--batch-size ×
    processes), at least one. The run ends after `budget` tokens. Under a schedule, the
    learning rate of parameter group i is `base[i] × factor(s)`, s the step of the
    fixed-batch run (of `reference` examples) at the tokens consumed, times `lr_scale`
    from the batch of `reference` examples to this one.
    """

    def __init__(
        self,
        schedule: tuple,
        unit: int,
        per_example: int,
        reference: int,
        budget: int,
        lr: tuple[list[float], Callable] | None = None,
        warm: int = 20,
    ):
        self.kind, self.low, self.high = schedule
        self.unit, self.per_example, self.reference = unit, per_example, reference
        self.budget, self.lr, self.warm = budget, lr, warm
        self.tokens, self.examples = 0, self._round(self.low / per_example)

    def _round(self, examples: float) -> int:
        """`examples` as a whole number of micro-batches, at least one."""
        return self.unit * max(1, round(examples / self.unit))

    def left(self) -> bool:
        """Whether tokens of the budget are left."""
        return self.tokens < self.budget

    def next(self, noise: GradientNoise | None, optimizer: torch.optim.Optimizer) -> int:
        """The next step's number of micro-batches; under a schedule, its lr is set."""
        if self.kind == "linear":
            frac = min(1.0, self.tokens / self.budget)
            tokens = self.low + (self.high - self.low) * frac
            self.examples = self._round(tokens / self.per_example)
        elif self.kind == "gns" and noise.scales["norm"].count >= self.warm:
            b = noise.b_simple("norm")
            lo, hi = self.low / self.per_example, self.high / self.per_example
            if math.isfinite(b):
                self.examples = max(self.examples, self._round(min(max(b, lo), hi)))
        if self.kind != "fixed" and self.lr is not None:
            base, factor = self.lr
            noise_scale = noise.b_simple("norm") if noise is not None else math.nan
            scale = lr_scale(self.examples, self.reference, noise_scale)
            step = self.tokens / (self.reference * self.per_example)
            for group, lr in zip(optimizer.param_groups, base, strict=True):
                group["lr"] = lr * factor(step) * scale
        return self.examples // self.unit

    def advance(self) -> None:
        """The step of `examples` was taken."""
        self.tokens += self.examples * self.per_example

    def state_dict(self) -> dict:
        return {"tokens": self.tokens, "examples": self.examples}

    def load_state_dict(self, state: dict) -> None:
        """A checkpoint's plan; its batch in whole micro-batches of this run (a checkpoint
        of another number of processes has micro-batches of another size)."""
        self.tokens, self.examples = state["tokens"], self._round(state["examples"])


def setup(
    args,
    schedule: tuple | None,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    lr: tuple[list[float], Callable],
    world: int,
    per_example: int,
    ckpt: dict | None,
) -> tuple[GradientNoise | None, BatchPlan]:
    """train.py's noise measurement (with --gns, --gns-total or a batch schedule) and its
    plan of batches: the fixed batch of --batch-size × processes × --grad-accum examples for
    --steps steps, or `schedule` (--batch-schedule, parsed: kind, low, high tokens) within
    the tokens of that run; `lr` the base lrs and the schedule's factor. Both restored from
    `ckpt` when resuming."""
    unit = args.batch_size * world
    reference = unit * args.grad_accum
    budget = args.steps * reference * per_example
    kind, low, high = schedule or ("fixed", reference * per_example, None)
    low = low or unit * per_example  # gns without bounds: one micro-batch to 8 fixed batches
    high = high or 8 * reference * per_example
    plan = BatchPlan((kind, low, high), unit, per_example, reference, budget, lr)
    noise = None
    if args.gns or args.gns_total or schedule is not None:
        noise = GradientNoise(model, optimizer, total=args.gns_total)
        if kind == "gns" and "norm" not in noise.scales:
            raise ValueError(
                "--batch-schedule gns follows the Gain and Bias atoms' noise scale, "
                "and this network has none"
            )
        if not (dist.is_available() and dist.is_initialized()) or dist.get_rank() == 0:
            trim(os.path.join(args.out, "gns.csv"), ckpt["step"] if ckpt else 0)
    if ckpt is not None:
        tokens = ckpt["step"] * reference * per_example
        plan.load_state_dict(ckpt.get("plan") or {"tokens": tokens, "examples": reference})
        if kind == "fixed":  # the rest of --steps at this run's batch (a checkpoint of
            # another number of processes had another)
            plan.examples = reference
            plan.budget = plan.tokens + (args.steps - ckpt["step"]) * reference * per_example
        if noise is not None:
            noise.load_state_dict(ckpt.get("gns") or {})
    return noise, plan


def trim(path: str, keep_until: int) -> None:
    """Keep the rows of gns.csv up to step `keep_until` (the checkpoint's, when resuming:
    a killed run may have logged more); none, and no file, for a fresh run."""
    if not os.path.exists(path):
        return
    with open(path) as f:
        lines = f.read().splitlines()
    kept = [
        r for r in lines[1:] if r.split(",")[0].isdigit() and int(r.split(",")[0]) <= keep_until
    ]
    if not kept:
        os.remove(path)
        return
    with open(path + ".tmp", "w") as f:
        f.write("\n".join([lines[0], *kept, ""]))
    os.replace(path + ".tmp", path)


def log(path, step: int, plan: BatchPlan, lr: float, noise: GradientNoise) -> None:
    """Append the step's row to gns.csv (a header first if the file is new): step, tokens
    consumed, the batch in examples, the lr, and each group's B_simple, |G|² and tr(Σ)."""
    row = {"step": step, "tokens": plan.tokens, "batch": plan.examples, "lr": lr, **noise.row()}
    new = not os.path.exists(path)
    with open(path, "a") as f:
        if new:
            f.write(",".join(row) + "\n")
        f.write(
            ",".join(f"{v:.6g}" if isinstance(v, float) else str(v) for v in row.values()) + "\n"
        )
