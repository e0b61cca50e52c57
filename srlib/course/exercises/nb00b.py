"""Exercises of notebook 00b (dense non-local attention): temperature, scaled scores, non-local means.

The checks of 00b.1 and 00b.4 recompute the answer on the notebook's scene: Urban100 ``img_014`` when the
benchmark data is present, else scikit-image's ``brick`` (the offline fallback of notebook 00b, section 1.1).
Both scenes are tried when the data is present, so the worked solutions (made on the offline scene) check out
in both settings.
"""

from __future__ import annotations

import math
from pathlib import Path

import torch

from ._texts import checks

#: Side of the scene of notebook 00b (a 56 x 56 LR crop).
SCENE_SIDE = 56
#: Temperature of the 00b.1 check and the noise of 00b.4 (standard deviation per RGB channel, seed).
TAU_00B_1, NOISE_STD, NOISE_SEED = 0.2, 0.05, 0


def scenes() -> dict[str, tuple[torch.Tensor, tuple[int, int]]]:
    """The scenes of notebook 00b, section 1.1: ``{name: (image (3, 56, 56) RGB in [0, 1], flat-region query
    (y, x))}``; ``"brick"`` always, ``"Urban100 img_014"`` too when the benchmark data is present."""
    import skimage.data

    from srlib.data import BenchmarkDataset, available_benchmarks, imresize, load_image

    brick = load_image(Path(skimage.data.__file__).parent / "brick.png", allow_gray=True)
    out = {"brick": (imresize(brick[:, :224, :224], 0.25).clamp(0, 1), (26, 26))}
    if "Urban100" in available_benchmarks(scale=4):
        urban = BenchmarkDataset("Urban100", 4)
        lr = urban[urban.names.index("img_014")]["lr"]
        out["Urban100 img_014"] = (imresize(lr[:, 16:128, 72:184], 0.5).clamp(0, 1), (4, 52))
    return out


def flat_query_support(image: torch.Tensor, yx: tuple[int, int], tau: float) -> float:
    """Effective support ``exp(entropy)`` of the attention map of query ``yx`` with scores ``cos / tau`` of
    5x5 patch descriptors (notebook 00b, section 2.6) over all positions of ``image`` (3, H, W)."""
    from srlib.analysis.maps import patch_descriptors

    d = patch_descriptors(image, patch_size=5)[0].flatten(1).double()  # (75, L)
    w = image.shape[-1]
    p = torch.softmax(d[:, yx[0] * w + yx[1]] @ d / tau, dim=-1)
    return math.exp(float(-torch.special.xlogy(p, p).sum()))


def nlm_psnr(image: torch.Tensor, tau: float = 0.05) -> tuple[float, float]:
    """(PSNR on Y of the noisy image, of its non-local-means filtered version) against ``image``, in dB: noise
    ``NOISE_STD * randn`` drawn with ``torch.Generator().manual_seed(NOISE_SEED)``, clamped to [0, 1]; the
    filter of notebook 00b, section 2.6, recomputed from the noisy image."""
    from srlib import metrics
    from srlib.analysis.maps import patch_descriptors
    from srlib.attention.nla import non_local_attention

    noisy = (image + NOISE_STD * torch.randn(image.shape, generator=torch.Generator().manual_seed(NOISE_SEED))
             ).clamp(0, 1)
    _, h, w = image.shape
    q = patch_descriptors(noisy, patch_size=5).flatten(2).transpose(1, 2) / math.sqrt(tau)  # (1, L, 75)
    v = noisy.flatten(1).T[None]  # (1, L, 3)
    out = torch.cat([non_local_attention(q[:, r:r + 512], q, v) for r in range(0, h * w, 512)], dim=1)
    filtered = out[0].T.reshape(3, h, w).clamp(0, 1)
    return metrics.psnr(noisy, image, 1), metrics.psnr(filtered, image, 1)


@checks("00b.1")
def _flat_support(answer):
    value = float(answer)
    refs = {name: flat_query_support(img, yx, TAU_00B_1) for name, (img, yx) in scenes().items()}
    for name, ref in refs.items():
        if abs(value - ref) <= 0.01 * ref:
            return True, f"{ref:.0f} positions on the {name} scene (L = {SCENE_SIDE ** 2} would be uniform)"
    if abs(value - SCENE_SIDE ** 2) < 1:
        return False, "that is the uniform limit tau -> infinity; the question asks for tau = 0.2"
    return False, f"{value:.0f} is not the effective support of the flat-region query at tau = 0.2"


@checks("00b.3")
def _entropy_limit(answer):
    expected = math.log(20**2) - 2.0**2 / 2
    ok = abs(float(answer) - expected) < 0.01
    return ok, f"ln 400 - 2 = {expected:.3f} nats" if ok else f"{float(answer):.3f} nats is not it"


@checks("00b.4")
def _nlm_psnr(answer):
    noisy, filtered = (float(v) for v in answer)
    refs = {name: nlm_psnr(img) for name, (img, _) in scenes().items()}
    for name, (ref_noisy, ref_filtered) in refs.items():
        if abs(noisy - ref_noisy) < 0.02 and abs(filtered - ref_filtered) < 0.02:
            return True, (f"{name}: noisy {ref_noisy:.2f} dB, filtered {ref_filtered:.2f} dB "
                          f"(filtering gains {ref_filtered - ref_noisy:.2f} dB)")
    if any(abs(noisy - r[0]) < 0.02 for r in refs.values()):
        return False, (f"the noisy PSNR is right, but {filtered:.2f} dB is not the filtered one: filter the noisy "
                       f"image, with descriptors and values both computed from it, tau = 0.05")
    return False, (f"{noisy:.2f} dB is not the noisy image's PSNR on Y: noise 0.05 * randn with seed 0, clamped, "
                   f"scored with metrics.psnr(noisy, image, 1)")
