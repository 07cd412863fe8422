"""Emit certificate.py: sound input-Lipschitz bounds at the live weights, in two named norms,
and the check of their conditions on data. The bound's formula is the fold of
modc.theory.lipschitz, evaluated in the `Source` domain below."""

from __future__ import annotations

import math
import textwrap
from collections.abc import Sequence

import sympy

from modc.codegen.model import call, fused_calls
from modc.codegen.reversible import inverse_certificate
from modc.codegen.settings import caps_source, optimizer_settings
from modc.codegen.source import WIDTH, docstring, literal, module, plain, quote, snippets
from modc.errors import shown
from modc.graph import ir
from modc.ops.base import ACTIVATION, L2, exact
from modc.runtime.certify import check_conditions, lipschitz_lower
from modc.theory.analysis import Analysis
from modc.theory.conditions import open_conditions
from modc.theory.lipschitz import Domain, lipschitz

TAIL = '''
def lipschitz_upper(model: nn.Module, norm: str = "l2") -> float:
    """Sound upper bound on the Lipschitz constant of the model in its input.

    norm "l2": ‖f(x) − f(x′)‖₂ ≤ bound·‖x − x′‖₂ per example (each example's tensor flattened).
    norm "activation": the modular norm's activation norm (RMS over features, the largest
    over positions). Every factor is a true upper bound (float64 SVDs and FFTs with rounding
    margins), composed by the network's structure: products along compositions, sums over
    branches; ROUNDING covers the float arithmetic of the composition. It holds for every
    input when CONDITIONS is empty, else for inputs on which they hold (see `report`).
    """
    bound = {"l2": l2_network, "activation": activation_network}[norm]
    return bound(model) * ROUNDING


def modular_norm(model: nn.Module, tensors: dict | list) -> float:
    """The modular norm of per-weight tensors (an update, say): max over atoms of the atom's
    norm divided by its target. `tensors` maps names to tensors, or lists them in the order
    of model.parameters(). A dualized step of learning rate lr has modular norm lr."""
    if not isinstance(tensors, dict):
        names = [name for name, _ in model.named_parameters()]
        tensors = dict(zip(names, tensors, strict=True))
    if set(tensors) != set(ATOMS):
        raise ValueError("the tensors do not match the network's atoms")
    return max(ATOM_NORMS[ATOMS[name]](t) / TARGETS[name] for name, t in tensors.items())


def conditions_on(model: nn.Module, x: torch.Tensor) -> list[dict]:
    """Each condition, evaluated on the inputs its operations receive when `model` runs on
    `x`: whether it held on every example, its worst value and where that was."""
    found = check_conditions(model, x, CHECKS)[0] if CHECKS else {}
    return [
        {"condition": text, **found.get(i, {"held": None, "worst": None, "where": "not run"})}
        for i, text in enumerate(CONDITIONS)
    ]


def inside(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Per example of `x`, whether every condition held on it (all true without any)."""
    if not CHECKS:
        return torch.ones(x.shape[0], dtype=torch.bool, device=x.device)
    return check_conditions(model, x, CHECKS)[1]


def report(model: nn.Module, x: torch.Tensor | None = None) -> dict:
    """The certificate: its bounds (each in its norm), the conditions they need checked on
    the inputs `x` (held-out data, say), the constraint it was built for, each atom's norms.

    `within` is true only when every condition held on `x` (or there are none) and, with a
    constraint, the ℓ2 bound is at most LIPSCHITZ_BOUND. Without `x` the conditions are
    unchecked and `within` is false whenever there are any.
    """
    weights = dict(model.named_parameters())
    upper = lipschitz_upper(model)
    checked = None if x is None else conditions_on(model, x)
    held = not CONDITIONS or (checked is not None and all(c["held"] for c in checked))
    constraint = None
    if ATOM_CAPS is not None:
        constraint = {"atom_caps": dict(ATOM_CAPS), "lipschitz_bound": LIPSCHITZ_BOUND}
    within = held and (constraint is None or upper <= LIPSCHITZ_BOUND)
    if constraint is not None:
        constraint["within"] = within
    failed = [c for c in checked or [] if not c["held"]]
    return {
        "lipschitz_upper": upper,
        "norm": "l2 to l2, per example",
        "lipschitz_upper_activation": lipschitz_upper(model, "activation"),
        "activation_norm": "RMS over features, the largest over positions; tuples summed",
        "conditions": list(CONDITIONS),
        "conditions_checked": checked,
        "conditions_held": held,
        "failed": [f"{c['condition']}: failed at {c['where']} ({c['worst']:.6g})" for c in failed],
        "within": within,
        "constraint": constraint,
        "atoms": {
            name: {
                "kind": kind,
                "target": TARGETS[name],
                "norm": ATOM_NORMS[kind](weights[name]),
                "lipschitz": ATOM_LIPSCHITZ[kind](weights[name]),
                "cap": (ATOM_CAPS or {}).get(name),
            }
            for name, kind in ATOMS.items()
        },
    }
'''


# A bound as an expression tree: Python source of a factor, an exact constant, or
# (operator, terms).
Term = str | sympy.Expr | tuple[str, list["Term"]]


def flat(term: Term, parent: str = "") -> str:
    """`term` on one line; a sum inside a product gets parentheses."""
    if isinstance(term, sympy.Expr):
        text = exact(term) if term.is_Rational else repr(_float_up(term))
        return f"({text})" if "/" in text and parent == "*" else text
    if isinstance(term, str):
        return term
    op, items = term
    text = f" {op} ".join(flat(t, op) for t in items)
    return f"({text})" if op == "+" and parent == "*" else text


def layout(term: Term, indent: int, head: str, parent: str = "") -> list[str]:
    """`head` then `term`, on one line if it fits in WIDTH at `indent`, else one operand a
    line inside parentheses, each broken the same way if it still does not fit: the layout
    ruff's formatter gives an expression inside parentheses."""
    one = head + flat(term, parent)
    if indent + len(one) <= WIDTH or not isinstance(term, tuple):
        return [one]
    return [head + "(", *_inside(term, indent + 4), ")"]


def _inside(term: Term, indent: int) -> list[str]:
    """The lines of `term` inside brackets opened on the line before, indented by 4: on
    one line if it fits, else one operand a line."""
    if indent + len(flat(term)) <= WIDTH or not isinstance(term, tuple):
        return ["    " + flat(term)]
    op, items = term
    lines = []
    for i, item in enumerate(items):
        lines += ["    " + line for line in layout(item, indent, f"{op} " * (i > 0), op)]
    return lines


def statement(term: Term, indent: int, head: str) -> list[str]:
    """`head` (`return `) then `term`, as ruff's formatter lays out a statement: on one line
    if it fits; else, for two operands one of which ends or starts in brackets, without
    added parentheses, each bracketed part broken only where the line would not fit up to
    the next bracket (`hugged`); else inside added parentheses (`layout`)."""
    if indent + len(head + flat(term)) <= WIDTH or not isinstance(term, tuple):
        return [head + flat(term)]
    pieces = _pieces(term, "")
    op, items = term
    groups = [p for p in pieces if not isinstance(p, str)]
    ends = [p for p in (pieces[0], pieces[-1]) if not isinstance(p, str)]
    if len(items) != 2 or not ends or not groups:
        return layout(term, indent, head)
    return _hugged(pieces, indent, head)


def _pieces(term: Term, parent: str) -> list:
    """`term` flat, as text and bracketed groups: (opening, inner term or text, closing)."""
    if isinstance(term, str):
        name, bracket, args = term.partition("(")
        if bracket and term.endswith(")") and name.replace(".", "").replace("_", "").isalnum():
            return [(name + "(", args[:-1], ")")]
        return [term]
    text, bare = flat(term, parent), flat(term)
    if text != bare:  # parenthesised where it stands
        return [("(", term if isinstance(term, tuple) else bare, ")")]
    if not isinstance(term, tuple):
        return [text]
    op, items = term
    out: list = []
    for i, item in enumerate(items):
        out += [f" {op} "] * (i > 0) + _pieces(item, op)
    return out


def _hugged(pieces: list, indent: int, head: str) -> list[str]:
    """The pieces on lines, left to right: a group stays on its line if the line fits up
    to the next group's opening bracket, else it opens, its inside one line down."""
    lines, line = [], head
    for i, piece in enumerate(pieces):
        if isinstance(piece, str):
            line += piece
            continue
        opening, inner, closing = piece
        rest = ""
        for after in pieces[i + 1 :]:
            rest += after if isinstance(after, str) else after[0]
            if not isinstance(after, str):
                break
        text = opening + (flat(inner) if isinstance(inner, tuple) else inner) + closing
        if indent + len(line + text + rest) <= WIDTH:
            line += text
            continue
        lines += [line + opening, *_inside(inner, indent + 4)]
        line = closing
    return [*lines, line]


class Source(Domain[Term]):
    """The fold's values as Python source over a module `m`: one `<space>_<scope>` function
    per generated class (the network, each repeated body, each use of a definition), as
    model.py has them, each naming weights as its class does (`m.q.weight`)."""

    def __init__(self, space: str, root: ir.Node) -> None:
        self.space = space
        self.functions: list[str] = []
        self.names: set[str] = {self.whole}  # lipschitz_upper calls it by this name
        self.bodies: dict[tuple[str, ...], str] = {}  # a function's lines → its name
        self.local = local_names(root)

    @property
    def whole(self) -> str:
        """The name of the function that bounds the whole network."""
        return f"{self.space}_network"

    def function(self, term: Term, wanted: str | None, doc: str) -> str:
        """A function `<space>_<wanted>(m)` returning `term` (one already written with the
        same body, if any), or with wanted None, the whole network's; its name."""
        body = tuple(statement(term, 4, "return "))
        key = (str(wanted), doc, *body)
        if wanted is not None and key in self.bodies:
            return self.bodies[key]
        name, n = (self.whole, 1) if wanted is None else (f"{self.space}_{wanted}", 1)
        while wanted is not None and name in self.names:
            n += 1
            name = f"{self.space}_{wanted}{n}"
        self.names.add(name)
        self.bodies[key] = name
        lines = [f"def {name}(m: nn.Module) -> float:", docstring(doc, 4)]
        lines += ["    " + line for line in body]
        self.functions.append("\n".join(lines))
        return name

    def atom(self, leaf: ir.Leaf, space: str) -> Term:
        return leaf.op.lipschitz_call(f"m.{self.local[id(leaf)]}.weight", space)

    def used(self, node: ir.Node, value: Term) -> Term:
        """A use of a definition: its class's function, called on its submodule."""
        use = node.use
        fn = self.function(value, use.definition, f"Bound for a use of {call(use)}.")
        return f"{fn}(m.{self.local[id(use)]})"

    def constant(self, value: sympy.Expr) -> Term:
        return value

    def product(self, values: Sequence[Term]) -> Term:
        """Nested products flattened, exact constants multiplied into one, put first."""
        factors = [f for v in values for f in (v[1] if _is(v, "*") else [v])]
        constant = sympy.Mul(*(f for f in factors if isinstance(f, sympy.Expr)))
        rest = [f for f in factors if not isinstance(f, sympy.Expr)]
        ordered = ([] if constant == 1 and rest else [constant]) + rest
        return ordered[0] if len(ordered) == 1 else ("*", ordered)

    def total(self, values: Sequence[Term]) -> Term:
        if all(isinstance(v, sympy.Expr) for v in values):
            return sympy.Add(*values)
        return ("+", list(values))

    def coupling(self, node: ir.Coupling, values: Sequence[Term]) -> Term:
        """The coupling's rule, in a function of its generated module."""
        attr = self.local[id(node)]
        doc = f"Bound for the coupling '{attr}'."
        name = self.function(Domain.coupling(self, node, values), attr, doc)
        return f"{name}(m.{attr})"

    def repeat(self, node: ir.Repeat, values: Sequence[Term]) -> Term:
        """A product over the copies, each bounded by its body's function."""
        copies, rest = f"m.{self.local[id(node)]}", values[-1]
        doc = f"Bound for one copy of '{node.name}'."
        if len(values) == 2:
            first = self.function(
                values[0], f"{node.name}_first", f"Bound for the first copy of '{node.name}'."
            )
            if node.count == 1:
                return f"{first}({copies}[0])"
            each = self.function(rest, node.name, doc)
            return self.product(
                [f"{first}({copies}[0])", f"math.prod({each}(b) for b in {copies}[1:])"]
            )
        return f"math.prod({self.function(rest, node.name, doc)}(b) for b in {copies})"


def local_names(root: ir.Node) -> dict[int, str]:
    """The name each atom, repeat, coupling and use of a definition (its `Use`) has in its
    generated class: its path from the enclosing repeated body or coupling, less the uses
    of definitions it is inside (model.py makes each a class)."""
    names: dict[int, str] = {}

    def visit(n: ir.Node, prefix: str) -> None:
        if n.use is not None and n.use.attr is not None and n is not root:
            names[id(n.use)] = n.use.attr
            prefix = f"{prefix}{n.use.attr}."
        if isinstance(n, ir.Leaf | ir.Repeat | ir.Coupling) and n.name:
            names[id(n)] = n.name.removeprefix(prefix)
        for child in n.children():  # a repeated body and a coupling are classes of their own
            visit(child, "" if isinstance(n, ir.Repeat | ir.Coupling) else prefix)

    visit(root, "")
    return names


def evaluations(node: ir.Node) -> int:
    """How many leaf factors a bound of `node` multiplies or adds at run time, every copy
    counted: the number of roundings the composition can make, twice over at most."""
    if isinstance(node, ir.Leaf):
        return 1
    counts = [evaluations(c) for c in node.evaluated()]
    if isinstance(node, ir.Repeat):
        return counts[0] + (int(node.count) - 1) * counts[-1]
    return sum(counts)


def _table(name: str, items: list[str]) -> str:
    """`name = {items}` on one line where it fits in WIDTH, else an item a line."""
    line = f"{name} = {{{', '.join(items)}}}"
    if len(line) <= WIDTH:
        return line
    return "\n".join([f"{name} = {{", *(f"    {item}," for item in items), "}"])


def _is(term: Term, op: str) -> bool:
    return isinstance(term, tuple) and term[0] == op


def _float_up(value: sympy.Expr) -> float:
    """A float not below `value`."""
    x = float(value)
    return x if sympy.Float(x, 60) >= value else math.nextafter(x, math.inf)


def _string_lines(text: str, indent: int) -> str:
    """`text` as a tuple item: adjacent double-quoted literals, each line within WIDTH."""
    chunks = textwrap.wrap(text, WIDTH - indent - 3, drop_whitespace=False) or [""]
    if "".join(chunks) != text:  # whitespace textwrap would change: keep one literal
        chunks = [text]
    quoted = [quote(chunk) for chunk in chunks]
    return "".join(
        f"{' ' * indent}{q}{',' * (i == len(quoted) - 1)}\n" for i, q in enumerate(quoted)
    )


def _conditions(network: ir.Network) -> tuple[list, dict[str, list]]:
    """Each condition once (by text) and, per runtime function that model.py calls for a
    conditioned operation (its own, or the fused attention that stands for it), the checks
    to run on its calls: (condition index, measure, argument, limit, at_least)."""
    calls = fused_calls(network)
    texts: dict[str, int] = {}
    checks: dict[str, list] = {}
    conditions = []
    for node, c in open_conditions(network.root):
        if c.text not in texts:
            texts[c.text] = len(conditions)
            conditions.append(c)
        fn, args = calls[id(node)]
        if args[c.input] is None:  # fusion keeps every input a condition is checked on
            raise AssertionError(f"{fn} does not receive the input of: {c.text}")
        row = (texts[c.text], c.measure, args[c.input], c.limit, c.at_least)
        if row not in checks.setdefault(fn, []):
            checks[fn].append(row)
    return conditions, checks


def emit_certificate(network: ir.Network, analysis: Analysis) -> str:
    """The text of certificate.py."""
    settings = optimizer_settings(network)
    sources = {space: Source(space, network.root) for space in (L2, ACTIVATION)}
    for space, src in sources.items():
        term = lipschitz(network.root, src, space)
        src.function(term, None, f"Bound for the whole network, in the {space} norm.")
    inverse = inverse_certificate(network, sources[L2])
    leaves = evaluations(network.root)
    kinds = {a.kind: type(a.node.op) for a in analysis.atoms}
    atoms = "\n".join(f"    {quote(a.path + '.weight')}: {quote(a.kind)}," for a in analysis.atoms)
    targets = "\n".join(
        f"    {quote(a.path + '.weight')}: {literal(a.target)},  # {plain(str(a.target))}"
        for a in analysis.atoms
    )
    norms = _table("ATOM_NORMS", [f"{quote(k)}: {op.norm.__name__}" for k, op in kinds.items()])
    lipschitz_fns = _table(
        "ATOM_LIPSCHITZ", [f"{quote(k)}: {op.lipschitz.__name__}" for k, op in kinds.items()]
    )
    conditions, checks = _conditions(network)
    conditions_text = "".join(_string_lines(c.text, 4) for c in conditions)
    check_rows = "\n".join(
        f"    {quote(fn)}: [\n"
        + "".join(
            f"        ({i}, {m.__name__}, {arg}, {limit!r}, {at_least}),\n"
            for i, m, arg, limit, at_least in rows
        )
        + "    ],"
        for fn, rows in checks.items()
    )
    if settings.atom_caps is None:
        constraint = "# No Lipschitz constraint in the spec.\n"
    else:
        constraint = (
            "# The spec's Lipschitz constraint: the optimizer keeps each atom's bound at most\n"
            "# its cap, so lipschitz_upper stays at most LIPSCHITZ_BOUND (the bound with every\n"
            "# atom at its cap; Bias atoms, 1 for any weight, need none).\n"
        )
    constraint += caps_source(settings)
    measures = [c.measure for c in conditions]
    runtime = [
        lipschitz_lower,
        check_conditions,
        *dict.fromkeys(measures),
        *(op.lipschitz for op in kinds.values()),
        *(op.lipschitz_activation for op in kinds.values()),
        *(op.norm for op in kinds.values()),
    ]
    checks_text = f"CHECKS = {{\n{check_rows}\n}}\n" if checks else "CHECKS: dict = {}\n"
    body = "\n\n\n".join(
        [
            snippets(dict.fromkeys(runtime)),
            "# Conditions the bounds rely on; empty when they hold for every input. CHECKS\n"
            "# evaluates them on data: per function of model.py, (condition, measure, input,\n"
            "# limit, at least?).\n"
            f"CONDITIONS: tuple[str, ...] = ({chr(10) + conditions_text if conditions else ''})\n"
            + checks_text
            + f"ATOMS = {{\n{atoms}\n}}\n"
            "# Each atom's target: its share of a step in the modular norm.\n"
            f"TARGETS = {{\n{targets}\n}}\n"
            f"{norms}\n{lipschitz_fns}\n"
            "# The float rounding of composing the factors (products and sums of positives):\n"
            "# at most one unit of 2⁻⁵³ per step, counted twice over.\n"
            f"ROUNDING = 1 + {2 * leaves + 2} * 2**-53\n\n{constraint}",
            *sources[L2].functions,
            *sources[ACTIVATION].functions,
            TAIL.strip(),
            inverse,
        ]
    )
    return module(
        f"A Lipschitz certificate for {shown(network.name)}, compiled by modc: bounds at the\n"
        "live weights, their conditions checked on data.\n",
        body,
    )
