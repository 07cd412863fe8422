"""Fuzz the front ends: mutated shipped specs (byte edits, token swaps, truncation) end in
success or a clean ModcError, never another exception. Seeded, so CI runs the same cases."""

from __future__ import annotations

import random
import re
import shutil
from pathlib import Path

import pytest

from modc.check import check_table
from modc.errors import ModcError
from modc.graph import budget
from modc.graph.elaborate import elaborate
from modc.spec import load_spec
from modc.theory.analysis import analyze
from tests.language import SPECS, STDLIB

CASES = 2000
ANALYSE_EVERY = 6  # the analysis and the check table run on every 6th spec that elaborates
_TOKEN = re.compile(r"[A-Za-z_][A-Za-z0-9_]*|[0-9.]+|\S")
_CHARS = list("()[]{},:=>+-*/^%#\"'.\n \t0123456789_azAZ") + ["\u00e9", "\x00", "\ufeff"]


def mutate(text: str, rng: random.Random) -> str:
    """One random edit: a byte change, a token swap or replacement, or a truncation."""
    kind = rng.randrange(6)
    if kind == 0 or not text:
        i = rng.randrange(len(text) + 1)
        return text[:i] + rng.choice(_CHARS) + text[i:]
    if kind == 1:
        i = rng.randrange(len(text))
        return text[:i] + rng.choice(_CHARS) + text[i + 1 :]
    if kind == 2:
        i = rng.randrange(len(text))
        return text[:i] + text[i + rng.randint(1, 8) :]
    if kind == 3:
        return text[: rng.randrange(len(text))]
    spans = [m.span() for m in _TOKEN.finditer(text)]
    if len(spans) < 2:  # a text cut down to one token or none: nothing to swap
        return text + rng.choice(_CHARS)
    (a0, a1), (b0, b1) = sorted(rng.sample(spans, 2))
    if kind == 4:  # swap two tokens
        return text[:a0] + text[b0:b1] + text[a1:b0] + text[a0:a1] + text[b1:]
    return text[:a0] + text[b0:b1] + text[a1:]  # replace a token by another


def run_case(path: Path, analyse: bool) -> bool:
    """Load, elaborate and size-check a spec (and analyse it); True if it elaborated."""
    try:
        network = elaborate(load_spec(path))
        budget.check_budget(network, limit=10**8)
        if analyse:
            check_table(network, analyze(network))
    except ModcError as err:
        err.render()
        return False
    return True


@pytest.fixture
def small_budget(monkeypatch):
    """Keep mutated depths cheap: at most 2,000 operations, every copy counted."""
    monkeypatch.setattr(budget, "MAX_OPERATIONS", 2000)


def test_mutated_specs_fail_cleanly(tmp_path: Path, small_budget):
    rng = random.Random(20241122)
    lib = tmp_path / "lib"
    shutil.copytree(STDLIB, lib, ignore=shutil.ignore_patterns("*.py", "__pycache__"))
    specs = sorted(SPECS.glob("*.modc")) + sorted(SPECS.glob("*.yaml"))
    texts = {p: p.read_text().replace('"std/', '"lib/').replace("std/", "lib/") for p in specs}
    library = {p.name: p.read_text() for p in lib.glob("*.modc")}
    elaborated = 0
    for case in range(CASES):
        spec = rng.choice(specs)
        text = texts[spec]
        target = tmp_path / spec.name
        changed = dict(library)
        if rng.random() < 0.25:  # mutate a library file that the spec may include
            name = rng.choice(sorted(library))
            changed[name] = mutate(library[name], rng)
        else:
            text = mutate(text, rng)
        for _ in range(rng.choice([0, 0, 1, 2])):
            text = mutate(text, rng)
        target.write_text(text)
        for name, body in changed.items():
            (lib / name).write_text(body)
        try:
            if run_case(target, analyse=elaborated % ANALYSE_EVERY == 0):
                elaborated += 1
        except Exception as err:  # noqa: BLE001 - the point of the test
            pytest.fail(f"case {case} ({spec.name}) raised {type(err).__name__}: {err}\n{text}")
    assert elaborated > CASES // 20  # the mutations also leave many specs valid
