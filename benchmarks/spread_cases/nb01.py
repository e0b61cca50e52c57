"""Tiny run of notebook 01 (NLSN), repeated for ``benchmarks/tiny_spread.py 01``.

Section 4 builds the small NLSN after ``torch.manual_seed(0)`` and trains it with the tiny recipe; section 5
scores it on the default evaluation set (``psnr``, ``gain_db`` above bicubic, ``ssim``). ``run(seed)`` repeats
exactly that with ``seed`` in place of the notebook's 0.
"""

from __future__ import annotations

import math

import torch

from srlib import data as sdata
from srlib.course import quality_table, tiny_train
from srlib.models import build_model


def tiny_nlsn(seed: int) -> dict[str, float]:
    _ = torch.manual_seed(seed)
    model = build_model("nlsn", scale=2, preset="small")
    result = tiny_train(model, seed=seed)
    assert all(math.isfinite(v) for v in result["losses"])
    eval_set, _ = sdata.default_eval_set(2, "Set5")
    rows = quality_table({"tiny": model}, eval_set, 2)
    return {"psnr": rows[1]["psnr"], "gain_db": rows[1]["gain_db"], "ssim": rows[1]["ssim"],
            "loss_last3": sum(result["losses"][-3:]) / 3}


CASES = {"tiny_nlsn": tiny_nlsn}
