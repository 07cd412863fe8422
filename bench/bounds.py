"""How long `modc bounds` takes on the GPT: at depth 48, and with depth free vs depth 4.

The analysis keeps a repeated body unexpanded when its count is free, so a free depth must
cost no more than a small fixed one. Three measures, all after the imports:

- warm: one interpreter runs parse, elaborate, analyse ("analysis") and print as text
  ("total") `--runs` times per case, the cases taking turns, sympy's caches filled;
- cold: the first run in a fresh interpreter, what one command pays for the analysis
  (`--repeat` interpreters per case, taking turns);
- command: `python -m modc bounds` on the wall clock, imports (mostly torch) included.

In-process times are CPU seconds (time.process_time), and the least of the runs is shown:
other work on a shared machine only ever adds to a run, so the least is the steadiest
estimate of what the work itself costs. Exits 1 if depth 48 takes 1 s or more, or if the
analysis of a free depth is slower than that of depth 4.

    python bench/bounds.py [--runs 30] [--repeat 3] [--spec specs/gpt.modc]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CASES = [  # label, overrides, free parameters
    ("depth 4", ["depth=4"], []),
    ("depth 48", ["depth=48"], []),
    ("depth free", [], ["depth"]),
    ("depth, width free", [], ["depth", "width"]),
]
COLD = """
import sys, time
from modc.compiler import load
from modc.theory.report import to_text
params, free = (a.split(",") if a else [] for a in sys.argv[2:4])
start = time.process_time()
to_text(*load(sys.argv[1], params, free))
print(time.process_time() - start)
"""


def warm(spec: str, runs: int) -> dict[str, tuple[float, float]]:
    """(analysis, total) least CPU seconds per case in this interpreter, cases in turn.

    Depth 48 runs on its own after the others: its many expressions would push theirs out
    of sympy's cache (1000 entries) and make every case cold.
    """
    from modc.compiler import load
    from modc.theory.report import to_text

    best: dict[str, tuple[float, float]] = {}
    for group in (
        [c for c in CASES if c[0] != "depth 48"],
        [c for c in CASES if c[0] == "depth 48"],
    ):
        for _ in range(runs + 1):
            for label, params, free in group:
                start = time.process_time()
                result = load(spec, params, free)
                middle = time.process_time()
                to_text(*result)
                end = time.process_time()
                a, t = best.get(label, (float("inf"), float("inf")))
                best[label] = (min(a, middle - start), min(t, end - start))
    return best


def cold(spec: str, params: list[str], free: list[str]) -> float:
    """CPU seconds of the first load + to_text in a fresh interpreter, imports excluded."""
    out = subprocess.run(
        [sys.executable, "-c", COLD, spec, ",".join(params), ",".join(free)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        check=True,
    )
    return float(out.stdout)


def command(spec: str, params: list[str], free: list[str]) -> float:
    """Wall seconds of `python -m modc bounds`, interpreter start and imports included."""
    args = [a for p in params for a in ("-p", p)] + (["--free", ",".join(free)] if free else [])
    start = time.perf_counter()
    subprocess.run(
        [sys.executable, "-m", "modc", "bounds", spec, *args],
        capture_output=True,
        cwd=ROOT,
        check=True,
    )
    return time.perf_counter() - start


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--runs", type=int, default=30, help="warm runs per case (least shown)")
    p.add_argument("--repeat", type=int, default=3, help="fresh interpreters per case")
    p.add_argument("--spec", action="append", help="spec files (default: the GPT specs)")
    args = p.parse_args()
    default = ("specs/gpt.modc", "specs/gpt_modula.yaml")
    specs = args.spec or [s for s in default if (ROOT / s).exists()]
    failed = False
    for spec in specs:
        path = str(ROOT / spec)
        hot = warm(path, args.runs)
        first: dict[str, float] = {}
        for _ in range(args.repeat):
            for label, params, free in CASES:
                first[label] = min(first.get(label, float("inf")), cold(path, params, free))
        print(f"modc bounds {spec}  (seconds; least of {args.runs} warm, {args.repeat} cold)")
        print(f"  {'case':<18} {'analysis':>9} {'total':>8} {'cold':>8} {'command':>8}")
        for label, params, free in CASES:
            a, t = hot[label]
            line = f"  {label:<18} {a:9.4f} {t:8.4f} {first[label]:8.3f}"
            print(line + f" {command(path, params, free):8.2f}")
        for other in ("depth 4", "depth 48"):
            ratios = (
                hot["depth free"][0] / hot[other][0],
                hot["depth free"][1] / hot[other][1],
                first["depth free"] / first[other],
            )
            print(
                f"  free depth / {other}: {ratios[0]:.2f} analysis, {ratios[1]:.2f} total, "
                f"{ratios[2]:.2f} cold"
            )
        ok48 = hot["depth 48"][1] < 1 and first["depth 48"] < 1
        ok_free = hot["depth free"][0] <= hot["depth 4"][0]
        print(
            f"  depth 48 under 1 s: {'yes' if ok48 else 'NO'}; analysis of a free depth no "
            f"slower than depth 4: {'yes' if ok_free else 'NO'}\n"
        )
        failed |= not (ok48 and ok_free)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
