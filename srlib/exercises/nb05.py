"""Exercises of notebook 05 (LCoAN: k-means sparse pattern, collaborative attention). Checkers compute the
expected value with srlib."""

from __future__ import annotations

import math

import torch

from . import exercise


@exercise("05.1", "Steps for the EMA to move half of the way (lambda = 0.999)", "★ warm-up",
          hint="solve 1 - 0.999**t >= 0.5 for the smallest whole t: t >= ln(0.5) / ln(0.999)")
def _half_way(answer):
    want = math.ceil(math.log(0.5) / math.log(0.999))
    got = int(answer)
    if got != answer:
        return False, "give a whole number of steps"
    return got == want, "the smallest t with 1 - 0.999**t >= 0.5"


@exercise("05.2", "The overlap rate of two attention rows", "★★ practice",
          hint="sum the element-wise minimum of the two rows")
def _overlap(answer):
    from srlib.analysis.overlap import overlap_rate

    want = float(overlap_rate(torch.tensor([0.1, 0.6, 0.3]), torch.tensor([0.4, 0.4, 0.2])))
    return abs(float(answer) - want) < 1e-6, "OVL(p, q) = sum_j min(p_j, q_j)"


@exercise("05.3", "Parameters of the paper's LCoAN at x4", "★★ practice",
          hint="with torch.device('meta'): net = LCoAN(LCoANConfig(scale=4)); count the parameters that require grad")
def _params_x4(answer):
    from srlib.models.lcoan import LCoAN, LCoANConfig

    with torch.device("meta"):
        net = LCoAN(LCoANConfig(scale=4))
    want = sum(p.numel() for p in net.parameters() if p.requires_grad)
    return int(answer) == want, "trainable parameters (the frozen MeanShift is not counted)"


exercise("05.4", "Spherical k-means initialisation against the cluster collapse", "★★★ challenge")(None)
exercise("05.5", "Fig. 5 on a longer-trained network", "★★★ challenge")(None)
exercise("05.6", "Fig. 3a at equal cost", "★★ practice")(None)
exercise("05.7", "Where CoA's gradients go", "★★★ challenge")(None)
