# ---
# jupyter:
#   jupytext:
#     cell_metadata_filter: tags,-all
#     notebook_metadata_filter: kernelspec,jupytext,-jupytext.text_representation.jupytext_version
#     text_representation:
#       extension: .py
#       format_name: percent
#       format_version: '1.3'
#   kernelspec:
#     display_name: Python 3 (ipykernel)
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 00b · Worked solutions
#
# Solutions to the exercises of `00b_non_local_attention`, computed and checked with `srlib.course.exercises.check`.
# The computations use scikit-image's bundled `brick` photograph (the notebook's offline scene), so they
# need no data set.

# %%
import math
from pathlib import Path

import skimage.data
import torch

from srlib import metrics
from srlib.attention.nla import non_local_attention
from srlib.data import imresize, load_image
from srlib.course.exercises import check
from srlib.analysis.maps import patch_descriptors

torch.set_num_threads(2)
brick = load_image(Path(skimage.data.__file__).parent / "brick.png", allow_gray=True)  # (3, 512, 512)
image = imresize(brick[:, :224, :224], 0.25).clamp(0, 1)  # the 56 x 56 offline scene of notebook 00b
H, W = image.shape[-2:]
L = H * W


def nlm_filter(img, tau=0.05):
    """Eq. 4 on 5x5 patch descriptors with RGB values: the non-local-means filter of notebook 00b, 2.6."""
    q = patch_descriptors(img, patch_size=5).flatten(2).transpose(1, 2) / math.sqrt(tau)  # (1, L, 75)
    v = img.flatten(1).T[None]  # (1, L, 3)
    out = torch.cat([non_local_attention(q[:, r:r + 512], q, v) for r in range(0, L, 512)], dim=1)
    return out[0].T.reshape(3, H, W)


# %% [markdown]
# **00b.1** ★ warm-up — *Temperature.* As τ grows, every score $\cos/\tau$ tends to 0 and the softmax to the
# uniform distribution over all `L` keys; its entropy is $\ln L$, so the effective support tends to
# $\exp(\ln L) = L$, every position of the scene. Small τ concentrates each map on the few best-matching
# patches. The flat-region query of the offline scene (the brick face at (26, 26)) against τ, computed as
# in section 2.6 (one row of Eq. 4 with scores `cos / tau`):

# %%
desc_flat = patch_descriptors(image, patch_size=5)[0].flatten(1).double()  # (75, L), unit norm
flat = 26 * W + 26  # the flat brick face of the offline scene
for t in (0.01, 0.05, 0.2, 1.0):
    p = torch.softmax(desc_flat[:, flat] @ desc_flat / t, dim=-1)
    support = math.exp(float(-torch.special.xlogy(p, p).sum()))
    print(f"tau {t:4}: effective support {support:7.1f} of L = {L} positions")
    if t == 0.2:
        answer_00b_1 = support
assert check("00b.1", answer_00b_1)

# %% [markdown]
# **00b.2** ★★ practice (open) — *Flattening on the image.* Inside a window of side `w` the flat-region query
# competes with `w²` keys that look much alike, so as the window grows its largest weight falls and its
# entropy grows, like the HSPAN curves of section 3 with `n = w²`; the entropy stays below the uniform
# $\ln w^2$ because the brick face is not perfectly flat (printed below). The window does not make the map
# *sharper* where it matters, it only removes competitors: for a flat region that is harmless, for a query
# on a repeated structure it cuts off the far copies that non-local attention was meant to find. Computed on
# the offline scene:

# %%
q = patch_descriptors(image, patch_size=5)[0] / math.sqrt(0.05)  # (75, H, W)
qy, qx = 26, 26  # the flat brick face of the offline scene
for side in (8, 16, 32, 56):
    y0, x0 = max(0, min(qy - side // 2, H - side)), max(0, min(qx - side // 2, W - side))
    keys = q[:, y0:y0 + side, x0:x0 + side].flatten(1)  # (75, side^2)
    p = torch.softmax(q[:, qy, qx] @ keys, dim=-1)
    print(f"window {side:2d}: largest weight {float(p.max()):.4f}, entropy {float(-(p * p.log()).sum()):.2f} "
          f"nats (ln w^2 = {math.log(side * side):.2f})")

# %% [markdown]
# **00b.3** ★★ practice — *Scaled scores.* For $s_j \sim \mathcal N(0, \sigma^2)$,
# $\sum_j e^{s_j} \approx n\, \mathbb E[e^{s}] = n e^{\sigma^2/2}$ and
# $\mathbb E[s\, e^{s}] = \sigma^2 e^{\sigma^2/2}$, so the entropy
# $H = \ln \sum_j e^{s_j} - \sum_j p_j s_j \to \ln n + \sigma^2/2 - \sigma^2 = \ln n - \sigma^2/2$.
# The approximation needs the sum to be dominated by many terms, not by the largest one; with large σ the
# largest of `n` scores ($\approx \sigma\sqrt{2 \ln n}$) keeps dominating until $n$ is astronomically large,
# so the softmax stays "distinguishable" at $n = 20^2$ for σ of 2 and more. Measured against the limit:

# %%
gen = torch.Generator().manual_seed(0)
for sigma in (0.5, 1.0, 2.0, 4.0):
    for n in (20**2, 10**5):
        s = sigma * torch.randn(200 if n < 10**5 else 20, n, generator=gen, dtype=torch.float64)
        p = torch.softmax(s, dim=-1)
        ent = float(-(p * p.clamp_min(1e-300).log()).sum(-1).mean())
        print(f"sigma {sigma}: n = {n:6d}  entropy {ent:6.2f}  limit ln n - sigma^2/2 = {math.log(n) - sigma**2 / 2:6.2f}"
              f"  largest weight {float(p.max(-1).values.mean()):.3f}")
answer_00b_3 = math.log(20**2) - 2.0**2 / 2
print(f"limit for sigma = 2, n = 400: {answer_00b_3:.3f} nats")
assert check("00b.3", answer_00b_3)

# %% [markdown]
# **00b.4** ★★ practice — *Non-local means.* Noise of standard deviation `0.05` per RGB channel, then the
# filter of section 2.6 recomputed from the noisy image (descriptors and values both noisy):

# %%
noisy = (image + 0.05 * torch.randn(image.shape, generator=torch.Generator().manual_seed(0))).clamp(0, 1)
filtered = nlm_filter(noisy).clamp(0, 1)
answer_00b_4 = (metrics.psnr(noisy, image, 1), metrics.psnr(filtered, image, 1))
print(f"PSNR on Y: noisy {answer_00b_4[0]:.2f} dB, filtered {answer_00b_4[1]:.2f} dB")
assert check("00b.4", answer_00b_4)

# %% [markdown]
# The filter averages each pixel with the pixels whose 5 × 5 neighbourhoods look alike. On the flat brick
# faces it finds hundreds of such pixels and the noise averages out; on the mortar joints and edges it
# finds few, and there it also blurs a little. (On the Urban100 facade of the notebook, mostly edges and
# windows, the gain is much smaller.)

# %% [markdown]
# **00b.5** ★★★ challenge (open) — *Is a query its own best match?* With unit-norm descriptors the largest
# score of query `i` is $\cos = 1$ at `j = i`. Without the normalisation the score
# $d_i^\top d_j = \lVert d_i \rVert \lVert d_j \rVert \cos$ grows with the norm of the key: a
# high-contrast patch (a mortar joint, an edge, a very dark or bright spot) pointing in roughly the same
# direction beats the query itself whenever $\lVert d_j \rVert \cos > \lVert d_i \rVert$. Low-contrast
# queries (flat regions) lose their attention to the strongest patches of the image. This is why the
# official NLSA (and `srlib.attention.buckets`) L2-normalises the keys: the query's own norm then only sets
# the temperature. Counted on the offline scene:

# %%
img_centred = image - image.mean(dim=(1, 2), keepdim=True)
patches = torch.nn.functional.unfold(img_centred[None], 5, padding=2)[0].T  # (L, 75): unnormalised patches
stolen = 0
for r in range(0, L, 512):
    best = (patches[r:r + 512] @ patches.T).argmax(dim=-1)
    stolen += int((best != torch.arange(r, min(r + 512, L))).sum())
print(f"queries whose best match is another position: {stolen} of {L}")
assert stolen > 0
