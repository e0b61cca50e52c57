"""Exercises of notebook 04 (HSPAN: soft thresholding). Each checker computes the expected value with srlib."""

from __future__ import annotations

import torch

from . import exercise


def _as_tensor(answer) -> torch.Tensor:
    return torch.as_tensor(answer, dtype=torch.float64).flatten()


@exercise("04.1", "ST of a four-element vector by hand (Eqs. 9-12)", "★ warm-up", points=1,
          solution="Sorted 3, 2.5, 1, 0: the condition k s_(k) + 1 > sum holds for k = 1, 2 and fails at k = 3, so T = "
                   "2, kappa = (3 + 2.5 - 1) / 2 = 2.25 and ST(s) = [0.75, 0, 0.25, 0].",
          hint="sort, find the largest k with k s_(k) + 1 > sum of the k largest, then kappa = (that sum - 1) / k")
def _st_by_hand(answer):
    from srlib.attention.softthreshold import soft_threshold

    want = soft_threshold(torch.tensor([3.0, 1.0, 2.5, 0.0], dtype=torch.float64))
    got = _as_tensor(answer)
    if got.shape != want.shape:
        return False, f"expected 4 weights (one per score, in the order given), got {got.numel()}"
    return bool(torch.allclose(got, want, atol=1e-3)), "weights in the order of the scores [3, 1, 2.5, 0]"


def _support_at_scale(scale: float) -> float:
    from srlib.analysis.maps import HSPAN_FIG1_NS
    from srlib.analysis.sparsity import compare_normalizers

    cmp = compare_normalizers(HSPAN_FIG1_NS, trials=500, generator=torch.Generator().manual_seed(0), scale=scale)
    return float(cmp["ST"]["support"][-1])


@exercise("04.2", "Temperature: ST's support on scores ten times closer together", "★★ practice", points=2,
          solution="With scale=0.1 the scores are ten times closer, so many more gaps fit under the budget of one: the "
                   "mean ST support at n = 400 is about 23.8 keys (cmp['ST']['support'][-1]); at scale=10 ST is nearly "
                   "an argmax.",
          hint="compare_normalizers(HSPAN_FIG1_NS, trials=500, generator=torch.Generator().manual_seed(0), "
               "scale=0.1), then the ST support at the largest n")
def _temperature(answer):
    want = _support_at_scale(0.1)
    got = float(answer)
    return abs(got - want) < 0.05, f"mean ST support at n = 400, scale 0.1 (to two decimals)"


@exercise("04.3", "kappa by bisection", "★★ practice", points=2,
          solution="Keep lo = max(s) - 1 (f >= 0) and hi = max(s) (f = -1 < 0) per row and halve 60 times, moving lo or "
                   "hi to the midpoint by the sign of f; Algorithm 1 needs no iteration because f is piecewise linear "
                   "and, once the support is known from the sort, f(kappa) = 0 is solved exactly by Eq. (12).",
          hint="f(kappa) = sum_j max(s_j - kappa, 0) - 1 decreases; start from [max(s) - 1, max(s)]")
def _bisection(answer):
    from srlib.attention.softthreshold import threshold_and_support

    if not callable(answer):
        return False, "the answer is a function s (R, N) -> kappa (R, 1)"
    g = torch.Generator().manual_seed(11)
    s = torch.randn(16, 300, generator=g, dtype=torch.float64) * torch.logspace(-2, 1, 16, dtype=torch.float64)[:, None]
    kappa = torch.as_tensor(answer(s.clone()), dtype=torch.float64).reshape(16, 1)
    want, _ = threshold_and_support(s, dim=-1)
    err = float((kappa - want).abs().max())
    return err < 1e-9, f"largest |kappa - srlib's| on 16 test rows: {err:.1e} (needs < 1e-9)"


exercise("04.4", "How the support grows with N, and a sharper bound than Eq. (14)", "★★★ challenge", points=3,
         solution="Gaps of order 1/sqrt(2 ln N) mean about sqrt(2 ln N) keys fit under the budget of one, so T grows "
                  "like sqrt(ln N); requiring the sum of the k gaps to be below 1 gives a bound through the sum, much "
                  "tighter than the single-gap event of Eq. (14).")(None)
exercise("04.5", "The Hessian of ST and its kinks", "★★★ challenge", points=3,
         solution="ST is linear on each region of fixed support, so its Hessian is zero there; moving one score across "
                  "kappa changes the support and the Jacobian jumps, so finite differences of the Jacobian are non-zero"
                  " only at such a kink.")(None)
exercise("04.6", "Training with a truncated top-k", "★★★ challenge", points=3,
         solution="Trained with truncation, k is part of the model: the truncated sweep changes the output for k below "
                  "the training k and should be flattest near it, while exact mode stays flat; with one tiny run, "
                  "differences under the measured spread decide nothing.")(None)
exercise("04.7", "ST inside the dense non-local attention of notebook 00", "★★ practice", points=2,
         solution="With ST each pixel averages only the few patches within about the temperature of its best match, so "
                  "the non-local-means image keeps sharper structure and less blur than the softmax one, which mixes in"
                  " every patch.")(None)
