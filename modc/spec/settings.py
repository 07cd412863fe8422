"""The `train:` and `optimizer:` sections, checked where they are written.

A `train:` setting is a default of the generated train.py, which checks every option
against its own table, `RULES` (what each must be, and a check). That table is the one
source: its definitions are compiled here from train.py's text (modc's own template,
never a spec's), with the optimizer kinds and polar methods of codegen. An `optimizer:`
key is one of codegen's `KEYS`; its value is checked against the network when the
network is known (modc/graph/settings.py).
"""

from __future__ import annotations

import ast as pyast
import functools
import math
from collections.abc import Callable
from dataclasses import dataclass
from importlib import resources

from modc.errors import ModcError, did_you_mean
from modc.spec import ast

#: The top-level names of train.py that make its table of rules.
_RULE_NAMES = ("number", "integer", "one_of", "SETTINGS", "RULES")


@dataclass(frozen=True)
class Rule:
    """What a train setting must be, in words; its check; the choices, where it has a list;
    and whether None (the optimizer's own default) is fine."""

    what: str
    check: Callable[[object], bool]
    choices: tuple[str, ...] = ()
    optional: bool = False


@functools.cache
def train_rules() -> dict[str, Rule]:
    """The settings a spec's `train:` may give, by key: train.py's RULES."""
    from modc.codegen.settings import KINDS, POLARS

    text = (resources.files("modc.codegen") / "templates" / "train.py").read_text("utf-8")
    body = [stmt for stmt in pyast.parse(text).body if _defines(stmt) in _RULE_NAMES]
    scope: dict = {"math": math, "Callable": Callable, "KINDS": list(KINDS), "POLARS": list(POLARS)}
    exec(compile(pyast.Module(body, []), "train.py", "exec"), scope)  # modc's own template
    optional = {"optimizer", *scope["SETTINGS"]}
    choices = _choices(body, scope)
    return {
        key: Rule(what, check, choices.get(key, ()), key in optional)
        for key, (what, check) in scope["RULES"].items()
    }


def _defines(stmt: pyast.stmt) -> str | None:
    """The name a top-level statement defines or assigns, if one."""
    if isinstance(stmt, pyast.FunctionDef):
        return stmt.name
    target = stmt.targets[0] if isinstance(stmt, pyast.Assign) else getattr(stmt, "target", None)
    return target.id if isinstance(target, pyast.Name) else None


def _choices(body: list[pyast.stmt], scope: dict) -> dict[str, tuple[str, ...]]:
    """The list each `one_of(...)` rule accepts, for "did you mean"."""
    table = next(s.value for s in body if _defines(s) == "RULES")
    found = {}
    for key, value in zip(table.keys, table.values, strict=True):
        call = value.elts[1] if isinstance(value, pyast.Tuple) else None
        if isinstance(call, pyast.Call) and getattr(call.func, "id", "") == "one_of":
            arg = call.args[0]
            listed = scope.get(arg.id) if isinstance(arg, pyast.Name) else None
            if isinstance(arg, pyast.List):
                listed = pyast.literal_eval(arg)
            if listed:
                found[pyast.literal_eval(key)] = tuple(listed)
    return found


def check_settings(spec: ast.Spec) -> None:
    """Refuse an unknown key or a bad value in `train:`, and an unknown key in `optimizer:`."""
    from modc.codegen.settings import KEYS

    rules = train_rules()
    for s in spec.train:
        if s.key not in rules:
            raise unknown_setting("train", s, rules)
        rule = rules[s.key]
        if not ((s.value is None and rule.optional) or rule.check(s.value)):
            hint = did_you_mean(s.value, rule.choices) if isinstance(s.value, str) else None
            raise ModcError(f"train.{s.key} must be {rule.what}, got {s.value!r}", s.span, hint)
    for s in spec.optimizer:
        if s.key not in KEYS:
            raise unknown_setting("optimizer", s, KEYS)


def unknown_setting(section: str, s: ast.Setting, keys: object) -> ModcError:
    """The error for a key that `section` does not have, with the closest one."""
    keys = sorted(keys)
    hint = did_you_mean(s.key, keys) or f"the {section} settings are " + ", ".join(keys)
    return ModcError(f"unknown {section} setting '{s.key}'", s.span, hint)
