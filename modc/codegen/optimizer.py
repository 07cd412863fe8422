"""Emit optimizer.py: every optimizer kind, with this network's per-atom targets and caps."""

from __future__ import annotations

import inspect

from modc.codegen.reversible import gauss_newton_table
from modc.codegen.settings import KINDS, OptimizerSettings, caps_source, optimizer_settings
from modc.codegen.source import literal, module, plain, quote, snippets
from modc.errors import shown
from modc.graph import ir
from modc.runtime.gauss_newton import GaussNewton, truncated_solve
from modc.runtime.optim import (
    Adafactor,
    Combined,
    Constrain,
    Dualized,
    Normalized,
    SkipNonFinite,
)
from modc.theory.analysis import Analysis

SIGNATURE = """
def make_optimizer(
    model: nn.Module,
    lr: float,
    momentum: float | None = {momentum},
    nesterov: bool = {nesterov},
    weight_decay: float = {weight_decay},
    kind: str = {kind},
    constraint: str = {constraint},
    polar: str = {polar},
    beta2: float = {beta2},
    eps: float = {eps},
    decay: float = {decay},
    clip: float | None = {clip},
    clip_alpha: float | None = {clip_alpha},
    eps1: float = {eps1},
    eps2: float = {eps2},
    adamw_lr: float = {adamw_lr},
    beta1: float = {beta1},
    loss: str = {loss},
    rtol: float = {rtol},
    atol: float = {atol},
    compile: bool = False,
) -> torch.optim.Optimizer:
"""

BODY = '''
    """The optimizer `kind` for this network; the defaults are the spec's optimizer: section.

    dualized              momentum, then each atom's dual map with target lr × TARGETS[name]:
                          every step has modular norm lr; polar "muon" computes polar
                          factors by Muon's Newton–Schulz iteration (5 steps)
    normalized:sgd        SGD with momentum,
    normalized:adam       Adam (β1 = momentum, beta2, eps),
    normalized:adafactor  Adafactor (factored second moment, β2_t = 1 − t^(−decay)), each
                          update rescaled per atom to norm lr × TARGETS[name]
    adamw                 torch.optim.AdamW on every weight (baseline; betas momentum, beta2)
    muon                  torch.optim.Muon (lr, momentum) on the HIDDEN matrices, AdamW
                          (adamw_lr, betas beta1, beta2) on the rest: embeddings, the head,
                          gains and biases (baseline, as Muon's authors run it)
    adafactor             Adafactor itself (Shazeer & Stern 2018): relative step min(lr, 1/√t)
                          times max(eps2, RMS(W)), β2_t = 1 − t^(−decay), update clipping at
                          the constant clip, at t^(decay/(2(clip_alpha − 1))), or none
    gauss_newton          exact Gauss–Newton for reversible networks (GAUSS_NEWTON): each
                          coupling block solves for the outputs' target of `loss`
                          (cross_entropy | mse) by a pseudo-inverse truncated below
                          max(atol, rtol·σ_max); plain steps of lr, no momentum or decay
    momentum None means 0.9 for normalized:adam, normalized:adafactor and adamw, 0 (off)
    for adafactor, else 0.95; decay, clip and clip_alpha apply to both Adafactors.
    Every kind skips a step whose gradients hold a NaN or an infinity (weights and state
    stay as they were) and counts it in `optimizer.skipped`.
    compile: dualized runs its step through torch.compile (a schedule's lr changes do not
    recompile it).
    Weight decay is decoupled; in dualized and normalized:* an atom decays by
    lr × target × weight_decay per step (shared by mass). constraint "cap" (hard cap) or
    "normalize" (spectral normalisation) keeps each atom's Lipschitz bound at most its cap in
    ATOM_CAPS after every step, and at once on the current weights, so that the
    certificate's bound stays at most LIPSCHITZ_BOUND; that hook is `optimizer.constrain`,
    whose state_dict() (the caps' warm starts, on which their bounds depend) a checkpoint
    keeps beside the optimizer's for an exact resume.
    """
    params = {name: p for name, p in model.named_parameters() if p.requires_grad}  # not frozen
    if set(params) != set(TARGETS):
        raise ValueError("the model's parameters do not match the network this was built for")
    if kind not in KINDS or constraint not in ("none", "cap", "normalize") or polar not in POLAR:
        raise ValueError(f"unknown kind {kind!r}, constraint {constraint!r} or polar {polar!r}")
    for name, value in (("lr", lr), ("adamw_lr", adamw_lr)):
        if not 0 <= value < math.inf:
            raise ValueError(f"{name} must be a finite number ≥ 0, got {value}")
    if momentum is None:
        momentum = 0.9 if kind in ("normalized:adam", "normalized:adafactor", "adamw") else 0.95
        momentum = 0.0 if kind == "adafactor" else momentum
    groups: dict[str, dict] = {}
    for name, (atom, target) in TARGETS.items():
        group = groups.setdefault(atom, {"params": [], "targets": [], "atom": atom})
        group["params"].append(params[name])
        group["targets"].append(target)
    atoms = list(groups.values())
    if kind == "dualized":
        for group in atoms:
            group["polar"] = POLAR[polar] if group["atom"] in POLAR_ATOMS else {}
        optimizer = Dualized(
            atoms, DUAL_MAPS, lr, momentum, nesterov, weight_decay, compile=compile
        )
    elif kind.startswith("normalized:"):
        base = kind.split(":")[1]
        optimizer = Normalized(
            atoms, NORMS, lr, base, momentum, nesterov, beta2, eps, decay, weight_decay,
            clip, clip_alpha,
        )
    elif kind == "adafactor":
        optimizer = Adafactor(
            params.values(), lr, decay, clip, clip_alpha, eps1, eps2, momentum, weight_decay
        )
    elif kind == "gauss_newton":
        if GAUSS_NEWTON is None:
            raise ValueError(f"gauss_newton cannot train this network: {GAUSS_NEWTON_REFUSAL}")
        plan = GAUSS_NEWTON
        optimizer = GaussNewton(
            model, plan["blocks"], plan["head"], plan["features"], lr, loss, rtol, atol
        )
    elif kind == "adamw":
        betas = (momentum, beta2)
        optimizer = Combined([torch.optim.AdamW(params.values(), lr, betas, eps, weight_decay)])
    else:
        if not hasattr(torch.optim, "Muon"):
            raise RuntimeError("the muon baseline needs torch.optim.Muon (torch >= 2.9)")
        hidden = [p for n, p in params.items() if n in HIDDEN]
        rest = [p for n, p in params.items() if n not in HIDDEN]
        parts = []
        if hidden:
            parts.append(torch.optim.Muon(hidden, lr, weight_decay, momentum, nesterov))
        if rest:
            betas = (beta1, beta2)
            parts.append(torch.optim.AdamW(rest, adamw_lr, betas, eps, weight_decay))
        optimizer = Combined(parts)
    if constraint != "none":
        if ATOM_CAPS is None:
            raise ValueError("this build has no caps: set optimizer.lipschitz in the spec")
        hard = constraint == "cap"
        capped = [(name, TARGETS[name][0], cap) for name, cap in ATOM_CAPS.items()]
        constrain_all = Constrain(
            [
                (params[name], cap, LIPSCHITZ[atom], CAPS.get(atom) if hard else None)
                for name, atom, cap in capped
            ]
        )
        constrain_all()
        optimizer.register_step_post_hook(constrain_all)
        optimizer.constrain = constrain_all  # its state goes into train.py's checkpoints
    return optimizer
'''


def _make(s: OptimizerSettings) -> str:
    """make_optimizer, its defaults taken from the spec's settings."""
    values = {
        "momentum": repr(s.momentum),
        "nesterov": repr(s.nesterov),
        "polar": quote(s.polar),
        "weight_decay": repr(s.weight_decay),
        "kind": quote(s.kind),  # one of KINDS, checked
        "constraint": quote(s.constraint),
        "beta2": repr(s.beta2),
        "eps": repr(s.eps),
        "decay": repr(s.decay),
        "clip": repr(s.clip),
        "clip_alpha": repr(s.clip_alpha),
        "eps1": repr(s.eps1),
        "eps2": repr(s.eps2),
        "adamw_lr": repr(s.adamw_lr),
        "beta1": repr(s.beta1),
        "loss": quote(s.loss),  # one of LOSSES, checked
        "rtol": repr(s.rtol),
        "atol": repr(s.atol),
    }
    return SIGNATURE.strip("\n").format(**values) + BODY.rstrip()


TABLES = """
# Each atom's share of the step: its target in the modular norm (exact value at the end of
# the line). The update of an atom has norm lr × target in that atom's norm, so the whole
# step has modular norm lr.
TARGETS = {{
{rows}
}}
DUAL_MAPS = {{{dual_maps}}}
NORMS = {{{norms}}}
LIPSCHITZ = {{{lipschitz}}}
CAPS = {{{caps}}}  # hard caps, for the atoms that have one
KINDS = (
{kinds}
)
# Options of polar() in the dual maps: Polar Express (the default), or Muon's iteration;
# POLAR_ATOMS take them (their dual maps call polar()).
POLAR = {{"polar_express": {{}}, "muon": {{"method": "muon", "steps": 5}}}}
POLAR_ATOMS = ({polar_atoms})
# The muon baseline's hidden matrices: the 2-D weights of POLAR_ATOMS, but not the head's
# (the atoms whose output is the network's, through bonds alone).
HIDDEN = {hidden}

{constraint}
{atom_caps}
"""


def _takes_polar(dualize: object) -> bool:
    """Whether a dual map accepts polar() options (a **polar_options parameter)."""
    params = inspect.signature(dualize).parameters.values()
    return any(p.kind is p.VAR_KEYWORD for p in params)


def _tuple_items(names: list[str]) -> str:
    """The inside of a tuple literal of strings: "", "a",  or "a", "b"."""
    quoted = [quote(n) for n in names]
    return quoted[0] + "," if len(quoted) == 1 else ", ".join(quoted)


def output_atoms(node: ir.Node, path: str = "") -> tuple[set[str], bool]:
    """The paths of the atoms whose output reaches the output of `node` through bonds alone,
    and whether some route through `node` meets no atom (each node's `heads` rule). Paths
    are the analysis's: a leaf adds its name, a repeat its name and the copy's index."""
    return node.heads(path, output_atoms)


def emit_optimizer(network: ir.Network, analysis: Analysis) -> str:
    """The text of optimizer.py."""
    settings = optimizer_settings(network)
    kinds = {a.kind: type(a.node.op) for a in analysis.atoms}

    def table(attr: str) -> str:
        """`"Linear": linear_norm, ...`: each kind's runtime function `attr`, if it has one."""
        functions = [(k, getattr(op, attr)) for k, op in kinds.items()]
        return ", ".join(f"{quote(k)}: {f.__name__}" for k, f in functions if f is not None)

    if settings.atom_caps is None:
        constraint = (
            "# No Lipschitz constraint: the spec sets neither optimizer.lipschitz nor max_norm."
        )
    else:
        asked = (
            f"lipschitz: {settings.lipschitz:g}"
            if settings.lipschitz is not None
            else f"max_norm: {settings.max_norm:g}"
        )
        constraint = (
            f"# The Lipschitz constraint (spec: optimizer {asked}): each atom's sound l2\n"
            "# Lipschitz bound is kept at most its cap, so the certificate's bound is at most\n"
            "# LIPSCHITZ_BOUND. The caps are nearest the atoms' well-normed sizes, weighted by\n"
            "# mass, at which the bound is met (modc docs/theory.md section 9)."
        )
    polar_atoms = [k for k, op in kinds.items() if _takes_polar(op.dualize)]
    heads = output_atoms(network.root)[0]
    hidden = "\n".join(
        f"    {quote(a.path + '.weight')},"
        for a in analysis.atoms
        if a.kind in polar_atoms and len(a.shape) == 2 and a.path not in heads and not a.node.frozen
    )
    tables = TABLES.strip().format(
        rows="\n".join(
            f"    {quote(a.path + '.weight')}: ({quote(a.kind)}, {literal(a.target)}),"
            f"  # {plain(str(a.target))}"
            for a in analysis.atoms
            if not a.node.frozen
        ),
        dual_maps=table("dualize"),
        norms=table("norm"),
        lipschitz=table("lipschitz"),
        caps=table("cap"),
        polar_atoms=_tuple_items(polar_atoms),
        hidden=f"(\n{hidden}\n)" if hidden else "()",
        kinds="\n".join(f"    {quote(k)}," for k in KINDS),
        constraint=constraint,
        atom_caps=caps_source(settings),
    )
    runtime = [
        *(op.dualize for op in kinds.values()),
        *(op.norm for op in kinds.values()),
        *(op.lipschitz for op in kinds.values()),
        *(op.cap for op in kinds.values() if op.cap is not None),
        SkipNonFinite,
        Dualized,
        Normalized,
        Adafactor,
        Combined,
        Constrain,
        truncated_solve,
        GaussNewton,
    ]
    return module(
        f"The optimizer for {shown(network.name)}, compiled by modc: dualized steps "
        "whose size each atom\nreceives by its place in the network; normalized and "
        "baseline optimizers from the same build.\n",
        "\n\n\n".join([snippets(runtime), tables, gauss_newton_table(network), _make(settings)]),
    )
