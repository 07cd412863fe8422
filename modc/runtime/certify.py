"""Operator-norm bounds: a sound upper bound per weight, an empirical lower bound per model,
and the measures by which the certificate checks its conditions on data."""

from __future__ import annotations

import math

from modc.lazy import LazyModule
from modc.runtime.scratch import Scratch

torch = LazyModule("torch")  # imported when first used: `modc bounds` never runs a tensor
nn = LazyModule("torch.nn")


def _vector_rms(x: torch.Tensor) -> torch.Tensor:
    """RMS over the last axis, in float64; batch first."""
    return x.detach().double().pow(2).mean(-1).sqrt().reshape(len(x), -1)


def smallest_rms(x: torch.Tensor) -> torch.Tensor:
    """Per example, the smallest RMS of a feature vector (last axis)."""
    return _vector_rms(x).amin(1)


def largest_rms(x: torch.Tensor) -> torch.Tensor:
    """Per example, the largest RMS of a feature vector (last axis), less the rounding of
    making it (one unit in the last place per feature): an exact RMS of 1 may be stored a
    hair above (after RMSClip, say)."""
    rounding = 1 - x.shape[-1] * torch.finfo(x.dtype).eps
    return _vector_rms(x).amax(1) * rounding


def smallest_centred_rms(x: torch.Tensor) -> torch.Tensor:
    """Per example, the smallest standard deviation of a feature vector (last axis)."""
    x = x.detach().double()
    return smallest_rms(x - x.mean(-1, keepdim=True))


def largest_row_l1(scores: torch.Tensor) -> torch.Tensor:
    """Per example, the largest ℓ1 norm of a row (last axis), less the rounding of a softmax
    in the tensor's dtype (one unit in the last place per entry): exact softmax rows sum
    to 1."""
    rounding = scores.shape[-1] * torch.finfo(scores.dtype).eps
    return (scores.detach().double().abs().sum(-1) - rounding).reshape(len(scores), -1).amax(1)


def check_conditions(
    model: nn.Module, x: torch.Tensor, checks: dict
) -> tuple[dict[int, dict], torch.Tensor]:
    """Run `model` on `x` and evaluate each condition on the inputs its operation receives.

    `checks` maps the name of a runtime function of the model's module (rms_divide,
    attention_qk, ...) to (condition index, measure, input number, limit, at_least) rows.
    For one forward pass in eval mode (1024 examples at a time) each such function is
    wrapped, and forward hooks on every submodule track which one is running, so each
    condition gets its worst value over examples and calls and where that was: the
    submodule and the call's number in it. Also returns, per example, whether every
    condition held on it.
    """
    namespace = model.forward.__globals__  # the generated model.py
    running: list[str] = []
    calls: dict[tuple[str, str], int] = {}
    worst: dict[int, dict] = {}
    each = torch.ones(x.shape[0], dtype=torch.bool, device=x.device)
    start = [0]  # the first example of the chunk running

    def watched(name: str, fn):
        def call(*args):
            owner = running[-1] if running else "network"
            n = calls[owner, name] = calls.get((owner, name), 0) + 1
            for index, measure, arg, limit, at_least in checks[name]:
                values = measure(args[arg])
                held = values >= limit if at_least else values <= limit
                each[start[0] : start[0] + len(values)].logical_and_(held)
                value = (values.min() if at_least else values.max()).item()
                seen = worst.get(index)
                if seen is None or (value < seen["worst"] if at_least else value > seen["worst"]):
                    worst[index] = {
                        "held": value >= limit if at_least else value <= limit,
                        "worst": value,
                        "where": f"{name} call {n} in {owner}",
                    }
            return fn(*args)

        return call

    def enter(name: str):
        return lambda module, inputs: running.append(name)

    def leave(module, inputs, output) -> None:
        running.pop()

    originals = {name: namespace[name] for name in checks if name in namespace}
    modes = [(module, module.training) for module in model.modules()]
    hooks = []
    try:
        for name, module in model.named_modules():
            hooks.append(module.register_forward_pre_hook(enter(name or "network")))
            hooks.append(module.register_forward_hook(leave))
        namespace.update({name: watched(name, fn) for name, fn in originals.items()})
        model.eval()
        with torch.no_grad():
            for start[0] in range(0, len(x), 1024):
                model(x[start[0] : start[0] + 1024])
    finally:
        namespace.update(originals)
        for hook in hooks:
            hook.remove()
        for module, training in modes:
            module.train(training)
    return worst, each


def spectral_norm_upper(w: torch.Tensor) -> float:
    """Sound upper bound on σ_max(w) for w of shape (m, n); for (..., m, n), the max over all.

    Exact SVD in float64 (the cast is exact): LAPACK's SVD is backward stable, so by Weyl
    |σ̂ − σ| ≤ p(m, n)·eps·σ_max with p modest (LAPACK Users' Guide §4.9); we take p = 4mn,
    far above the ~max(m, n) seen in practice, plus the smallest normal float64.
    """
    m, n = w.shape[-2:]
    sigma = svd_sigma(w).max().item()
    eps = torch.finfo(torch.float64).eps
    return sigma * (1 + 4 * m * n * eps) + torch.finfo(torch.float64).tiny


def svd_sigma(w: torch.Tensor) -> torch.Tensor:
    """σ_max of each matrix of w (..., m, n), from an SVD in float64 (complex128 for complex
    w; the cast is exact), as a float64 tensor; ∞ for a matrix with an entry that is not
    finite, whose SVD would raise or be NaN: no bound on it holds."""
    w = w.detach().to(torch.complex128 if w.is_complex() else torch.float64)
    finite = w.isfinite().flatten(-2).all(-1)
    sigma = torch.linalg.svdvals(torch.where(finite[..., None, None], w, 0)).amax(-1)
    return torch.where(finite, sigma, math.inf)


def _bound_dtype(w: torch.Tensor) -> torch.dtype:
    """The dtype a sound bound on w computes in: float32 for weights of at most 32 bits on a
    CPU whose float32 matmuls round as IEEE float32, else float64."""
    exact32 = w.device.type == "cpu" and _ieee_float32_matmuls()
    exact32 = exact32 and w.dtype in (torch.float32, torch.bfloat16, torch.float16)
    return torch.float32 if exact32 else torch.float64


def _ieee_float32_matmuls() -> bool:
    """Whether a CPU's float32 matmuls may not use bfloat16 or TF32 inside. From torch 2.9
    the setting is per backend (oneDNN's matmul, else the settings above it; "none" defers
    upwards, and the root's "none" is IEEE), and the legacy global one raises once it has
    been used; before, the global one ("highest")."""
    root = getattr(torch.backends, "fp32_precision", None)
    if root is None:
        return torch.get_float32_matmul_precision() == "highest"
    mkldnn = torch.backends.mkldnn
    chain = (mkldnn.matmul.fp32_precision, mkldnn.fp32_precision, root)
    return next((p for p in chain if p != "none"), "ieee") == "ieee"


def gram_sigma_upper(w: torch.Tensor, steps: int = 8) -> torch.Tensor:
    """Sound upper bound on σ_max of each matrix of w (..., m, n), as float64 on w's device.

    Gram iteration (Delattre et al. 2023): σ(W)^(2^t) = σ(G_t) for G_{t+1} = G_tᵀG_t, and
    σ(G_T) ≤ ‖G_T‖_F, a bound whose excess (rank)^(1/2^(T+1)) falls doubly exponentially.
    Each G_t is divided by its Frobenius norm f_t before squaring. Matmuls only, batched,
    no host sync; in `_bound_dtype`. Rounding (unit u of that dtype): a
    product of k-term dot products errs by at most γ_k = k·u/(1 − k·u) in ℓ2 on a matrix
    of Frobenius norm 1, and a division by f_t moves σ by at most 2u; so, backwards from
    v_T = ‖G_T‖_F (rounded up), v_t = f_t·(√(v_{t+1} + γ_k) + 2u) bounds σ(G_t), and v_0
    bounds σ(W), the recursion run in float64 and rounded up at the end. Underflow (gradual,
    or flushed to zero) costs each multiply-add at most the smallest normal `tiny` absolutely
    (entries are at most 1 after the division), so γ carries 2·k·tiny per entry and the
    division √(entries)·tiny: no pass over the entries is needed. W is first scaled by a
    power of two (`_exponent`), so that no Frobenius norm underflows or overflows: a norm
    clamped to `tiny` would leave G_0 far above norm 1, outside γ's reach. docs/theory.md §8.
    """
    dtype, batch, (m, n) = _bound_dtype(w), w.shape[:-2], w.shape[-2:]
    h = w.detach().reshape(-1, m, n)
    t = _exponent(h, dtype)
    h = h.to(dtype) * _power_of_two(t, dtype)[:, None, None]  # exact but for underflow
    if m < n:
        h = h.mT  # square the smaller side: h is (big, small)
    u, tiny = torch.finfo(dtype).eps / 2, torch.finfo(dtype).tiny
    scales = []
    for _ in range(steps):
        (k, n), entries = h.shape[-2:], h.shape[-2] * h.shape[-1]
        f = torch.linalg.matrix_norm(h).clamp_min(tiny)[..., None, None]
        h = h / f  # Frobenius norm 1 (up to rounding): every entry at most 1
        h = h.mT @ h  # the n × n Gram, dot products of length k
        gamma = 1.01 * k * u / (1 - k * u) + 2 * n * k * tiny
        scales.append((f.double(), gamma, 2 * u + entries**0.5 * tiny))
    entries = h.shape[-2] * h.shape[-1]
    v = torch.linalg.matrix_norm(h).double()[..., None, None] * (1 + 2 * entries * u)
    v = v + entries**0.5 * tiny
    for f, gamma, divided in reversed(scales):
        v = f * ((v + gamma).sqrt() + divided)
    v = v[..., 0, 0] * (1 + 8 * steps * torch.finfo(torch.float64).eps)
    # σ(W) ≤ 2^-t·(σ(H) + ‖H − W·2^t‖_F): the scaling's underflow, then exactly 2^-t
    v = (v + (m * n) ** 0.5 * tiny) * (1 + torch.finfo(torch.float64).eps)
    return (v * _power_of_two(-t, torch.float64)).reshape(batch)


def _power_of_two(t: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """2**t exactly, in dtype (float32 or float64), for integers t in its normal range: the
    exponent's bits set directly (exp2 in a vector library need not be exact)."""
    if dtype == torch.float32:
        return ((t.to(torch.int32) + 127) << 23).view(torch.float32)
    return ((t.to(torch.int64) + 1023) << 52).view(torch.float64)


def _exponent(h: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """Per matrix of h (b, k, n), an integer t such that H = h·2^t, in dtype, has entries
    below 2^-s, 2^s ≥ √(kn): so ‖H‖_F ≤ 1, and neither a product of H nor its Frobenius norm
    overflows or underflows. t is clamped so that 2^t and 2^-t are normal numbers (H's
    entries then stay below 4, or if not zero above 2^-52); the product is exact but for
    entries it takes below dtype's normal range (each off by at most its `tiny`)."""
    finfo = torch.finfo(dtype)
    s = math.ceil(math.log2(h.shape[-2] * h.shape[-1]) / 2)
    largest = torch.maximum(h.amax((-2, -1)), -h.amin((-2, -1)))  # (aminmax: slower on CPU)
    _, top = torch.frexp(largest.to(dtype))  # max |h_ij| < 2^top
    low, high = round(math.log2(finfo.tiny)), min(math.floor(math.log2(finfo.max)), 1022)
    return (-(top + s)).clamp(low, high)


def _start_block(n: int, p: int, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """Fixed pseudo-random vectors (n, p): where the Krylov iteration starts cold."""
    gen = torch.Generator(device=device).manual_seed(0)
    return torch.randn(n, p, generator=gen, device=device, dtype=torch.float64).to(dtype)


CHOLESKY_SLACK = 2e-3  # the candidate for λ_max(G) is its top Ritz value times 1 + this
DEVICE_RUNGS = (1.0, 1.25)  # off a CPU, the guesses in one Cholesky, as multiples of it
KRYLOV = (8, 1, 8)  # block size; products per call with a warm start, and without one


def top_ritz(g: torch.Tensor, state: dict) -> torch.Tensor:
    """About the largest Ritz value of each symmetric g (b, n, n) from a block Krylov space,
    [V, GV, …, G^q V] (Musco & Musco 2015): at most λ_max in exact arithmetic, and close to
    it (a Krylov space sees a flat top of the spectrum that power iteration crawls up). V is
    `state["block"]`, the top Ritz vectors of the last call, where it fits; it is replaced
    by this call's. The small projected matrix T = QᵀGQ is raised to the 2^10th power by
    squaring rather than handed to an eigensolver, which would sync with the host (to check
    convergence) and fail on non-finite input. A candidate only: nothing rests on it."""
    (b, n, _), (p, warm_steps, cold_steps) = g.shape, KRYLOV
    p = min(p, n)
    v = state.get("block")
    warm = v is not None and v.shape == (b, n, p) and v.dtype == g.dtype
    x = v if warm else _start_block(n, p, g.device, g.dtype).expand(b, n, p)
    blocks = [x]
    for _ in range(warm_steps if warm else cold_steps):
        x = (x.mT @ g).mT  # G X, as (XᵀG)ᵀ: G is symmetric (up to rounding), and the
        # batched product of a short row block runs faster on a CPU
        x = x / torch.linalg.vector_norm(x, dim=-2, keepdim=True).clamp_min(1e-30)
        blocks.append(x)
    q = torch.linalg.qr(torch.cat(blocks, -1)).Q  # orthonormal, even where rank-deficient
    t = q.mT @ g @ q
    t = (t + t.mT) / 2
    y = t
    for i in range(10):  # T^1024: its columns lean on T's top eigenvectors
        if i % 3 == 0:  # T ⪰ 0 has at most 9p = 72 rows: divided by its Frobenius norm,
            # its entries are at most 1 and its top eigenvalue at least 72^-½, so three
            # squarings neither overflow nor take that below 72^-4: one division in three
            y = y / torch.linalg.matrix_norm(y, keepdim=True).clamp_min(1e-30)
        y = y @ y
    z = torch.linalg.qr(y[..., :p]).Q
    # zeros where a non-finite G left NaN: the QR of the next call makes a basis of them
    # again, where NaN would keep every later guess NaN and every certificate failing
    state["block"] = torch.nan_to_num(q @ z, nan=0.0, posinf=0.0, neginf=0.0)
    return ((z.mT @ t) * z.mT).sum(-1).amax(-1)  # the best Rayleigh quotient of the p


def cholesky_sigma_upper(
    w: torch.Tensor, state: dict | None = None, rungs: tuple[float, ...] = (1.0,)
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(bound, certified, frobenius): for each matrix of w (..., m, n), a float64 upper bound
    on σ_max, from one Gram product and one Cholesky, sound where `certified` is true and
    the Frobenius norm's bound elsewhere (sound, loose by up to √rank); and a float64 upper
    bound on ‖W‖_F.

    H = W·2^t (t an integer per matrix, so that no product overflows: exact but for
    underflow), G = fl(HᵀH) on the short side, ρ its top Ritz value (`top_ritz`, warm-started
    from `state`, which it updates) and the guesses c = ρ(1 + CHOLESKY_SLACK)·r, one per
    factor r of `rungs`, all in one batched Cholesky. Where the floating-point Cholesky of
    Ã = fl(cI − G) runs to completion (`cholesky_ex`'s info is 0, a device tensor: no host
    sync), λ_min(Ã) ≥ −α·tr(Ã) (Demmel's backward error bound; Rump, BIT 2006), so
    λ_max(HᵀH) ≤ c + α·tr(Ã) + u·max Ã_ii + γ_k‖H‖_F² + underflow terms. In `_bound_dtype`;
    the bookkeeping in float64, rounded up. docs/theory.md §8.
    """
    dtype = _bound_dtype(w)
    batch = w.shape[:-2]
    h = w.detach().reshape(-1, *w.shape[-2:])
    wide = h.shape[-2] < h.shape[-1]  # then G is taken as H·Hᵀ: the short side last
    k, n = sorted(h.shape[-2:], reverse=True)
    finfo = torch.finfo(dtype)
    u, tiny = finfo.eps / 2, finfo.tiny
    u64 = torch.finfo(torch.float64).eps / 2
    t = _exponent(h, dtype)
    # Scaled in w's own layout (a transposed copy would read across rows); a wide H is
    # handed to the Gram as its transposed view, which the products read as it lies.
    scaled = Scratch.empty("cap.h", tuple(h.shape), dtype, h.device)
    h = torch.mul(h, _power_of_two(t, dtype)[:, None, None], out=scaled)
    g = _gram(h.mT if wide else h)
    # ‖fl(HᵀH) − HᵀH‖₂ ≤ γ_k‖H‖_F² + 2nk·tiny, ‖H‖_F² from G's trace (positive terms).
    gamma = _gamma(k, u)
    frobenius2 = g.diagonal(dim1=-2, dim2=-1).double().sum(-1) * (1 + 2 * n * u64)
    frobenius2 = (frobenius2 + 2 * n * k * tiny) / (1 - gamma)
    gram = gamma * frobenius2 + 2 * n * k * tiny
    rho = top_ritz(g, {} if state is None else state).clamp_min(0)
    c = torch.stack([rho * (1 + CHOLESKY_SLACK) * r + n * n * tiny for r in rungs])
    a = g.neg_()[None] if len(rungs) == 1 else -g.expand(len(rungs), *g.shape)
    a.diagonal(dim1=-2, dim2=-1).add_(c[..., None])  # fl(c − G_ii); −G_ij exact
    diag = a.diagonal(dim1=-2, dim2=-1).double().clamp_min(0)
    # Factored in place (Ã is not needed after), in LAPACK's column-major layout: Ã's other
    # triangle, which is as sound, and no copy or fresh buffer.
    # One view object as input and output, so that `cholesky_ex` sees the call is in place
    # and only zeroes the other triangle, rather than copying the whole matrix into itself.
    info, col_major = torch.empty(a.shape[:-2], dtype=torch.int32, device=a.device), a.mT
    certified = torch.linalg.cholesky_ex(col_major, out=(col_major, info)).info == 0
    # The Cholesky's backward error (γ with 2(n + 1) roundings: one more for a triangular
    # solve that multiplies by 1/r_ii, and room), its underflow, fl(c − G_ii)'s rounding.
    alpha = _gamma(2 * (n + 1), u)
    alpha = alpha / (1 - alpha)
    chol = alpha * diag.sum(-1) * (1 + 2 * n * u64) + u / (1 - u) * diag.amax(-1)
    chol = chol + 4 * n * (n + 2) * (2 + diag.amax(-1).sqrt()) * tiny
    lam = torch.where(certified, c.double() + chol + gram, math.inf).amin(0)
    lam = torch.fmin(lam, frobenius2)  # λ_max(HᵀH) ≤ ‖H‖_F² always; NaN: not finite, ∞
    sigma = lam.sqrt() * (1 + 2 * u64) + 2 * math.sqrt(k * n) * tiny  # + H's underflow
    scale = _power_of_two(-t, torch.float64) * (1 + 16 * u64)  # W = H·2^-t; rounded up
    bound = sigma * scale + torch.finfo(torch.float64).tiny
    frobenius = (frobenius2.sqrt() * (1 + 2 * u64) + 2 * math.sqrt(k * n) * tiny) * scale
    return bound.reshape(batch), certified.any(0).reshape(batch), frobenius.reshape(batch)


def _gram(h: torch.Tensor) -> torch.Tensor:
    """HᵀH for h (b, k, n), from products of column blocks: each block row of the lower
    triangle once, mirrored, so with q blocks (q + 1)/2q of the multiply-adds (5/8 at
    q = 4), and G exactly symmetric. Each entry is still one length-k dot product, so its
    rounding is bounded as that of HᵀH."""
    b, n = h.shape[0], h.shape[-1]
    g = Scratch.empty("cap.gram", (b, n, n), h.dtype, h.device)
    q = min(4, n // 32)  # blocks narrower than 32 columns do not pay
    if q < 2:
        return torch.bmm(h.mT, h, out=g)
    width = -(-n // q)
    for i in range(0, n, width):
        j = min(i + width, n)
        row = Scratch.empty("cap.gram_row", (b, j - i, j), h.dtype, h.device)
        g[..., i:j, :j] = torch.bmm(h[..., i:j].mT, h[..., :j], out=row)
        g[..., :i, i:j] = row[..., :i].mT
    return g


def _gamma(k: int, u: float) -> float:
    """γ_k = k·u / (1 − k·u): the relative error of k roundings of unit u (Higham §3.1)."""
    return k * u / (1 - k * u)


def spectral_sigma_upper(
    w: torch.Tensor, state: dict | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Sound upper bounds on σ_max and ‖·‖_F of each matrix of w (..., m, n), float64, with
    no host sync on a device: `cholesky_sigma_upper`, and where its certificate fails (the
    guess was low: on a cold start, or while steps move the weights fast) a second one.

    On a CPU the failures are found by a host branch, which there waits for no device, and
    only they pay for the Gram iteration (`gram_sigma_upper`). On another device that branch
    would be a host sync, so larger guesses (DEVICE_RUNGS) go into the same batched
    Cholesky, and past them the Frobenius norm bounds σ_max.
    """
    if w.device.type != "cpu":
        bound, _, frobenius = cholesky_sigma_upper(w, state, rungs=DEVICE_RUNGS)
        return bound, frobenius
    bound, certified, frobenius = cholesky_sigma_upper(w, state)
    if not bool(certified.all()):  # a CPU tensor: reading it waits for nothing
        if state is not None:  # how often the certificate failed, for benchmarks
            state["failed"] = state.get("failed", 0) + int((~certified).sum())
        flat, missed = bound.reshape(-1), (~certified).reshape(-1).nonzero()[:, 0]
        matrices = w.detach().reshape(-1, *w.shape[-2:])
        # fmin: a non-finite matrix keeps the Cholesky's ∞ rather than the Gram's NaN
        flat[missed] = torch.fmin(flat[missed], gram_sigma_upper(matrices[missed]))
    return bound, frobenius


def spectral_cap(weight: torch.Tensor, cap: float, state: dict | None = None) -> None:
    """Hard cap, in place: every matrix of `weight` (..., m, n) whose σ_max may exceed `cap`
    is scaled so that, stored in its dtype, σ_max ≤ cap (1 − 1e-6), proved, not hoped.

    The bounds are `spectral_sigma_upper`'s (a Gram product and a Cholesky per matrix,
    batched, no host sync on a device; `state`, where given, keeps the warm start of its
    Krylov iteration between calls). The product W·s is taken in at least float32 and
    stored: each entry moves by at most 2u_s of itself (u_s the dtype's eps: the product's
    rounding and the store's) or, where it lands below the dtype's normal range, by its
    smallest subnormal `tiny·u_s`; so σ moves by at most 2u_s·s·‖W‖_F + tiny·u_s·√(mn), and
    s = (c − tiny·u_s·√(mn)) / (b + 2u_s‖W‖_F), a hair lower for s's own rounding, lands at
    or below c. Below zero (a cap within the dtype's underflow) it is 0: W = 0 meets any
    cap. The 1e-6 leaves room for the certificate's own float64 margins.
    """
    with torch.no_grad():
        target = cap * (1 - 1e-6)
        bound, frob = spectral_sigma_upper(weight, state)
        finfo, (m, n) = torch.finfo(weight.dtype), weight.shape[-2:]
        u, underflow = finfo.eps, finfo.tiny * finfo.eps * math.sqrt(m * n)
        scale = ((target - underflow) / (bound + 2 * u * frob) * (1 - 4 * u)).clamp_min(0)
        product = torch.promote_types(weight.dtype, torch.float32)
        # a scale below the product dtype's normal range would round coarsely: 0 instead
        scale = torch.where(scale < torch.finfo(product).tiny, 0.0, scale)
        scale = torch.where(bound > target, scale, torch.ones_like(scale))
        weight.mul_(scale[..., None, None].to(product))


def constrain(weight: torch.Tensor, cap: float, lipschitz, project=None) -> float | None:
    """Make the sound bound `lipschitz(weight)` at most `cap`, in place.

    With `project` (a hard cap such as `spectral_cap`, sound by itself and free of host
    syncs) that is all, and None is returned. Without it (spectral normalisation, or an atom
    without a hard cap), a weight within its cap is left as it is, and one above it is
    scaled by cap / bound, a hair lower each time, until the bound confirms it; the final
    bound is returned. The certificate composes exactly these bounds. A weight that is not
    finite is left for the training loop to report (the bound is then inf).
    """
    if project is not None:  # a sound cap by itself, from matmuls: no host sync
        project(weight, cap)
        return None
    if not bool(weight.detach().isfinite().all()):
        return float("inf")
    bound = lipschitz(weight)
    if bound <= cap or lipschitz(torch.zeros_like(weight)) >= bound:
        return bound
    with torch.no_grad():
        if project is not None:
            project(weight, cap)
            bound = lipschitz(weight)
        shrink = 1e-6
        while bound > cap:
            weight.mul_(cap * (1 - shrink) / bound)
            bound, shrink = lipschitz(weight), shrink * 4
    return bound


def lipschitz_lower(
    model: nn.Module, x: torch.Tensor, iters: int = 30, ascent: int = 8, inside=None
) -> float:
    """Empirical lower bound on the ℓ2 Lipschitz constant of model (per example, flattened).

    Valid because every candidate is attained: ‖J(x)v‖/‖v‖ after power iteration on each
    example's JᵀJ (reverse mode only: Jv is the gradient of Jᵀu in u), and secant ratios
    ‖f(a) − f(b)‖/‖a − b‖ for input pairs around x, the farthest pushed up by `ascent` steps
    of normalised gradient ascent (adversarial pairs). Runs a float64 copy of the weights,
    so rounding (≤ 100 ulps, taken off) cannot lift it above a true upper bound. Examples
    must be independent through the model (eval mode is used); the model's weights, grads
    and train/eval modes are left as they were. Inputs must be floating point. `inside`,
    when given, maps inputs to a per-example bool (a certificate's conditions held): only
    Jacobians at such points and secants between two such points count, a lower bound on
    the constant over that domain.
    """
    if not x.is_floating_point():
        raise TypeError("lipschitz_lower needs floating-point inputs")
    modes = [(module, module.training) for module in model.modules()]
    model.eval()
    try:
        named = [*model.named_parameters(), *model.named_buffers()]
        weights = {k: t.detach().double() if t.is_floating_point() else t for k, t in named}
        x = x.detach().double()
        gen = torch.Generator(device=x.device).manual_seed(0)
        shape = (-1, *[1] * (x.dim() - 1))

        def f(inp: torch.Tensor) -> torch.Tensor:
            # attention on its math backend: fused kernels have no second derivative
            with torch.nn.attention.sdpa_kernel(torch.nn.attention.SDPBackend.MATH):
                return torch.func.functional_call(model, weights, (inp,))

        def size(v: torch.Tensor) -> torch.Tensor:
            return v.flatten(1).norm(dim=1)

        def unit(v: torch.Tensor) -> torch.Tensor:
            return v / size(v).clamp_min(1e-300).view(shape)

        def secant(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
            return size(f(a) - f(b)) / size(a - b).clamp_min(1e-300)

        def valid(*points: torch.Tensor) -> torch.Tensor:
            ok = torch.ones(points[0].shape[0], dtype=torch.bool, device=x.device)
            for p in points if inside is not None else ():
                ok &= inside(p.detach()).to(x.device)
            return ok

        def best_of(ratios: torch.Tensor, ok: torch.Tensor) -> float:
            ratios = ratios.detach()[ok & ratios.detach().isfinite()]
            return ratios.max().item() if ratios.numel() else 0.0

        def climb(a: torch.Tensor, b: torch.Tensor, steps: int) -> float:
            """The best secant ratio seen while pushing the pair (a, b) uphill."""
            best = 0.0
            for k in range(steps + 1):
                a, b = a.detach().requires_grad_(True), b.detach().requires_grad_(True)
                ratio = secant(a, b)
                best = max(best, best_of(ratio, valid(a, b)))
                if k == steps or not ratio.requires_grad:
                    break
                ga, gb = torch.autograd.grad(ratio.log().sum(), (a, b), allow_unused=True)
                if ga is None or gb is None:
                    break
                step = 0.1 * size(a - b).detach().view(shape)  # move by 10% of ‖a − b‖
                a, b = a + step * unit(ga.nan_to_num()), b + step * unit(gb.nan_to_num())
            return best

        v = unit(torch.randn(x.shape, generator=gen, device=x.device, dtype=x.dtype))
        best = 0.0
        # power iteration differentiates twice; of the fused attention kernels only the
        # math one has a second derivative
        math_attention = torch.nn.attention.sdpa_kernel(torch.nn.attention.SDPBackend.MATH)
        with torch.enable_grad(), math_attention:
            xr = x.clone().requires_grad_(True)
            y = f(xr)
            if y.requires_grad:
                u = torch.zeros_like(y, requires_grad=True)
                (jtu,) = torch.autograd.grad(y, xr, u, create_graph=True, allow_unused=True)
                if jtu is not None and jtu.requires_grad:  # else J = 0 and v stays random

                    def jvp(w: torch.Tensor) -> torch.Tensor:
                        return torch.autograd.grad(jtu, u, w, retain_graph=True)[0]

                    for _ in range(iters):
                        (v,) = torch.autograd.grad(y, xr, jvp(v), retain_graph=True)
                        v = unit(v.detach())  # JᵀJ v, normalised
                    best = best_of(size(jvp(v)) / size(v).clamp_min(1e-300), valid(x))
            scale = size(x).clamp_min(1.0).view(shape)
            noise = unit(torch.randn(x.shape, generator=gen, device=x.device, dtype=x.dtype))
            for direction in (v, noise):
                for h, steps in ((1.0, ascent), (1e-1, 0), (1e-2, 0)):
                    best = max(best, climb(x, x + h * scale * direction, steps))
        return best * (1 - 100 * torch.finfo(torch.float64).eps)
    finally:
        for module, training in modes:
            module.train(training)
