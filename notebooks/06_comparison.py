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
# # 06 · Six non-local attentions side by side
#
# Notebooks 00-05 built each mechanism from its paper. Here all six run on **the same image features**, with
# the same query pixels, under one cost harness. What the papers claim about efficiency, and what this
# notebook checks:
#
# * **NLSN** (Mei et al., CVPR 2021, Table 5): dense non-local attention (NLA) on a 100×100×64 map costs
#   16.0 GFLOPs; non-local *sparse* attention (NLSA) 0.9-4.3 GFLOPs for 1-8 hash rounds, "the most efficient
#   single round NLSA-r1 has a similar computational cost of convolution".
# * **ENLCN** (Xia et al., AAAI 2022, Table 4): efficient non-local attention (ENLA) with `m` random features
#   costs 0.01-1.31 GFLOPs; the same table prints NLA at **25.60** GFLOPs (not 16.0: Section 3 says why).
# * **DLSN** (Su et al., TPAMI, Sec. 3.4): global learnable attention (GLA) scores in
#   `O(2hwlc + hwl²)`, "asymptotic linear" in the image size.
# * **HSPAN** (Su et al., TIP, Sec. III-C): high-similarity-pass attention (HSPA) gives each query a *sparse*
#   distribution; top-k makes the soft thresholding cheaper than a full sort.
# * **LCoAN** (Zhao et al., Table I): the learnable sparse pattern (LSP) halves the attention time of NLA and
#   sharing its weights across layers (CoA) cuts it by ~75%.
#
# Plan: (1) one image, six maps for the same query; (2) sparsity: how many keys carry 90% of a query's
# weight; (3) cost: the papers' FLOP tables and ours; (4) time and memory measured here at small sizes, and
# the full-size table from `benchmarks/harness.py`; (5) a map of the design space; (6) exercises.

# %%
import math
from pathlib import Path

import matplotlib.pyplot as plt
import skimage.data
import torch
from torch.utils.flop_counter import FlopCounterMode

from srlib.analysis.flops import attention_flops_table, format_flops_table, paper_flops_comparison
from srlib.analysis.bench import bench_cases, fit_slopes, markdown_table, measure, read_csv
from srlib.viz.plots import plot_scaling
from srlib.config import REPO_ROOT, data_dir
from srlib.data import BenchmarkDataset, available_benchmarks, imresize, load_image
from srlib.analysis.maps import patch_descriptors
from srlib.viz import plot_attention_maps
from srlib.viz.explorer import MECHANISMS, default_knobs, prepare_attention

torch.set_num_threads(2)
_ = torch.manual_seed(0)

# %% [markdown]
# ## 1. One image, six attention maps for the same query
#
# The scene is notebook 00's: a 64×64 low-resolution crop of Urban100 `img_014` (a facade) when the benchmark
# data is there, else scikit-image's `brick` wall (offline fallback). Both have repeated structure.

# %% tags=["nbval-ignore-output"]
if "Urban100" in available_benchmarks(scale=4):
    urban = BenchmarkDataset("Urban100", 4)
    lr = urban[urban.names.index("img_014")]["lr"]  # (3, 256, 256) RGB in [0, 1]
    image = imresize(lr[:, 16:144, 64:192], 0.5).clamp(0, 1)  # 128 x 128 crop -> 64 x 64
    source = "Urban100 img_014, x4 LR, crop [16:144, 64:192] shrunk x0.5"
    queries = [(33, 7), (4, 56)]
    query_names = ["window", "flat sky"]
else:
    brick = load_image(Path(skimage.data.__file__).parent / "brick.png", allow_gray=True)  # (3, 512, 512)
    image = imresize(brick[:, :256, :256], 0.25).clamp(0, 1)  # 256 x 256 crop -> 64 x 64
    source = "scikit-image brick (offline fallback), crop [0:256, 0:256] shrunk x0.25"
    queries = [(14, 12), (26, 26)]
    query_names = ["mortar joint", "flat brick face"]
print("data root:", data_dir())
print("scene:", source)
assert image.shape == (3, 64, 64) and 0 <= image.min() and image.max() <= 1

# %% [markdown]
# **Features.** Untrained networks have no notion of similarity, so (as in notebook 00) the features are the
# unit-norm 5×5 colour patch around each pixel (`srlib.viz.patch_descriptors`, 75 channels): the score of
# two pixels is then the cosine of their patches, the similarity of classic non-local means.
#
# **Modules.** Every mechanism is the real `srlib` module built by `srlib.viz.explorer.demo_module` with its
# paper's settings, and with the query/key embedding set to the identity divided by a temperature
# τ = 0.05, so that the score of two unit features is `cos / τ` (ENLA normalises and multiplies by its own
# amplification `k = 6` instead, ENLCN Eq. 3). `prepare_attention` runs each module once and
# `AttentionState.query` cuts out the weights that one query gives to all `L = 4096` positions.

# %%
H, W = image.shape[-2:]
L = H * W
feats = patch_descriptors(image, patch_size=5)  # (1, 75, H, W), unit norm along dim 1
assert feats.shape == (1, 75, H, W)
states = {m: prepare_attention(m, feats, temperature=0.05, seed=0) for m in MECHANISMS}
for m in MECHANISMS:
    print(f"{m:5s} {default_knobs(m)}")

# %% [markdown]
# **Two rows by hand.** For NLA the row of query `p` is `softmax_j(x_p · x_j / τ)` (NLSN Eq. 4); for HSPA it
# is the soft thresholding of the same scores (HSPAN Eqs. 9-12): sort the scores `s_(1) ≥ s_(2) ≥ …`, keep the
# largest `T` for which `k·s_(k) + 1 > Σ_{j≤k} s_(j)` (Eq. 11), subtract `τ_ST = (Σ_{j≤T} s_(j) − 1)/T`
# (Eq. 12) and clip at 0 (Eq. 9). Both are checked against the explorer's maps.

# %% tags=["nbval-ignore-output"]
x_seq = feats.flatten(2)[0].T  # (L, 75)
p = queries[0][0] * W + queries[0][1]
scores = x_seq @ x_seq[p] / 0.05  # (L,): s_pj = cos(patch_p, patch_j) / tau
nla_row = torch.softmax(scores, dim=0)  # Eq. (4)
s_sorted = scores.sort(descending=True).values
k = torch.arange(1, L + 1, dtype=scores.dtype)
T = int((k * s_sorted + 1 > s_sorted.cumsum(0)).sum())  # Eq. (11)
tau_st = (s_sorted[:T].sum() - 1) / T  # Eq. (12)
hspa_row = (scores - tau_st).clamp_min(0)  # Eq. (9)
torch.testing.assert_close(nla_row.view(H, W), states["NLA"].query(queries[0])["map"])
torch.testing.assert_close(hspa_row.view(H, W), states["HSPA"].query(queries[0])["map"])
print(f"query {queries[0]}: NLA gives weight to all {int((nla_row > 0).sum())} keys; "
      f"HSPA to {T} (its support), both sum to 1")

# %% [markdown]
# The maps, same query, six mechanisms (bright = large weight; the colour is the square root of weight / the
# map's largest weight, so that weights 100× below the peak still show):

# %%
results = {}
for qi, (yx, qname) in enumerate(zip(queries, query_names)):
    rows = [states[m].query(yx) for m in MECHANISMS]
    results[yx] = dict(zip(MECHANISMS, rows))
    fig = plot_attention_maps(image, [r["map"] for r in rows], [yx] * len(MECHANISMS),
                              titles=[f"{m}: 90% in {r['keys_for_90']} keys"
                                      for m, r in zip(MECHANISMS, rows)],
                              ncols=4, panel_size=2.6)
    fig.suptitle(f"query {qi + 1} ({qname}) at {yx}")
    plt.show()
for yx in queries:
    for m, r in results[yx].items():
        torch.testing.assert_close(r["map"].sum(), torch.tensor(1.0))  # every map is a distribution

# %% [markdown]
# Reading the panels:
#
# * **NLA** spreads the weight over every similar position in the image, near or far.
# * **NLSA, GLA, LCoA** (bucketed) can only see the positions that share the query's chunk after sorting by
#   hash code / cluster, plus the two neighbouring chunks: `3 × 144` (`3 × 128` for GLA) candidates per
#   round. Similar positions that land in another bucket are invisible (LCoAN's complaint about LSH:
#   "LSH may mistakenly scatter some related elements into different hash buckets"). GLA's embedding ends
#   in a ReLU (official code), which here clips the negative half of every patch descriptor: its similarity
#   is cruder than the others' and its map noisier. (Its learned score, untrained, is switched off.)
# * **ENLA** approximates the softmax of `k·cos` with `k = 6`: a much *flatter* distribution than
#   `cos / 0.05` (`= 20·cos`), and a random-feature estimate of it, so some weight lands everywhere.
# * **HSPA** keeps only the positions whose score passes the threshold: an exactly sparse map.
#
# Where the bucketed maps put their weight, and the candidates they had (query 1):

# %%
yx = queries[0]
fig, axes = plt.subplots(1, 3, figsize=(9, 3.2))
for ax, m in zip(axes, ("NLSA", "GLA", "LCoA")):
    r = results[yx][m]
    ax.imshow(r["candidates"].float().numpy(), cmap="Greys", vmin=0, vmax=2.5, interpolation="nearest")
    im = ax.imshow(r["map"].clamp_min(1e-12).log10().numpy(), cmap="inferno", vmin=-6, vmax=0,
                   alpha=(r["map"] > 1e-6).float().numpy(), interpolation="nearest")
    ax.plot(yx[1], yx[0], "cx", ms=9, mew=2)
    ax.set_title(f"{m}: {r['n_candidates']} candidates", fontsize=9)
    ax.set_xticks([])
    ax.set_yticks([])
fig.colorbar(im, ax=axes, fraction=0.02, pad=0.02).set_label("log10 weight")
fig.suptitle("grey: keys the query can reach (any round); colour: weights above 1e-6", fontsize=9)
plt.show()
for m in ("NLSA", "GLA", "LCoA"):
    r = results[yx][m]
    assert bool((r["map"][~r["candidates"]] == 0).all())  # no weight outside the reachable keys
    rounds = len(r["bucket_sizes"])
    assert r["n_candidates"] <= rounds * 3 * r["knobs"].get("chunk_size", r["knobs"].get("window_size"))

# %% [markdown]
# ### Explore it yourself
# All six mechanisms on this scene, with the same features and temperature as above. Pick the mechanism,
# move the query (sliders, or click on the picture) and turn the knob that matters for each: hash rounds and
# chunk size (NLSA, GLA), random features `m` and amplification `k` (ENLA), top-k and exact/truncated
# (HSPA), clusters and window (LCoA). The numbers under the picture (keys carrying 90% of the weight,
# support, bucket size) are those of Section 2, for one query; `tests/test_viz_explorer.py` checks them.

# %% tags=["nbval-ignore-output"]
from srlib.viz.explorer import AttentionExplorer

explorer = AttentionExplorer(image, mechanisms=MECHANISMS, query=queries[0], temperature=0.05, seed=0)
torch.testing.assert_close(explorer.result["map"], results[queries[0]][MECHANISMS[0]]["map"])
assert explorer.state()["mechanism"] == MECHANISMS[0] and abs(explorer.state()["map_sum"] - 1) < 1e-4
explorer

# %% [markdown]
# ## 2. Sparsity: how many keys carry 90% of the weight?
#
# Softmax gives every key a positive weight, so "support" (keys with weight > 0) says little. A measure that
# works for all six: the fewest largest weights whose sum reaches 90% (`srlib.viz.explorer.keys_carrying`).
# Below, for 64 query pixels on a regular grid: the median of that number, and the median support.

# %% tags=["nbval-ignore-output"]
grid = [(y, x) for y in range(4, H, 8) for x in range(4, W, 8)]
assert len(grid) == 64
sparsity = {}
for m in MECHANISMS:
    rows = [states[m].query(yx) for yx in grid]
    k90 = torch.tensor([r["keys_for_90"] for r in rows], dtype=torch.float64)
    support = torch.tensor([r["support"] for r in rows], dtype=torch.float64)
    sparsity[m] = (k90, support)
print(f"{'mechanism':>9} {'keys for 90% (median)':>22} {'(25%-75%)':>12} {'support (median)':>17}  of L = {L}")
for m, (k90, support) in sparsity.items():
    lo, hi = k90.quantile(0.25).item(), k90.quantile(0.75).item()
    print(f"{m:>9} {k90.median().item():22.0f} {f'{lo:.0f}-{hi:.0f}':>12} {support.median().item():17.0f}")
assert (sparsity["NLA"][1] == L).all() and (sparsity["ENLA"][1] == L).all()  # softmax / exp: full support
assert (sparsity["HSPA"][1] < L).all()  # soft thresholding: exact zeros
for m in ("NLSA", "GLA", "LCoA"):  # bucketed: never more than R x 3c keys
    assert (sparsity[m][1] <= states[m].details["score"].shape[1] * 3 * 144).all()
assert sparsity["HSPA"][0].median() <= sparsity["NLA"][0].median()

# %% [markdown]
# HSPA at τ = 0.05 keeps almost nothing but the query itself. Unlike softmax, soft thresholding is **not**
# indifferent to the scale of the scores: it keeps the keys whose score lies within about 1 of the best one,
# so with scores `cos / τ` it keeps the patches with `cos` within about τ of the best match. In a trained
# HSPAN the embeddings learn that scale. The support of the same two queries as τ grows:

# %% tags=["nbval-ignore-output"]
taus = [0.05, 0.1, 0.2, 0.5]
print(f"{'query':>18} " + " ".join(f"{f'tau={t}':>10}" for t in taus) + "   (HSPA support; NLA keys for 90%)")
for yx, qname in zip(queries, query_names):
    hspa = [prepare_attention("HSPA", feats, temperature=t).query(yx)["support"] for t in taus]
    nla = [prepare_attention("NLA", feats, temperature=t).query(yx)["keys_for_90"] for t in taus]
    print(f"{qname:>18} " + " ".join(f"{h:>4d}; {n:>4d}" for h, n in zip(hspa, nla)))
    assert hspa == sorted(hspa) and nla == sorted(nla)  # both widen as the scores shrink

# %% [markdown]
# ENLA needs by far the most keys: its kernel estimate of `exp(k·cos)` with `k = 6` is flat (a larger `k`,
# the paper's "amplification", sharpens it; its contrastive loss, trained, pushes irrelevant scores down).
# HSPA's support is its whole story: the threshold cuts everything below it. The bucketed maps are sparse
# *by construction* (they never see most keys), not by their weights.

# %% [markdown]
# ## 3. Cost, analytically: the papers' tables and ours
#
# One accounting for everything (`srlib.attention.cost`): **one multiply-add = 2 FLOPs**, only matrix
# products counted (scores, weighted sums, hash projections, the learned-score MLP); softmax, exponentials,
# normalisation, sorting and top-k are element-wise or comparison work and left out, as the papers leave
# them out. The papers' setting: a 100×100 map, 64 channels.

# %%
print(f"{'table':14s} {'row':11s} {'paper':>6} {'ours':>7} {'diff':>7}  our setting")
for r in paper_flops_comparison():
    print(f"{r['table']:14s} {r['row']:11s} {r['paper']:6.2f} {r['ours']:7.3f} {100 * r['diff']:+6.1f}%  "
          f"{r['setting']}")

# %% [markdown]
# * **NLA: 16.0 vs 25.6.** Both papers count `2·L²·(d + d_v)` (scores, then the weighted sum of values) with
#   `L = 10⁴` and `d_v = 64`; NLSN embeds queries and keys in `d = C/4 = 16` channels (its official
#   reduction), ENLCN in `d = 64` ("both input and output channels are 64"):
#   `2·10⁸·(16 + 64) = 16.0` and `2·10⁸·(64 + 64) = 25.6` GFLOPs. Same accounting, different embeddings.
# * **ENLCN Table 4** is reproduced within 3% in every row, including its NLSA-r4 (5.08: 64-channel
#   embeddings, the paper's Eq. 7 hash on 128 directions, no padding).
# * **NLSN Table 5's NLSA rows are not**: what the official code computes (queries attend to 3 chunks of 144
#   keys) grows by 0.71 GFLOPs per round, the table by ~0.49 per round on top of ~0.41; only the r2 row
#   happens to agree. The table sits between a 2-chunk and a 3-chunk count (tests/test_cost.py).
#
# All six mechanisms in one table, each with the same embedding width `d = 16` (so that the rows differ in
# *which pairs are scored*, not in widths), next to one 3×3 convolution:

# %%
table = attention_flops_table(100, 100, 64)
print(format_flops_table(table, digits=3))

# %% [markdown]
# The counts are what the modules compute. One check with PyTorch's own counter on a small GLA module
# (`include_embeddings=True` adds the convolutions that `FlopCounterMode` also sees):

# %%
gla_case = bench_cases()["GLA-r3"]
gla = gla_case.build(64, seed=0)
with FlopCounterMode(display=False) as counter, torch.no_grad():
    gla(torch.randn(1, 64, 16, 16, generator=torch.Generator().manual_seed(0)))
analytic = gla_case.flops(16, 64, include_embeddings=True)
print("FlopCounterMode:", counter.get_total_flops(), " analytic:", analytic.total, analytic.terms)
assert counter.get_total_flops() == analytic.total

# %% [markdown]
# What the table says:
#
# * **HSPA costs exactly what NLA costs**: its top-k saves *comparisons* in the normaliser, not
#   multiply-adds; the official code even multiplies the dense, mostly-zero weight matrix with the values.
#   HSPA is about *which* keys get weight, not about cost.
# * **ENLA** is the cheapest by far: linear in `L` with a small constant (`m` features instead of `L` keys).
# * **NLSA / GLA / LCoA** pay `3 × chunk` keys per query per round; GLA's learned score adds an MLP per
#   sorted row (the `hwl²` of DLSN Sec. 3.4), so GLA-r3 costs more than NLSA-r4 here.
# * **LCoA** computes its pattern once; each sharing layer (CoA) only aggregates its values: 0.56 instead of
#   0.74 GFLOPs per layer (the hash, 0.04, is small; the scores, 0.14, are saved).

# %% [markdown]
# ## 4. Time and memory, measured
#
# `srlib.bench.measure` runs one benchmark case (`srlib.bench.bench_cases`: the same modules and settings as
# the table above, random 64-channel maps) and reports the median time of 3 forward passes after a warm-up,
# the analytic FLOPs and the peak memory. In this notebook the memory is the peak of the tensors that Python
# code holds (`memory="tensor"`, `srlib.viz.peak_tensor_bytes`): exact and deterministic, but blind to what
# happens *inside* one PyTorch call. Sizes are small (sides 16-40, `L` = 256-1600) so that the notebook stays
# fast on a laptop CPU; timings depend on the machine and its load.

# %% tags=["nbval-ignore-output"]
del states, results  # the maps of Sections 1-2 are no longer needed: free their memory for the measurements
torch.set_num_threads(1)  # one thread: fewer disturbances on a shared machine
sides = [16, 24, 32, 40]
names = ["NLA-map", "NLA-sdpa", "NLSA-r1", "NLSA-r4", "ENLA-m128", "GLA-r3", "HSPA-k128", "LCoA-LSP",
         "LCoA-4xCoA"]
small = [measure(n, s, "forward", repeats=3, warmup=1, memory="tensor") for n in names for s in sides]
torch.set_num_threads(2)
print(markdown_table(small))

# %% [markdown]
# The memory column is deterministic, so its slopes are checked: dense `NLA-map` and `HSPA` hold `L × L`
# matrices (slope 2 in `L`), the others grow linearly (slope ≈ 1; the small sizes of the bucketed cases
# include constant terms such as the hash directions, hence slopes a little below 1).

# %%
mem_slopes = fit_slopes(small, "peak_mib")
print({name: round(mem_slopes[(name, "forward")], 1) for name in names})
assert 1.8 < mem_slopes[("NLA-map", "forward")] < 2.1 and 1.8 < mem_slopes[("HSPA-k128", "forward")] < 2.1
for name in ("NLSA-r1", "NLSA-r4", "ENLA-m128", "GLA-r3", "LCoA-LSP", "LCoA-4xCoA"):
    assert 0.6 < mem_slopes[(name, "forward")] < 1.2, name

# %% [markdown]
# `NLA-sdpa` looks linear here too, but that alone proves nothing: the tensor tracker cannot see inside
# `scaled_dot_product_attention`. Whether that call really avoids the `L × L` matrix is a question for the
# process's resident memory, which the full-size benchmark measures (next section). It does now, but it did
# not at first: given 3-D inputs, or queries and values of different widths (16 vs 64 here), PyTorch quietly
# takes its *math* fallback, which builds the whole matrix. `srlib.attention.nla.fused_softmax_attention`
# adds the heads dimension and pads the narrower side with zero channels (exact: a zero channel adds nothing
# to `q · k`); `benchmarks/README.md` has the before/after numbers. The time panel below is the same data:

# %% tags=["nbval-ignore-output"]
fig, axes = plt.subplots(1, 2, figsize=(12, 4.3))
plot_scaling(small, "time_median_s", "forward", ax=axes[0], title="forward time, this machine, small sizes")
plot_scaling(small, "peak_mib", "forward", ax=axes[1], title="peak tensor memory (Python-visible)")
plt.show()

# %% [markdown]
# ### The full-size benchmark
#
# `python benchmarks/harness.py` runs every case at `L = 50² … 200²`, forward and forward+backward, each case
# in its own process, with the process's **resident** peak memory (everything, including the inside of
# fused kernels; on CUDA `torch.cuda.max_memory_allocated`), and writes `benchmarks/results/<machine>.csv`,
# a markdown table and plots. Below: the results committed with the repository, labelled with the machine
# they come from (not this one, unless you re-ran the harness here).

# %% tags=["nbval-ignore-output"]
results_dir = REPO_ROOT / "benchmarks" / "results"
result_files = sorted(results_dir.glob("*.csv"))
print("result files:", [f.name for f in result_files])
for f in result_files:  # one file per machine; the .md next to it names the machine in its header
    header = f.with_suffix(".md").read_text().splitlines()[2] if f.with_suffix(".md").is_file() else ""
    rows = read_csv(f)
    print(f"\n== {f.stem} ==\n{header}\n")
    print(markdown_table(rows))
    assert {r["case"] for r in rows} >= {"NLA-map", "NLSA-r4", "ENLA-m128", "GLA-r3", "HSPA-k128", "LCoA-LSP"}
full = read_csv(result_files[0]) if result_files else []

# %% tags=["nbval-ignore-output"]
if result_files:
    shown = ["NLA-map", "NLA-sdpa", "NLSA-r1", "NLSA-r4", "NLSA-r8", "ENLA-m16", "ENLA-m256", "GLA-r3",
             "HSPA-k128", "LCoA-LSP", "LCoA-4xCoA"]
    fig, axes = plt.subplots(2, 2, figsize=(13, 9))
    for i, mode in enumerate(("forward", "forward+backward")):
        plot_scaling(full, "time_median_s", mode, cases=shown, ax=axes[i][0], title=f"{mode}: time")
        plot_scaling(full, "peak_mib", mode, cases=shown, ax=axes[i][1], title=f"{mode}: resident peak memory")
    fig.suptitle(f"benchmarks/results/{result_files[0].name}", fontsize=9)
    fig.tight_layout()
    plt.show()

# %% [markdown]
# How to read the full-size numbers (`cpu-amd-epyc-1t`: one thread of a shared 2-core AMD EPYC; the times
# are noisy, the slopes and the memory are not):
#
# * **Dense attention is quadratic in time whatever the implementation** (`NLA-map`, `NLA-sdpa`, `HSPA`:
#   slope ≈ 2). In memory, the explicit map is quadratic (770 MiB at 100², 3.9 GB at 150²; 200² is skipped,
#   it would need 12 GB) while the fused `NLA-sdpa` is linear (17 MiB at 100², 69 MiB at 200²) and also
#   faster: streaming the matrix saves memory traffic, not arithmetic.
# * **HSPA needs even more memory than the explicit NLA** (1.6 GB at 100²): the official soft thresholding
#   keeps the dense scores, a top-k copy and the dense weights. Its price is the sparsity of its output, not
#   its speed.
# * **The bucketed mechanisms and ENLA are linear** (slope ≈ 1). The crossover with dense attention comes
#   early: at 50² (2,500 positions) NLSA-r1 and ENLA are already faster than the fused dense attention, and at
#   200² NLSA-r4 is ~6× faster than `NLA-sdpa` and ENLA-m128 ~50×.
# * **ENLA is the cheapest by an order of magnitude**, as its FLOPs say; **LCoA-LSP** costs about NLSA-r1
#   (one k-means "round"), and **four LCoA layers sharing one pattern** (`LCoA-4xCoA`) cost about 1.3× one
#   layer, not 4×: LCoAN's point.
# * Forward+backward roughly doubles to triples everything; the memory of the bucketed cases grows with the
#   rounds (each round keeps its gathered keys and values for the backward pass).

# %% [markdown]
# ## 5. The design space
#
# Every mechanism is the same pipeline, *embed → choose keys → score → normalise → aggregate*, with one or
# two stages changed:
#
# | mechanism (paper) | which keys does a query see | how scored | how normalised | what is shared | cost per query (`L` positions) |
# |---|---|---|---|---|---|
# | NLA (NLSN Eq. 4; Wang et al.) | all `L` | `θ(x_i)ᵀφ(x_j)` | softmax over all keys | nothing | `O(L·d)` time; `O(L)` memory per query, `O(L²)` if the map is stored |
# | NLSA (NLSN Eqs. 7-11) | own chunk + 2 neighbours after sorting by **spherical-LSH** code, `R` rounds | `x_iᵀ x_j / ‖x_j‖` (θ = φ) | softmax in the bucket; rounds weighted by their log-sum-exp (Eq. 11) | nothing | `O(R·3c·d)` |
# | ENLA (ENLCN Eqs. 3-6) | all `L`, never one by one | `exp(k·cos)` **approximated** by positive random features `φ(q)ᵀφ(k)` | kernel normaliser `D⁻¹` (Eq. 6); contrastive loss sharpens (training) | `φ(K)ᵀV` summary shared by all queries | `O(m·d)` |
# | GLA (DLSN Eqs. 8-18) | as NLSA, with **super-bit LSH** (orthogonal directions) | dot product **+ learned score** `s_l` (an MLP, Eq. 11) | softmax in the bucket; rounds as NLSA (official) | nothing | `O(R·(3c·d + c·C + c²))` |
# | HSPA (HSPAN Eqs. 7-12) | all `L` | `θ(x_i)ᵀφ(x_j)` | **soft thresholding** (sparsemax): exact zeros below a threshold; top-k search | nothing | `O(L·d)` (as NLA), `O(L log k)` comparisons |
# | LCoA (LCoAN Eqs. 6-12) | own window + 2 neighbours after sorting by **nearest k-means centroid** | as NLSA | softmax in the window | **the weights**: later layers reuse the first layer's pattern and weights (CoA) | LSP `O(K·d + 3c·d)`; each CoA layer `O(3c·C)` |
#
# Read by stage:
#
# * **which keys**: everything (NLA, HSPA, ENLA) or a bucket picked by a hash: random (NLSA), random but
#   orthogonal (GLA), learned (LCoA). Only the hash differs between the three bucketed mechanisms; the
#   sort-chunk-attend machinery is one module in `srlib` (`srlib.attention.buckets`).
# * **how scored**: a dot product everywhere, except GLA's learned correction and ENLA's kernel
#   approximation.
# * **how normalised**: softmax, except HSPA (sparsemax) and ENLA (kernel normaliser).
# * **how shared**: only LCoA shares attention across layers; ENLA shares a key-value summary across queries.
# * **cost**: quadratic (NLA, HSPA) or linear (the rest), with very different constants; memory follows time
#   unless the dense map is streamed (fused attention kernels).

# %% [markdown]
# ## 6. Exercises
#
# 1. Re-run Section 1 with `temperature=0.1` and `0.02`. Which mechanisms' maps change, and how does the
#    90%-mass count of NLA and HSPA move? (The explorer of Section 1 does this interactively.)
# 2. Build ENLA with `amplification=20` (`prepare_attention("ENLA", feats, amplification=20)`): compare its
#    map with NLA's at `τ = 0.05`. Why does it still differ, and what does `n_features` change?
# 3. In `attention_flops_table`, find the side `s` at which NLSA-r4 becomes cheaper than NLA (with `d = 16`).
#    Does the measured crossover in the full-size benchmark agree? What makes it differ?
# 4. HSPA with `sparse_aggregate=True` in `srlib.attention.cost.hspa_flops`: how much could a sparse
#    aggregation save at 100×100? Why does the score computation still dominate?
# 5. LCoA with `n` layers: write the FLOPs per layer as a function of `n` and find the limit. Compare with the
#    time saving LCoAN Table I reports (272 s → 48 s for the attention-equipped networks).
# 6. Run `python benchmarks/harness.py --sizes 50 100 --cases NLA-map NLA-sdpa --modes forward` and compare
#    the peak memory of the two NLA rows. Then call `torch.nn.functional.scaled_dot_product_attention` directly
#    on the 3-D `(B, L, D)` queries, keys and values of a `NonLocalAttention` inside
#    `torch.nn.attention.sdpa_kernel([SDPBackend.FLASH_ATTENTION])`: what does PyTorch say, and why does
#    `fused_softmax_attention` not fail there?
