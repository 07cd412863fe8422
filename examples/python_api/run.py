"""A network built in Python with modc's API (modc.api), compiled and trained in-process.

    python examples/python_api/run.py            # a residual MLP on MNIST-5k, a minute
    python examples/python_api/run.py --quick    # a smoke test, seconds

The residual MLP of specs/resmlp is written here as Python expressions: `>>` composes,
`m.residual` and `m.tare` are the language's constructs, `@m.define` makes a named
definition. `m.load` gives the module graph and its theory (as `modc bounds` prints it:
mass, sensitivity, each atom's target); `m.build` compiles the same files `modc compile`
writes and imports them, so the model and its optimizer are the generated ones. The loop
below is a plain torch loop over the build's own data module (MNIST, shipped in the build).
Writes the build into --out (default runs/python_api).
"""

from __future__ import annotations

import argparse
import importlib.util
from pathlib import Path

import torch
import torch.nn.functional as F

from modc import api as m


@m.define
def block(d):
    return m.Linear(d) >> m.ReLU >> m.Linear(d)


def network(width: m.Expr, depth: m.Expr):
    return (
        m.Flatten
        >> m.Linear(out=width, name="embed")
        >> m.tare(2, m.residual(depth, block(width), name="blocks"))
        >> m.Linear(out=10, name="head")
    )


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--quick", action="store_true", help="a smoke test: small and short")
    p.add_argument("--out", type=Path, default=Path("runs/python_api"))
    args = p.parse_args()
    torch.set_num_threads(1)

    width, depth = m.param("width", 128), m.param("depth", 4)
    spec = m.spec(
        network(width, depth),
        name="resmlp_py",
        input=(1, 28, 28),
        output=10,
        train={"data": "mnist", "lr": 0.05},
    )
    sizes = {"width": 32, "depth": 2} if args.quick else {}
    net, analysis = m.load(spec, params=sizes)
    print(f"mass {analysis.mass}, sensitivity {analysis.sensitivity}")
    build = m.build(spec, params=sizes, out=args.out / "build")
    print(f"targets: {build.optimizer.TARGETS}")

    data_py = importlib.util.spec_from_file_location("build_data", build.path / "data.py")
    data = importlib.util.module_from_spec(data_py)
    data_py.loader.exec_module(data)
    mnist = data.load("mnist", build.model.INPUT_SHAPE, build.model.OUTPUT_SHAPE)
    torch.manual_seed(0)
    model = build.model.build_model()
    optimizer = build.optimizer.make_optimizer(model, lr=0.05)
    steps = 20 if args.quick else 600
    for step in range(steps):
        x, y = mnist.batch(step, 128, seed=0)
        loss = F.cross_entropy(model(x), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    x, y = mnist.held_out()
    with torch.no_grad():
        accuracy = (model(x).argmax(1) == y).float().mean().item()
    bound = build.certificate.lipschitz_upper(model)
    print(f"{steps} steps: held-out accuracy {accuracy:.2%}, Lipschitz bound {bound:.3g}")


if __name__ == "__main__":
    main()
