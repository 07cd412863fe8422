"""The `train:` and `optimizer:` sections, checked where they are written.

A `train:` setting is a default of the generated train.py, so its keys, types and choices
are read from train.py itself: its `DEFAULTS` and the `add_argument` calls that parse the
same options from the command line. An `optimizer:` key is one of codegen's `KEYS`; its
value is checked against the network when the network is known (modc/graph/settings.py).
"""

from __future__ import annotations

import ast as pyast
import functools
import math
from dataclasses import dataclass
from importlib import resources

from modc.errors import ModcError, did_you_mean
from modc.spec import ast

#: Integer options that must be at least 1 (train.py refuses less); other integers ≥ 0.
_AT_LEAST_ONE = ("steps", "batch_size")
#: Number options that must be positive; other numbers ≥ 0.
_POSITIVE = ("lr",)
#: Number options below 1 (a momentum is a decay factor).
_BELOW_ONE = ("momentum",)
#: Largest seed: torch seeds are 64-bit.
MAX_SEED = 2**63 - 1


@dataclass(frozen=True)
class Option:
    """One option of train.py: its type (int, float or str) and its choices, if listed."""

    key: str
    type: type
    choices: tuple[str, ...] | None = None


@functools.cache
def train_options() -> dict[str, Option]:
    """The settings a spec's `train:` may give: train.py's DEFAULTS, typed as its parser."""
    text = (resources.files("modc.codegen") / "templates" / "train.py").read_text("utf-8")
    tree = pyast.parse(text)
    defaults: dict[str, object] = {}
    parsed: dict[str, Option] = {}
    for node in pyast.walk(tree):
        if isinstance(node, pyast.Assign) and any(
            isinstance(t, pyast.Name) and t.id == "DEFAULTS" for t in node.targets
        ):
            defaults = pyast.literal_eval(node.value)
        if isinstance(node, pyast.Call) and getattr(node.func, "attr", "") == "add_argument":
            option = _option(node)
            if option is not None:
                parsed[option.key] = option
    from modc.codegen.settings import CONSTRAINTS, KINDS

    known = {"optimizer": KINDS, "constraint": CONSTRAINTS}
    options = {}
    for key, default in defaults.items():
        option = parsed.get(key, Option(key, type(default)))
        if option.choices is None and key in known:
            option = Option(key, str, tuple(known[key]))
        options[key] = option
    return options


def _option(call: pyast.Call) -> Option | None:
    """The Option an `add_argument("--name", type=..., choices=[...])` call defines."""
    if not call.args or not isinstance(call.args[0], pyast.Constant):
        return None
    flag = call.args[0].value
    if not isinstance(flag, str) or not flag.startswith("--"):
        return None
    kind: type = str
    choices = None
    for kw in call.keywords:
        if kw.arg == "type" and isinstance(kw.value, pyast.Name):
            kind = {"int": int, "float": float}.get(kw.value.id, str)
        elif kw.arg == "choices" and isinstance(kw.value, (pyast.List, pyast.Tuple)):
            choices = tuple(pyast.literal_eval(kw.value))
        elif kw.arg == "action":
            kind = bool
    return Option(flag[2:].replace("-", "_"), kind, choices)


def check_settings(spec: ast.Spec) -> None:
    """Refuse an unknown key or a bad value in `train:`, and an unknown key in `optimizer:`."""
    from modc.codegen.settings import KEYS

    options = train_options()
    for s in spec.train:
        if s.key not in options:
            raise unknown_setting("train", s, options)
        check_train_value(options[s.key], s)
    for s in spec.optimizer:
        if s.key not in KEYS:
            raise unknown_setting("optimizer", s, KEYS)


def unknown_setting(section: str, s: ast.Setting, keys: object) -> ModcError:
    """The error for a key that `section` does not have, with the closest one."""
    keys = sorted(keys)
    hint = did_you_mean(s.key, keys) or f"the {section} settings are " + ", ".join(keys)
    return ModcError(f"unknown {section} setting '{s.key}'", s.span, hint)


def check_train_value(option: Option, s: ast.Setting) -> None:
    """Refuse a `train:` value that train.py would refuse or misread."""
    value, key = s.value, s.key
    if option.choices is not None:
        if value not in option.choices:
            hint = did_you_mean(str(value), option.choices) if isinstance(value, str) else None
            raise ModcError(
                f"train.{key} must be one of {', '.join(option.choices)}; got {value!r}",
                s.span,
                hint,
            )
        return
    if option.type is str:
        if not isinstance(value, str) or not value:
            raise ModcError(f"train.{key} must be a string, got {value!r}", s.span)
        return
    if option.type is bool:
        if not isinstance(value, bool):
            raise ModcError(f"train.{key} must be true or false, got {value!r}", s.span)
        return
    number = isinstance(value, (int, float)) and not isinstance(value, bool)
    if option.type is int:
        least = 1 if key in _AT_LEAST_ONE else 0
        if not (number and isinstance(value, int) and least <= value <= MAX_SEED):
            raise ModcError(
                f"train.{key} must be an integer from {least} to 2^63 - 1, got {value!r}", s.span
            )
        return
    if not (number and math.isfinite(value) and value >= 0):
        raise ModcError(f"train.{key} must be a finite number ≥ 0, got {value!r}", s.span)
    if key in _POSITIVE and value == 0:
        raise ModcError(f"train.{key} must be positive, got {value!r}", s.span)
    if key in _BELOW_ONE and value >= 1:
        raise ModcError(f"train.{key} must be below 1, got {value!r}", s.span)
