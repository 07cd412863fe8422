"""modc's dualized optimizer for any `nn.Module`: atoms recognised by module, no spec needed.

    opt = modc.dualized(model, lr=0.5)          # a torch.optim.Optimizer
    for a in modc.atoms(model): print(a)        # what each weight is, its mass and target

Each weight of a recognised module is an atom with the norm and dual map that a generated
build gives it (the same runtime functions, from the operation library):

    nn.Linear            weight: Linear (polar factor, RMS→RMS norm)   bias: Bias (RMS)
    nn.Embedding         weight: Embed (rows normalised, max row RMS)
    nn.Conv2d            weight: Conv2D (polar factor per tap)           bias: Bias
    nn.LayerNorm         weight: Gain (sign, max norm)                   bias: Bias
    nn.RMSNorm           weight: Gain
    nn.Linear + nn.Embedding sharing one weight (a tied head): Linear. Its update then has
    Embed norm at most √num/dim times its target, no more than the target when num ≤ dim².

What a plain module does not say is how its forward pass composes these atoms: the order,
the sensitivity of every operation between them, residual paths. modc's targets for a spec
divide a part's share by the sensitivity of what follows it; here that is unknown, so the
targets are those modc's rules give a chain or a sum of parts of sensitivity 1 (well-normed
Linear layers, ReLU; not a branch scaled by 1/L, whose atoms modc gives L times more): atom
i, of mass μ_i, gets target μ_i / μ, μ = Σ μ_i, and every step has modular norm lr.
Masses are 1 per atom unless `masses` says otherwise: a parameter name sets that atom's
mass, a module name tares its atoms (as `tare` in a spec: their masses are rescaled to
total the given mass; inner names first). For targets that follow a network's real
structure, write it as a spec (or with modc.api) and compile it.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import torch
from torch import nn

from modc.errors import did_you_mean
from modc.ops import OPS
from modc.runtime.optim import WEIGHT_AXES, Combined, Dualized

#: The atom each recognised module's parameters are, by parameter name.
RECOGNISED: tuple[tuple[type[nn.Module], dict[str, str]], ...] = (
    (nn.Linear, {"weight": "Linear", "bias": "Bias"}),
    (nn.Embedding, {"weight": "Embed"}),
    (nn.Conv2d, {"weight": "Conv2D", "bias": "Bias"}),
    (nn.LayerNorm, {"weight": "Gain", "bias": "Bias"}),
    *([(nn.RMSNorm, {"weight": "Gain"})] if hasattr(nn, "RMSNorm") else []),
)
#: polar() options of the dual maps that take them (Linear, Conv2D).
POLAR = {"polar_express": {}, "muon": {"method": "muon", "steps": 5}}


@dataclass(frozen=True)
class Atom:
    """One weight of the model as modc optimizes it: its atom kind, mass and target."""

    name: str
    kind: str
    mass: float
    target: float
    param: torch.Tensor

    def __repr__(self) -> str:
        shape = tuple(self.param.shape)
        what = f"{self.name}: {self.kind}{shape}"
        return f"Atom({what}, mass {self.mass:g}, target {self.target:.4g})"


class PlacementError(ValueError):
    """A parameter that no recognised module owns, or a mass that names nothing."""


def atoms(
    model: nn.Module,
    masses: Mapping[str, float] | None = None,
    kinds: Mapping[str, str] | None = None,
    extra: Iterable[str] = (),
) -> list[Atom]:
    """Every trainable parameter of `model` as an atom, in `named_parameters` order.

    `kinds` names the atom of a parameter no recognised module owns (`{"pos": "Embed"}`);
    `extra` lists names (fnmatch patterns) left out, for another optimizer. A parameter that
    is neither placed nor extra is an error that names it.
    """
    masses, kinds, extra = dict(masses or {}), dict(kinds or {}), list(extra)
    params = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    names = {n for n, _ in params}
    for key in kinds:
        if key not in names:
            raise PlacementError(f"kinds names no trainable parameter '{key}'" + _near(key, names))
    owners = _owners(model)
    placed: list[tuple[str, str, torch.Tensor]] = []
    unplaced: list[str] = []
    for name, p in params:
        if any(fnmatch.fnmatchcase(name, pattern) for pattern in extra):
            continue
        kind = kinds.get(name) or _kind(owners.get(id(p), []))
        if kind is None:
            unplaced.append(f"{name} {tuple(p.shape)}: {_why(owners.get(id(p), []))}")
            continue
        if kind not in WEIGHT_AXES:
            known = ", ".join(WEIGHT_AXES)
            raise PlacementError(f"unknown atom '{kind}' for {name}; expected one of {known}")
        if p.dim() != WEIGHT_AXES[kind]:
            raise PlacementError(
                f"{name} has shape {tuple(p.shape)}, but a {kind} weight has "
                f"{WEIGHT_AXES[kind]} axes"
            )
        placed.append((name, kind, p))
    if unplaced:
        raise PlacementError(
            "cannot place these parameters as atoms:\n  "
            + "\n  ".join(unplaced)
            + "\nname each one's atom with kinds={'name': 'Linear' | 'Embed' | 'Bias' | 'Gain' "
            "| 'Conv2D'}, hand it to AdamW with extra=['name', ...] (fnmatch patterns), or "
            "freeze it (requires_grad=False)"
        )
    values = _masses([n for n, _, _ in placed], masses, model)
    total = sum(values)
    return [
        Atom(name, kind, value, value / total, p)
        for (name, kind, p), value in zip(placed, values, strict=True)
    ]


def dualized(
    model: nn.Module,
    lr: float,
    *,
    masses: Mapping[str, float] | None = None,
    kinds: Mapping[str, str] | None = None,
    extra: Iterable[str] = (),
    extra_lr: float = 1e-3,
    momentum: float = 0.95,
    nesterov: bool = True,
    weight_decay: float = 0.0,
    polar: str | Mapping[str, object] = "polar_express",
    compile: bool = False,
) -> torch.optim.Optimizer:
    """modc's dualized optimizer for `model`: every step has modular norm `lr`.

    Momentum (EMA, Nesterov by default), then each atom's dual map scaled to lr · target;
    decoupled weight decay shared by mass, as in a generated build (see `atoms` for the
    placement and targets). Parameters matching `extra` go to torch.optim.AdamW (learning
    rate `extra_lr`, betas (0.9, 0.999)); the two are then stepped, scheduled and saved as
    one optimizer. `polar`: how Linear and Conv2D compute polar factors: "polar_express",
    "muon" (Muon's iteration), or polar()'s options ({"dtype": torch.float32, "steps": 10}).
    Returns a `torch.optim.Optimizer`: param_groups carry `lr` (one group per
    atom kind, with a `targets` list), `state_dict()` round-trips, LR schedulers work.
    """
    if isinstance(polar, str) and polar not in POLAR:
        raise ValueError(f"unknown polar {polar!r}; expected one of {', '.join(POLAR)}")
    options = POLAR[polar] if isinstance(polar, str) else dict(polar)
    placed = atoms(model, masses, kinds, extra)
    if not placed:
        raise PlacementError("the model has no trainable parameter to place as an atom")
    groups: dict[str, dict] = {}
    for a in placed:
        group = groups.setdefault(a.kind, {"params": [], "targets": [], "atom": a.kind})
        group["params"].append(a.param)
        group["targets"].append(a.target)
    for kind, group in groups.items():
        group["polar"] = options if kind in ("Linear", "Conv2D") else {}
    dual_maps = {kind: OPS[kind].dualize for kind in groups}
    optimizer = Dualized(
        list(groups.values()), dual_maps, lr, momentum, nesterov, weight_decay, compile=compile
    )
    chosen = {id(a.param) for a in placed}
    rest = [p for _, p in model.named_parameters() if p.requires_grad and id(p) not in chosen]
    if not rest:
        return optimizer
    return Combined([optimizer, torch.optim.AdamW(rest, extra_lr, weight_decay=weight_decay)])


def _owners(model: nn.Module) -> dict[int, list[tuple[str, nn.Module, str]]]:
    """For each parameter (by id), the modules that hold it directly, with its local name."""
    owners: dict[int, list[tuple[str, nn.Module, str]]] = {}
    for prefix, module in model.named_modules(remove_duplicate=False):
        for local, p in module.named_parameters(recurse=False):
            owners.setdefault(id(p), []).append((prefix, module, local))
    return owners


def _atom_of(module: nn.Module, local: str) -> str | None:
    """The atom kind of parameter `local` of `module`, if modc recognises it."""
    for cls, table in RECOGNISED:
        if isinstance(module, cls) and local in table:
            if cls is nn.Conv2d and (module.groups != 1 or len(set(module.kernel_size)) != 1):
                return None
            return table[local]
    return None


def _kind(owners: list[tuple[str, nn.Module, str]]) -> str | None:
    """One atom kind for a parameter from all its owners; a tied Embed/Linear is Linear."""
    found = {_atom_of(module, local) for _, module, local in owners}
    if None in found or not found:
        return None
    if found == {"Embed", "Linear"}:
        return "Linear"
    return found.pop() if len(found) == 1 else None


def _why(owners: list[tuple[str, nn.Module, str]]) -> str:
    """Why a parameter was not placed, for the error message."""
    held = [f"{type(m).__name__} '{prefix}'" for prefix, m, _ in owners]
    kinds = {_atom_of(m, local) for _, m, local in owners}
    for _, m, _ in owners:
        if isinstance(m, nn.Conv2d) and (m.groups != 1 or len(set(m.kernel_size)) != 1):
            return f"held by {held[0]}: modc's Conv2D atom needs groups=1 and a square kernel"
    if len(kinds - {None}) > 1:
        return f"shared by {' and '.join(held)}, whose atoms have different norms"
    return f"held by {' and '.join(held)}, which modc does not recognise"


def _masses(names: list[str], masses: dict[str, float], model: nn.Module) -> list[float]:
    """Each atom's mass: 1, or its own entry; then module entries tare, innermost first."""
    modules = {n for n, _ in model.named_modules() if n}
    for key, value in masses.items():
        if key not in modules and key not in names:
            known = sorted(modules | set(names))
            raise PlacementError(f"masses names no module or atom '{key}'" + _near(key, known))
        if not value > 0:
            raise PlacementError(f"the mass of '{key}' must be positive, got {value}")
    values = [float(masses.get(n, 1.0)) for n in names]
    tares = sorted((k for k in masses if k not in names), key=lambda k: -k.count("."))
    for key in tares:
        inside = [i for i, n in enumerate(names) if n.startswith(key + ".")]
        if not inside:
            raise PlacementError(f"masses gives a mass to '{key}', which holds no atom")
        factor = masses[key] / sum(values[i] for i in inside)
        for i in inside:
            values[i] *= factor
    return values


def _near(key: str, known: Iterable[str]) -> str:
    hint = did_you_mean(key, known)
    return f"; {hint}" if hint else ""
