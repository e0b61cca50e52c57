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
# # 00b · Dense non-local attention (NLA), built from the equation
#
# ## 1. Context
#
# Every paper reproduced in `srlib` starts from the same operation: **non-local attention**. Each pixel
# feature of a feature map is replaced by a weighted average of *all* pixel features, the weights saying
# how similar the two positions look. Images repeat themselves (windows of a facade, bricks of a wall, the
# sky), so a pixel can borrow detail from its look-alikes anywhere in the image: the *non-local
# self-similarity prior*.
#
# What the papers claim about it, and what this notebook checks:
#
# * **NLSN** (Mei, Fan, Zhou. *Image Super-Resolution with Non-Local Sparse Attention*. CVPR 2021, Sec. 3.1,
#   Eq. 4): NLA is the *embedded Gaussian* weighted sum
#   $y_i = \sum_j \frac{\exp(\theta(x_i)^\top \phi(x_j))}{\sum_{\hat j} \exp(\theta(x_i)^\top \phi(x_{\hat j}))}\, g(x_j)$,
#   and (Sec. 1) global NL attention "requires the computation of feature mutual-similarity among all the pixel
#   locations. It results in quadratic computational cost with respect to image size."
# * **HSPAN** (Su et al. *High-Similarity-Pass Attention for Single Image Super-Resolution*. IEEE TIP, Fig. 1): "as the size of non-local sequence increases, the resulting probability
#   distribution of the softmax transformation is gradually flattened ... even the most important non-local
#   information can only be assigned to a very small value."
#
# New to super-resolution? Notebook `00a_super_resolution` introduces the task, the PSNR/SSIM protocol and the
# EDSR network the attention modules live in.
#
# Plan: (1) a real image with repeated structure; (2) Eq. 4 step by step on its features, checked against
# `srlib.attention.nla.NonLocalAttention`, then attention maps of chosen query pixels and the quadratic cost,
# measured; (3) softmax flattening (HSPAN Fig. 1); (4) where the official code departs from the paper;
# (5) exercises.
#
# **Data.** The stored outputs were made with the benchmark data present (`SRLIB_DATA` set): the scene is a
# crop of Urban100 `img_014`. Without the data the notebook uses scikit-image's bundled `brick` photograph;
# every cell runs, but the maps, statistics and query names change (they are printed, not typed).

# %%
import math

import matplotlib.pyplot as plt
import torch
import torch.nn.functional as F

from srlib.analysis.flops import conv_flops, nla_flops
from srlib.attention.nla import NonLocalAttention, non_local_attention, softmax_last
from srlib.data import available_benchmarks, query_scene
from srlib.course.exercises import check
from srlib.analysis.maps import (
    HSPAN_FIG1_NS, attention_statistics, features_for_attention, nonlocal_mass, patch_descriptors,
    query_attention_map, softmax_flattening,
)
from srlib.analysis.measure import loglog_slope, measure_attention_cost
from srlib.viz import plot_attention_maps, plot_flattening_curves, plot_loglog_cost, plot_softmax_examples

torch.set_num_threads(2)
_ = torch.manual_seed(0)

# %% [markdown]
# ### 1.1 A real image with repeated structure
#
# Attention in the SR networks runs on **low-resolution (LR) feature maps**, so we work on an LR image:
# Urban100 `img_014` (×4 LR, a facade with a regular grid of windows against a flat sky) from the
# benchmark data when `SRLIB_DATA` points to it. Without the data, the notebook falls back to scikit-image's
# bundled `brick` photograph (grayscale, replicated to RGB by `load_image(..., allow_gray=True)`): a brick
# wall, equally repetitive. (The colour photographs of `srlib.data.SampleImagesDataset`, the usual offline
# fallback, have little repeated structure.)
#
# Dense attention over an `H × W` map stores an `HW × HW` matrix, so we keep the map at **56 × 56**
# (`L = 3136` positions; the matrix's size in float32 is printed in section 2.3): a crop, shrunk with
# srlib's MATLAB-compatible bicubic `imresize`. For each scene we also fix four query pixels: two on repeated structures, one in a flat region,
# one on an edge.

# %% tags=["nbval-ignore-output"]
scene = query_scene(56)  # srlib.data.scenes: the crop, shrunk with imresize, and its four query pixels
image, source, queries, query_names = scene.image, scene.description, scene.queries, scene.query_names
print("data:", "benchmark data (SRLIB_DATA)" if "Urban100" in available_benchmarks(scale=4) else "offline fallback")
print("scene:", source)
assert image.shape == (3, 56, 56) and 0 <= image.min() and image.max() <= 1
assert len(queries) == len(query_names) == 4

# %%
H, W = image.shape[-2:]
L = H * W
print(f"image {tuple(image.shape)}, L = H*W = {L} positions")
fig, ax = plt.subplots(figsize=(3.5, 3.5))
ax.imshow(image.permute(1, 2, 0).numpy(), interpolation="nearest")
ax.set_title("the 56 x 56 LR scene")
ax.axis("off")
plt.show()

# %% [markdown]
# ## 2. Step by step: Eq. 4, the embedded Gaussian
#
# ### 2.1 Features
# An SR network applies attention to deep features, not to RGB. For a fixed, reproducible stand-in we use
# the **head of an EDSR** (the backbone of every network here, built in notebook `00a_super_resolution`,
# section 2.5: subtract the DIV2K mean colour, then one 3×3 convolution from 3 to `C = 16` feature channels)
# with seeded random weights instead of trained ones (`srlib.analysis.maps.features_for_attention`). Sequence convention:
# position `(y, x)` becomes index `p = y·W + x` (row-major, what `flatten` does).

# %%
C, reduction = 16, 2
x = features_for_attention(image, channels=C, seed=0)  # (B, C, H, W)
assert x.shape == (1, C, H, W)
print("features x:", tuple(x.shape))

# %% [markdown]
# ### 2.2 The three embeddings θ, φ, g as 1×1 convolutions
# Eq. 4 needs a *query* embedding θ, a *key* embedding φ (they define the similarity
# $f(x_i, x_j) = \exp(\theta(x_i)^\top \phi(x_j))$) and a *value* transform g. A 1×1 convolution is the same
# matrix applied at every pixel: $\theta(x_i) = W_\theta x_i + b_\theta$.
#
# We build the block of the official code (which `srlib` follows), by hand: a **PReLU** after each 1×1
# convolution, no $1/\sqrt{d}$ scaling of the scores, and a **residual** connection, `out = x + y`
# (section 4 lists these departures from the paper). θ and φ reduce the channels to `C / reduction = 8`;
# g keeps `C = 16`.

# %%
gen = torch.Generator().manual_seed(1)


def random_1x1(c_out, c_in):
    """Weight (c_out, c_in) and bias (c_out,) drawn like PyTorch's default conv init, from `gen`."""
    bound = 1 / math.sqrt(c_in)
    weight = (torch.rand(c_out, c_in, generator=gen) * 2 - 1) * bound
    bias = (torch.rand(c_out, generator=gen) * 2 - 1) * bound
    return weight, bias


W_theta, b_theta = random_1x1(C // reduction, C)
W_phi, b_phi = random_1x1(C // reduction, C)
W_g, b_g = random_1x1(C, C)
prelu_slope = torch.tensor([0.25])  # PReLU's default initial slope for negative inputs


def embed(weight, bias):
    """1x1 conv + PReLU, then flatten to a sequence: (B, C, H, W) -> (B, L, C_out)."""
    z = torch.einsum("oc,bchw->bohw", weight, x) + bias.view(1, -1, 1, 1)
    z = F.prelu(z, prelu_slope)
    return z.flatten(2).transpose(1, 2)


theta, phi, g = embed(W_theta, b_theta), embed(W_phi, b_phi), embed(W_g, b_g)
assert theta.shape == phi.shape == (1, L, C // reduction) and g.shape == (1, L, C)
print("theta", tuple(theta.shape), " phi", tuple(phi.shape), " g", tuple(g.shape))

# %% [markdown]
# ### 2.3 Scores, softmax, aggregation
# Eq. 4 of NLSN, the *embedded Gaussian* non-local attention over all $n = L$ positions:
#
# $$y_i = \sum_{j=1}^{n} \frac{\exp\big(\theta(x_i)^\top \phi(x_j)\big)}
# {\sum_{\hat j=1}^{n} \exp\big(\theta(x_i)^\top \phi(x_{\hat j})\big)}\, g(x_j).$$
#
# In three matrix steps:
# * scores $s_{ij} = \theta(x_i)^\top \phi(x_j)$ for **all** pairs: one `(L, L)` matrix per image;
# * weights $a_{ij} = \exp(s_{ij}) / \sum_{\hat j} \exp(s_{i\hat j})$: a softmax over the keys `j` (Eq. 4's
#   fraction), so each row sums to 1;
# * output $y_i = \sum_j a_{ij}\, g(x_j)$: one matrix product, then back to `(B, C, H, W)` and the residual.

# %%
scores = theta @ phi.transpose(1, 2)  # (B, L, L)
assert scores.shape == (1, L, L)
weights = torch.softmax(scores, dim=-1)  # Eq. 4: normalise over the keys j
torch.testing.assert_close(weights.sum(-1), torch.ones(1, L))
y = weights @ g  # (B, L, C)
assert y.shape == (1, L, C)
out_by_hand = x + y.transpose(1, 2).reshape(1, C, H, W)  # residual connection of the official block
print(f"scores {tuple(scores.shape)}: {scores.numel() * 4 / 2**20:.1f} MiB in float32 -- for a 56 x 56 map")
score_range = (scores.min().item(), scores.max().item())  # kept for section 2.5
del scores  # the L x L matrix freed

# %% [markdown]
# The same thing for one query `i`, written literally as Eq. 4 (an explicit exponential and an explicit sum
# over all `n = L` positions):

# %%
i = queries[0][0] * W + queries[0][1]  # first query pixel, as a sequence index
f_i = torch.exp(theta[0, i] @ phi[0].T)  # f(x_i, x_j) for all j: (L,)
y_i = (f_i[:, None] * g[0]).sum(0) / f_i.sum()  # (C,)
torch.testing.assert_close(y_i, y[0, i])
print("Eq. 4 written for one query matches its row of the matrix form")

# %% [markdown]
# ### 2.4 Check against `srlib`
# `NonLocalAttention` holds the three embeddings as `conv_match1` (θ), `conv_match2` (φ) and
# `conv_assembly` (g), each `Sequential(Conv2d 1×1, PReLU)` as in the official code. Loading our matrices
# into it must give the same output. (Without a request for the map, the module uses PyTorch's fused
# attention kernel, `torch.nn.functional.scaled_dot_product_attention` ("SDPA"), which computes Eq. 4 block by
# block and never stores the `L × L` matrix; with `keep_map = True` it stores it. To keep the notebook's
# memory low we drop our `L × L` `weights` first and compare the module's map with our
# Eq. 4 recomputed 512 query rows at a time: rows are independent, so each block is
# `softmax(theta[rows] phi^T)`.)

# %%
nla = NonLocalAttention(channel=C, reduction=reduction, res_scale=1.0)
state = {}
for name, (w_, b_) in {"conv_match1": (W_theta, b_theta), "conv_match2": (W_phi, b_phi),
                       "conv_assembly": (W_g, b_g)}.items():
    state[f"{name}.0.weight"] = w_[:, :, None, None]  # (C_out, C_in) -> (C_out, C_in, 1, 1)
    state[f"{name}.0.bias"] = b_
    state[f"{name}.1.weight"] = prelu_slope
nla.load_state_dict(state)
del weights
with torch.no_grad():
    torch.testing.assert_close(nla(x), out_by_hand)  # fused path
    nla.keep_map = True
    torch.testing.assert_close(nla(x), out_by_hand)  # explicit path, stores the map
    for r in range(0, L, 512):
        block = torch.softmax(theta[:, r:r + 512] @ phi.transpose(1, 2), dim=-1)  # rows r..r+511 of Eq. 4
        torch.testing.assert_close(nla.last_map[:, r:r + 512], block)
weights = nla.last_map  # (B, L, L): identical to our Eq. 4 weights, checked above
nla.keep_map, nla.last_map = False, None
print("hand-built Eq. 4 == srlib NonLocalAttention (output and attention map)")

# %% [markdown]
# ### 2.5 What does this *untrained* attention look at?
# Row `i` of `weights`, reshaped to `H × W`, is the attention map of query `i`
# (`srlib.analysis.maps.query_attention_map`). With random embeddings the scores are small numbers, so the softmax of
# 3136 of them is close to **uniform**: every query averages the whole image. The *normalised entropy*
# (entropy / ln L: 1 = uniform, 0 = one-hot) measures it.

# %% tags=["nbval-ignore-output"]
stats_untrained = attention_statistics(weights[0, ::8], top_k=4)  # every 8th query row: 392 queries
print(f"score range: [{score_range[0]:.3f}, {score_range[1]:.3f}]")
print(f"normalised entropy of the rows: min {stats_untrained['normalized_entropy'].min():.3f}, "
      f"mean {stats_untrained['normalized_entropy'].mean():.3f}")
print(f"largest weight in the whole matrix: {weights.max():.2e}  (uniform would be 1/L = {1 / L:.2e})")
assert stats_untrained["normalized_entropy"].mean() > 0.95 and weights.max() < 20 / L
untrained_maps = torch.stack([query_attention_map(weights, yx, (H, W)) for yx in queries])  # (4, H, W)
assert untrained_maps.shape == (4, H, W)
for k, (name, yx) in enumerate(zip(query_names, queries)):
    print(f"query {k + 1} ({name}): largest weight x L = {untrained_maps[k].max() * L:.2f}, "
          f"weight farther than 8 px = {nonlocal_mass(untrained_maps[k], yx, 8):.2f}")

# %% [markdown]
# Almost all weight lies farther than 8 pixels from each query, but only because almost all *pixels* do:
# this attention is "non-local" in the trivial sense of averaging everything. A trained network must
# *learn* θ and φ that make similar structures score much higher than the rest. Next we substitute a
# hand-crafted embedding that already does that.

# %%
del weights, f_i  # free the L x L matrix

# %% [markdown]
# ### 2.6 Attention maps on a real image
#
# **A hand-crafted stand-in for learned embeddings.** Let $\theta(x_i) = \phi(x_i) = d_i / \sqrt{\tau}$, where
# $d_i$ is the 5×5 colour patch around pixel `i`, minus the image's mean colour, scaled to unit length
# (`srlib.analysis.maps.patch_descriptors`). Then $\theta(x_i)^\top\phi(x_j) = \cos(\text{patch}_i, \text{patch}_j)/\tau$:
# Eq. 4 becomes the patch similarity of classic non-local means (Buades et al., 2005), with a
# *temperature* τ (`tau = 0.05` below) that sets how sharply it prefers the best matches. Sharing θ = φ is what NLSN's
# sparse attention does too (NLSN Sec. 3.3, "Instantiations"; Table 4). The values are the RGB pixels, so
# the output `nlm` is a non-local-means filtered image.
#
# We call `srlib`'s `non_local_attention` (the function behind the module). The rows of Eq. 4 are
# independent of each other: passing a subset of the queries (against all `L` keys) gives exactly those
# rows. So the filtered image is computed 512 queries at a time, and for the maps we pass just the four
# query pixels: a `(1, 4, L)` weight matrix instead of `(1, L, L)`.

# %%
tau = 0.05
desc = patch_descriptors(image, patch_size=5)  # (1, 75, H, W), unit norm along dim 1
q = desc.flatten(2).transpose(1, 2) / math.sqrt(tau)  # theta = phi: (1, L, 75)
v = image.flatten(1).T[None]  # values g = RGB: (1, L, 3)
assert q.shape == (1, L, 75) and v.shape == (1, L, 3)
# the whole filtered image, 512 queries at a time (rows are independent: 512 x L scores, never L x L)
nlm = torch.cat([non_local_attention(q[:, r:r + 512], q, v) for r in range(0, L, 512)], dim=1)  # (1, L, 3)
rows = torch.tensor([qy * W + qx for qy, qx in queries])  # sequence indices of the 4 queries
nlm_rows, attn_rows = non_local_attention(q[:, rows], q, v, return_map=True)  # (1, 4, 3), (1, 4, L)
torch.testing.assert_close(nlm_rows, nlm[:, rows])  # the same rows as the full computation
maps = attn_rows[0].reshape(4, H, W)  # row k, laid out on the image grid (p = y * W + x)
torch.testing.assert_close(maps.sum((1, 2)), torch.ones(4))
print("attention rows", tuple(attn_rows.shape), "-> maps", tuple(maps.shape), "each sums to 1")

# %%
fig = plot_attention_maps(image, maps, queries, titles=[f"{k + 1}: {n}" for k, n in enumerate(query_names)],
                          ncols=3, panel_size=3.4)
for label in fig.axes[0].texts:  # query numbers near the right edge go to the left of their circle
    if label.xy[0] > W - 8:
        label.xyann = (-14, -4)
plt.show()

# %% [markdown]
# Bright = large weight (the colour scale is the square root of weight / max weight, so that weights 100×
# below the peak still show). Read the panels:
#
# * a query on a **repeated structure** (a window, a pillar; a mortar joint on the brick wall) spreads its
#   weight over the *other copies* of that structure, far away from itself: this is what "non-local" buys;
# * a query in a **flat region** (sky; a brick face) attends to the whole flat region: hundreds of
#   positions with nearly equal weight;
# * a query on an **edge** attends along edges with the same orientation and colours on either side.
#
# How non-local is it? The table gives, per query, the largest weight, the *effective support*
# `exp(entropy)` (how many positions the weight is spread over) and the share of weight **farther than 8
# pixels** from the query (`srlib.analysis.maps.nonlocal_mass`), i.e. what a 17×17 window attention would miss.

# %% tags=["nbval-ignore-output"]
st = attention_statistics(maps.flatten(1), top_k=4)
far = torch.stack([nonlocal_mass(m, yx, radius=8) for m, yx in zip(maps, queries)])
print(f"{'query':>26} {'max weight':>11} {'eff. support':>13} {'mass > 8 px away':>17}")
for k, name in enumerate(query_names):
    print(f"{f'{k + 1}: {name}':>26} {st['max_weight'][k]:11.3f} {st['effective_support'][k]:13.0f} "
          f"{far[k]:17.2f}")
assert (far > 0.4).all()  # every query takes a large share of its weight from far away
assert (st["max_weight"] < 0.5).all()  # and no single key dominates
assert st["effective_support"][2] > 100  # the flat-region query spreads widely

# %% [markdown]
# ### 2.7 Explore it yourself *(deep dive)*
# The explorer computes this map (5×5 patch descriptors, the same τ) for any query pixel: move `query x` /
# `query y` or click on the picture. The outline marks the fewest keys carrying 90% of the weight. On your
# own image: `AttentionExplorer("path/to/photo.png", mechanisms=("NLA",))`. (Interactive: run the notebook in
# JupyterLab; the numbers it shows are unit-tested in `tests/test_viz_explorer.py`.)

# %% tags=["nbval-ignore-output"]
from srlib.viz.explorer import AttentionExplorer

explorer = AttentionExplorer(image, mechanisms=("NLA",), query=queries[0], temperature=tau)
torch.testing.assert_close(explorer.result["map"], maps[0])  # the widget shows the map computed above
assert explorer.state()["keys_for_90"] >= 1
explorer

# %% [markdown]
# ### 2.8 The quadratic cost, measured *(deep dive)*
#
# Eq. 4 compares every position with every other: for `L = H·W` positions the score matrix has `L²` entries,
# the scores cost `L²·d` multiply-adds and the aggregation `L²·C` more. Doubling the image side multiplies
# `L` by 4 and the cost by 16.
#
# **Analytic numbers** (float32; GFLOPs counted as in NLSN Table 5, 1 multiply-add = 2 FLOPs, 64 channels,
# `d = 16`; `srlib.analysis.flops.nla_flops`), next to one 3×3 convolution on the same map:

# %%
print(f"{'feature map':>12} {'L':>7} {'L x L matrix':>13} {'NLA GFLOPs':>11} {'3x3 conv GFLOPs':>16}")
for h, w, note in [(48, 48, "48x48 training patch"), (56, 56, "this notebook"), (100, 100, "NLSN Table 5"),
                   (256, 192, "Urban100 LR x4"), (512, 384, "Urban100 LR x2")]:
    n = h * w
    mib = 4 * n * n / 2**20
    size = f"{mib:.0f} MiB" if mib < 1024 else f"{mib / 1024:.1f} GiB"
    print(f"{f'{h}x{w}':>12} {n:7d} {size:>13} {nla_flops(h, w, 64).gflops:11.1f} "
          f"{conv_flops(h, w, 64, 64) / 1e9:16.2f}   {note}")

# %% [markdown]
# At 100×100 dense attention costs 16 GFLOPs, more than 20 convolutions; on a whole Urban100 LR image the
# weight matrix alone would take gigabytes. That is why the SR networks either attend within windows or,
# like the next papers, **sparsify** the attention.
#
# **Measured.** We run `NonLocalAttention(64 channels)` on random 64-channel feature maps of side 16 … 48 on
# the CPU, one thread (`srlib.analysis.measure.measure_attention_cost`: best of 5 runs after a warm-up), in two versions
# with the same weights. Time is the *CPU time* of this process (`clock="cpu"`, `time.process_time`): on a
# machine shared with other jobs, wall-clock time inflates long runs more than short ones and bends the
# curve; CPU time counts only our own work.
# * *explicit* (`normalizer=softmax_last`, an explicit softmax): scores and weights are stored as `L × L`
#   matrices, as in Eq. 4 written out;
# * *fused* (the module's default): PyTorch's SDPA kernel streams over the keys and never
#   hands back the matrix (the idea of FlashAttention).
#
# Memory is the peak of the tensors alive at once, tracked call by call (`srlib.analysis.measure.peak_tensor_bytes`): exact
# and deterministic. Timings depend on the machine and its load, so nothing is asserted about them and
# these cells are not compared by the notebook tests.

# %% tags=["nbval-ignore-output"]
torch.set_num_threads(1)  # one thread: CPU time = the work of one core
sizes = [16, 20, 24, 28, 32, 36, 40, 44, 48]
fused_nla = NonLocalAttention(channel=64, reduction=2).eval()  # default: fused SDPA
explicit_nla = NonLocalAttention(channel=64, reduction=2, normalizer=softmax_last).eval()  # Eq. 4 as written
explicit_nla.load_state_dict(fused_nla.state_dict())  # same weights
explicit = measure_attention_cost(explicit_nla, sizes, repeats=5, channels=64, clock="cpu",
                                  generator=torch.Generator().manual_seed(0))
fused = measure_attention_cost(fused_nla, sizes, repeats=5, channels=64, clock="cpu",
                               generator=torch.Generator().manual_seed(0))
torch.set_num_threads(2)
lengths = explicit["length"]
print(f"{'side':>5} {'L':>6} {'explicit ms':>12} {'fused ms':>9} {'explicit MiB':>13} {'fused MiB':>10} "
      f"{'2 L² x 4 B':>11}")
for k, s in enumerate(sizes):
    print(f"{s:5d} {lengths[k]:6d} {1e3 * explicit['seconds_min'][k]:12.2f} {1e3 * fused['seconds_min'][k]:9.2f} "
          f"{explicit['peak_bytes'][k] / 2**20:13.2f} {fused['peak_bytes'][k] / 2**20:10.2f} "
          f"{2 * 4 * lengths[k] ** 2 / 2**20:11.2f}")

# %% [markdown]
# The memory columns are exact: the explicit version holds two `L × L` float32 matrices (scores and weights)
# plus `O(L·C)` feature maps; the fused version only `O(L·C)`.

# %%
mem_slopes = {name: loglog_slope(lengths[4:], r["peak_bytes"][4:]) for name, r in
              [("explicit", explicit), ("fused", fused)]}
print("fitted exponents of peak memory (sides 32 to 48):", {k: round(v, 2) for k, v in mem_slopes.items()})
assert 1.9 < mem_slopes["explicit"] < 2.05 and 0.9 < mem_slopes["fused"] < 1.1
assert all(p >= 8 * n * n for p, n in zip(explicit["peak_bytes"], lengths))

# %% tags=["nbval-ignore-output"]
fig, slopes = plot_loglog_cost(lengths, {"explicit (Eq. 4)": explicit["seconds_min"],
                                         "fused SDPA": fused["seconds_min"]},
                               ylabel="CPU seconds per forward (best of 5)", fit_from=4,
                               title="NonLocalAttention, 64 channels: time")
plt.show()
print("fitted exponents of time:", {k: round(v, 2) for k, v in slopes.items()})

# %% [markdown]
# The time exponents (fitted from side 32 on, where the work dominates the per-call overhead) are printed
# under the plot. They are noisy: CPU time of calls of a few milliseconds, on a machine shared with other
# jobs, so their exact values change from run to run. What does not change is the arithmetic: both versions
# compute all `L²` scores, so time grows towards quadratically, stored matrix or not; below side 48 the
# linear parts (the 1×1 embeddings, `O(L·C²)`) still weigh and pull the fitted exponent down, and once the
# `L × L` matrices outgrow the CPU caches the explicit version slows further. The fused kernel removes the
# quadratic *memory* (exponent 1 instead of 2, exact and asserted above), not the `L²` arithmetic. Removing
# the arithmetic needs *sparsity*: attend to fewer keys. (`benchmarks/` measures both at larger sizes.)

# %% [markdown]
# ## 3. Paper figures: softmax flattening (HSPAN Fig. 1)
#
# HSPAN's Fig. 1 draws nine score vectors from $\mathcal N(0, 1)$ with lengths $n = 4^2, 6^2, \dots, 20^2$ and
# plots their softmax. We do the same (seeded), one example per `n`, on a common y-axis; the dashed line is
# the uniform weight `1/n`.

# %%
flat = softmax_flattening(HSPAN_FIG1_NS, trials=2000, generator=torch.Generator().manual_seed(0), top_k=4)
fig = plot_softmax_examples(flat, ncols=3)
plt.show()

# %% [markdown]
# As the paper describes: at $n = 4^2$ the distribution is distinguishable (a few clear winners); at
# $n = 20^2$ every weight is close to zero, **even the largest**. Averaged over 2000 draws per `n`:

# %%
print(f"{'n':>5} {'max weight':>11} {'n * max':>8} {'entropy':>8} {'ln n - 1/2':>11} {'ln n':>6} {'top-4 mass':>11}")
for k, n in enumerate(flat["n"].tolist()):
    print(f"{n:5d} {flat['max_weight'][k]:11.3f} {n * flat['max_weight'][k]:8.2f} {flat['entropy'][k]:8.2f} "
          f"{math.log(n) - 0.5:11.2f} {math.log(n):6.2f} {flat['top_mass'][k]:11.3f}")
assert (flat["max_weight"].diff() < 0).all() and (flat["top_mass"].diff() < 0).all()
assert flat["top_mass"][0] > 0.55 and flat["top_mass"][-1] < 0.1  # quoted in the text below

# %%
fig = plot_flattening_curves(flat)
plt.show()

# %% [markdown]
# **Why it happens.** With i.i.d. $\mathcal N(0,1)$ scores, the denominator $\sum_j e^{s_j}$ grows like
# $n\,\mathbb E[e^{s}] = n e^{1/2}$, while the best score grows only like $\sqrt{2 \ln n}$. So the largest
# weight falls roughly like $e^{m_n - 1/2}/n$ ($m_n$: expected maximum of `n` standard normals) and the
# entropy tends to $\ln n - 1/2$, half a nat below the uniform distribution. The four best keys hold 59% of
# the mass at $n = 4^2$ but only about 9% at $n = 20^2$: a few truly similar positions are drowned by hundreds of
# irrelevant ones, each getting a small but non-zero weight.
#
# On a real image `n = L` is in the thousands (3136 here, ~50 000 for a whole Urban100 LR image), and
# section 2.5 showed the untrained version of exactly this: an almost uniform average. This motivates the
# next notebooks: **NLSN** attends only within a hash bucket of ~144 similar positions, **ENLCN** amplifies the
# scores before the kernelised softmax, **HSPAN** replaces the softmax by soft thresholding that sets small
# weights to exactly zero, **DLSN** and **LCoAN** learn which positions to group together.

# %% [markdown]
# ## 4. Paper vs code
#
# `srlib.attention.nla.NonLocalAttention` follows the official block (the `NonLocalAttention` class of the
# HSPAN authors' repository, `src/model/attention.py`, also used as the "NLA" baseline by the other papers),
# which departs from Eq. 4 as written in three places; `docs/official_code.md` collects such facts for all
# five papers.
#
# * **Embeddings.** The paper calls θ, φ and g learned linear maps; the code puts a PReLU after each 1 × 1
#   convolution (built by hand in section 2.2).
# * **No scaling.** The scores are $\theta(x_i)^\top \phi(x_j)$, not divided by $\sqrt d$ as in
#   Transformers: the network must learn the scale of its scores itself, which decides how flat the softmax
#   is (section 3; exercise 00b.3).
# * **Residual.** The block returns $x + \rho\, y$ (here with `res_scale=1.0`), not $y$.
#
# The fused and explicit paths compute the same numbers (section 2.4) but not at the same memory cost
# (section 2.8): the fused kernel never holds the `L × L` matrix, yet does the same `L²` arithmetic.
#
# ## 5. Exercises
#
# Exercises with a check: replace `None` by your answer and run the cell below it. Worked solutions are in
# `notebooks/solutions/00b_non_local_attention_solutions.ipynb`.
#
# **00b.1** ★ warm-up — *Temperature.* Recompute the maps of section 2.6 with a few temperatures between
# `tau = 0.01` and `tau = 1` and plot the effective support of each query against τ. Which τ gives maps that
# are still non-local but not uniform? (In the limit τ → ∞ every map becomes uniform, as the untrained one of
# section 2.5 almost is; `AttentionExplorer(image, mechanisms=("NLA",), temperature=...)` of section 2.7
# shows the map for any τ.) Check: the effective support `exp(entropy)` of the flat-region query (query 3 of
# section 2.6) at `tau = 0.2`, within 1 %.

# %%
answer_00b_1 = None  # your answer: the effective support of the flat-region query at tau = 0.2 (positions)
check("00b.1", answer_00b_1)

# %% [markdown]
# **00b.2** ★★ practice (open) — *Flattening on the image.* Take the flat-region query of section 2.6 and
# restrict its keys to centred windows of side 8, 16, 32 and 56 (renormalise the softmax inside the window).
# How do the largest weight and the entropy change with the window size? Compare with the HSPAN curves of
# section 3.
#
# **00b.3** ★★ practice — *Scaled scores.* Transformers divide the scores by $\sqrt d$; the official SR code
# does not. Redo section 3 with scores drawn from $\mathcal N(0, \sigma^2)$ for σ between `0.5` and `4`.
# For which σ is the softmax still "distinguishable" at $n = 20^2$? Show that the large-n entropy limit
# becomes $\ln n - \sigma^2/2$ and explain why it takes a much larger `n` to reach it when σ is large.
# Check: the value of that limit for σ = 2 and $n = 20^2$ (in nats).

# %%
answer_00b_3 = None  # your answer: a number in nats
check("00b.3", answer_00b_3)

# %% [markdown]
# **00b.4** ★★ practice — *Non-local means.* `nlm` in section 2.6 is Eq. 4 applied to RGB values: the
# non-local-means filter. Add Gaussian noise of standard deviation `0.05` to the scene,
# `noisy = (image + 0.05 * torch.randn(image.shape, generator=torch.Generator().manual_seed(0))).clamp(0, 1)`,
# recompute `desc`, `q` and `nlm` from the noisy image (same `tau = 0.05`) and compute the PSNR on Y
# (`srlib.metrics.psnr(..., scale=1)`) of the noisy and of the filtered image against the clean one. How
# much does the filter gain, and why more on one kind of region than another? Check: the pair
# `(psnr_noisy, psnr_filtered)`, each within 0.02 dB.

# %%
answer_00b_4 = None  # your answer: (PSNR of the noisy image, PSNR of the filtered image), in dB
check("00b.4", answer_00b_4)

# %% [markdown]
# **00b.5** ★★★ challenge (open) — *Is a query its own best match?* In section 2.6 the descriptors have unit
# norm, so every query's largest score is its own (cos = 1). Replace `desc` by the *unnormalised* centred
# patches and count the queries whose largest weight is not on themselves. Which pixels "steal" the
# attention, and why? (The official NLSA, and `srlib.attention.buckets`, L2-normalise the keys.)
