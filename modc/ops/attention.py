"""Attention's bonds: head split and merge, scores q·k/d_head, causal mask, softmax, and
applying scores to values (docs/theory.md §6; Modula's functional attention).

Activation norms: a token tensor (T, d) is measured by the largest RMS over its tokens; a
head tensor (H, T, d_head) by the largest RMS over its (head, token) vectors; scores by
their largest entry; attention weights by the largest ℓ1 norm of a row; a tuple by the
sum of its parts. In these norms, with 1/d_head scaling, |q·k|/d_head ≤ RMS(q)·RMS(k), a
softmax moves its row by at most scale·max|Δs| in ℓ1, and a row of weights averages the
values, so scores and application have sensitivity 1 on inputs of norm at most 1 (Large
et al. 2024; Newhouse et al. 2025). Those are conditions, checked on data by the
certificate.

ℓ2 per example (Frobenius norm of each tensor) costs norm-equivalence factors, stated per
op below: a (T × d) matrix of rows of RMS ≤ 1 has spectral norm ≤ √(T·d), and a (T × S)
matrix of rows of ℓ1 ≤ 1 has spectral norm ≤ √(‖A‖₁‖A‖_∞) ≤ √T. Both are reached (all
rows equal; every row on one key), so the √positions factors are the honest worst case.
The fused CausalAttention bounds scores, softmax and application jointly instead, and
its ℓ2 constant is far smaller (docs/theory.md §6, "CausalAttention").
"""

from __future__ import annotations

from collections.abc import Sequence

import sympy

from modc.lazy import LazyModule
from modc.ops.base import (
    ACTIVATION,
    ONE,
    RMS_AT_MOST_1,
    ROWS_L1_AT_MOST_1,
    ZERO,
    Arg,
    Bond,
    Condition,
    Shape,
    ShapeError,
    exact,
    show,
)
from modc.runtime.certify import largest_rms, largest_row_l1

torch = LazyModule("torch")
F = LazyModule("torch.nn.functional")


def split_heads(x: torch.Tensor, heads: int) -> torch.Tensor:
    """(batch, T, d) → (batch, heads, T, d / heads)."""
    return x.unflatten(-1, (heads, -1)).transpose(-3, -2)


def merge_heads(x: torch.Tensor) -> torch.Tensor:
    """(batch, heads, T, d_head) → (batch, T, heads · d_head)."""
    return x.transpose(-3, -2).flatten(-2)


def attention_qk(q: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    """Scores q·k / d_head (not / √d_head): at most 1 in size when q and k have RMS ≤ 1."""
    return q @ k.transpose(-2, -1) / q.shape[-1]


def causal_mask(scores: torch.Tensor) -> torch.Tensor:
    """Scores of later positions set to −∞, so that a softmax gives them weight 0."""
    t, s = scores.shape[-2:]
    keep = torch.ones(t, s, dtype=torch.bool, device=scores.device).tril()
    return scores.masked_fill(~keep, float("-inf"))


def scaled_softmax(scores: torch.Tensor, scale: float) -> torch.Tensor:
    """softmax(scale · scores) over the last axis."""
    return torch.softmax(scale * scores, dim=-1)


def apply_scores(v: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
    """Each output row: the average of the value rows weighted by a row of scores."""
    return scores @ v


def causal_attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: float
) -> torch.Tensor:
    """apply_scores(v, scaled_softmax(causal_mask(attention_qk(q, k)), scale)) in one fused
    kernel (flash or memory-efficient attention where the device has one)."""
    return F.scaled_dot_product_attention(q, k, v, is_causal=True, scale=scale / q.shape[-1])


def attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: float) -> torch.Tensor:
    """apply_scores(v, scaled_softmax(attention_qk(q, k), scale)) in one fused kernel."""
    return F.scaled_dot_product_attention(q, k, v, scale=scale / q.shape[-1])


#: The fused form of AttentionQK > [CausalMask >] Softmax > ApplyScores, by whether the
#: mask is there: model.py calls it with (q, k, v, softmax scale).
FUSED = {True: causal_attention, False: attention}


def attend(v: torch.Tensor, q: torch.Tensor, k: torch.Tensor, scale: float) -> torch.Tensor:
    """CausalAttention: softmax(scale · q·kᵀ / d_head, causal) @ v, in one fused kernel."""
    return F.scaled_dot_product_attention(q, k, v, is_causal=True, scale=scale / q.shape[-1])


def _divides(heads: sympy.Expr, d: sympy.Expr) -> bool:
    q = d / heads
    return not q.is_number or q.is_integer


class SplitHeads(Bond):
    """(T, d) → (heads, T, d / heads).

    Its sensitivity is 1 by the modular-norm convention (Modula's), which measures each head
    as if the token's norm were spread evenly over the heads. In the worst case a token's
    whole norm sits in one head, whose RMS is then √heads times the token's: that is its
    Lipschitz constant in the activation norm. In ℓ2 it only moves entries: constant 1.
    """

    name = "SplitHeads"
    args = (Arg("heads"),)
    runtime = (split_heads,)

    def shape(self, x: Shape) -> Shape:
        heads = self.values["heads"]
        if len(x) != 2:
            raise ShapeError(f"SplitHeads needs (positions, features), got {show(x)}")
        if not _divides(heads, x[1]):
            raise ShapeError(f"{x[1]} features do not split into {heads} heads")
        return (heads, x[0], x[1] / heads)

    def lipschitz_bound(self, norm: sympy.Expr = ONE, space: str = ACTIVATION) -> sympy.Expr:
        return sympy.sqrt(self.values["heads"]) if space == ACTIVATION else ONE

    def forward(self, inputs: Sequence[str], attr: str | None) -> str:
        return f"split_heads({inputs[0]}, {int(self.values['heads'])})"


class MergeHeads(Bond):
    """(heads, T, d_head) → (T, heads · d_head): a token's RMS is at most its heads' largest;
    in ℓ2 it only moves entries."""

    name = "MergeHeads"
    runtime = (merge_heads,)

    def facts(self, inputs: Sequence[frozenset[str]]) -> frozenset[str]:
        return inputs[0] & {RMS_AT_MOST_1}

    def shape(self, x: Shape) -> Shape:
        if len(x) != 3:
            raise ShapeError(f"MergeHeads needs (heads, positions, features), got {show(x)}")
        return (x[1], x[0] * x[2])

    def forward(self, inputs: Sequence[str], attr: str | None) -> str:
        return f"merge_heads({inputs[0]})"


class AttentionQK(Bond):
    """(q, k) ↦ q·kᵀ / d_head per head: (…, T, d), (…, S, d) → (…, T, S). Bilinear.

    ℓ2: Δ(qkᵀ) = Δq·kᵀ + q′·Δkᵀ, and ‖Δq·kᵀ‖_F ≤ ‖Δq‖_F·‖k‖₂ ≤ ‖Δq‖_F·√(S·d) when every
    key has RMS ≤ 1; over d_head the constant is √(max(T, S)/d) per unit of ‖Δq‖ + ‖Δk‖.
    """

    name = "AttentionQK"
    arity = 0
    holds = "scores"
    runtime = (attention_qk,)

    def shape(self, *inputs: Shape) -> Shape:
        if len(inputs) != 2:
            raise ShapeError(f"AttentionQK takes (queries, keys), got {len(inputs)} inputs")
        q, k = inputs
        if len(q) < 2 or q[:-2] != k[:-2] or q[-1] != k[-1]:
            raise ShapeError(f"queries {show(q)} and keys {show(k)} do not match")
        return (*q[:-1], k[-2])

    def conditions(self) -> tuple[Condition, ...]:
        text = (
            "AttentionQK: its constants hold where every {} vector (per head and position) "
            "has RMS norm at most 1"
        )
        return (
            Condition(text.format("query"), largest_rms, 0, 1.0, False, RMS_AT_MOST_1),
            Condition(text.format("key"), largest_rms, 1, 1.0, False, RMS_AT_MOST_1),
        )

    def lipschitz_bound(self, norm: sympy.Expr = ONE, space: str = ACTIVATION) -> sympy.Expr:
        if space == ACTIVATION:
            return ONE
        q, k = self.in_shapes
        return sympy.sqrt(sympy.Max(q[-2], k[-2]) / q[-1])

    def sharpness(self) -> tuple[sympy.Expr, sympy.Expr, sympy.Expr | None]:
        return (ZERO, ZERO, sympy.Rational(1, 2))  # |2 Δq·Δk| / d ≤ (‖Δq‖ + ‖Δk‖)² / 2

    def forward(self, inputs: Sequence[str], attr: str | None) -> str:
        return f"attention_qk({inputs[0]}, {inputs[1]})"


class CausalMask(Bond):
    """Scores (…, T, T) with the entries above the diagonal set to −∞."""

    name = "CausalMask"
    runtime = (causal_mask,)

    def shape(self, x: Shape) -> Shape:
        if len(x) < 2 or x[-1] != x[-2]:
            raise ShapeError(f"CausalMask needs square scores (…, T, T), got {show(x)}")
        return x

    def forward(self, inputs: Sequence[str], attr: str | None) -> str:
        return f"causal_mask({inputs[0]})"


class Softmax(Bond):
    """softmax(scale · s) over the last axis: from max-entry to row-ℓ1 norm, sensitivity |scale|.

    Its Jacobian diag(p) − ppᵀ maps h to p ⊙ (h − p·h), whose ℓ1 norm is a mean absolute
    deviation, at most max|h|; its second derivative has ℓ1 norm at most 2·Var_p(h). In ℓ2
    the Jacobian is symmetric positive semidefinite and Gershgorin bounds its eigenvalues by
    max_i 2p_i(1 − p_i) ≤ 1/2: constant |scale|/2 per row, so per example.
    """

    name = "Softmax"
    args = (Arg("scale", "number", sympy.Integer(1)),)
    runtime = (scaled_softmax,)

    def facts(self, inputs: Sequence[frozenset[str]]) -> frozenset[str]:
        return frozenset({ROWS_L1_AT_MOST_1})

    def shape(self, x: Shape) -> Shape:
        if not x:
            raise ShapeError("Softmax needs an input with at least one axis")
        return x

    def sensitivity(self) -> sympy.Expr:
        return sympy.Abs(self.values["scale"])

    def lipschitz_bound(self, norm: sympy.Expr = ONE, space: str = ACTIVATION) -> sympy.Expr:
        scale = sympy.Abs(self.values["scale"])
        return scale if space == ACTIVATION else scale / 2

    def sharpness(self) -> tuple[sympy.Expr, sympy.Expr, sympy.Expr | None]:
        return (ZERO, ZERO, 2 * self.values["scale"] ** 2)

    def forward(self, inputs: Sequence[str], attr: str | None) -> str:
        return f"scaled_softmax({inputs[0]}, {exact(self.values['scale'])})"


class ApplyScores(Bond):
    """(v, scores) ↦ scores @ v: (…, S, d), (…, T, S) → (…, T, d). Bilinear.

    ℓ2: Δ(Av) = ΔA·v + A′·Δv, with ‖v‖₂ ≤ √(S·d) (values of RMS ≤ 1) and ‖A′‖₂ ≤ √T (rows
    of ℓ1 ≤ 1, so columns of ℓ1 ≤ T): constant max(√(S·d), √T) per unit of ‖Δv‖ + ‖ΔA‖.
    """

    name = "ApplyScores"
    arity = 0
    holds = "y"
    runtime = (apply_scores,)

    def facts(self, inputs: Sequence[frozenset[str]]) -> frozenset[str]:
        """Rows of ℓ1 ≤ 1 take convex-like combinations: values of RMS ≤ 1 stay so."""
        both = RMS_AT_MOST_1 in inputs[0] and ROWS_L1_AT_MOST_1 in inputs[1]
        return frozenset({RMS_AT_MOST_1}) if both else frozenset()

    def shape(self, *inputs: Shape) -> Shape:
        if len(inputs) != 2:
            raise ShapeError(f"ApplyScores takes (values, scores), got {len(inputs)} inputs")
        v, s = inputs
        if len(v) < 2 or len(s) != len(v) or s[:-2] != v[:-2] or s[-1] != v[-2]:
            raise ShapeError(f"values {show(v)} and scores {show(s)} do not match")
        return (*s[:-1], v[-1])

    def conditions(self) -> tuple[Condition, ...]:
        return (
            Condition(
                "ApplyScores: its constants hold where every value vector (per head and "
                "position) has RMS norm at most 1",
                largest_rms,
                0,
                1.0,
                False,
                RMS_AT_MOST_1,
            ),
            Condition(
                "ApplyScores: its constants hold where every row of scores has ℓ1 norm at "
                "most 1, as after a softmax (up to its rounding)",
                largest_row_l1,
                1,
                1.0,
                False,
                ROWS_L1_AT_MOST_1,
            ),
        )

    def lipschitz_bound(self, norm: sympy.Expr = ONE, space: str = ACTIVATION) -> sympy.Expr:
        if space == ACTIVATION:
            return ONE
        v, s = self.in_shapes
        return sympy.Max(sympy.sqrt(v[-2] * v[-1]), sympy.sqrt(s[-2]))

    def sharpness(self) -> tuple[sympy.Expr, sympy.Expr, sympy.Expr | None]:
        return (ZERO, ZERO, sympy.Rational(1, 2))  # ‖2 ΔA Δv‖ ≤ (‖ΔA‖ + ‖Δv‖)² / 2

    def forward(self, inputs: Sequence[str], attr: str | None) -> str:
        return f"apply_scores({inputs[0]}, {inputs[1]})"


class CausalAttention(Bond):
    """(v, q, k) ↦ softmax(scale · q·kᵀ / d_head, causal) @ v per head, all (…, T, d_head).

    The composition ApplyScores ∘ (v, Softmax ∘ CausalMask ∘ AttentionQK ∘ (q, k)) in one
    op, with the same rules in the activation norm, and an ℓ2 constant bounded jointly
    (docs/theory.md §6, "CausalAttention"): with β = |scale|, T positions, y = (T − 1)·e^{−2β},
    G = e^{2β}·ln(1 + y) and H = e^{2β}·(min(y, 3)/4 + ln((1 + max(y, 3))/4)), per unit of
    ‖Δv‖ + ‖Δq‖ + ‖Δk‖ it is the largest of β (queries), β·√(2H) (keys) and √min(T, 1 + G)
    (values), on queries, keys and values of RMS ≤ 1.
    """

    name = "CausalAttention"
    args = (Arg("scale", "number", sympy.Integer(1)),)
    arity = 0
    runtime = (attend,)

    def facts(self, inputs: Sequence[frozenset[str]]) -> frozenset[str]:
        """Each output row is a convex combination of value rows: RMS ≤ 1 stays so."""
        return inputs[0] & {RMS_AT_MOST_1}

    def shape(self, *inputs: Shape) -> Shape:
        if len(inputs) != 3:
            raise ShapeError(
                f"CausalAttention takes (values, queries, keys), got {len(inputs)} inputs"
            )
        v, q, k = inputs
        if len(q) < 2 or not v == q == k:
            raise ShapeError(f"values {show(v)}, queries {show(q)} and keys {show(k)} do not match")
        return v

    def conditions(self) -> tuple[Condition, ...]:
        text = (
            "CausalAttention: its constants hold where every {} vector (per head and "
            "position) has RMS norm at most 1"
        )
        return tuple(
            Condition(text.format(part), largest_rms, i, 1.0, False, RMS_AT_MOST_1)
            for i, part in enumerate(("value", "query", "key"))
        )

    def sensitivity(self) -> sympy.Expr:
        return sympy.Max(ONE, sympy.Abs(self.values["scale"]))

    def lipschitz_bound(self, norm: sympy.Expr = ONE, space: str = ACTIVATION) -> sympy.Expr:
        if space == ACTIVATION:  # ‖Δo‖ ≤ ‖Δv‖ + β·(‖Δq‖ + ‖Δk‖), as the composition's
            return sympy.Max(ONE, sympy.Abs(self.values["scale"]))
        return sympy.Max(*self.l2_parts())

    def l2_parts(self) -> tuple[sympy.Expr, sympy.Expr, sympy.Expr]:
        """The ℓ2 constants per unit of ‖Δv‖, of ‖Δq‖ and of ‖Δk‖ alone."""
        beta = sympy.Abs(self.values["scale"])
        t = self.in_shapes[0][-2]
        y = (t - 1) * sympy.exp(-2 * beta)
        g = sympy.exp(2 * beta) * sympy.log(1 + y)
        h = sympy.exp(2 * beta) * (sympy.Min(y, 3) / 4 + sympy.log((1 + sympy.Max(y, 3)) / 4))
        return (sympy.sqrt(sympy.Min(t, 1 + g)), beta, beta * sympy.sqrt(2 * h))

    def sharpness(self) -> tuple[sympy.Expr, sympy.Expr, sympy.Expr | None]:
        beta = sympy.Abs(self.values["scale"])
        return (ZERO, ZERO, 2 * beta**2 + beta)  # the composition's, each part bounded

    def forward(self, inputs: Sequence[str], attr: str | None) -> str:
        v, q, k = inputs
        return f"attend({v}, {q}, {k}, {exact(self.values['scale'])})"
