"""Emit gns.py: the gradient noise scale and batch schedules for train.py (modc.runtime.gns)."""

from __future__ import annotations

from modc.codegen.source import module, snippets
from modc.runtime import gns


def emit_gns() -> str:
    """The text of gns.py: what train.py uses of modc.runtime.gns, and what that uses."""
    doc = gns.__doc__.strip() + "\n\nCopied by modc from modc.runtime.gns.\n"
    return module(
        doc,
        snippets(
            [gns.unbiased, gns.GradientNoise, gns.lr_scale, gns.BatchPlan, gns.setup, gns.log]
        ),
    )
