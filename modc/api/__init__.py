"""Networks written in Python: the spec AST that the YAML and `.modc` front ends build.

    from modc import api as m

    width, depth = m.param("width", 256), m.param("depth", 3)
    net = m.Flatten >> m.repeat(depth - 1, m.Linear(width) >> m.ReLU, name="hidden") \\
        >> m.Linear(out=10, name="head")
    build = m.build(m.spec(net, name="mlp", input=(1, 28, 28), output=10))

Every operation of the library is an attribute (`m.Linear`, `m.ReLU`; call it for
arguments, `name=`, `mass=` and `frozen=True`). Networks combine as in the `.modc`
language: `a >> b` composes in data-flow order (the language's `a > b`, and as loose
against `+`, `*` and `**`), `a @ b` in Modula's order (b first), `a + b` sums branches,
`0.5 * a` and `a / 2` scale, `a ** n` repeats, and a Python tuple `(a, b)` is a tuple of
branches wherever a network goes. `repeat`, `residual`, `tare`, `coupling` and `seq` are
functions, `group` is parentheses (`a >> b >> c` is one chain of three, as in the
language), `@define` makes a function a named definition, `include` brings in a spec
file's definitions (the standard library's too), and `param` declares a spec parameter.
Numbers combine with + - * / // % ** and `sqrt`, `min`, `max`, `floor`, `ceil` into
modc's arithmetic, never evaluated here; Python computes `1/3` as a float before modc
sees it, so write `Fraction(1, 3)` or `m.num(1) / 3` for the exact third.

Each node carries a span at the Python line that made it, so elaboration errors point
there, and `spec`, `compile`, `build` and `load` go through the same elaboration, theory
and code generation as a spec file: there is no second implementation.
"""

from __future__ import annotations

from modc.api.networks import (
    Definition,
    Library,
    Net,
    Op,
    coupling,
    define,
    group,
    include,
    repeat,
    residual,
    scale,
    seq,
    tare,
)
from modc.api.numbers import Expr, function, here, num, param
from modc.api.specs import build, compile, load, spec
from modc.errors import did_you_mean
from modc.ops import OPS
from modc.spec.expr import FUNCTIONS

__all__ = [
    "Definition",
    "Expr",
    "Library",
    "Net",
    "build",
    "compile",
    "coupling",
    "define",
    "group",
    "include",
    "load",
    "num",
    "param",
    "repeat",
    "residual",
    "scale",
    "seq",
    "spec",
    "tare",
    *FUNCTIONS,
    *OPS,
]


def __getattr__(name: str) -> object:
    """`m.Linear`, `m.ReLU`, ...: every operation of the library; `m.sqrt`, `m.max`, ..."""
    if name in OPS:
        return Op(name, here())
    if name in FUNCTIONS:
        return function(name)
    hint = did_you_mean(name, [*OPS, *FUNCTIONS])
    raise AttributeError(f"modc.api has no {name!r}" + (f"; {hint}" if hint else ""))


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
