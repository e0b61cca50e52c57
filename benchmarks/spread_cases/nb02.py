"""Tiny runs of notebook 02 (ENLCN), repeated for ``benchmarks/tiny_spread.py 02``.

Part 4 of the notebook trains the halved small ENLCN twice from the same initial weights and batches: with the
L1 loss only (``control``) and with the official contrastive term (``contrastive``). Part 5 measures both on the
default evaluation set (``psnr``, ``gain_db`` above bicubic); part 4 measures the share of the exact attention
weight on the top 2% of keys of the first ENLCA on the scene of section 2.5 (``top2_exact``). ``run(seed)``
repeats exactly that with ``seed`` in place of the notebook's 0.
"""

from __future__ import annotations

import math
from pathlib import Path

import skimage.data
import torch

from srlib import data as sdata
from srlib.course import quality_table, tiny_train
from srlib.models import build_model


def tiny_enlcn(loss_variant, seed: int):
    """The notebook's ``tiny_enlcn`` with ``seed`` in place of 0."""
    _ = torch.manual_seed(seed)
    return build_model("enlcn", scale=2, preset="small", n_resblocks=4, attn_every=4, warmup_iters=0,
                       redraw_every=50, loss_variant=loss_variant)


def scene() -> torch.Tensor:
    """The scene of the notebook's section 2.5: (3, 64, 64) RGB in [0, 1]."""
    if "Urban100" in sdata.available_benchmarks(scale=4):
        urban = sdata.BenchmarkDataset("Urban100", 4)
        lr_u = urban[urban.names.index("img_014")]["lr"]
        return sdata.imresize(lr_u[:, 16:144, 64:192], 0.5).clamp(0, 1)
    brick = sdata.load_image(Path(skimage.data.__file__).parent / "brick.png", allow_gray=True)
    return sdata.imresize(brick[:, :256, :256], 0.25).clamp(0, 1)


def top2_exact(model, image) -> float:
    """Mean share of the exact softmax weight on the top 2% of keys, first ENLCA, 512 queries (notebook part 4)."""
    L = image.shape[-2] * image.shape[-1]
    sub = torch.randperm(L, generator=torch.Generator().manual_seed(7))[:512]
    model.eval()
    with torch.no_grad():
        feats = model.head(model.sub_mean(image[None]))
        q_, k_, _ = model.body[0].embed(feats)
    w_ex = torch.softmax(q_[:, sub] @ k_.transpose(1, 2), dim=-1)
    return w_ex.topk(L // 50, dim=-1).values.sum(-1).mean().item()


def _run(loss_variant, seed: int) -> dict[str, float]:
    model = tiny_enlcn(loss_variant, seed)
    extra = model.make_extra_loss() if loss_variant is not None else None
    result = tiny_train(model, extra_loss=extra, seed=seed)
    assert all(math.isfinite(v) for v in result["losses"])
    eval_set, _ = sdata.default_eval_set(2, "Set5")
    rows = quality_table({"tiny": model}, eval_set, 2)
    return {"psnr": rows[1]["psnr"], "gain_db": rows[1]["gain_db"], "top2_exact": top2_exact(model, scene())}


CASES = {
    "control": lambda seed: _run(None, seed),
    "contrastive": lambda seed: _run("official", seed),
}
