"""Exercises of notebook 02 (ENLCN: random features, linear attention, variance, contrastive loss).

Each checker computes the expected answer itself with srlib (or from the paper's formula) and returns
``(ok, message)``. Worked solutions: ``notebooks/solutions/02_enlcn_solutions.py``.
"""

from __future__ import annotations

import math

import torch

from . import exercise


def _random_embeddings(seed: int, n: int = 40, c: int = 8, amp: float = 6.0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    u = torch.randn(1, n, c, generator=g, dtype=torch.float64)
    return torch.nn.functional.normalize(u, dim=-1) * math.sqrt(amp)


@exercise("02.1", "The feature map of Eq. 4 by hand", "★ warm-up", points=1,
          solution="phi(u) = exp(u @ F.T - |u|^2 / 2) / sqrt(m), with the squared norm taken per row of u and "
                   "kept as a column so that it broadcasts over the m features.",
          hint="phi(u) = m^-1/2 exp(F u - |u|^2 / 2), with u (L, c) and F (m, c); no eps.")
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


@exercise("02.2", "Relative standard deviation of one kernel estimate (Eq. 7)", "★ warm-up", points=1,
          solution="|q+k|^2 = 2 * 4 * 1.25 = 10, so sqrt(Var)/K = sqrt((e^10 - 1) / 256), about 9.3: one estimate "
                   "is useless on its own at this amplification.",
          hint="Var / K^2 = (exp(|q+k|^2) - 1) / m, and |q+k|^2 = 2k(1 + cos) for |q|^2 = |k|^2 = k.")
def _check_rel_std(answer):
    """``answer``: sqrt(Var)/K for k = 4, cos = 0.25, m = 256 (i.i.d. features)."""
    want = math.sqrt(math.expm1(2 * 4 * (1 + 0.25)) / 256)
    got = float(answer)
    ok = abs(got - want) <= 0.01 * want
    return ok, "" if ok else f"{got:.4g} is {'above' if got > want else 'below'} the closed form by more than 1%"


@exercise("02.3", "The paper's contrastive ranks for a 48x48 LR patch", "★★ practice", points=2,
          solution="N = 2304, n1 N = floor(46.08) = 46 and n2 N = floor(184.32) = 184: ranks [0, 46) against "
                   "[184, 230), three times as many as the official [0, 15) and [50, 65), and much deeper.",
          hint="n1 = 2%, n2 = 8% of N = 48 * 48 positions, rounded down; the relevant range is [0, n1 N), "
               "the irrelevant one starts at n2 N and has n1 N ranks.")
def _check_paper_ranks(answer):
    """``answer``: ``((0, n1N), (n2N, n2N + n1N))`` for ``N = 48 * 48``."""
    n = 48 * 48
    cnt, start = max(1, math.floor(0.02 * n)), math.floor(0.08 * n)
    want = ((0, cnt), (start, start + cnt))
    got = tuple(tuple(int(v) for v in pair) for pair in answer)
    return got == want, "" if got == want else f"got {got}"


@exercise("02.5", "The official loss with top-k instead of a full sort", "★★★ challenge", points=3,
          solution="torch.topk(q @ k^T, 65) returns the 65 largest scores sorted; the mean of exp over [0, 15) and "
                   "[50, 65) of those gives pos and neg, then the hinge and the mean over queries, as the full sort.",
          hint="The official ranks are [0, 15) and [50, 65): torch.topk of the 65 largest scores is enough; "
               "loss = mean ReLU(1 - log(pos / (neg + 1e-6))) over the queries.")
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


# Open questions (worked answers in prose in the solutions notebook): registered without a checker.
exercise("02.4", "Eq. 7 for orthogonal features: does the reduction depend on m / c?", "★★ practice", points=2,
         solution="The reduction is largest for m = c (one orthogonal block) and fades as m / c grows, since the "
                  "blocks are independent; Performer's Theorem 2 bounds the gain by a term that vanishes for large "
                  "c.")(None)
exercise("02.6", "Paper loss against official loss in the tiny run", "★★★ challenge", points=3,
         solution="The paper's loss has no floor and keeps pushing the gap, so it usually concentrates attention "
                  "more; the official hinge stops at a gap of e^1. Judge the difference against the spread over "
                  "seeds, not one run.")(None)
