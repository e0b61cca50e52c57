"""Tiny runs of notebook 05 (LCoAN): the two small LCoANs of section 4.1 (frozen centroids, the official code;
EMA centroids, the paper), their PSNR of part 5 and the shallow-vs-deep overlap of section 4.3.

``run(seed)`` repeats the notebook with ``seed`` in place of its seed 0 (network built after
``torch.manual_seed(seed)``, k-means initialisation draw seeded with ``seed``, ``tiny_train(..., seed=seed)``).
The untrained network of section 4.3 is built with the same seed, so ``overlap_*_untrained`` is the matching
control. Used by ``benchmarks/tiny_spread.py 05``.
"""

from __future__ import annotations

import torch

from srlib import data as sdata
from srlib.course import TINY_RECIPE, quality_table, tiny_train
from srlib.course.lcoan.study import centroid_log, layer_study
from srlib.models import build_model

DECAY, N_UNITS = 0.99, 4


def _probe():
    if "Set5" in sdata.available_benchmarks(scale=2):
        image = sdata.BenchmarkDataset("Set5", 2)[2]["lr"]
    else:
        image = sdata.SampleImagesDataset(2)[0]["lr"]
    H, W = image.shape[-2:]
    return image[None, :, H // 2 - 20: H // 2 + 20, W // 2 - 20: W // 2 + 20]


def _net(seed, **kw):
    torch.manual_seed(seed)
    net = build_model("lcoan", scale=2, preset="small", n_resgroups=N_UNITS, **kw)
    net.body[0].lcoa.kmeans.generator = torch.Generator().manual_seed(seed)
    return net


def runs(seed: int) -> dict[str, float]:
    nets = {}
    for name, ema in (("frozen", False), ("ema", True)):
        net = _net(seed, ema_decay=DECAY, ema_update=ema)
        with centroid_log(net.body[0].lcoa.kmeans):
            tiny_train(net, seed=seed)
        nets[name] = net.eval()
    eval_set, _ = sdata.default_eval_set(2, "Set5")
    q = {r["name"]: r for r in quality_table(nets, eval_set, 2)}
    probe = _probe()
    untrained = _net(seed).eval()
    names = [n for n, _ in nets["frozen"].attention_modules()]
    out = {"psnr_frozen": q["frozen"]["psnr"], "psnr_ema": q["ema"]["psnr"],
           "diff_ema_minus_frozen": q["ema"]["psnr"] - q["frozen"]["psnr"]}
    for tag, net in (("trained", nets["frozen"]), ("untrained", untrained)):
        res, _, _ = layer_study(net, probe, names, (16, 26), 0.1, 16)
        out[f"overlap_last_{tag}"] = float(res["overlap"][-1])
        out[f"overlap_min_{tag}"] = float(res["overlap"].min())
        out[f"topk_last_{tag}"] = float(res["topk"][-1])
    return out


CASES = {"tiny lcoan": runs}
assert TINY_RECIPE["iterations"] == 200
