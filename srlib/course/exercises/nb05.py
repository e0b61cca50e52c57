"""Exercises of notebook 05 (LCoAN: k-means sparse pattern, collaborative attention). Checkers compute the
expected value with srlib."""

from __future__ import annotations

import math

import torch

from . import exercise


@exercise("05.1", "Steps for the EMA to move half of the way (lambda = 0.999)", "★ warm-up", points=1,
          solution="1 - 0.999**t >= 0.5 gives t >= ln 0.5 / ln 0.999 = 692.8, so 693 steps.",
          hint="solve 1 - 0.999**t >= 0.5 for the smallest whole t: t >= ln(0.5) / ln(0.999)")
def _half_way(answer):
    want = math.ceil(math.log(0.5) / math.log(0.999))
    got = int(answer)
    if got != answer:
        return False, "give a whole number of steps"
    return got == want, "the smallest t with 1 - 0.999**t >= 0.5"


@exercise("05.2", "The overlap rate of two attention rows", "★★ practice", points=1,
          solution="min(0.1, 0.4) + min(0.6, 0.4) + min(0.3, 0.2) = 0.1 + 0.4 + 0.2 = 0.7.",
          hint="sum the element-wise minimum of the two rows")
def _overlap(answer):
    from srlib.analysis.overlap import overlap_rate

    want = float(overlap_rate(torch.tensor([0.1, 0.6, 0.3]), torch.tensor([0.4, 0.4, 0.2])))
    return abs(float(answer) - want) < 1e-6, "OVL(p, q) = sum_j min(p_j, q_j)"


@exercise("05.3", "Parameters of the paper's LCoAN at x4", "★★ practice", points=2,
          solution="Built on the meta device, LCoAN(LCoANConfig(scale=4)) has 16,258,820 trainable parameters: more than"
                   " at x2 (15,668,484) for the two-stage x4 upsampler, and about 4% above the paper's 15.67M.",
          hint="with torch.device('meta'): net = LCoAN(LCoANConfig(scale=4)); count the parameters that require grad")
def _params_x4(answer):
    from srlib.models.lcoan import LCoAN, LCoANConfig

    with torch.device("meta"):
        net = LCoAN(LCoANConfig(scale=4))
    want = sum(p.numel() for p in net.parameters() if p.requires_grad)
    return int(answer) == want, "trainable parameters (the frozen MeanShift is not counted)"


exercise("05.4", "Spherical k-means initialisation against the cluster collapse", "★★★ challenge", points=3,
         solution="Normalising the vectors before the initial k-means (and re-seeding empty clusters) stops long "
                  "vectors from winning every assignment, so the clusters of the first batch are far more balanced.")(None)
exercise("05.5", "Fig. 5 on a longer-trained network", "★★★ challenge", points=3,
         solution="Longer training lets each unit change the features more, so the overlap of deep maps with the first "
                  "one should fall further; compare it with the untrained control and report the spread over seeds "
                  "before concluding.")(None)
exercise("05.6", "Fig. 3a at equal cost", "★★ practice", points=2,
         solution="At the same number of keys per query, k-means buckets recall more true neighbours than a single LSH "
                  "round because the centroids follow the data; more LSH rounds close part of the gap at a higher cost.")(None)
exercise("05.7", "Where CoA's gradients go", "★★★ challenge", points=3,
         solution="The shared weights are not detached, so the loss at every CoA layer sends gradient into the first "
                  "module's conv_match; detaching them leaves that conv trained by the first layer alone.")(None)
