"""The spec's `optimizer:` section, checked, and the per-atom caps of the Lipschitz constraint.

```yaml
optimizer:
  kind: dualized        # dualized | normalized:sgd | normalized:adam | normalized:adafactor
                        # | adamw | muon | adafactor | gauss_newton (reversible networks)
  momentum: 0.95        # β1 of every kind (default 0.95; 0.9 for the Adam family; 0, off,
                        # for adafactor: Shazeer & Stern 2018 §7.1)
  nesterov: true        # dualized, normalized:sgd, muon
  polar: polar_express  # dualized: polar_express (8 polynomials in float32; in bfloat16
                        # 6, from the third, the last a cleanup) | muon (Muon's 5-step quintic)
  weight_decay: 0.0     # decoupled; shared by mass in dualized and normalized:*
  beta2: 0.999          # normalized:adam, adamw, and muon's AdamW part
  eps: 1.0e-8           # normalized:adam, adamw, muon's AdamW part
  decay: 1.0            # adafactor, normalized:adafactor: β2_t = 1 − t^(−decay); 1.0 gives
                        # the Õ(1/√T) rate of Hong & Lin 2024, S&S 2018 (and torch) use 0.8
  clip: none            # adafactor, normalized:adafactor: update clipping U/max(1, RMS(U)/d):
                        # none | d (a constant, S&S 2018 §6 use 1) | alpha=A (Hong & Lin's
                        # time-varying d_t = t^(decay/(2(A−1))), A > 1)
  eps1: 1.0e-30         # adafactor: added to G² in the second moment (S&S 2018 Alg. 4)
  eps2: 1.0e-3          # adafactor: the step is max(eps2, RMS(W)) times the relative step
  adamw_lr: 3.0e-4      # muon: learning rate of the AdamW part (embeddings, head, gains,
                        # biases); its own, not lr: Muon's authors run AdamW at 3e-4
  beta1: 0.9            # muon: β1 of the AdamW part (Muon's own momentum is `momentum`)
  loss: cross_entropy   # gauss_newton: cross_entropy | mse, the loss whose outputs' target
                        # it solves for (docs/theory.md §12)
  rtol: 1.0e-2          # gauss_newton: the pseudo-inverse keeps singular values above
  atol: 1.0e-5          # max(atol, rtol·σ_max) (truncation: the step's damping)
  constraint: cap       # none | cap (hard cap) | normalize (spectral normalisation)
  lipschitz: 10         # keep the certificate's bound at most this ...
  max_norm: 2.0         # ... or cap every atom's ℓ2 Lipschitz bound at this
```

With `lipschitz: L`, every atom's sound ℓ2 Lipschitz bound (the factor the certificate
composes) gets its own cap: the caps nearest the atoms' well-normed sizes, weighted by their
masses, for which the certificate's formula with each factor at its cap is at most L
(modc.theory.caps, docs/theory.md §9). The formula is monotone in every factor, so any
weights within their caps certify at most L. It is the one fold of modc.theory.lipschitz
(`capped_bound`), the same the certificate emits. Copies of a repeated body share one cap;
atoms whose bound no weight changes (Bias, a translation: 1) keep that constant and are left
uncapped. `max_norm: c` alone caps every atom at c; with `lipschitz` no cap exceeds it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import sympy

from modc.codegen.source import quote
from modc.codegen.templates.options import finite
from modc.errors import ModcError, did_you_mean
from modc.graph import ir
from modc.graph.reversible import gauss_newton_plan
from modc.theory.analysis import Analyzer
from modc.theory.caps import atom_caps, atom_masses, capped_atoms
from modc.theory.lipschitz import capped_bound

ONE = sympy.Integer(1)
KINDS = (
    "dualized",
    "normalized:sgd",
    "normalized:adam",
    "normalized:adafactor",
    "adamw",
    "muon",
    "adafactor",
    "gauss_newton",
)
LOSSES = ("cross_entropy", "mse")
CONSTRAINTS = ("none", "cap", "normalize")
POLARS = ("polar_express", "muon")
KEYS = (
    "kind",
    "momentum",
    "nesterov",
    "polar",
    "weight_decay",
    "beta2",
    "eps",
    "decay",
    "clip",
    "eps1",
    "eps2",
    "adamw_lr",
    "beta1",
    "loss",
    "rtol",
    "atol",
    "constraint",
    "lipschitz",
    "max_norm",
)


@dataclass(frozen=True)
class OptimizerSettings:
    """The `optimizer:` section with defaults filled in. `atom_caps` (None without a bound)
    maps each capped atom's parameter name to its cap, `references` to its well-normed ℓ2
    factor; `bound_at_caps` is the certificate's bound with every atom at its cap."""

    kind: str = "dualized"
    momentum: float | None = None
    nesterov: bool = True
    polar: str = "polar_express"
    weight_decay: float = 0.0
    beta2: float = 0.999
    eps: float = 1e-8
    decay: float = 1.0
    clip: float | None = None
    clip_alpha: float | None = None
    eps1: float = 1e-30
    eps2: float = 1e-3
    adamw_lr: float = 3e-4
    beta1: float = 0.9
    loss: str = "cross_entropy"
    rtol: float = 1e-2
    atol: float = 1e-5
    constraint: str = "none"
    lipschitz: float | None = None
    max_norm: float | None = None
    atom_caps: dict[str, float] | None = None
    references: dict[str, float] | None = None
    bound_at_caps: float | None = None


def _number(key: str, value: object, low: float, high: float, closed: bool = True) -> float:
    """`value` as a float in [low, high] (or [low, high) when not `closed`), else an error."""
    ok = finite(value)
    if ok and low <= value and (value <= high if closed else value < high):
        return float(value)
    where = f"[{low:g}, {high:g}{']' if closed else ')'}"
    raise ModcError(f"optimizer.{key} must be a number in {where}, got {value!r}")


def _positive(key: str, value: object) -> float:
    ok = finite(value)
    if ok and value > 0:
        return float(value)
    raise ModcError(f"optimizer.{key} must be a positive number, got {value!r}")


def _choice(key: str, value: object, choices: tuple[str, ...]) -> str:
    if value in choices:
        return value
    hint = did_you_mean(str(value), choices) if isinstance(value, str) else None
    raise ModcError(
        f"optimizer.{key} must be one of {', '.join(choices)}; got {value!r}", hint=hint
    )


def _clip(value: object) -> dict[str, float]:
    """`clip: none`, a constant threshold d > 0, or `alpha=A` (A > 1): the time-varying one."""
    if value == "none":
        return {}
    if isinstance(value, str) and value.startswith("alpha="):
        try:
            alpha = float(value[len("alpha=") :])
        except ValueError:
            alpha = math.nan
        if alpha > 1 and math.isfinite(alpha):
            return {"clip_alpha": alpha}
    elif isinstance(value, (int, float)) and not isinstance(value, bool):
        return {"clip": _positive("clip", value)}
    raise ModcError(
        f"optimizer.clip must be none, a positive number d, or alpha=A with A > 1; got {value!r}"
    )


def optimizer_settings(network: ir.Network) -> OptimizerSettings:
    """The checked `optimizer:` section of `network`, with the constraint's cap solved."""
    raw = dict(network.optimizer)
    for key in raw:
        if key not in KEYS:
            raise ModcError(f"unknown optimizer setting '{key}'", hint=did_you_mean(key, KEYS))
    got: dict[str, object] = {}
    if "kind" in raw:
        got["kind"] = _choice("kind", raw["kind"], KINDS)
        if got["kind"] == "gauss_newton":
            gauss_newton_plan(network.root)  # a located error saying what it lacks
    if "loss" in raw:
        got["loss"] = _choice("loss", raw["loss"], LOSSES)
    for key in ("rtol", "atol"):
        if key in raw:
            got[key] = _number(key, raw[key], 0, math.inf)
    if "momentum" in raw:
        got["momentum"] = _number("momentum", raw["momentum"], 0, 1, closed=False)
    if "nesterov" in raw:
        if not isinstance(raw["nesterov"], bool):
            raise ModcError(f"optimizer.nesterov must be true or false, got {raw['nesterov']!r}")
        got["nesterov"] = raw["nesterov"]
    if "polar" in raw:
        got["polar"] = _choice("polar", raw["polar"], POLARS)
    if "weight_decay" in raw:
        got["weight_decay"] = _number("weight_decay", raw["weight_decay"], 0, math.inf)
    for key in ("beta1", "beta2"):
        if key in raw:
            got[key] = _number(key, raw[key], 0, 1, closed=False)
    if "eps" in raw:
        got["eps"] = _number("eps", raw["eps"], 0, math.inf)
    if "clip" in raw:
        got.update(_clip(raw["clip"]))
    if "eps2" in raw:
        got["eps2"] = _number("eps2", raw["eps2"], 0, math.inf)
    for key in ("decay", "eps1", "adamw_lr", "lipschitz", "max_norm"):
        if key in raw:
            got[key] = _positive(key, raw[key])
    bounded = "lipschitz" in got or "max_norm" in got
    if "constraint" in raw:
        got["constraint"] = _choice("constraint", raw["constraint"], CONSTRAINTS)
        if got["constraint"] != "none" and not bounded:
            raise ModcError(
                f"optimizer.constraint {got['constraint']} needs a bound: add "
                "optimizer.lipschitz (the network's) or optimizer.max_norm (each atom's)"
            )
    elif bounded:
        got["constraint"] = "cap"
    if bounded and any(getattr(n, "frozen", False) for n in ir.leaves(network.root)):
        raise ModcError(
            "optimizer.lipschitz and max_norm cap every atom after each step, but this network "
            "has frozen atoms, whose weights no step may change",
            hint="unfreeze them, or drop the constraint",
        )
    if bounded:
        got.update(_caps(network.root, got.get("lipschitz"), got.get("max_norm")))
    return OptimizerSettings(**got)


def _caps(root: ir.Node, lipschitz: float | None, max_norm: float | None) -> dict[str, object]:
    """The settings' caps by parameter name (every copy of a repeated body listed, at its
    leaf's cap), each atom's reference size, and the bound at the caps."""
    if lipschitz is None:
        caps = {id(leaf): max_norm for leaf in capped_atoms(root)}
    else:
        caps = atom_caps(root, lipschitz, max_norm, atom_masses(root))
    walk, named = Analyzer(), []
    walk.targets(root, ONE, "", ONE, ONE, named)
    chosen = [a for a in named if id(a.node) in caps]
    return {
        "atom_caps": {f"{a.path}.weight": caps[id(a.node)] for a in chosen},
        "references": {f"{a.path}.weight": float(a.node.op.l2_reference()) for a in chosen},
        "bound_at_caps": capped_bound(root, caps),
    }


def caps_source(settings: OptimizerSettings) -> str:
    """ATOM_CAPS and LIPSCHITZ_BOUND as Python source, for optimizer.py and certificate.py:
    a cap a line, with its ratio to the atom's well-normed size."""
    if settings.atom_caps is None:
        return "ATOM_CAPS: dict[str, float] | None = None\nLIPSCHITZ_BOUND: float | None = None"
    rows = "".join(
        f"    {quote(name)}: {cap!r},  # {cap / settings.references[name]:.3g} × well-normed\n"
        for name, cap in settings.atom_caps.items()
    )
    return (
        f"ATOM_CAPS: dict[str, float] | None = {{\n{rows}}}\n"
        f"LIPSCHITZ_BOUND: float | None = {settings.bound_at_caps!r}"
    )
