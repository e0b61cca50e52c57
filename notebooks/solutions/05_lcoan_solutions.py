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
# # Solutions · 05 LCoAN (k-means sparse pattern, collaborative attention)
#
# Worked answers to the exercises of `05_lcoan`. Each checked answer is computed here and passed to the same
# `check` the notebook calls; open questions get a worked answer in prose (with code where it helps).

# %%
import math

import torch

from srlib.attention.lcoa import LCoA
from srlib.course.exercises import check
from srlib.models.lcoan import LCoAN, LCoANConfig

# %% [markdown]
# **05.1** ★ warm-up. Half of the way means $\lambda^t \le 1/2$, i.e. $t \ge \ln(1/2) / \ln \lambda$.

# %%
answer_05_1 = math.ceil(math.log(0.5) / math.log(0.999))
print("steps:", answer_05_1, "| check:", 1 - 0.999 ** answer_05_1, 1 - 0.999 ** (answer_05_1 - 1))
assert check("05.1", answer_05_1)

# %% [markdown]
# With the paper's $\lambda$ the time constant is a thousand steps: negligible within a tiny run, a blink
# within the paper's 1.5M iterations. <!-- quoted -->
#
# **05.2** ★★ practice. Element-wise minima `0.1, 0.4, 0.2`; the total-variation form gives the same.

# %%
p, q = torch.tensor([0.1, 0.6, 0.3]), torch.tensor([0.4, 0.4, 0.2])
answer_05_2 = float(torch.minimum(p, q).sum())
print(answer_05_2, float(1 - 0.5 * (p - q).abs().sum()))
assert check("05.2", answer_05_2)

# %% [markdown]
# **05.3** ★★ practice. The meta device builds the network without memory; the frozen `MeanShift` (mean
# colour subtraction) does not require gradients and is not counted.

# %%
with torch.device("meta"):
    net_x4 = LCoAN(LCoANConfig(scale=4))
answer_05_3 = sum(p_.numel() for p_ in net_x4.parameters() if p_.requires_grad)
print(f"{answer_05_3:,} parameters at x4")
assert check("05.3", answer_05_3)

# %% [markdown]
# **05.4** ★★★ challenge (open). On normalised vectors every embedding has the same length, so no centroid
# wins by length alone: the spherical k-means initialisation uses most of its clusters, where the official
# raw-vector initialisation lets a few long vectors capture most positions. Window recall improves a little
# because the sorted order then follows similarity rather than length. An empty cluster is not revived by the
# code's EMA form (its centroid only moves when it receives vectors); with the literal sum of Eq. (10) it is not
# either, it only shrinks relative to the growing clusters. Reviving needs an explicit re-seeding step.
#
# **05.5** ★★★ challenge (open). Longer training makes each unit's branch larger relative to the stream, so the
# deep features drift further from `X_1` and the overlap at the deep LCoA drops below the shipped network's;
# the cluster agreement drops faster than the map overlap (hard decisions). With `collaborative=False` each unit
# computes its own pattern, and the maps of its own `conv_match` can differ far more than the feature maps do.
#
# **05.6** ★★ practice (open). At equal cost (windows of `384 / R` for `R` LSH rounds) each LSH round sees fewer
# keys, and the window recall of LSH falls; one k-means round then wins or ties at `K = 16`, the regime of
# Fig. 3a. At `K = 128` the small clusters are cut arbitrarily by the windows and the advantage shrinks.
#
# **05.7** ★★★ challenge. A CoA module multiplies its own values by the shared weights, which carry the graph
# of the first module's `conv_match`; its own `conv_match` is never used:

# %%
torch.manual_seed(0)
lsp = LCoA(channels=8, k_size=3, reduction=1, n_clusters=2, window_size=16, res_scale=0.1)
coa = LCoA(channels=8, k_size=3, reduction=1, n_clusters=2, window_size=16, res_scale=0.1)
x = torch.randn(1, 8, 8, 8)
out, shared = lsp(x)
out2, _ = coa(out, shared)
g_first, g_own = torch.autograd.grad(out2.square().sum(), [next(lsp.conv_match.parameters()), next(coa.conv_match.parameters())],
                                     allow_unused=True)
print("first module's conv_match gets a gradient:", g_first is not None and bool(g_first.abs().sum() > 0))
print("the CoA module's own conv_match gets none:", g_own is None)
