"""Symbolic bounds for a paper: modc's closed forms in width and depth, as LaTeX.

    python examples/latex_bounds/run.py            # GPT and residual MLP; PDF if pdflatex
    python examples/latex_bounds/run.py --quick    # the same, without running pdflatex

`modc bounds SPEC --free width,depth --format latex` prints the network's mass, sensitivity,
parameter count, every atom's target, the modular norm and the input-Lipschitz bound as an
`align*` block, each a sympy expression in the free parameters (never a number fitted at
one size), with the conditions the bound rests on as comments. This writes one such block
per spec into --out (default runs/latex_bounds) as bounds_NAME.tex, and paper.tex, a
minimal document that \\input's them; with pdflatex on the PATH (and without --quick) it
also builds paper.pdf.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SPECS = {"resmlp": ("specs/resmlp.modc", "width,depth"), "gpt": ("specs/gpt.modc", "width,depth")}

PAPER = r"""\documentclass{article}
\usepackage{amsmath,amssymb}
\begin{document}
\section*{Bounds derived by modc}
%s
\end{document}
"""


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--quick", action="store_true", help="no pdflatex")
    p.add_argument("--out", type=Path, default=Path("runs/latex_bounds"))
    args = p.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    parts = []
    for name, (spec, free) in SPECS.items():
        command = [
            sys.executable,
            "-m",
            "modc",
            "bounds",
            spec,
            "--free",
            free,
            "--format",
            "latex",
        ]
        tex = subprocess.run(command, cwd=ROOT, check=True, capture_output=True, text=True).stdout
        (args.out / f"bounds_{name}.tex").write_text(tex)
        parts.append(f"\\subsection*{{{name}}}\n\\input{{bounds_{name}.tex}}")
        print(f"{name}: {args.out / f'bounds_{name}.tex'}")
        print("\n".join(line for line in tex.splitlines() if line.startswith(("\\mu", "L &"))))
    (args.out / "paper.tex").write_text(PAPER % "\n".join(parts))
    if not args.quick and shutil.which("pdflatex"):
        subprocess.run(
            ["pdflatex", "-interaction=nonstopmode", "paper.tex"],
            cwd=args.out,
            check=True,
            stdout=subprocess.DEVNULL,
        )
        print(f"wrote {args.out / 'paper.pdf'}")
    else:
        print(f"wrote {args.out / 'paper.tex'} (build it with pdflatex)")


if __name__ == "__main__":
    main()
