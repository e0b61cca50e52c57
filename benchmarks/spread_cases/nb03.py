"""Tiny run of notebook 03 (DLSN), repeated for ``benchmarks/tiny_spread.py 03``.

Part 4 of the notebook trains ``build_model("dlsn", preset="small")`` with the tiny recipe; part 5 measures it on
the default evaluation set (``psnr``, ``gain_db`` above bicubic) with the hash projections drawn from the global
generator, which ``quality_table`` seeds. ``run(seed)`` repeats exactly that with ``seed`` in place of 0.
"""

from __future__ import annotations

import math

import torch

from srlib import data as sdata
from srlib.course import quality_table, tiny_train
from srlib.models import build_model


def run(seed: int) -> dict[str, float]:
    _ = torch.manual_seed(seed)
    model = build_model("dlsn", scale=2, preset="small")
    result = tiny_train(model, seed=seed)
    assert all(math.isfinite(v) for v in result["losses"])
    eval_set, _ = sdata.default_eval_set(2, "Set5")
    for _, m in model.attention_modules():
        m.generator = None  # projections from the global generator, seeded by quality_table (as the notebook)
    model.eval()
    rows = quality_table({"tiny": model}, eval_set, 2)
    return {"psnr": rows[1]["psnr"], "gain_db": rows[1]["gain_db"]}


CASES = {"tiny DLSN": run}
