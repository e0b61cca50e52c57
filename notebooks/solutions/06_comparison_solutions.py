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
# # Solutions · 06 Six non-local attentions side by side
#
# Worked answers to the exercises of `06_comparison`. Checked answers are computed here and passed to the same
# `check` the notebook calls; open questions get a worked answer in prose.

# %%
from srlib.analysis.flops import attention_flops_table, hspa_flops
from srlib.course.exercises import check

# %% [markdown]
# **06.1** ★ warm-up (open). The softmax maps (NLA, NLSA, GLA, LCoA) sharpen as the temperature drops and
# spread as it rises, inside whatever keys each can see; the bucketed maps keep the same candidates, because
# the hash does not depend on the temperature. ENLA uses its own amplification, so its map does not change.
# HSPA's support grows quickly with the temperature (its threshold keeps the keys within about one unit of
# the best score, i.e. within about `τ` in cosine), and NLA's 90%-mass count grows too, more slowly.
#
# **06.2** ★★ practice (open). With `amplification=20` ENLA targets `exp(20 cos)`, the same kernel as NLA at
# `τ = 0.05`, but estimates it with `m` random features: the estimate is noisy, and the noise grows with the
# amplification (the features' variance grows like `exp(k)`), so the map is a blurred, speckled NLA.
# More features (`n_features`) reduce the noise like `1 / sqrt(m)`, at a cost linear in `m`.
#
# **06.3** ★★ practice. Count both at every side from 12 on:

# %%
def crossover(max_side=200):
    for side in range(12, max_side + 1):
        t = attention_flops_table(side, side, 64)
        if t["NLSA-r4"].total < t["NLA"].total:
            return side, t["NLSA-r4"].total / 1e9, t["NLA"].total / 1e9


answer_06_3, g_nlsa, g_nla = crossover()
print(f"side {answer_06_3} (L = {answer_06_3 ** 2}): NLSA-r4 {g_nlsa:.3f} GFLOPs < NLA {g_nla:.3f} GFLOPs")
assert check("06.3", answer_06_3)

# %% [markdown]
# NLSA-r4 scores `4 · 3 · 144` keys per query whatever `L` is, NLA scores `L`, so in FLOPs the crossover is
# where `L` passes about `1728` plus the hashing overhead. Measured times cross at a different size: sorting,
# gathering and padding are not counted as FLOPs but take time, and dense matrix products run at a higher
# rate than gathers, so the measured crossover comes later than the FLOP count says.
#
# **06.4** ★★ practice (open). A sparse aggregation multiplies only the non-zero weights with the values:

# %%
dense = hspa_flops(100, 100, 64, topk=128)
sparse = hspa_flops(100, 100, 64, topk=128, sparse_aggregate=True)
print(f"HSPA at 100x100x64: dense {dense.total / 1e9:.2f} GFLOPs, sparse aggregation {sparse.total / 1e9:.2f} GFLOPs")

# %% [markdown]
# The scores `s_ij` must still be computed for every pair to find the threshold, which is `L²` products:
# the aggregation is only part of the cost, so the saving is bounded by the share of the aggregation.
#
# **06.5** ★★★ challenge. Per layer, `(LSP + (n - 1) CoA) / n = CoA + (LSP - CoA) / n`, which tends to the CoA
# row as `n` grows:

# %%
t100 = attention_flops_table(100, 100, 64)
lsp, coa = t100["LCoA-LSP"].total / 1e9, t100["LCoA-CoA"].total / 1e9
for n in (1, 2, 4, 10, 100):
    print(f"n = {n:3d}: {coa + (lsp - coa) / n:.4f} GFLOPs per layer")
answer_06_5 = coa
assert check("06.5", answer_06_5)

# %% [markdown]
# The FLOPs per layer fall by only about a quarter (the scores are saved, the aggregation is not), while Table I
# reports a much larger time saving: the time also includes the clustering, sorting and memory traffic that
# the CoA layers skip and FLOPs do not count.
#
# **06.6** ★★★ challenge (open). The harness shows the explicit NLA's resident peak growing with `L²` while
# the fused call stays small. Asking for the flash kernel on 3-D inputs fails: PyTorch's flash and
# memory-efficient kernels need a heads dimension `(B, heads, L, D)` and equal query/value widths, and on CPU
# they may be unavailable, in which case PyTorch raises (or, without the context manager, silently takes the
# math fallback that builds the whole matrix). `fused_softmax_attention` adds the heads dimension and pads the
# narrower side with zero channels, so the fused kernel applies.
