"""Tiny run of notebook 00a (the SR primer), repeated for ``benchmarks/tiny_spread.py 00a``.

Section 3 builds the 8-block, 32-feature EDSR after ``torch.manual_seed(0)`` and trains it with the tiny
recipe; section 4 scores it on the default evaluation set (``psnr``, ``gain_db`` above bicubic, ``ssim``).
``run(seed)`` repeats exactly that with ``seed`` in place of the notebook's 0.
"""

from __future__ import annotations

import math

import torch

from srlib import data as sdata
from srlib.course import quality_table, tiny_train
from srlib.models import build_model


def tiny_edsr(seed: int) -> dict[str, float]:
    _ = torch.manual_seed(seed)
    model = build_model("edsr", scale=2, preset="baseline", n_resblocks=8, n_feats=32)
    result = tiny_train(model, seed=seed)
    assert all(math.isfinite(v) for v in result["losses"])
    eval_set, _ = sdata.default_eval_set(2, "Set5")
    rows = quality_table({"tiny": model}, eval_set, 2)
    return {"psnr": rows[1]["psnr"], "gain_db": rows[1]["gain_db"], "ssim": rows[1]["ssim"],
            "loss_last3": sum(result["losses"][-3:]) / 3}


CASES = {"tiny_edsr": tiny_edsr}
