"""Emit optimizer.py: the Dualized optimizer with this network's per-atom targets."""

from __future__ import annotations

from modc.codegen.source import literal, module, snippets
from modc.graph import ir
from modc.runtime.optim import Dualized
from modc.theory.analysis import Analysis

MAKE = '''
def make_optimizer(
    model: nn.Module,
    lr: float,
    momentum: float = 0.95,
    nesterov: bool = True,
    weight_decay: float = 0.0,
) -> Dualized:
    """Momentum, then each atom's dual map with target lr × TARGETS[name]; one group per kind."""
    params = dict(model.named_parameters())
    if set(params) != set(TARGETS):
        raise ValueError("the model's parameters do not match the network this was built for")
    groups: dict[str, dict] = {}
    for name, (atom, target) in TARGETS.items():
        group = groups.setdefault(atom, {"params": [], "targets": [], "atom": atom})
        group["params"].append(params[name])
        group["targets"].append(target)
    return Dualized(list(groups.values()), DUAL_MAPS, lr, momentum, nesterov, weight_decay)
'''


def emit_optimizer(network: ir.Network, analysis: Analysis) -> str:
    """The text of optimizer.py."""
    kinds = {a.kind: type(a.node.op) for a in analysis.atoms}
    rows = "\n".join(
        f'    "{a.path}.weight": ("{a.kind}", {literal(a.target)}),  # {a.target}'
        for a in analysis.atoms
    )
    maps = ", ".join(f'"{k}": {op.dualize.__name__}' for k, op in kinds.items())
    body = "\n\n\n".join(
        [
            snippets([Dualized, *(op.dualize for op in kinds.values())]),
            "# Each atom's share of the step: its target in the modular norm (exact value at the\n"
            "# end of the line). The update of an atom has norm lr × target in that atom's norm,\n"
            f"# so the whole step has modular norm lr.\nTARGETS = {{\n{rows}\n}}\n"
            f"DUAL_MAPS = {{{maps}}}",
            MAKE.strip(),
        ]
    )
    return module(
        f"The optimizer for {network.name}, compiled by modc: dualized steps "
        "whose size each atom\nreceives by its place in the network.\n",
        body,
    )
