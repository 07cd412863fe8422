"""Wall time of the quick commands against importing torch, each the median of N runs in
fresh processes: `modc --help`, `modc bounds specs/gpt.modc -p depth=48`, and
`python -c "import torch"` beside them (what every command paid while modc imported torch
on start). The goal (issue 15): each modc command under 1.5 s on the project's machine.

    python bench/cli_startup.py [--runs 7]
"""

import argparse
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
COMMANDS = {
    "modc --help": [sys.executable, "-m", "modc", "--help"],
    "modc bounds specs/gpt.modc -p depth=48": [
        sys.executable,
        "-m",
        "modc",
        "bounds",
        "specs/gpt.modc",
        "-p",
        "depth=48",
    ],
    'python -c "import torch"': [sys.executable, "-c", "import torch"],
}


def wall(command: list[str]) -> float:
    start = time.perf_counter()
    subprocess.run(command, cwd=ROOT, check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - start


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--runs", type=int, default=7)
    runs = p.parse_args().runs
    times = {name: [] for name in COMMANDS}
    for _ in range(runs):  # interleaved, so that a busy moment hits all of them alike
        for name, command in COMMANDS.items():
            times[name].append(wall(command))
    torch = statistics.median(times['python -c "import torch"'])
    print(f"median wall time of {runs} runs each (s)")
    for name, values in times.items():
        median = statistics.median(values)
        verdict = "" if "import torch" in name else (" ok" if median < 1.5 else " OVER 1.5 s")
        print(f"  {name:<42} {median:6.2f}   {median / torch:5.2f} × import torch{verdict}")


if __name__ == "__main__":
    main()
