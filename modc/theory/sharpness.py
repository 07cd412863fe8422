"""Sharpness: second-derivative bounds of the network in the modular norm, by composition.

For a module f(x, w) with mass μ, nominal sensitivity ν (the one in the modular norm) and
worst-case Lipschitz constant ν̂, on inputs where every atom's input has norm at most 1:

  ‖D_w f[Δw]‖        ≤ ω ‖Δw‖_M          (ω = 1: "well-normed")
  ‖D²_ww f[Δw, Δw]‖  ≤ α ‖Δw‖_M²
  ‖D²_wx f[Δw, Δx]‖  ≤ β ‖Δw‖_M ‖Δx‖
  ‖D²_xx f[Δx, Δx]‖  ≤ γ ‖Δx‖²

Composition M1 ∘ M0 (M0 first), with c0 = μ0/(μ ν1) and c1 = μ1/μ the weights' shares in
‖(w0, w1)‖_M = max(‖w0‖/c0, ‖w1‖/c1), follows from the chain rule:

  ω = ν̂1 ω0 c0 + ω1 c1
  α = (γ1 ω0² + ν̂1 α0) c0² + 2 β1 ω0 c0 c1 + α1 c1²
  β = (γ1 ν̂0 ω0 + ν̂1 β0) c0 + β1 ν̂0 c1
  γ = γ1 ν̂0² + ν̂1 γ0

A tuple (sum of output norms) adds: ω = Σ ωi μi/μ, α = Σ αi (μi/μ)², β = Σ βi μi/μ,
γ = Σ γi. n copies of one body solve linear recurrences, in closed form for any n (sums of
geometric terms; polynomials in n when ν = ν̂ = 1). A loss σ-Lipschitz and τ-smooth in the
output is then (σ α + τ ω²)-smooth in the modular norm. An operation that is not twice
differentiable (ReLU, Abs) has no γ, and every constant that needs it does not exist.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

import sympy

from modc.graph import ir
from modc.theory.conditions import place

Value = sympy.Expr | None  # None: the bound does not exist
ZERO, ONE = sympy.Integer(0), sympy.Integer(1)
SIGMA = sympy.Symbol("σ", positive=True)  # the loss's Lipschitz constant in the output
TAU = sympy.Symbol("τ", nonnegative=True)  # the loss's smoothness in the output
_K = sympy.Symbol("k", integer=True, nonnegative=True)
_J = sympy.Symbol("j", integer=True, nonnegative=True)
#: Largest number of copies composed one by one; more are summed in closed form.
ITERATE = 16


class Masses(Protocol):
    def mass(self, n: ir.Node) -> sympy.Expr: ...

    def sensitivity(self, n: ir.Node) -> sympy.Expr: ...


@dataclass(frozen=True)
class Sharp:
    """The constants of one module: μ, ν (nominal), ν̂ (worst case), ω, α, β, γ."""

    mu: sympy.Expr
    nu: sympy.Expr
    nuh: sympy.Expr
    omega: Value
    alpha: Value
    beta: Value
    gamma: Value


@dataclass
class Sharpness:
    """The network's constants; `missing` names the operations that make some not exist.

    With a free repeat count they are written with the constants of one copy of the body
    (α_blocks, ν̂_blocks, ...) as symbols, defined in `definitions` (later ones may use
    earlier ones); `expand` writes them out.
    """

    alpha: Value
    beta: Value
    gamma: Value
    omega: Value
    smoothness: Value  # σ·α + τ·ω²
    missing: list[str] = field(default_factory=list)
    definitions: dict[sympy.Symbol, sympy.Expr] = field(default_factory=dict)

    def expand(self, e: Value) -> Value:
        """`e` with every abbreviation replaced by its definition."""
        if e is None:
            return None
        for symbol, value in reversed(self.definitions.items()):
            e = e.xreplace({symbol: value})
        return e


def _zero(v: Value | int) -> bool:
    """An exact zero: sympy's zero is one object, so identity is enough (and cheap)."""
    return v is ZERO or (type(v) is int and v == 0)


def mul(*factors: Value | int) -> Value:
    """A product where an exact zero wins over a missing value (0 · ∞ = 0 here: no term)."""
    if any(_zero(f) for f in factors):
        return ZERO
    if any(f is None for f in factors):
        return None
    return sympy.Mul(*factors)


def add(*terms: Value) -> Value:
    if any(t is None for t in terms):
        return None
    return sympy.Add(*terms)


def compose(e: Sharp, later: Sharp) -> Sharp:
    """`later` ∘ `e`: the rule of the module docstring."""
    mu = e.mu + later.mu
    gamma = add(mul(later.gamma, e.nuh, e.nuh), mul(later.nuh, e.gamma))
    nu, nuh = e.nu * later.nu, e.nuh * later.nuh
    if mu == 0:
        return Sharp(mu, nu, nuh, ZERO, ZERO, ZERO, gamma)
    c1 = later.mu / mu
    if e.mu == 0:
        c0: Value = ZERO
    else:
        c0 = None if later.nu == 0 else e.mu / (mu * later.nu)
    omega = add(mul(later.nuh, e.omega, c0), mul(later.omega, c1))
    alpha = add(
        mul(add(mul(later.gamma, e.omega, e.omega), mul(later.nuh, e.alpha)), c0, c0),
        mul(2, later.beta, e.omega, c0, c1),
        mul(later.alpha, c1, c1),
    )
    beta = add(
        mul(add(mul(later.gamma, e.nuh, e.omega), mul(later.nuh, e.beta)), c0),
        mul(later.beta, e.nuh, c1),
    )
    return Sharp(mu, nu, nuh, omega, alpha, beta, gamma)


def concatenate(branches: list[Sharp]) -> Sharp:
    """A tuple of branches on one input, its output measured by the sum of their norms."""
    mu = sympy.Add(*(b.mu for b in branches))
    nu = sympy.Add(*(b.nu for b in branches))
    nuh = sympy.Add(*(b.nuh for b in branches))
    gamma = add(*(b.gamma for b in branches))
    if mu == 0:
        return Sharp(mu, nu, nuh, ZERO, ZERO, ZERO, gamma)
    omega = add(*(mul(b.omega, b.mu / mu) for b in branches))
    alpha = add(*(mul(b.alpha, (b.mu / mu) ** 2) for b in branches))
    beta = add(*(mul(b.beta, b.mu / mu) for b in branches))
    return Sharp(mu, nu, nuh, omega, alpha, beta, gamma)


def power(
    c: Sharp,
    n: sympy.Expr,
    real: Sharp | None = None,
    sums: tuple[str, dict] | None = None,
) -> Sharp:
    """n composed copies of c: by iteration for a small number n, in closed form otherwise
    (so that the work does not grow with n).

    With M_k the first k copies and W_k = k·ω_k, B_k = k·β_k, A_k = k²·α_k, the rule gives
    W_{k+1} = r W_k + ω, B_{k+1} = r B_k + (γ W_k/ν + β) ν̂^k and
    A_{k+1} = q A_k + γ W_k²/ν² + 2β W_k/ν + α, with r = ν̂/ν and q = ν̂/ν²: sums of
    geometric terms, summed here in closed form. `real`, when c's constants are symbols
    standing for expressions, holds those expressions: the cases are decided on them.
    `sums` = (name, definitions) names each geometric sum Σ_{k<n} x^k of a symbol x
    `Σ_name` there, as abbreviate() names the constants.
    """
    if n.is_Integer and n <= ITERATE:
        acc = c
        for _ in range(int(n) - 1):
            acc = compose(acc, c)
        return acc
    real = real or c
    nu, nuh = c.nu, c.nuh
    known = {nu: real.nu, nuh: real.nuh}

    named: dict[sympy.Expr, sympy.Symbol] = {}

    def geometric(x: sympy.Expr, k: sympy.Expr) -> sympy.Expr:
        value = _geometric(x, k, x.xreplace(known))
        if sums is None or k != n or x.is_number or value == k:
            return value
        if x not in named:
            name, definitions = sums
            symbol = sympy.Symbol(f"Σ{len(named) + 1 if named else ''}_{name}", positive=True)
            definitions[symbol] = value
            named[x] = symbol
        return named[x]

    gamma = mul(c.gamma, nuh ** (n - 1), geometric(nuh, n))
    if c.mu == 0:
        return Sharp(ZERO, nu**n, nuh**n, ZERO, ZERO, ZERO, gamma)
    if real.nu == 1 and real.nuh == 1:
        return _unit_power(c, n)
    g, b, a, w = c.gamma, c.beta, c.alpha, c.omega
    r = nuh / nu
    if (real.nuh / real.nu - 1).is_zero is False:
        d, q = r - 1, nuh / nu**2
        g_r, g_h, g_n, g_q = (geometric(x, n) for x in (r, nuh, nu, q))
        omega = mul(w, g_r, 1 / n)
        big_b = mul(r ** (n - 1), add(mul(g, w, g_h - g_n, 1 / (d * nu)), mul(b, g_n)))
        big_a = add(
            mul(g, w, w, q ** (n - 1) * (g_h - 2 * g_n) + g_q, 1 / (nu * d) ** 2),
            mul(2, b, w, q ** (n - 1) * g_n - g_q, 1 / (nu * d)),
            mul(a, g_q),
        )
    else:  # r = 1 or unknown: the sums as they are
        wk = mul(w, geometric(r, _K))
        b_terms = add(mul(g, nuh**_K, wk, 1 / nu), mul(b, nuh**_K))
        a_terms = add(mul(g, None if wk is None else wk**2, 1 / nu**2), mul(2, b, wk, 1 / nu), a)
        omega = mul(w, geometric(r, n), 1 / n)
        big_b = mul(_sum(r ** (n - 1 - _K) * b_terms, n)) if b_terms is not None else None
        q = nuh / nu**2
        big_a = mul(_sum(q ** (n - 1 - _K) * a_terms, n)) if a_terms is not None else None
    return Sharp(n * c.mu, nu**n, nuh**n, omega, mul(big_a, 1 / n**2), mul(big_b, 1 / n), gamma)


def _unit_power(c: Sharp, n: sympy.Expr) -> Sharp:
    """n copies with ν = ν̂ = 1: W_k = kω, and the sums are polynomials in n."""
    g, b, a, w = c.gamma, c.beta, c.alpha, c.omega
    gamma = mul(n, g)
    beta = add(b, mul(g, w, (n - 1) / 2))
    alpha = add(
        mul(a, 1 / n),
        mul(b, w, (n - 1) / n),
        mul(g, w, w, (n - 1) * (2 * n - 1) / (6 * n)),
    )
    return Sharp(n * c.mu, ONE, ONE, w, alpha, beta, gamma)


def _geometric(x: sympy.Expr, k: sympy.Expr, value: sympy.Expr | None = None) -> sympy.Expr:
    """Σ_{j<k} x^j: k when x = 1, (x^k − 1)/(x − 1) when x ≠ 1 is known, else the sum.

    `value` is what x stands for when x is an abbreviation; the case is decided on it.
    """
    value = x if value is None else value
    if value == 1:
        return k
    if (value - 1).is_zero is False:
        return (x**k - 1) / (x - 1)
    return sympy.Sum(x**_J, (_J, 0, k - 1))


def _sum(term: sympy.Expr, n: sympy.Expr) -> sympy.Expr:
    """Σ_{k<n} term, left unevaluated (sympy's summation is slow and full of cases)."""
    return sympy.Sum(term, (_K, 0, n - 1))


#: The constants of one copy that get a name when the count is free: field, symbol.
_NAMED = (("nu", "ν"), ("nuh", "ν̂"), ("omega", "ω"), ("alpha", "α"), ("beta", "β"), ("gamma", "γ"))


def abbreviate(c: Sharp, name: str, definitions: dict) -> Sharp:
    """`c` with each constant that is not a plain number replaced by a symbol `α_name`,
    defined in `definitions`: closed forms over copies stay short and readable."""
    keys = ("mu", "nu", "nuh", "omega", "alpha", "beta", "gamma")
    values = dict(zip(keys, _fields(c), strict=True))
    for key, letter in _NAMED:
        v = values[key]
        if v is not None and not v.is_number:
            symbol = sympy.Symbol(f"{letter}_{name}", nonnegative=True)
            definitions[symbol] = v
            values[key] = symbol
    return Sharp(**values)


class Algebra:
    """The rules above as the operations combinators build their constants with
    (`sharpness_of`, modc/graph/ir.py): `compose`, `concatenate`, `power`, `tared`, and
    `leaf` for an operation. Names the constants of repeated bodies with free counts in
    `definitions`."""

    def __init__(self, masses: Masses, definitions: dict):
        self.masses, self.definitions = masses, definitions
        self.compose, self.concatenate = compose, concatenate

    def leaf(self, n: ir.Leaf) -> Sharp:
        alpha, beta, gamma = n.op.sharpness()
        if n.is_atom:
            return Sharp(self.masses.mass(n), ONE, ONE, ONE, alpha, beta, gamma)
        nu, nuh = n.op.sensitivity(), n.op.lipschitz_bound()
        return Sharp(ZERO, nu, nuh, ZERO, alpha, beta, gamma)

    def underived(self, n: ir.Node, nu: sympy.Expr, nuh: sympy.Expr) -> Sharp:
        """A module with a sensitivity but no second-derivative constants derived."""
        return Sharp(self.masses.mass(n), nu, nuh, None, None, None, None)

    def tared(self, body: Sharp, n: ir.Node) -> Sharp:
        """A body whose masses are rescaled to the node's."""
        return Sharp(self.masses.mass(n), *_fields(body)[1:])

    def power(self, n: ir.Repeat, value: Sharp, count: sympy.Expr) -> Sharp:
        """`count` composed copies of `value`, the body of `n`; with a free count, its
        constants named after the repeat (two repeats of one name: numbered)."""
        if count.is_Integer:
            return power(value, count)
        used = {s.name.split("_", 1)[1] for s in self.definitions}
        name, k = n.name, 1
        while name in used:
            k += 1
            name = f"{n.name}{k}"
        short = abbreviate(value, name, self.definitions)
        return power(short, count, value, (name, self.definitions))


def sharp_tree(root: ir.Node, masses: Masses, definitions: dict | None = None) -> Sharp:
    """The constants of `root`, one pass over the IR (repeated bodies once)."""
    definitions = {} if definitions is None else definitions
    return ir.fold(root, "sharpness_of", Algebra(masses, definitions))


def _fields(s: Sharp) -> tuple:
    return (s.mu, s.nu, s.nuh, s.omega, s.alpha, s.beta, s.gamma)


def network_sharpness(root: ir.Node, masses: Masses) -> Sharpness:
    """The network's α, β, γ, ω and loss smoothness σα + τω², or why some do not exist."""
    definitions: dict[sympy.Symbol, sympy.Expr] = {}
    s = sharp_tree(root, masses, definitions)
    smooth = add(mul(SIGMA, s.alpha), mul(TAU, s.omega, s.omega))
    missing = []
    if any(v is None for v in (s.alpha, s.beta, s.gamma, s.omega)):
        missing = list(
            dict.fromkeys(place(n) for n in ir.leaves(root) if n.op.sharpness()[2] is None)
        )
        missing += [note for n in ir.walk(root) if (note := n.sharpness_note())]
    return Sharpness(s.alpha, s.beta, s.gamma, s.omega, smooth, missing, definitions)
