"""Exercises of notebook 04 (HSPAN: soft thresholding). Each checker computes the expected value with srlib."""

from __future__ import annotations

import torch

from ._texts import checks


def _as_tensor(answer) -> torch.Tensor:
    return torch.as_tensor(answer, dtype=torch.float64).flatten()


@checks("04.1")
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


@checks("04.2")
def _temperature(answer):
    want = _support_at_scale(0.1)
    got = float(answer)
    return abs(got - want) < 0.05, "mean ST support at n = 400, scale 0.1 (to two decimals)"


@checks("04.3")
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
