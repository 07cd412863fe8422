"""The `optimizer:` section checked against the network, so that `modc check` refuses
exactly what `modc compile` refuses, at the setting that is wrong."""

from __future__ import annotations

import dataclasses

from modc.errors import ModcError
from modc.graph import ir
from modc.spec import ast


def check_optimizer(network: ir.Network, spec: ast.Spec) -> None:
    """Refuse optimizer settings that code generation would refuse, located in the spec.

    codegen's checks do not know where a value was written; the culprit is the first
    setting without which the error changes.
    """
    from modc.codegen.settings import optimizer_settings
    from modc.graph.reversible import gauss_newton_plan

    chosen = [s for s in spec.train if s.key == "optimizer" and s.value == "gauss_newton"]
    if chosen:
        gauss_newton_plan(network.root)  # located where the network lacks what it needs
    try:
        optimizer_settings(network)
    except ModcError as err:
        if err.span is not None or not spec.optimizer:
            raise
        culprit = spec.optimizer[0]
        for s in spec.optimizer:
            rest = {k: v for k, v in network.optimizer.items() if k != s.key}
            try:
                optimizer_settings(dataclasses.replace(network, optimizer=rest))
            except ModcError as other:
                if other.message == err.message:
                    continue
            culprit = s
            break
        raise ModcError(err.message, culprit.span, err.hint) from None
