"""Exercises of notebook 02 (ENLCN: random features, linear attention, variance, contrastive loss).

Each checker computes the expected answer itself with srlib (or from the paper's formula) and returns
``(ok, message)``. Worked solutions: ``notebooks/solutions/02_enlcn_solutions.py``.
"""

from __future__ import annotations

import math

import torch

from ._texts import checks


def _random_embeddings(seed: int, n: int = 40, c: int = 8, amp: float = 6.0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    u = torch.randn(1, n, c, generator=g, dtype=torch.float64)
    return torch.nn.functional.normalize(u, dim=-1) * math.sqrt(amp)


@checks("02.1")
def _check_feature_map(answer):
    """``answer``: a function ``phi(u, F) -> (L, m)`` implementing Eq. 4 without the official ``1e-4``."""
    from srlib.attention.enla import positive_random_features

    if not callable(answer):
        return False, f"expected a function phi(u, F), got {type(answer).__name__}"
    g = torch.Generator().manual_seed(21)
    u = torch.randn(7, 5, generator=g, dtype=torch.float64) / 2
    proj = torch.randn(16, 5, generator=g, dtype=torch.float64)
    got = torch.as_tensor(answer(u, proj))
    want = positive_random_features(u, proj, eps=0.0)
    if tuple(got.shape) != tuple(want.shape):
        return False, f"phi(u, F) should have shape {tuple(want.shape)} for u (7, 5), F (16, 5); got {tuple(got.shape)}"
    err = float((got.double() - want).abs().max())
    return err < 1e-8, f"max |phi - srlib| = {err:.1e}"


@checks("02.2")
def _check_rel_std(answer):
    """``answer``: sqrt(Var)/K for k = 4, cos = 0.25, m = 256 (i.i.d. features)."""
    want = math.sqrt(math.expm1(2 * 4 * (1 + 0.25)) / 256)
    got = float(answer)
    ok = abs(got - want) <= 0.01 * want
    return ok, "" if ok else f"{got:.4g} is {'above' if got > want else 'below'} the closed form by more than 1%"


@checks("02.3")
def _check_paper_ranks(answer):
    """``answer``: ``((0, n1N), (n2N, n2N + n1N))`` for ``N = 48 * 48``."""
    n = 48 * 48
    cnt, start = max(1, math.floor(0.02 * n)), math.floor(0.08 * n)
    want = ((0, cnt), (start, start + cnt))
    got = tuple(tuple(int(v) for v in pair) for pair in answer)
    return got == want, "" if got == want else f"got {got}"


@checks("02.5")
def _check_topk_loss(answer):
    """``answer``: ``loss(q, k) -> scalar`` equal to ``contrastive_loss(q, k, variant="official")``."""
    from srlib.attention.enla import contrastive_loss

    if not callable(answer):
        return False, f"expected a function loss(q, k), got {type(answer).__name__}"
    worst = 0.0
    for seed in (0, 1):  # amplification 1: the hinge is active for most queries, so the loss is not 0
        q = _random_embeddings(seed, n=30, amp=1.0)
        k = _random_embeddings(seed + 10, n=90, amp=1.0)
        want = contrastive_loss(q, k, variant="official")
        assert float(want) > 0.1
        got = torch.as_tensor(answer(q, k)).double()
        if got.numel() != 1:
            return False, f"the loss should be a scalar, got shape {tuple(got.shape)}"
        worst = max(worst, abs(float(got) - float(want)))
    return worst < 1e-6, f"max |yours - contrastive_loss| = {worst:.1e}"
