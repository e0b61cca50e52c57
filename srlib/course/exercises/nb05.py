"""Exercises of notebook 05 (LCoAN: k-means sparse pattern, collaborative attention). Checkers compute the
expected value with srlib."""

from __future__ import annotations

import math

import torch

from ._texts import checks


@checks("05.1")
def _half_way(answer):
    want = math.ceil(math.log(0.5) / math.log(0.999))
    got = int(answer)
    if got != answer:
        return False, "give a whole number of steps"
    return got == want, "the smallest t with 1 - 0.999**t >= 0.5"


@checks("05.2")
def _overlap(answer):
    from srlib.analysis.overlap import overlap_rate

    want = float(overlap_rate(torch.tensor([0.1, 0.6, 0.3]), torch.tensor([0.4, 0.4, 0.2])))
    return abs(float(answer) - want) < 1e-6, "OVL(p, q) = sum_j min(p_j, q_j)"


@checks("05.3")
def _params_x4(answer):
    from srlib.models.lcoan import LCoAN, LCoANConfig

    with torch.device("meta"):
        net = LCoAN(LCoANConfig(scale=4))
    want = sum(p.numel() for p in net.parameters() if p.requires_grad)
    return int(answer) == want, "trainable parameters (the frozen MeanShift is not counted)"
