"""What each option of train.py must be: one table, read by train.py on the command line
and in a checkpoint's args, and by modc when it checks a spec's `train:` section.

Imports the Python standard library only.
"""

import math
import sys
from collections.abc import Callable

# The optimizer's settings, passed to make_optimizer; their defaults are its own, which are
# the spec's (None: make_optimizer's default, or a setting that it does not take).
SETTINGS = ["constraint", "momentum", "nesterov", "polar", "weight_decay"]
SETTINGS += ["beta1", "beta2", "eps", "decay", "clip", "clip_alpha", "eps1", "eps2", "adamw_lr"]


def finite(v: object) -> bool:
    """A number a float holds: not a bool, NaN or ±inf, nor an integer past 1.8e308."""
    return isinstance(v, (int, float)) and not isinstance(v, bool) and abs(v) <= sys.float_info.max


def number(low: float, high: float = math.inf, low_open: bool = False) -> Callable:
    """A check: a finite number in [low, high), or (low, high) when `low_open`."""

    def check(v: object) -> bool:
        if not finite(v):
            return False
        return (low < v if low_open else low <= v) and v < high

    return check


def integer(low: int, high: float = math.inf) -> Callable:
    """A check: an integer in [low, high)."""
    return lambda v: isinstance(v, int) and not isinstance(v, bool) and low <= v < high


def one_of(choices: list[str] | None) -> Callable:
    """A check: one of `choices` (any string if None), kept on it for "did you mean"."""

    def check(v: object) -> bool:
        return isinstance(v, str) and (choices is None or v in choices)

    check.choices = choices or []
    return check


def batch_schedule(text: object) -> tuple[str, int | None, int | None] | None:
    """`--batch-schedule` as (kind, low, high) in tokens: "none" is None; "linear:A->B" (or
    A→B) grows or shrinks the batch from A to B tokens linearly in the tokens consumed;
    "gns" or "gns:A->B" follows the measured noise scale within [A, B] tokens (defaults
    then). Raises ValueError for anything else."""
    if text == "none":
        return None
    kind, _, span = str(text).partition(":")
    if kind == "gns" and not span:
        return "gns", None, None
    ends = span.replace("→", "->").split("->")
    if kind not in ("linear", "gns") or len(ends) != 2 or not all(e.isdigit() for e in ends):
        raise ValueError(f"expected none, linear:START->END, gns or gns:MIN->MAX, got {text!r}")
    low, high = int(ends[0]), int(ends[1])
    if low < 1 or high < 1 or (kind == "gns" and low > high):
        raise ValueError(f"token counts must be ≥ 1 (and MIN ≤ MAX for gns), got {text!r}")
    return kind, low, high


def _schedule(v: object) -> bool:
    try:
        batch_schedule(v)
    except ValueError:
        return False
    return isinstance(v, str)


def rules(kinds: list[str] | None, polars: list[str] | None) -> dict[str, tuple[str, Callable]]:
    """What each option must be, in words, and its check, given the build's optimizer kinds
    and polar methods. None is also fine for the optimizer's kind and settings
    (make_optimizer's own default then)."""
    return {
        "data": ("a data set's name or a path", one_of(None)),
        "steps": ("an integer ≥ 1", integer(1)),
        "batch_size": ("an integer ≥ 1", integer(1)),
        "grad_accum": ("an integer ≥ 1", integer(1)),
        "lr": ("a finite number ≥ 0", number(0)),
        "optimizer": ("an optimizer kind", one_of(kinds)),
        "constraint": ("none, cap or normalize", one_of(["none", "cap", "normalize"])),
        "momentum": ("a number in [0, 1)", number(0, 1)),
        "nesterov": ("true or false", lambda v: isinstance(v, bool)),
        "polar": ("a polar method", one_of(polars)),
        "weight_decay": ("a finite number ≥ 0", number(0)),
        "beta1": ("a number in [0, 1)", number(0, 1)),
        "beta2": ("a number in [0, 1)", number(0, 1)),
        "eps": ("a finite number ≥ 0", number(0)),
        "decay": ("a finite number > 0", number(0, low_open=True)),
        "clip": ("a finite number > 0", number(0, low_open=True)),
        "clip_alpha": ("a finite number > 1", number(1, low_open=True)),
        "eps1": ("a finite number > 0", number(0, low_open=True)),
        "eps2": ("a finite number ≥ 0", number(0)),
        "adamw_lr": ("a finite number ≥ 0", number(0)),
        "schedule": ("constant, cosine or linear", one_of(["constant", "cosine", "linear"])),
        "warmup": ("an integer ≥ 0", integer(0)),
        "eval_every": ("an integer ≥ 0", integer(0)),
        "checkpoint_every": ("an integer ≥ 0", integer(0)),
        "certify_every": ("an integer ≥ 0", integer(0)),
        "seed": ("an integer in [0, 2^64)", integer(0, 2**64)),
        "max_skips": ("an integer ≥ 1", integer(1)),
        "gns": ("true or false", lambda v: isinstance(v, bool)),
        "gns_total": ("true or false", lambda v: isinstance(v, bool)),
        "batch_schedule": ("none, linear:START->END, gns or gns:MIN->MAX (tokens)", _schedule),
        "loss": ("cross_entropy or mse", one_of(["cross_entropy", "mse"])),
        "clip_grad": ("a finite number ≥ 0 (0: off)", number(0)),
        "label_column": ("a column's index or name", column),
        "header": ("true, false or auto", lambda v: v is True or v is False or v == "auto"),
    }


def column(v: object) -> bool:
    """A check: a CSV column, by index (negative from the end) or by name."""
    return (isinstance(v, int) and not isinstance(v, bool)) or (isinstance(v, str) and v != "")
