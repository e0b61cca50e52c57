"""Tiny runs of notebook 04 (HSPAN): the tiny HSPAN and its NLA twin of part 4, evaluated as in part 5.

``run(seed)`` repeats the notebook with ``seed`` in place of its seed 0: both networks built after
``torch.manual_seed(seed)`` (same initial weights), trained with ``tiny_train(..., seed=seed)`` (same batches),
then PSNR on the default evaluation set (Set5 x2, or the bundled photographs offline), tiles of 24 LR pixels
with 4 of context. Used by ``benchmarks/tiny_spread.py 04``.
"""

from __future__ import annotations

import torch

from srlib import data as sdata
from srlib.course import quality_table, tiny_train
from srlib.inference import forward_chop
from srlib.models import build_model


def _tiled(net, tile=24, overlap=4):
    return lambda lr_: forward_chop(net, lr_, 2, tile=tile, overlap=overlap, tile_batch=1)


def pair(seed: int) -> dict[str, float]:
    models = {}
    for name, norm in (("hspan", "st"), ("nla", "softmax")):
        torch.manual_seed(seed)
        models[name] = build_model("hspan", scale=2, preset="small", normalizer=norm)
    losses = {name: tiny_train(m, seed=seed)["losses"][-1] for name, m in models.items()}
    eval_set, _ = sdata.default_eval_set(2, "Set5")
    rows = quality_table({name: _tiled(m.eval()) for name, m in models.items()}, eval_set, 2)
    q = {r["name"]: r for r in rows}
    return {"psnr_hspan": q["hspan"]["psnr"], "psnr_nla": q["nla"]["psnr"],
            "diff_hspan_minus_nla": q["hspan"]["psnr"] - q["nla"]["psnr"],
            "loss_hspan": losses["hspan"], "loss_nla": losses["nla"]}


CASES = {"tiny pair": pair}
