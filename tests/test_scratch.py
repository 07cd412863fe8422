"""Scratch: the buffers an optimizer keeps between steps, and that using them changes nothing."""

import threading

import torch

from modc.ops.linear import linear_dualize
from modc.runtime.certify import spectral_cap, spectral_norm_upper
from modc.runtime.optim import Constrain, Dualized
from modc.runtime.polar import polar
from modc.runtime.scratch import Scratch


def test_a_role_keeps_its_storage_and_grows_only_when_asked_for_more():
    scratch = Scratch()
    cpu = torch.device("cpu")
    a = scratch.take("x", (4, 8), torch.float32, cpu)
    b = scratch.take("x", (2, 8), torch.float32, cpu)
    assert b.data_ptr() == a.data_ptr() and b.is_contiguous()
    other = scratch.take("y", (4, 8), torch.float32, cpu)
    assert other.data_ptr() != a.data_ptr()  # roles never share
    assert scratch.take("x", (4, 8), torch.bfloat16, cpu).data_ptr() != a.data_ptr()
    bigger = scratch.take("x", (8, 8), torch.float32, cpu)
    again = scratch.take("x", (4, 8), torch.float32, cpu)
    assert bigger.shape == (8, 8) and again.data_ptr() == bigger.data_ptr()


def test_empty_draws_from_the_innermost_scratch_of_this_thread_only():
    cpu = torch.device("cpu")
    outer, inner = Scratch(), Scratch()
    seen = []
    with outer:
        a = Scratch.empty("x", (3,), torch.float32, cpu)
        with inner:
            b = Scratch.empty("x", (3,), torch.float32, cpu)
        c = Scratch.empty("x", (3,), torch.float32, cpu)
        thread = threading.Thread(
            target=lambda: seen.append(Scratch.empty("x", (3,), torch.float32, cpu))
        )
        thread.start()
        thread.join()
    d = Scratch.empty("x", (3,), torch.float32, cpu)
    assert a.data_ptr() == c.data_ptr() == outer.storage["x", torch.float32, cpu].data_ptr()
    assert b.data_ptr() == inner.storage["x", torch.float32, cpu].data_ptr() != a.data_ptr()
    mine = {a.data_ptr(), b.data_ptr()}
    assert seen[0].data_ptr() not in mine and d.data_ptr() not in mine  # fresh: no scratch


def test_polar_within_a_scratch_gives_what_it_gives_without_one():
    torch.manual_seed(0)
    for shape in [(3, 64, 32), (3, 32, 64), (48, 48)]:
        for dtype in (torch.float32, torch.bfloat16):
            for method in ("polar_express", "muon"):
                g = torch.randn(*shape)
                alone = polar(g, dtype=dtype, method=method)
                with Scratch():
                    kept = polar(g, dtype=dtype, method=method).clone()
                    polar(torch.randn(*shape), dtype=dtype, method=method)  # reuses it all
                    again = polar(g, dtype=dtype, method=method)
                assert torch.equal(alone, kept) and torch.equal(alone, again)


def test_dualized_steps_reuse_their_buffers_and_match_fresh_ones():
    """Two optimizers on copies of the same weights: the one whose scratch is emptied before
    every step (so every buffer is fresh) moves the weights exactly as the one that keeps it;
    the kept storage is the same memory from the second step on."""
    torch.manual_seed(0)
    shapes = [(32, 16), (32, 16), (16, 48), (64, 64)]
    kept = [torch.randn(*s, requires_grad=True) for s in shapes]
    fresh = [p.detach().clone().requires_grad_(True) for p in kept]
    a, b = (
        Dualized(
            [{"params": ps, "targets": [0.25] * len(ps), "atom": "Linear"}],
            {"Linear": linear_dualize},
            lr=0.1,
            weight_decay=0.1,
        )
        for ps in (kept, fresh)
    )
    pointers = []
    for step in range(4):
        for p, q in zip(kept, fresh, strict=True):
            p.grad = torch.randn_like(p)
            q.grad = p.grad.clone()
        a.step()
        b.scratch.storage.clear()
        b.step()
        pointers.append({k: t.data_ptr() for k, t in a.scratch.storage.items()})
        for p, q in zip(kept, fresh, strict=True):
            assert torch.equal(p, q), step
    assert pointers[1] == pointers[2] == pointers[3]


def test_the_cap_hook_reuses_its_buffers_and_caps_as_with_fresh_ones():
    torch.manual_seed(0)
    kept = [torch.randn(48, 32) * 3 for _ in range(3)]
    fresh = [w.clone() for w in kept]
    a = Constrain([(w, 1.0, spectral_norm_upper, spectral_cap) for w in kept])
    b = Constrain([(w, 1.0, spectral_norm_upper, spectral_cap) for w in fresh])
    pointers = []
    for _ in range(3):
        a()
        b.scratch.storage.clear()
        b()
        pointers.append({k: t.data_ptr() for k, t in a.scratch.storage.items()})
        for w, v in zip(kept, fresh, strict=True):
            assert torch.equal(w, v) and spectral_norm_upper(w) <= 1.0
            w.mul_(1.5), v.mul_(1.5)
    assert pointers[0] == pointers[1] == pointers[2]
