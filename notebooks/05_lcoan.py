# ---
# jupyter:
#   jupytext:
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
# # 05 · LCoAN: a learned (k-means) sparse pattern, and attention weights shared across depth
#
# ## 1. Context
#
# **Paper.** Y.-G. Zhao, C.-W. Zheng, J.-N. Su, G.-Y. Chen, M. Gan, *Efficient Learnable Collaborative
# Attention for Single Image Super-Resolution*, arXiv:2404.04922 (2024). Official code: `YigangZhao/LCoAN`
# (`src/model/kmeans_attention.py`, `src/model/lcoan.py`); the facts about that code used here are explained
# where they are used (and collected in `docs/official_code.md`).
#
# NLSN (notebook 01) makes non-local attention cheap by hashing: positions whose embeddings fall into the same
# random spherical-LSH bucket attend to each other. LCoAN changes two things.
#
# 1. **Learnable Sparse Pattern (LSP), Eqs. (6)-(10).** The buckets are k-means clusters instead of random
#    hash buckets. A query attends to the keys of its own cluster (Eq. 7). The centroids are "shared as model
#    parameters across different images and learned online", through an exponential moving average (EMA:
#    each update keeps a fraction $\lambda$ of the old centroid) with $\lambda = 0.999$ (Eq. 10). The claim
#    (Fig. 3a): one k-means round is more accurate than LSH with several rounds.
# 2. **Collaborative Attention (CoA), Eqs. (11)-(12).** Only the first attention module computes a pattern
#    and weights, $A_s = \mathrm{LSP}(X_1)$. Every deeper module reuses them for its own values:
#    $O_m = X_m + \beta\, A_s W_m(X_m)$. The justification is Fig. 5: "the texture structure information of the
#    image is stable in the network", and deep attention maps "tend to be more randomly distributed".
#
# The reported payoff is Table I (×2; time and memory on Urban100, PSNR on the ablation's test set): the
# network's inference time falls from 272 s with NLA to 48 s with LCoA, memory from 15.7 GB to 5.5 GB, and <!-- quoted -->
# PSNR rises by 0.09 dB. On Set5 ×2, LCoAN reaches 38.34 dB with 15.67M parameters (Table II). <!-- quoted -->
#
# **Words used below.** A *feature aggregation unit* (FAU) is LCoAN's residual group: a few residual blocks
# and one LCoA module, its output added back to its input. The paper calls those blocks *RCAB* (residual
# channel attention blocks, from RCAN): two 3×3 convolutions with a ReLU whose output is reweighted per
# channel; the official code removes that channel reweighting, so here they are EDSR residual blocks
# (notebook 00a). *LCoA* is LSP in the first FAU plus CoA in the others. *NLA* is dense softmax attention
# (notebook 00).
#
# **This notebook.** Step by step (part 2): k-means on a real image's features and the EMA of Eq. (10);
# k-means vs LSH buckets on the same features (the idea behind Fig. 3a); LSP and CoA built by hand next to
# Eqs. (6)-(12), checked against `srlib`. Paper figures (part 3): time and memory of NLA, LSP, CoA and LCoA
# (Table I), and the overlap of shallow and deep attention (Fig. 5) in the shipped trained LCoAN
# (`srlib.pretrained`). Training (part 4): the course's tiny recipe, official frozen centroids vs the paper's
# EMA. Evaluation (part 5), paper vs official code (part 6), exercises (part 7).
#
# ### 1.1 Data
#
# We use one real LR image throughout. The stored outputs were made with the benchmark data (`SRLIB_DATA`
# set): Set5's butterfly (LR ×2, 128×128), which has many repeated wing textures, the self-similarity
# non-local attention is meant to exploit, and the SunHays80 photographs for training. Without the data
# everything falls back to scikit-image's bundled photographs (the astronaut here): outputs that depend on
# the image are marked `nbval-ignore-output` and the numbers quoted from them change; the code and the
# `assert`s are the same for both.

# %%
import matplotlib.pyplot as plt
import torch
import torch.nn.functional as F
from IPython.display import Markdown, display

import srlib.attention.gla as gla_module
import srlib.attention.lcoa as lcoa_module
import srlib.attention.nlsa as nlsa_module
from srlib import data as sdata
from srlib.attention.lcoa import LCoA, assign_clusters, cluster_sizes, ema_centroids, init_centroids, kmeans_step
from srlib.course import (TINY_RECIPE, assert_in_spread, data_setting, evaluation_table, load_spread, paper_training,
                          shipped, sr_crops, tiny_train)
from srlib.course.exercises import check
from srlib.course.lcoan.study import (
    centre_crops, centroid_log, compare_bucketings, depth_study, ema_run, first_pattern, format_bucketings,
    format_cost_table, format_depth_table, format_kmeans_trace, kmeans_trace, layer_study, table1_stacks,
)
from srlib.models import build_model
from srlib.models.lcoan import LCoAN, LCoANConfig
from srlib.pretrained import build_small, pretrained
from srlib.train import paper_command
from srlib.analysis.maps import features_for_attention, patch_descriptors
from srlib.viz.maps import plot_attention_maps
from srlib.viz.buckets import plot_attended
from srlib.analysis.measure import measure_attention_cost
from srlib.viz.explorer import AttentionExplorer
from srlib.course.lcoan.figures import (
    plot_bucket_recall, plot_codes, plot_depth_agreement, plot_ema_runs, plot_kmeans_steps, plot_layer_overlaps,
    plot_training_runs,
)
from srlib.analysis.overlap import (
    dense_attention_map, overlap_rate, pattern_overlap, topk_overlap, true_neighbours, window_recall,
)

torch.set_num_threads(2)
_ = torch.manual_seed(0)

# %% tags=["nbval-ignore-output"]
HAVE_SET5 = "Set5" in sdata.available_benchmarks(scale=2)
if HAVE_SET5:
    eval_set = sdata.BenchmarkDataset("Set5", 2)
    image = eval_set[2]["lr"]  # Set5 "butterfly", LR x2
else:
    eval_set = sdata.SampleImagesDataset(2)
    image = eval_set[0]["lr"]  # scikit-image "astronaut", LR x2
H, W = image.shape[-2:]
crop = image[:, H // 2 - 32 : H // 2 + 32, W // 2 - 32 : W // 2 + 32]  # (3, 64, 64), RGB in [0, 1]
assert crop.shape == (3, 64, 64) and 0 <= crop.min() and crop.max() <= 1
print(f"image: {'Set5 butterfly' if HAVE_SET5 else 'scikit-image astronaut (fallback)'}, "
      f"LR {H}x{W}, centre crop {tuple(crop.shape)}")

# %% [markdown]
# ## 2. Step by step
#
# ### 2.1 k-means on real features
#
# LSP puts queries and keys on the unit sphere, where (Eq. 8) $\lVert Q_i - K_j \rVert^2 = 2 - 2\, Q_i^\top K_j$.
# On the sphere the nearest centroid is the one with the **largest dot product**, so assigning a position to a
# cluster (Eq. 7) is an argmax hash, like NLSA's spherical LSH:
#
# $$c(x_i) = \arg\max_{u \in \{1, \dots, K\}} \mu_u^\top \frac{x_i}{\lVert x_i \rVert},$$
#
# with centroids $\mu_1, \dots, \mu_K$. The difference is that the directions are learned centroids instead of
# random Gaussians.
#
# We need features that mean something without training. As in notebook 00, the stand-in for the learned
# embedding `conv_match` is the **patch descriptor**: the 5×5 colour patch around each pixel, centred and scaled
# to unit length. Two pixels get a high dot product when their neighbourhoods look alike.

# %%
desc = patch_descriptors(crop, patch_size=5)  # (1, 75, 64, 64), unit norm along channels
x = desc.flatten(2).transpose(1, 2)  # (B, L, C): one row per position p = h*64 + w
B, L, C = x.shape
K = 16  # clusters (the paper uses 128 on full-size features; 16 keeps the maps readable)
assert (B, L, C) == (1, 4096, 75)
print("embeddings x:", tuple(x.shape), "| clusters K =", K)

# %% [markdown]
# The paper does not say how the centroids start. The official `Kmeans.init` does this, on the **first batch
# the module sees** (in train and in eval mode):
#
# 1. pick `K` of the `B·L` raw embeddings with `randperm` as seeds;
# 2. run 10 Lloyd iterations on the raw (not normalised) vectors: assign each vector to the centroid with the
#    largest dot product, then set the centroid to the *normalised* sum of its vectors. A cluster that gets no
#    vector keeps its old centroid (at first, its raw seed).
#
# Here it is by hand, keeping every iteration:

# %%
g = torch.Generator().manual_seed(0)
seeds = torch.randperm(B * L, generator=g)[:K]  # K distinct positions of the batch
means = x.reshape(B * L, C)[seeds].unsqueeze(0)  # (R, K, C) with R = 1 round
history = [means]
for it in range(10):
    sim = x @ means[0].T  # (B, L, K): dot product with every centroid
    codes = sim.argmax(-1)  # (B, L): nearest centroid, Eq. (7)-(8)
    sums = torch.zeros(K, C).index_add_(0, codes.flatten(), x.reshape(B * L, C))  # sum over batch and positions
    counts = torch.bincount(codes.flatten(), minlength=K)
    means = torch.where(counts[:, None] == 0, means[0], F.normalize(sums, dim=-1)).unsqueeze(0)
    history.append(means)

# the same with srlib: init_centroids = seeds + 10 x kmeans_step
torch.testing.assert_close(means, init_centroids(x, K, 1, generator=torch.Generator().manual_seed(0)))
torch.testing.assert_close(history[1], kmeans_step(x, history[0]))
assert torch.equal(assign_clusters(x, means)[:, 0], (x @ means[0].T).argmax(-1))
print("centroids:", tuple(means.shape), "| hand-built init == srlib.attention.lcoa.init_centroids")

# %% [markdown]
# What each iteration does on this image. We track the assignment map, the mean cosine between each position
# and its centroid (the spherical k-means objective), how many positions changed cluster, how far the
# centroids moved, and how many clusters are empty.

# %% tags=["nbval-ignore-output"]
trace = kmeans_trace(x, history)  # srlib.course.lcoan.study: one row per iteration
step_codes = [r["codes"] for r in trace]  # (L,) codes under the centroids of iteration t
print(format_kmeans_trace(trace, L))
objective = [(x[0] @ F.normalize(m[0], dim=-1).T).max(-1).values.mean().item() for m in history]
assert all(b >= a - 1e-6 for a, b in zip(objective[1:], objective[2:]))  # Lloyd steps never get worse

# %%
fig = plot_kmeans_steps(crop, step_codes, shown=[0, 1, 2, 5, 10], n_clusters=K)
plt.show()

# %% [markdown]
# The clusters follow colour and texture (flat areas, edges of each orientation and colour) rather than
# location. Positions far apart share a cluster when their patches look alike, which is the self-similarity we
# want attention to use.
#
# ### 2.2 Centroid updates: the EMA of Eq. (10), and what the official code does *(deep dive)*
#
# During training, the paper moves each centroid towards the queries and keys assigned to it:
#
# $$u \leftarrow \lambda u + \frac{1-\lambda}{2}\sum_{i:\,u(Q_i)=u} Q_i + \frac{1-\lambda}{2}\sum_{j:\,u(K_j)=u} K_j, \qquad \lambda = 0.999.$$
#
# In LCoA the queries and keys are the same embedding (`Q = K`), so the two halves add up to
# `(1 − λ) Σ x`: a plain **sum**, which grows with the cluster size. The official code prepares a different
# update: `λ u + (1 − λ) · normalize(Σ x)`, towards the batch's normalised centroid (Routing Transformer
# style). It computes that value and **never writes it back**: `update()` and the hook that would call it are
# commented out. In the official LCoAN, the centroids are therefore frozen after the first batch.
#
# `srlib` follows the code by default (`ema_update=False`, so official checkpoints behave as trained). The
# paper's update is available with `ema_update=True`, and `ema_target="centroid"` (the code's form) or
# `"sum"` (Eq. 10 as printed). Both by hand, on the next batch (another crop of the image):

# %%
crop2 = image[:, H // 4 - 32 : H // 4 + 32, W // 4 - 32 : W // 4 + 32]
x2 = patch_descriptors(crop2, 5).flatten(2).transpose(1, 2)  # (1, 4096, 75): the next mini-batch
codes2 = assign_clusters(x2, means)  # (B, R, L)
lam = 0.999
sums2 = torch.zeros(K, C).index_add_(0, codes2.flatten(), x2.reshape(-1, C))
counts2 = torch.bincount(codes2.flatten(), minlength=K)
batch_centroid = torch.where(counts2[:, None] == 0, means[0], F.normalize(sums2, dim=-1))
ema_code = lam * means + (1 - lam) * batch_centroid  # what the official code computes (and drops)
ema_eq10 = lam * means + (1 - lam) * sums2  # Eq. (10) with Q = K: (1-λ)/2 Σ Q + (1-λ)/2 Σ K = (1-λ) Σ x
torch.testing.assert_close(ema_code, ema_centroids(means, x2, codes2, lam, target="centroid"))
torch.testing.assert_close(ema_eq10, ema_centroids(means, x2, codes2, lam, target="sum"))
print("EMA by hand == srlib ema_centroids for both targets; shapes", tuple(ema_code.shape))

# %% [markdown]
# A single step with $\lambda = 0.999$ moves a centroid a thousandth of the way. After $t$ steps on similar
# batches it has moved a fraction $1 - \lambda^t$ of the way, so the time constant is $1/(1 - \lambda)$: 10, 100
# and 1000 steps for $\lambda = 0.9, 0.99, 0.999$. Below, we feed the same batch again and again to both forms (every 4th position of
# the crop, to keep it fast).
# Left: how far the centroids move. Right: how much of the batch the largest cluster takes.
# With the literal sum, centroids of big clusters grow long, win more dot products and grow further.

# %% tags=["nbval-ignore-output"]
x2_sub = x2[:, ::4]  # (1, 1024, 75)
ema_runs = {f"λ = {decay} (code's form)": ema_run(means, x2_sub, decay, "centroid") for decay in (0.9, 0.99, 0.999)}
ema_runs["λ = 0.99, Eq. 10 literal (sum)"] = ema_run(means, x2_sub, 0.99, "sum")
fig = plot_ema_runs(ema_runs)
plt.show()
largest = ema_runs["λ = 0.999 (code's form)"][1]
largest_sum = ema_runs["λ = 0.99, Eq. 10 literal (sum)"][1]
print(f"after 150 steps, largest cluster: code's form {largest[-1]:.0%} (λ=0.999), "
      f"literal sum {largest_sum[-1]:.0%}")
assert largest_sum[-1] >= largest_sum[0]

# %% [markdown]
# ### 2.3 k-means buckets vs LSH buckets on the same features (the idea behind Fig. 3a)
#
# Fig. 3a of the paper replaces k-means by LSH inside LCoA and reports PSNR: one k-means round beats LSH even with
# several rounds. The quantity behind that claim is how often the keys a query *should* attend to end up where
# the query can see them. We measure it directly.
#
# * **True neighbours**: the `k = 8` keys with the highest cosine to the query. With one shared embedding and
#   normalised keys (the official score `x_i·x_j/‖x_j‖`), these are the keys dense attention weights most.
# * **Bucket recall**: the fraction of them in the query's bucket, in at least one round (Eq. 7 taken
#   literally). Recall is cheap if the buckets are huge, since one bucket holding everything has recall 1. So
#   we also report the **bucket share**: the fraction of all keys in the query's bucket. A random bucketing
#   has recall ≈ share, and the ratio recall/share ("lift") says how much better than chance the grouping is.
# * **Window recall**: what the code actually attends. Positions are sorted by bucket and cut into windows of
#   384; a query sees its window and the two adjacent ones, `3·384` keys per round, whatever the buckets are.
#   At equal cost (one round), this is the fair comparison.
#
# Both methods get the same number of buckets `K`. k-means uses the official initialisation (10 iterations,
# one round). LSH is NLSN's official spherical hash with 1, 2 or 4 rounds. We average over 2 seeds.

# %% tags=["nbval-ignore-output"]
neighbours = true_neighbours(x, 8)  # (B, L, 8)
WINDOW = 384
rows = compare_bucketings(x, neighbours, n_buckets=(16, 128), window=WINDOW, seeds=(0, 1))  # srlib.course.lcoan.study
print(format_bucketings(rows, WINDOW, L))  # lift = recall / share
by = {(r["K"], r["method"]): r for r in rows}
for n_buckets in (16, 128):
    km, lsh1 = by[(n_buckets, "k-means x1")], by[(n_buckets, "LSH x1")]
    assert km["recall"] / km["share"] > lsh1["recall"] / lsh1["share"] > 1  # k-means groups better than LSH
    assert 0 < km["window"] <= 1 and by[(n_buckets, "LSH x4")]["window"] >= lsh1["window"]

# %%
fig = plot_bucket_recall(rows, WINDOW, L)
plt.show()

# %% [markdown]
# How to read it (the numbers change with the image):
#
# * **Per bucket, k-means is far better than chance, and better than LSH.** Its lift (recall/share) is the
#   highest in the table. LSH buckets on natural-image features are very uneven: a few huge buckets catch most
#   positions, so their recall is high only because they are big (a high share). That is "large estimation
#   variance" in the paper's words.
# * **At equal cost the gap narrows.** With sorted windows of 384, each query sees 1152 of 4096 keys whichever
#   hash made the order. One k-means round recalls at most a little more than one LSH round, and with K = 128
#   it can fall behind, depending on the image. Several LSH rounds recall more, because they look at 2× or 4×
#   more keys.
# * **Too many clusters hurt k-means** (K = 128 vs 16). Neighbourhoods get cut into small clusters whose sorted
#   order is arbitrary, so neighbours land in windows far apart. The paper tunes K (Fig. 4a) and the window
#   (Fig. 4b) on learned features; these are fixed hand-made ones.
#
# Fig. 3a's PSNR gap comes from a *trained* network, where the embedding and the centroids adapt to each
# other. This measurement only shows the mechanism: a clustering fitted to the data groups neighbours better
# than random hyperplanes do.

# %% [markdown]
# ### 2.4 LSP and CoA by hand, next to the equations
#
# Now the real module, on the first features of a network: the head of an untrained EDSR (its first 3×3
# convolution, RGB to 32 channels; notebook 00a) on a 25×24 part of the crop, so that `L = 600` is not a multiple of the window and padding shows up.
# The configuration is that of the small LCoAN preset: 32 channels, `reduction = 1`, `K = 16` clusters, windows
# of `c = 48`.
#
# **LSP** (first module, `shared=None`), Eqs. (6)-(11). With $S_i$ the keys query $i$ may see (its sorted
# window and the two adjacent ones),
#
# $$y_i = \sum_{j \in S_i} \frac{\exp(q_i^\top \hat k_j)}{\sum_{l \in S_i} \exp(q_i^\top \hat k_l)}\, v_j, \qquad
# O = X + \beta\, y, \qquad \hat k_j = \frac{q_j}{\lVert q_j \rVert},$$
#
# as the official code computes it:
#
# 1. `q = conv_match(X)` (3×3 conv) is both query and key; `v = conv_assembly(X)` (1×1 conv) the value;
# 2. first call: initialise the centroids from this batch (section 2.1); code = nearest centroid of `q/‖q‖`;
# 3. stable-sort positions by code, pad by repeating the last `L mod c` sorted rows, cut into windows of `c`;
# 4. scores `q_i · k_j` with keys normalised (`k = q/‖q‖`, eps 5e-5), over the own, previous and next window
#    (cyclic), softmax, weighted sum of the values, un-sort;
# 5. `out = X + β · y` with `β = res_scale`.

# %%
feats = features_for_attention(crop[:, :25, :24], channels=32)  # (1, 32, 25, 24)
Bf, Cf, Hf, Wf = feats.shape
Lf, c = Hf * Wf, 48
torch.manual_seed(1)
lsp = LCoA(channels=32, k_size=3, reduction=1, n_clusters=16, window_size=c, res_scale=0.1).eval()
lsp.kmeans.generator = torch.Generator().manual_seed(0)  # reproducible k-means initialisation

with torch.no_grad():
    q = lsp.conv_match(feats).flatten(2).transpose(1, 2)  # (B, L, 32): queries = keys
    v = lsp.conv_assembly(feats).flatten(2).transpose(1, 2)  # (B, L, 32): values
    cent = init_centroids(q, 16, 1, generator=torch.Generator().manual_seed(0))  # first call: init from this batch
    code = (F.normalize(q, dim=-1) @ cent[0].T).argmax(-1)  # (B, L): Eq. (7)-(8), nearest centroid
    order = torch.argsort(code, dim=-1, stable=True)[0]  # sort by cluster (ties: ascending position)
    undo = torch.argsort(order)
    pad = (-Lf) % c  # 24 rows repeated
    n_win = (Lf + pad) // c  # 13 windows

    def windows(t):  # (L, D) -> (n, c, D): sorted, padded by duplication, cut into windows
        s = t[0, order]
        return torch.cat([s, s[Lf - pad :]]).view(n_win, c, -1)

    def around(t):  # own, previous, next window (cyclic): (n, c, D) -> (n, 3c, D)
        return torch.cat([t, t.roll(1, dims=0), t.roll(-1, dims=0)], dim=1)

    qw, vw = windows(q), windows(v)
    kw = F.normalize(qw, dim=-1, eps=5e-5)  # keys normalised, queries not
    weights = (qw @ around(kw).transpose(1, 2)).softmax(-1)  # (n, c, 3c): A' restricted to S_i, Eq. (6)
    y = (weights @ around(vw)).reshape(n_win * c, -1)[:Lf][undo]  # drop padding, un-sort: (L, 32)
    out_hand = feats + 0.1 * y.T.reshape(1, Cf, Hf, Wf)

    out_lsp, shared = lsp(feats)  # srlib: (out, shared state A_s for the CoA modules)

assert (pad, n_win) == (24, 13) and weights.shape == (13, 48, 144)
assert torch.equal(code, shared.codes[:, 0])
torch.testing.assert_close(weights, shared.score[0, 0])
torch.testing.assert_close(out_hand, out_lsp)
print("LSP by hand == srlib LCoA: codes", tuple(shared.codes.shape), "| weights A_s", tuple(shared.score.shape),
      "| output", tuple(out_lsp.shape))

# %% [markdown]
# **CoA** (every later module, Eq. 12): $O_m = X_m + \beta\, A_s W_m(X_m)$. Its own values $W_m(X_m)$
# (`conv_assembly`, 1×1) are sorted and windowed with the **shared order**, multiplied by the **shared
# weights**, and un-sorted. It computes no similarity and no clustering; its `kmeans` is never initialised.

# %%
torch.manual_seed(2)
coa = LCoA(channels=32, k_size=3, reduction=1, n_clusters=16, window_size=c, res_scale=0.1).eval()
x_deep = out_lsp  # the input of a deeper module
with torch.no_grad():
    v_m = coa.conv_assembly(x_deep).flatten(2).transpose(1, 2)  # W_m(X_m): (B, L, 32)
    y_m = (weights @ around(windows(v_m))).reshape(n_win * c, -1)[:Lf][undo]  # A_s W_m(X_m)
    out_coa_hand = x_deep + 0.1 * y_m.T.reshape(1, Cf, Hf, Wf)
    out_coa, shared_after = coa(x_deep, shared)
torch.testing.assert_close(out_coa_hand, out_coa)
assert shared_after is shared and not bool(coa.kmeans.initted)
print("CoA by hand == srlib LCoA(x, shared); the shared state is passed on unchanged")

# %% [markdown]
# Two more checks. With **one cluster and one window covering all positions**, LSP is dense attention: every
# key is seen three times (own, previous, next window are the same window), which leaves the softmax unchanged.
# And LCoA, NLSA and GLA run the **same** sort/window/attend/un-sort code from `srlib.attention.buckets`.
# Only the hash differs: nearest k-means centroid, random spherical LSH, or super-bit LSH.

# %%
torch.manual_seed(3)
one = LCoA(channels=32, reduction=1, n_clusters=1, window_size=Lf, res_scale=0.1).eval()
with torch.no_grad():
    out_one, _ = one(feats)
    emb1 = one.conv_match(feats).flatten(2).transpose(1, 2)
    val1 = one.conv_assembly(feats).flatten(2).transpose(1, 2)
    dense_out = feats + 0.1 * (dense_attention_map(emb1) @ val1).transpose(1, 2).reshape_as(feats)
torch.testing.assert_close(out_one, dense_out)

for name in ("BucketLayout", "bucketed_attention", "combine_rounds"):
    assert getattr(lcoa_module, name) is getattr(nlsa_module, name) is getattr(gla_module, name)
print("one cluster + one window == dense attention (Eqs. 2-4)")
print("LCoA, NLSA and GLA share srlib.attention.buckets.{BucketLayout, bucketed_attention, combine_rounds}")

# %% [markdown]
# The pattern LSP learned here (untrained weights, so the clusters follow the head's colour features), and the
# keys one query attends to: its window and the two adjacent windows of the cluster-sorted order.

# %% tags=["nbval-ignore-output"]
fig = plot_codes(crop[:, :25, :24], shared.codes[0, 0], 16)
plt.show()
fig = plot_attended(crop[:, :25, :24], shared.layout, (12, 12))
plt.show()

# %% [markdown]
# ### 2.5 Explore it yourself
# LCoA next to NLSA on the 64×64 crop of section 2.1, with the patch descriptors as the embedding (scores
# `cos / 0.05`, as in notebook 00) and `K = 16` clusters. Move the query and watch its k-means cluster (left,
# tinted) and where it attends (right): its window of the cluster-sorted order and the two adjacent ones. NLSA
# hashes the same features with random spherical LSH, several rounds. Change the number of clusters and the
# window size and compare the keys the query can reach. (Interactive: run the notebook in JupyterLab.)

# %% tags=["nbval-ignore-output"]
explorer = AttentionExplorer(crop, mechanisms=("LCoA", "NLSA"), knobs={"LCoA": {"n_clusters": K}})
ex_state = explorer.state()
assert ex_state["knobs"] == {"n_clusters": K, "window_size": 144} and ex_state["round_weights"] == [1.0]
assert ex_state["support"] <= ex_state["n_candidates"] <= 3 * 144 and abs(ex_state["map_sum"] - 1) < 1e-4
explorer

# %% [markdown]
# ### 2.6 Parameters *(deep dive)*
#
# Every CoA module of the official network keeps a `conv_match` (3×3, 128→128) it never uses: the
# official code still evaluates it and throws the result away, and no gradient reaches it. `srlib` keeps the
# parameters so that official checkpoints load, but skips the computation (same output). The counts below come
# from the paper configuration, built on PyTorch's `meta` device: tensors with shapes but no storage, so the
# parameters can be counted without allocating or initialising anything.

# %%
with torch.device("meta"):
    paper_net = LCoAN(LCoANConfig(scale=2))
n_total = sum(p.numel() for p in paper_net.parameters() if p.requires_grad)  # MeanShift is frozen
attn = paper_net.attention_modules()
n_dead = sum(p.numel() for _, m in attn[1:] for p in m.conv_match.parameters())
print(f"LCoAN x2 (paper config): {n_total:,} parameters, {len(attn)} LCoA modules")
print(f"unused conv_match in the {len(attn) - 1} CoA modules: {n_dead:,} ({n_dead / n_total:.1%})")
assert n_total == 15_668_484 and n_dead == 9 * 147_584

# %% [markdown]
# ## 3. Paper figures
#
# ### 3.1 Efficiency, in the spirit of Table I *(deep dive)*
#
# Table I compares networks with 10 feature aggregation units (FAUs) whose attention is:
#
# | case | attention in the 10 units | what is computed |
# |---|---|---|
# | 2 · NLA | dense non-local attention ×10 | 10 × `L×L` similarity + softmax + weighted sum |
# | 3 · LSP | k-means sparse attention ×10 | 10 × (clustering + sort + `L × 3c` window scores) |
# | 4 · CoA | NLA in the first unit, weights shared | 1 dense attention + 9 × (`L×L` matrix × values) |
# | 5 · LCoA | LSP in the first unit, weights shared | 1 sparse attention + 9 × (sort values + `L × 3c` products) |
#
# We build the four stacks of attention modules at the paper's width (128 channels, 128 clusters, windows of
# 384), without the convolutional backbone, and run them on the same random 128-channel feature maps of side 48
# and 64 (`L = 2304` and `4096`) with `srlib.analysis.measure.measure_attention_cost`:
#
# * **time**: CPU time of the process on one thread (`clock="cpu"`), the best of 2 runs after a warm-up call.
#   For LCoA the warm-up also performs the k-means initialisation, which happens only once. On a machine shared
#   with other jobs, CPU time counts only our own work, as in notebook 00;
# * **memory**: the peak of the tensors created during the call (`srlib.analysis.measure.peak_tensor_bytes`, exact for a
#   given PyTorch version).
#
# Absolute numbers depend on the machine, so we compare ratios to NLA. The NLA stores its `L×L` scores and
# weights, as the official modules do.

# %%
stacks = table1_stacks(channels=128, modules=10, seed=0)  # srlib.course.lcoan.study: {"NLA", "LSP", "CoA", "LCoA"}
CH = 128
print({k: f"{sum(p.numel() for p in s.parameters()):,} parameters" for k, s in stacks.items()})

# %% tags=["nbval-ignore-output"]
SIDES = [48, 64]
torch.set_num_threads(1)  # one thread: CPU time = the work of one core
cost = {k: measure_attention_cost(s, SIDES, repeats=2, channels=CH, clock="cpu",
                                  generator=torch.Generator().manual_seed(0)) for k, s in stacks.items()}
torch.set_num_threads(2)
paper_attention_s = {"NLA": 272 - 32, "LSP": 133 - 32, "CoA": 69 - 32, "LCoA": 48 - 32}  # Table I minus backbone
paper_attention_mb = {"NLA": 15668 - 2846, "LSP": 14786 - 2846, "CoA": 5724 - 2846, "LCoA": 5518 - 2846}
print(format_cost_table(cost, SIDES, paper_attention_s, paper_attention_mb))  # ratios to NLA, ours and the paper's
# Timings depend on the machine and its load: no assert on them. Peak tensor memory is exact:
peak = {k: r["peak_bytes"] for k, r in cost.items()}
assert peak["LCoA"][1] < peak["LSP"][1] < peak["NLA"][1]  # at L = 4096
assert peak["LSP"][1] / peak["NLA"][1] < peak["LSP"][0] / peak["NLA"][0]  # the sparse saving grows with L

# %% [markdown]
# What this shows. The paper's ratios are attention-only: Table I minus the backbone's 32 s and 2846 MB, on
# Urban100 with its much larger `L`.
#
# * **Time.** Sharing helps most, as in the paper. The nine CoA modules skip the similarity and the clustering,
#   so LCoA costs a fraction of ten LSP modules. LSP alone saves little at `L = 2304` and about half at
#   `L = 4096`, close to the paper's ratio. The sparse saving grows with `L`: a window query sees
#   `3c = 1152` keys whatever `L` is, which is half the keys at `L = 2304`, 28% at `L = 4096`, and about 1% on
#   an Urban100 image (`L` ≈ 10⁵).
# * **Memory.** Dense CoA (case 4) must keep the `L×L` weights alive for all nine reuses, so under
#   `no_grad` its peak equals NLA's, one `L×L` map at a time. In training, every module's map is stored for
#   the backward pass, and that is where sharing saves. LSP and LCoA only ever hold `L × 3c` weights, plus
#   copies of the keys and values for the three windows. At `L = 2304` that bookkeeping still costs more than
#   the `L×L` map it avoids. At `L = 4096` the sparse version is already smaller. The paper does not say how it
#   measured memory, so only the direction of these ratios is comparable.

# %% [markdown]
# ### 3.2 The overlap rate between shallow and deep attention maps (Fig. 5), defined
#
# Fig. 5 of the paper shows attention maps of a query at a shallow and at a deep layer, and calls the agreement
# a "distribution overlap rate" without defining it. We define it exactly (`srlib.analysis.overlap`).
#
# Let `p_i` and `q_i` be row `i` (query `i`) of two attention maps, each a probability distribution over the
# `L` keys. Then
#
# $$\mathrm{OVL}_i(p, q) = \sum_j \min(p_{ij}, q_{ij}) = 1 - \tfrac12 \sum_j |p_{ij} - q_{ij}| ,$$
#
# the probability mass the two rows have in common (one minus the total-variation distance). It is 1 for
# identical rows and 0 for rows with disjoint support. The overlap rate of two maps is the mean over queries
# (and images). It depends on how sharp both maps are, so we also report the temperature-free **top-k overlap**
# `|topk(p_i) ∩ topk(q_i)| / k`, the share of the `k` most-attended keys the two maps have in common.
#
# A hand-made example with exact values (3 keys):

# %%
p_rows = torch.tensor([[0.5, 0.5, 0.0], [0.2, 0.3, 0.5], [1.0, 0.0, 0.0]])
q_rows = torch.tensor([[0.0, 0.5, 0.5], [0.5, 0.3, 0.2], [1.0, 0.0, 0.0]])
ovl = overlap_rate(p_rows, q_rows)
print("overlap per query:", [round(v, 2) for v in ovl.tolist()], "| mean", round(ovl.mean().item(), 4))
print("top-1 overlap:   ", topk_overlap(p_rows[1:], q_rows[1:], 1).tolist())
torch.testing.assert_close(ovl, torch.tensor([0.5, 0.7, 1.0]))
torch.testing.assert_close(ovl, 1 - 0.5 * (p_rows - q_rows).abs().sum(-1))

# %% [markdown]
# ### 3.3 Fig. 5 with the shipped trained LCoAN
#
# srlib ships `lcoan-small-x2` (README section "Trained small networks"). It is LCoAN with 32 channels and two
# FAUs of 4 residual blocks, one LCoA per unit (16 clusters, windows of 48), trained for
# 650 iterations on 30 photographs. Its first LCoA computes the pattern from its input `X_1`, and the second
# reuses it (Eq. 12). We follow the features through the whole depth, at the inputs of the 8 residual blocks
# and of both LCoAs (10 depths), and compare each with `X_1`, the features the shared pattern comes from:
#
# * **maps**: the overlap rate and top-16 overlap of the parameter-free maps `softmax(cos / 0.1)`, as above
#   (`depth_overlap_curve`);
# * **the pattern itself**: the shallow LCoA, with its trained `conv_match` and centroids, run on the features
#   of every depth (`pattern_agreement`). We count the share of positions that keep their k-means cluster, and
#   the Jaccard overlap (intersection over union) of the 144 keys each query sees (its window and the two adjacent ones). Two random sets
#   of 144 of the 2304 keys overlap by about 0.03.
#
# The inputs are the central 48×48 LR crops of the five evaluation images (Set5, or the scikit-image
# photographs). The control is the same architecture with its random initial weights; its k-means is
# initialised from the first crop.

# %% tags=["nbval-ignore-output"]
probes = centre_crops(eval_set, 48)  # (1, 3, 48, 48) each
nets = {"trained": pretrained("lcoan-small-x2")}  # eval mode, SHA-256 of the weight file checked
torch.manual_seed(0)
nets["untrained"] = build_small("lcoan").eval()
nets["untrained"].body[0].attention[0].kmeans.generator = torch.Generator().manual_seed(0)
depth_names = [n for g in range(2) for n in (*(f"body.{g}.local_body.{b}" for b in range(4)), f"body.{g}.attention.0")]
depth_labels = [f"U{g + 1} {what}" for g in range(2) for what in ("B1", "B2", "B3", "B4", "LCoA")]
SHALLOW, DEEP = depth_names.index("body.0.attention.0"), depth_names.index("body.1.attention.0")
studies = {name: depth_study(net, probes, depth_names, reference=SHALLOW, top_k=16) for name, net in nets.items()}
curves, agreement = {n: c for n, (c, _) in studies.items()}, {n: a for n, (_, a) in studies.items()}
print(f"{len(probes)} crops of {'Set5' if HAVE_SET5 else 'the scikit-image photographs'}; agreement with X_1 "
      f"(input of U1 LCoA)")
print(format_depth_table(curves, agreement, depth_labels))
for name in nets:
    ovl_d = curves[name]["overlap"]
    assert abs(ovl_d[SHALLOW] - 1) < 1e-5 and (ovl_d[: SHALLOW + 1].diff() > 0).all()  # U1: closer to X_1 each block
    assert 0.5 < ovl_d[DEEP] < 1 and agreement[name]["pattern_overlap"][DEEP] > 5 * 0.03  # far above chance
# training makes the deep features drift from X_1, for every crop, and the deep clusters even more
assert (curves["trained"]["per_input"][:, DEEP] < curves["untrained"]["per_input"][:, DEEP]).all()
assert agreement["trained"]["code_agreement"][DEEP] < agreement["untrained"]["code_agreement"][DEEP]

# %%
fig = plot_depth_agreement(curves, agreement, depth_labels, marks=(SHALLOW, DEEP), chance=0.03)
plt.show()

# %% tags=["nbval-ignore-output"]
# numbers from the data-dependent cell above (its asserts back every claim below): not compared by nbval
tr_, un_ = "trained", "untrained"
jac_ = torch.cat([agreement[n_]["pattern_overlap"] for n_ in nets])
src_ = "Set5" if HAVE_SET5 else "the fallback photographs"
display(Markdown(f"""What the trained weights show, in the run stored here ({src_}; other images give other numbers
and the same picture):

* **The paper's premise holds in part.** The features entering the deep LCoA give a map that shares
  {curves[tr_]['overlap'][DEEP]:.2f} of its mass with the map of `X_1` (untrained: {curves[un_]['overlap'][DEEP]:.2f}),
  and {curves[tr_]['topk'][DEEP]:.0%} of the top-16 keys. Reusing the shallow attention is a fair approximation of
  what the same yardstick sees in the deep features.
* **Training makes the features drift**, in the direction of the paper's remark that deep maps are "more randomly
  distributed": the overlap at the deep LCoA is lower than untrained for every crop. The shape of the curve comes
  from the residual structure. Inside a unit the overlap with `X_1` grows block by block towards the LCoA, because
  each block adds to the same stream. A unit returns its input plus a tenth of its branch, so the second unit starts
  again from features close to the first unit's input: the overlap falls back to about its value at the first
  block, then stays flat.
* **The sparse pattern is more fragile than the maps.** Run on the deep features, the trained shallow LCoA puts only
  {agreement[tr_]['code_agreement'][DEEP]:.0%} of the positions into the same cluster as on `X_1` (untrained:
  {agreement[un_]['code_agreement'][DEEP]:.0%}). A cluster code is a hard decision: a small change of a feature can
  move it across a boundary. Away from `X_1` itself, the key sets a query sees overlap by
  {jac_[jac_ < 0.999].min():.2f} to {jac_[jac_ < 0.999].max():.2f} (Jaccard), trained or not, although that is far
  above the chance level of two random key sets. The windows cut the cluster-sorted order at fixed places, so a
  few positions changing cluster shift every window after them."""))

# %% [markdown]
# * **Scale.** This network has two LCoAs, 32 channels and 650 training iterations. The paper's has ten LCoAs
#   with 128 channels, trained for 1.5M iterations. The README's version of this analysis uses another
#   reference (the input of the first *block* rather than `X_1`, the input of the first LCoA) and ten crops, so
#   its curve falls block by block where this one rises towards `X_1`; its numbers are not comparable with these,
#   but it reaches the same two conclusions: sharing the shallow map is a fair approximation, and training
#   lowers the agreement at the deep LCoA. Whether sharing costs PSNR is what Table I measures, and that needs
#   full training.
# %% [markdown]
# ## 4. Training
#
# ### 4.1 Official frozen centroids vs the paper's EMA
#
# The official code initialises the centroids from the first batch it sees and computes an EMA update that it
# never writes back (its `update()` call is commented out), so the centroids stay frozen. `srlib` defaults to
# that behaviour (`ema_update=False`) and offers the paper's update as an option. Here we train the small
# LCoAN twice with the course's one tiny recipe (`srlib.course.tiny_train`, printed below; the same in every
# notebook), on the SunHays80 training photographs with LR made on the fly by MATLAB-compatible bicubic
# (scikit-image's photographs without the data). Both runs use the same initial weights, the same batches,
# and the same k-means initialisation draw (`model.body[0].lcoa.kmeans.generator`). The only difference is
# `ema_update`.
#
# Setup: small preset with 4 FAUs (32 channels, 16 clusters, windows of 48). One change to the paper, said
# here: $\lambda = 0.99$ instead of $0.999$, because a short run with $0.999$ would move the centroids by
# only $1 - 0.999^{t}$ of the way (a few percent), too little to see anything.
#
# A forward hook on the first module's `Kmeans` records, at every training step, the centroids after the call
# and the cluster sizes of the batch. Those sizes are computed with the centroids from before that step's
# update.

# %% tags=["nbval-ignore-output"]
STEPS, DECAY, N_UNITS = TINY_RECIPE["iterations"], 0.99, 4
TRAINED = f"after {STEPS} steps"
print("recipe:", {k: v for k, v in TINY_RECIPE.items() if k not in ("val_every", "ckpt_every")})


def short_run(ema_update):
    torch.manual_seed(0)  # same initial weights for both runs
    net = build_model("lcoan", scale=2, preset="small", n_resgroups=N_UNITS, ema_decay=DECAY, ema_update=ema_update)
    net.body[0].lcoa.kmeans.generator = torch.Generator().manual_seed(0)  # same initialisation draw
    with centroid_log(net.body[0].lcoa.kmeans) as log:  # centroids and cluster sizes at every training step
        result = tiny_train(net)  # the course recipe, same batches for both runs
    return net.eval(), log, result["history"]["train"], result["source"]


runs = {"frozen (code)": short_run(False)[:3], "EMA (paper)": short_run(True)[:3]}
(frozen_net, frozen_log, frozen_hist), (ema_net, ema_log, ema_hist) = runs.values()
init_means = frozen_log["means"][0]  # frozen: the centroids right after the initialisation
assert torch.equal(frozen_log["sizes"][0], ema_log["sizes"][0])  # same init (first codes use pre-update centroids)
assert all(torch.equal(m, init_means) for m in frozen_log["means"])  # official: never moves
for name, (net, log, hist) in runs.items():
    moved = (log["means"][-1] - init_means).norm(dim=-1)[0]
    sizes = log["sizes"][-1]
    print(f"{name:13s}: loss {hist[0]['loss']:.4f} -> {hist[-1]['loss']:.4f} | centroids moved {moved.mean():.3f} "
          f"on average | last batch: {int((sizes == 0).sum())}/16 clusters empty, largest {int(sizes.max())} "
          f"of {int(sizes.sum())}")

# %%
fig = plot_training_runs(runs, init_means, n_clusters=16)
plt.show()

# %% [markdown]
# ### 4.2 The buckets after training *(deep dive)*
#
# Now the buckets on a fixed test input (a 40×40 part of the LR image, `L = 1600`), in eval mode. We compare:
#
# * the codes of the two trained networks;
# * the **centroids alone**: the EMA network's embedding assigned with its initial (frozen) centroids and with
#   its EMA centroids. This isolates the effect of the update from the small difference in the weights;
# * cluster use, and the window recall of each network's own embedding (section 2.3);
# * the sparse patterns themselves: the Jaccard overlap of the key sets each query attends to.

# %% tags=["nbval-ignore-output"]
probe = image[None, :, H // 2 - 20 : H // 2 + 20, W // 2 - 20 : W // 2 + 20]  # (1, 3, 40, 40)
state = {name: first_pattern(net, probe) for name, (net, _, _) in runs.items()}  # codes, embedding, layout, mask
fz, em = state["frozen (code)"], state["EMA (paper)"]
same_codes = (fz["codes"] == em["codes"]).float().mean().item()
ema_unit = F.normalize(em["emb"], dim=-1)
ema_means = ema_net.body[0].lcoa.kmeans.means
same_centroids = assign_clusters(ema_unit, init_means) == assign_clusters(ema_unit, ema_means)
print(f"positions with the same code in both networks:          {same_codes:.1%}")
print(f"same code, EMA network's embedding, init vs EMA centroids: {same_centroids.float().mean().item():.1%}")
print(f"attended key sets, frozen vs EMA network (Jaccard):     {pattern_overlap(fz['mask'], em['mask']).mean():.3f}")
for name, s in state.items():
    sizes = cluster_sizes(s["codes"], 16)[0]
    nb = true_neighbours(s["emb"], 8)
    print(f"{name:13s}: {int((sizes > 0).sum()):2d}/16 clusters used, largest {int(sizes.max())}/{int(sizes.sum())}, "
          f"window recall of 8 true neighbours {window_recall(nb, s['layout']).mean():.3f}")
assert 0 <= same_codes <= 1 and torch.equal(frozen_net.body[0].lcoa.kmeans.means, init_means)

# %% [markdown]
# **What a short run shows, honestly.**
#
# * The mechanics are as described. Frozen centroids stay exactly at their initial values. The EMA centroids
#   move a little further at every step: `1 − λ` of the remaining way to the batch centroid.
# * **The clusters are unbalanced in both runs from the very first batch.** The official initialisation runs
#   k-means on *raw* vectors with dot-product assignment. Long vectors dominate, a few centroids win most
#   positions, and a seed that never wins keeps its raw value, shorter than the unit centroids, so it rarely
#   wins later. The EMA in the code's form leaves the centroid of an empty cluster where it is, so it cannot fix
#   that. With the largest cluster holding a large share of each batch, the windows of 48 cut through a few
#   giant clusters, and the pattern is close to sliding windows over an arbitrary order.
# * The loss curves cannot be told apart. Most codes agree, but a few changed codes shift the sorted order
#   and with it the windows, so the attended key sets agree less than the codes do. The difference grows with
#   the number of steps and with `1 − λ`. Whether the paper's EMA helps the *final* PSNR needs the full run
#   (section 4.4, with `--model-arg ema_update=True`). With λ = 0.999 over 1.5M iterations, the centroids have
#   plenty of time to move.

# %% [markdown]
# ### 4.3 Shallow vs deep maps in the tiny network
#
# Which attention map does a layer have? In LCoAN only the first module computes one. To compare
# the features themselves with one yardstick, we use a parameter-free map for the input `X_m` of each LCoA
# module: `A_m = softmax_j(cos(x_i, x_j) / τ)` with τ = 0.1 (`feature_attention_map`). If the texture
# structure is "stable in the network", as CoA assumes, these maps agree across depth. We compare every layer
# with the first, on the 40×40 test input, before training (same seed) and after the tiny training of section 4.1.

# %% tags=["nbval-ignore-output"]
torch.manual_seed(0)
untrained = build_model("lcoan", scale=2, preset="small", n_resgroups=N_UNITS).eval()
untrained.body[0].lcoa.kmeans.generator = torch.Generator().manual_seed(0)
layer_names = [n for n, _ in frozen_net.attention_modules()]
query = (16, 26)  # a query pixel of the 40x40 test input, for the picture below
per_layer, query_maps, uniform_overlap = {}, {}, {}
for name, net in (("untrained", untrained), (TRAINED, frozen_net)):  # maps softmax(cos / 0.1) of each X_m
    per_layer[name], query_maps[name], uniform_overlap[name] = layer_study(net, probe, layer_names, query, 0.1, 16)
print("layer           | " + " | ".join(per_layer["untrained"]["names"]))
for name, res in per_layer.items():
    print(f"{name:15s} | overlap rate " + " | ".join(f"{v:.3f}" for v in res["overlap"].tolist()))
    print(f"{'':15s} | top-16       " + " | ".join(f"{v:.3f}" for v in res["topk"].tolist()))
print(f"for scale: a uniform map overlaps A_1 by {uniform_overlap[TRAINED]:.3f}; "
      f"random key sets share 16/1600 = {16 / 1600:.3f} of their top 16")
for res in per_layer.values():
    assert res["overlap"][0] == 1 and torch.all((res["overlap"] >= 0) & (res["overlap"] <= 1))
assert_in_spread("05", "tiny lcoan", "overlap_last_trained", per_layer[TRAINED]["overlap"][-1], floor=0.01)
assert_in_spread("05", "tiny lcoan", "overlap_last_untrained", per_layer["untrained"]["overlap"][-1], floor=0.01)

# %%
fig = plot_layer_overlaps(per_layer, uniform_overlap[TRAINED], top_k=16)
plt.show()

# %% [markdown]
# One query, as in Fig. 5: where its map puts weight at the first and at the last unit (after training).

# %% tags=["nbval-ignore-output"]
shown_maps = [query_maps[TRAINED][0], query_maps[TRAINED][-1]]
ovl_q = overlap_rate(shown_maps[0].flatten(), shown_maps[1].flatten()).item()
fig = plot_attention_maps(probe[0], torch.stack(shown_maps), [query, query],
                          titles=["unit 1 (shallow)", f"unit {N_UNITS} (deep), overlap {ovl_q:.2f}"])
plt.show()

# %% tags=["nbval-ignore-output"]
ov_ = load_spread("05")[data_setting()]["tiny lcoan"]  # 3 seeds x 1 and 2 threads, this data setting
tr_s, un_s = ov_["overlap_last_trained"], ov_["overlap_last_untrained"]
drop_ = [u_ - t_ for u_, t_ in zip(un_s["values"], tr_s["values"])]  # same seed and threads: paired
drop_mean = sum(drop_) / len(drop_)
drop_std = (sum((d_ - drop_mean) ** 2 for d_ in drop_) / max(len(drop_) - 1, 1)) ** 0.5
lowers = min(drop_) > 0  # decided by the measured runs, not by this one
display(Markdown(
    f"Reading the numbers. In this small network every unit's input `X_m` is mostly the head's features, because "
    f"each unit adds its branch scaled by 0.1 and the LCoA inside scales by 0.1 again. The untrained maps therefore "
    f"agree strongly across depth: unit {N_UNITS} overlaps `A_1` by {un_s['mean']:.3f} ± {un_s['std']:.3f} (mean ± "
    f"standard deviation over {un_s['n']} runs: seeds × CPU thread counts, `srlib/spread/05.json`). After the "
    f"tiny training it overlaps by {tr_s['mean']:.3f} ± {tr_s['std']:.3f} ({tr_s['min']:.3f} to {tr_s['max']:.3f}; "
    f"this run: {float(per_layer[TRAINED]['overlap'][-1]):.3f}), "
    + (f"lower than untrained in every run, by {drop_mean:.3f} ± {drop_std:.3f}: even {STEPS} steps start to make the "
       f"deep features drift from the shallow ones, the direction of the paper's remark that deep maps get \"more "
       f"randomly distributed\". The overlap stays high, so sharing `A_1` is still a fair approximation here. "
       if lowers else
       f"and the change from untrained ({drop_mean:+.3f} ± {drop_std:.3f}) is not larger than its spread: these "
       f"runs cannot say whether {STEPS} steps move the deep features. ")
    + "The paper's observation is about a *trained* full-size network, whose units have learned to change the "
      "features; section 3.3 showed what the shipped trained network does."))

# %% [markdown]
# ### 4.4 Full training on a GPU
#
# The paper's recipe: DIV2K (800 images), 48×48 LR patches (96×96 HR at ×2), batch 16, Adam (0.9, 0.999, 1e-8), <!-- quoted -->
# learning rate 1e-4 halved every 300 epochs, 1500 epochs. With EDSR's 1000 iterations per "epoch", that is 1.5M <!-- quoted -->
# iterations with milestones every 300k. The paper says "halved after 300 epochs", which could also mean a
# single halving. ×3 and ×4 start from the ×2 weights. Set `SRLIB_RUN_FULL=1` on a CUDA machine to run it from
# here (days on one GPU). Download DIV2K first with `python -m srlib.data.download div2k`. The second command is
# the paper's EMA variant.

# %%
EMA_CMD = paper_command("lcoan", scale=2, out="runs/lcoan_x2_ema") + " --model-arg ema_update=True"
FULL_CMD = paper_training("lcoan", scale=2, also_print=[EMA_CMD])  # runs FULL_CMD with SRLIB_RUN_FULL=1 on CUDA

# %% [markdown]
# ## 5. Evaluation
#
# The tiny networks of part 4 next to bicubic, the shipped trained LCoAN and the EDSR trained with the same
# budget (same features, blocks, data and recipe, no attention), on the default evaluation set (Set5 ×2, or
# the bundled photographs without the data): PSNR/SSIM on Y with a 2-pixel border cropped
# (`srlib.course.quality_table`, the standard protocol). Every network sees whole images, so LCoA clusters
# and attends across the whole image (its memory grows like `L × 3c`, not `L × L`). The paper's LCoAN
# reaches 38.34 dB / 0.9619 on Set5 ×2 (Table II). <!-- quoted -->

# %% tags=["nbval-ignore-output"]
eval_set, eval_name = sdata.default_eval_set(2, "Set5")
shipped_lcoan = shipped("lcoan-small-x2")
q_ = evaluation_table({"tiny LCoAN, frozen centroids (this notebook)": frozen_net,
                       "tiny LCoAN, EMA centroids (this notebook)": ema_net,
                       "LCoAN small, shipped": shipped_lcoan,
                       "EDSR small, shipped (same budget)": shipped("edsr-small-x2")}, eval_set, eval_name,
                      notebook="05", title=f"{eval_name}: PSNR / SSIM on Y, 2-pixel border cropped",
                      stored={"LCoAN small, shipped": 34.47, "EDSR small, shipped (same budget)": 34.75},
                      tiny={"tiny LCoAN, frozen centroids (this notebook)": ("tiny lcoan", "psnr_frozen"),
                            "tiny LCoAN, EMA centroids (this notebook)": ("tiny lcoan", "psnr_ema")})

# %% tags=["nbval-ignore-output"]
fz_, em_ = q_["tiny LCoAN, frozen centroids (this notebook)"], q_["tiny LCoAN, EMA centroids (this notebook)"]
dd_ = load_spread("05")[data_setting()]["tiny lcoan"]["diff_ema_minus_frozen"]  # 3 seeds x 1 and 2 threads
if (dd_["min"] > 0 or dd_["max"] < 0) and abs(dd_["mean"]) > 2 * dd_["std"]:  # same sign, beyond its spread
    ema_verdict = (f"Over {dd_['n']} runs (seeds × CPU thread counts, `srlib/spread/05.json`) the "
                   f"{'EMA' if dd_['mean'] > 0 else 'frozen'} centroids are ahead in every run, by "
                   f"{abs(dd_['mean']):.2f} ± {dd_['std']:.2f} dB: a difference after {STEPS} steps, which says "
                   f"nothing yet about full training.")
else:
    ema_verdict = (f"The two centroid rules differ by {dd_['mean']:+.2f} ± {dd_['std']:.2f} dB (EMA − frozen, "
                   f"{dd_['min']:+.2f} to {dd_['max']:+.2f} over {dd_['n']} runs: seeds × CPU thread counts, "
                   f"`srlib/spread/05.json`): not larger than its own spread, so one run cannot decide.")
sh_, ed_ = q_["LCoAN small, shipped"], q_["EDSR small, shipped (same budget)"]
display(Markdown(
    f"**What the table shows.** After {STEPS} CPU iterations the tiny LCoANs are at {fz_['gain_db']:+.2f} dB "
    f"(frozen centroids) and {em_['gain_db']:+.2f} dB (EMA) from bicubic: the loop runs, the networks are far from "
    f"trained. {ema_verdict} The shipped LCoAN is {sh_['gain_db']:+.2f} dB above bicubic, the same-budget EDSR "
    f"{ed_['gain_db']:+.2f} dB: at this scale the network without attention is "
    f"{'ahead' if ed_['psnr'] > sh_['psnr'] else 'behind'} by {abs(ed_['psnr'] - sh_['psnr']):.2f} dB."))

# %% [markdown]
# One crop side by side: bicubic, the tiny LCoAN (frozen centroids), the shipped LCoAN and HR, with each
# method's PSNR on the whole image.

# %% tags=["nbval-ignore-output"]
crop_item = eval_set[2 if eval_name == "Set5 x2" else 0]  # Set5: the butterfly
fig, psnr_crop = sr_crops(crop_item["lr"], crop_item["hr"], {  # 8-bit results, as evaluated
    "tiny LCoAN": frozen_net, "LCoAN shipped": shipped_lcoan})
print(crop_item["name"], {k: round(float(v), 2) for k, v in psnr_crop.items()})
assert psnr_crop["LCoAN shipped"] > psnr_crop["bicubic"]  # the trained network beats bicubic on this image too
plt.show()

# %% [markdown]
# ## 6. Paper vs code
#
# `srlib` follows the official code wherever they differ, so official checkpoints load and behave as trained.
# Options expose the paper's version where that makes sense.
#
# | # | topic | paper | official code (and `srlib`) |
# |---|---|---|---|
# | 1 | centroid updates | EMA, λ = 0.999, "learned online" (Eq. 10) <!-- quoted --> | EMA computed, never written back: frozen after the first batch. `ema_update=True` applies it |
# | 2 | initialisation | not described | first forward call (train *or* eval): `K` of the `B·L` raw vectors by `randperm`, 10 k-means iterations on raw, unnormalised vectors; an empty cluster keeps its raw seed; all rounds identical; the CoA modules' `kmeans` is never initialised |
# | 3 | EMA form | plain sums of the assigned queries and keys (Eq. 10) | `λu + (1−λ)·normalize(Σx)` (dormant). `ema_target="sum"` is Eq. 10 literally |
# | 4 | assignment | nearest centroid on the unit sphere (Eq. 8) | argmax of the dot product with the stored, non-normalised centroids |
# | 5 | Q, K, V | `W_q`, `W_k`, `W_v` 1×1 convs and an output `W_o` (Eqs. 1-5) | one shared 3×3 `conv_match` as query and key, score `q·k/‖k‖` (keys normalised only), 1×1 value conv, no `W_o` |
# | 6 | sparsity | keys of the same cluster (Eq. 7) | cluster-sorted windows of 384 plus the previous and next window (cyclic), padding by duplicating the last sorted rows (Fig. 1b describes windows) |
# | 7 | ties | n/a | unstable `sort` in the code; `srlib` sorts stably (reproducible) |
# | 8 | β (Eq. 12) | a scaling parameter | `res_scale` = 0.1, and the unit scales its whole branch by 0.1 again |
# | 9 | what CoA reuses | attention weights `A_s` | layout and weights, not detached: gradients of all nine CoA modules flow into the first `conv_match` |
# | 10 | CoA parameters | "the two linear transformations (Q and K) can be ignored" | every CoA module keeps and evaluates its `conv_match`: 9 × 147,584 = 1,328,256 unused parameters (8.5%). `srlib` keeps them for checkpoints but skips the computation |
# | 11 | size | 15.67M at ×2, ×3, ×4 <!-- quoted --> | 15,668,484 at ×2 (section 2.6); ×3 and ×4 differ by their upsamplers (exercise 05.3) |
# | 12 | blocks | RCAB (residual channel attention blocks), all kernels 3×3 | "RCAB" without channel attention, `res_scale` ignored inside; a separate `m_conv` after the units; an unused parameter `a` |
# | 13 | rounds | one k-means round | one round (`n_hashes` default 1) |

# %% [markdown]
# ## 7. Exercises
#
# Worked solutions are in `notebooks/solutions/05_lcoan_solutions.ipynb` (a teacher can hand out this
# notebook without that folder). Each checked exercise has a cell: replace `None` by your answer and run it.
#
# **05.1** ★ warm-up — **The EMA time constant.** After `t` EMA steps towards a fixed target, a centroid has
# moved a fraction $1 - \lambda^t$ of the way. How many steps does it take with $\lambda = 0.999$ (the
# paper's value) to move half of the way? Give the smallest whole number.

# %%
answer_05_1 = None  # your answer: a whole number of steps
check("05.1", answer_05_1)

# %% [markdown]
# **05.2** ★★ practice — **The overlap rate by hand.** For the two attention rows `p = [0.1, 0.6, 0.3]` and
# `q = [0.4, 0.4, 0.2]`, compute the overlap rate $\mathrm{OVL}(p, q) = \sum_j \min(p_j, q_j)$ of section 3.2,
# then check it against `1 - (1/2) sum_j |p_j - q_j|`.

# %%
answer_05_2 = None  # your answer: a number
check("05.2", answer_05_2)

# %% [markdown]
# **05.3** ★★ practice — **Dead parameters.** Every CoA module of the paper's LCoAN keeps a `conv_match` it
# never uses (section 2.6). How many parameters does the ×4 network (`LCoANConfig(scale=4)`) hold in total?
# Build it on the `meta` device and count.

# %%
answer_05_3 = None  # your answer: a whole number
check("05.3", answer_05_3)

# %% [markdown]
# **05.4** ★★★ challenge — **Fix the collapse.** Initialise the centroids by spherical k-means on *normalised*
# vectors (`init_centroids(F.normalize(x, dim=-1), ...)`) and compare cluster use and window recall with the
# official initialisation, on the features of section 2.1 and inside the training run of section 4.1. Is an
# empty cluster ever revived by the EMA? (Open question: worked answer in the solutions.)
#
# **05.5** ★★★ challenge — **Fig. 5 on a longer-trained network.** Train with the command of section 4.4 (or
# longer on CPU with the small preset), then recompute `depth_overlap_curve` as in section 3.3. Do deep maps
# drift further? (Open question.)
#
# **05.6** ★★ practice — **Fig. 3a at equal cost.** In section 2.3, give LSH with `R` rounds windows of
# `384 / R`, so every method attends to the same number of keys. Which hash wins now? (Open question.)
#
# **05.7** ★★★ challenge — **CoA gradients.** Check with `torch.autograd.grad` that the loss of a CoA
# module's output reaches the first module's `conv_match` weights, and that the CoA module's own `conv_match`
# gets no gradient. (Open question with a code answer in the solutions.)
