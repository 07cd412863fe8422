"""The `train:` and `optimizer:` sections, checked where they are written.

A `train:` setting is a default of the generated train.py, which checks every option
against one table, `rules()` in the build's options.py (what each must be, and a check).
That table is the one source: modc imports the same file (modc/codegen/templates/options.py)
with codegen's optimizer kinds and polar methods. An `optimizer:`
key is one of codegen's `KEYS`; its value is checked against the network when the
network is known (modc/graph/settings.py).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass

from modc.errors import ModcError, did_you_mean
from modc.source import Span
from modc.spec import ast


def setting_number(value: object, text: str, span: Span) -> object:
    """`value`, the number spelled `text` in a setting, unless a float cannot hold it:
    generated code keeps settings as floats. Other values pass."""
    from modc.codegen.templates.options import finite

    if isinstance(value, bool) or not isinstance(value, (int, float)) or finite(value):
        return value
    shown = text if len(text) <= 24 else text[:20] + "…"
    if isinstance(value, int) or text.lstrip("+-").isdigit():
        raise ModcError(f"number {shown} is too large: a setting is at most 1.8e+308", span)
    raise ModcError(f"expected a finite number, got {shown}", span)


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
    """The settings a spec's `train:` may give, by key: the rules of train.py's options."""
    from modc.codegen.settings import KINDS, POLARS
    from modc.codegen.templates.options import SETTINGS, rules

    optional = {"optimizer", *SETTINGS}
    return {
        key: Rule(what, check, tuple(getattr(check, "choices", ())), key in optional)
        for key, (what, check) in rules(list(KINDS), list(POLARS)).items()
    }


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
