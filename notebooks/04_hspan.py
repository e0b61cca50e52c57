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
# # 04 · HSPAN: high-similarity-pass attention (soft thresholding instead of softmax)
#
# ## 1. Context
#
# **Paper.** Su, Gan, Chen, Guo, Chen. *High-Similarity-Pass Attention for Single Image Super-Resolution*.
# IEEE Transactions on Image Processing (TIP), 2024; arXiv:2305.15768. Official code: `laoyangui/HSPAN`,
# `src/model/attention.py` (`HSPA`, `SoftThresholdingOperation`, `tau_support`) and `src/model/hspan.py`;
# the facts about that code used here are explained where they are used (and collected in
# `docs/official_code.md`).
#
# **What the paper claims.**
# * The softmax of dense non-local attention (NLA, Eq. 6) gives *every* key a positive weight. For long
#   sequences the distribution flattens (Fig. 1): the few truly similar positions are drowned by thousands of
#   irrelevant ones, and NLA performs about as well as attending to 512 *random* positions (Fig. 2).
# * Replace softmax by a **soft thresholding (ST)** operation, $\mathrm{ST}_j(s) = \max(s_j - \kappa(s), 0)$ with
#   the threshold $\kappa$ chosen so the weights sum to one (Eqs. 9-12, Algorithm 1): weights of low-similarity
#   keys become exactly zero, hence *high-similarity-pass attention* (HSPA, Eq. 8). ST is the Euclidean projection
#   onto the probability simplex (Eq. 13), i.e. *sparsemax* (Martins & Astudillo 2016); its support stays
#   small (Eq. 14), and its Jacobian has a closed form (Eqs. 15-19) for end-to-end training.
# * Only the largest scores can survive, so a **top-k** search replaces the full sort; `k` "determines the
#   search space" and can be changed at test time; PSNR peaks at `k = 128` (Fig. 6).
# * HSPAN = 10 HSPA modules in a residual backbone, 192 channels: +0.84 dB over NLA without the <!-- quoted -->
#   local blocks (Table I), 38.43 dB on Set5 x2 (Table II), about 33.6 M parameters (x4). <!-- quoted -->
#
# **Why dense attention again, after DLSN?** The same group (Su, Gan, Chen and co-authors) had just made
# attention sparse the other way: DLSN (notebook 03), like NLSN (notebook 01), hashes the positions into
# buckets and lets a query see only its own bucket, so most pairs are never scored. The HSPAN paper argues that
# this treats the symptom, not the cause (Sec. I and II-B). Bucketing decides *before* looking at the scores
# which keys a query may use, so a hash with a large variance can put a truly similar patch in another bucket
# and the query never sees it; ENLCN's amplification factor (notebook 02) sharpens the softmax but makes its
# random-feature estimate noisier. The cause, they argue, is the softmax itself: it gives every key a positive
# weight however irrelevant, which is why dense NLA did no better than 512 random keys (Fig. 2). HSPAN
# therefore scores *all* keys again (nothing can be missed by a hash) and lets the normaliser decide which
# keys get exactly zero. The price is the dense `O(L²)` cost of NLA (section 2.9; notebook 06 measures it).
#
# **Words used below.** An *HSPAM* (HSPA module, the paper's unit) is a few EDSR residual blocks (two 3x3
# convolutions with a ReLU, added back to their input; notebook 00a) followed by one HSPA and a 3x3 convolution. *LEB*
# (local enhancement block) is the paper's name for those residual blocks. *NLA* is the dense softmax
# attention of notebook 00. *Sparsemax* is the name of ST in the machine-learning literature.
#
# **This notebook.** Step by step (part 2): Fig. 1 revisited with ST next to softmax; ST by hand
# (Algorithm 1); ST as the projection onto the simplex (Eq. 13); support size vs sequence length and the
# bound of Eq. 14; the Jacobian of Eq. 18; top-k, the official code's fallback versus a truly truncated
# top-k; NLA vs HSPA maps on a real image. Paper figures (part 3): Fig. 4 with the shipped trained HSPAN
# (`srlib.pretrained`) and Fig. 6 (changing `k` at test time). Training (part 4): a tiny HSPAN and its NLA
# twin on CPU with the course's one recipe, the full network behind a switch. Evaluation (part 5): bicubic,
# the tiny networks and the shipped HSPAN and EDSR on Set5 x2. Then where the official code differs from the
# paper (part 6) and exercises (part 7).
#
# **Data.** The stored outputs were made with the benchmark data (`SRLIB_DATA` set: Set5, Urban100 and the
# SunHays80 training photographs). Without it every cell still runs, on scikit-image's bundled photographs
# (a brick wall, the astronaut, ...): cells whose output depends on the image are marked
# `nbval-ignore-output`, and the numbers in the prose of those parts change (the conclusions should not).


# %%
import math

import matplotlib.pyplot as plt
import numpy as np
import scipy.optimize
import torch
from torch.testing import assert_close

from IPython.display import Markdown, display

from srlib import data as sdata
from srlib.attention.hspa import HSPA
from srlib.analysis.measure import loglog_slope, peak_tensor_bytes
from srlib.attention.softthreshold import soft_threshold, threshold_and_support
from srlib.config import data_dir
from srlib.course import (
    TINY_RECIPE,
    assert_in_spread,
    data_setting,
    evaluation_table,
    load_spread,
    paper_training,
    shipped,
    sr_crops,
    tiny_train,
)
from srlib.course.exercises import check
from srlib.inference import forward_chop
from srlib.models import build_model
from srlib.models.hspan import HSPAN, HSPANConfig
from srlib.pretrained import build_small, pretrained
from srlib.reference import expected_outputs, load_case, reference_dir, run_case
from srlib.analysis.maps import HSPAN_FIG1_NS, patch_descriptors, softmax_flattening
from srlib.viz.explorer import AttentionExplorer, collect_attention_layers
from srlib.viz.plots import plot_loss_history
from srlib.analysis.sparsity import (
    attention_rows, chunked_support_statistics, compare_normalizers, eq14_probabilities, nla_twin,
    same_scores_statistics, support_sizes, support_vs_length, topk_sweep, truncation_error,
)
from srlib.viz.maps import plot_map_grid, plot_weight_rows

torch.set_num_threads(2)
_ = torch.manual_seed(0)
f64 = torch.float64

# %% [markdown]
# ## 2. Step by step
#
# ### 2.1 Softmax flattening revisited (the setting of Fig. 1), with ST next to it
#
# Notebook 00 reproduced Fig. 1: nine score vectors drawn from $\mathcal N(0, 1)$, lengths
# $n = 4^2, 6^2, \dots, 20^2$, and their softmax. Here the **same draws** (same generator, same order as
# `srlib.analysis.maps.softmax_flattening`) also go through ST. Besides the largest weight we count how many keys
# carry 90 % of the mass (`mass_coverage`, a sparsity measure that also works for softmax) and, for ST, the
# support size $\mathcal T$ (number of non-zero weights). Averages over 500 draws per `n`:

# %%
cmp = compare_normalizers(HSPAN_FIG1_NS, trials=500, generator=torch.Generator().manual_seed(0))
flat = softmax_flattening(HSPAN_FIG1_NS, trials=500, generator=torch.Generator().manual_seed(0))
assert_close(torch.tensor(cmp["softmax"]["max_weight"], dtype=f64), flat["max_weight"])  # same draws as notebook 00

sm, st = cmp["softmax"], cmp["ST"]
print(f"{'n':>5} | {'softmax: max w':>14} {'keys for 90%':>12} | {'ST: max w':>9} {'support T':>9} {'keys for 90%':>12}")
for i, n in enumerate(cmp["n"]):
    print(f"{n:5d} | {sm['max_weight'][i]:14.3f} {sm['coverage'][i]:12.1f} | {st['max_weight'][i]:9.3f} "
          f"{st['support'][i]:9.2f} {st['coverage'][i]:12.2f}")
assert sm["support"] == [float(n) for n in cmp["n"]]  # softmax: full support, always
assert all(t < 8 for t in st["support"]) and all(w > 0.5 for w in st["max_weight"])

# %%
fig = plot_weight_rows([sm["example"], st["example"]], ["softmax", "ST (sparsemax)"],
                       [f"n = {n}" for n in cmp["n"]], panel_size=(1.7, 1.6))
# one-pixel-wide bars vanish at large n: mark ST's few non-zero weights with a stem and a marker
for ax, w_ in zip(fig.axes[len(cmp["n"]):], st["example"]):
    nz_ = torch.as_tensor(w_).reshape(-1).nonzero().flatten()
    ax.vlines(nz_.numpy(), 0, torch.as_tensor(w_).reshape(-1)[nz_].numpy(), color="tab:red", lw=1.2)
    ax.plot(nz_.numpy(), torch.as_tensor(w_).reshape(-1)[nz_].numpy(), "o", color="tab:red", ms=3)
plt.show()

# %% [markdown]
# Same scores, two normalisers. The softmax's largest weight falls from about 0.24 to 0.03 and the number
# of keys needed for 90 % of the mass grows in proportion to `n` (about 60 % of all keys): this is the
# flattening of Fig. 1. ST keeps the largest weight above 0.5 and 90 % of the mass on about three keys,
# *whatever* `n`; its support grows only from about 3 to 4, and every other key gets exactly zero.
#
# Neither normaliser is scale-invariant: `softmax(s / t)` and `ST(s / t)` both sharpen as the temperature
# `t` drops. With standard-normal scores the best few are far apart compared with `1/T` (section 2.4), so
# ST keeps only a handful. In a network the scale of `s = q . k` is learned (part 3).
#
# ### 2.2 ST by hand (Algorithm 1, Eqs. 9-12)
#
# Sort the scores, $s_{(1)} \ge s_{(2)} \ge \dots \ge s_{(N)}$, find the support size (Eq. 11)
#
# $$\mathcal T = \max\{k : k\, s_{(k)} + 1 > \textstyle\sum_{j \le k} s_{(j)}\},$$
#
# then the threshold (Eq. 12) $\kappa = (\sum_{j \le \mathcal T} s_{(j)} - 1)/\mathcal T$, and the output
# (Eq. 9) $\mathrm{ST}_j(s) = \max(s_j - \kappa, 0)$. A four-element example first:

# %%
def st_by_hand(s: torch.Tensor):
    """ST over the last dim of ``s`` (..., N) by Algorithm 1; returns (weights, kappa (..., 1), T (..., 1))."""
    z = torch.sort(s, dim=-1, descending=True).values  # s_(1) >= s_(2) >= ... (Algorithm 1, line 3)
    k = torch.arange(1, s.shape[-1] + 1, dtype=s.dtype)  # 1..N
    cumsum = z.cumsum(dim=-1)  # sum_{j <= k} s_(j)
    holds = k * z + 1 > cumsum  # the condition of Eq. (11), for every k
    T = (holds * k).amax(dim=-1, keepdim=True).long()  # Eq. (11): the largest k where it holds
    kappa = (cumsum.gather(-1, T - 1) - 1) / T  # Eq. (12)
    return torch.clamp(s - kappa, min=0), kappa, T  # Eq. (9)


s = torch.tensor([1.0, 2.0, -1.0, 1.2], dtype=f64)
z = torch.sort(s, descending=True).values
k = torch.arange(1, 5, dtype=f64)
print("sorted s          ", z.tolist())
print("k s_(k) + 1       ", (k * z + 1).tolist())
print("sum_{j<=k} s_(j)  ", [round(c, 6) for c in z.cumsum(0).tolist()])
p, kappa, T = st_by_hand(s)
print(f"T = {int(T)}, kappa = {float(kappa):.4f}, ST(s) = {[round(x, 4) for x in p.tolist()]}, sum = {float(p.sum()):.4f}")
assert int(T) == 2 and abs(float(kappa) - 1.1) < 1e-12
assert_close(p, soft_threshold(s))

# %% [markdown]
# The condition of Eq. (11) holds for `k = 1, ..., T` and fails after: it is a *prefix* (that is why `srlib`
# can count the `k` where it holds instead of taking a maximum). On many rows at once, compared with
# `srlib.attention.softthreshold.soft_threshold` (full sort, and the official top-k path with `k = 16`),
# plus the properties the paper lists: non-negative, sums to one, order preserving; and two it does not
# mention: shifting all scores changes nothing, and the output is exactly zero below `kappa`.

# %%
g = torch.Generator().manual_seed(1)
S = torch.randn(64, 500, generator=g, dtype=f64) * torch.logspace(-2, 1, 64, dtype=f64)[:, None]  # (R, N): spreads 0.01..10
P, kappa, T = st_by_hand(S)  # (64, 500), (64, 1), (64, 1)
assert P.shape == S.shape and kappa.shape == T.shape == (64, 1)
assert_close(P, soft_threshold(S, dim=-1))
assert_close(P, soft_threshold(S, dim=-1, topk=16))  # official top-k with fallback: the same
tau_lib, T_lib = threshold_and_support(S, dim=-1)
assert_close(tau_lib, kappa) and assert_close(T_lib, T)
assert (P >= 0).all() and torch.allclose(P.sum(-1), torch.ones(64, dtype=f64))
order = S.argsort(dim=-1)
assert (P.gather(-1, order).diff(dim=-1) >= 0).all()  # larger score, larger (or equal) weight
assert_close(soft_threshold(S + 3.7), P)  # shift invariance
assert torch.equal((P > 0), (S > kappa))  # zero exactly where s <= kappa
print("rows:", S.shape[0], "| support T from", int(T.min()), "to", int(T.max()), "of N =", S.shape[1])

# %% [markdown]
# ### 2.3 ST is the Euclidean projection onto the simplex (Eq. 13) *(deep dive)*
#
# $$\mathrm{ST}(s) = \arg\min_{p \in \Delta} \lVert p - s \rVert^2, \qquad
# \Delta = \{p : p_i \ge 0,\ \textstyle\sum_i p_i = 1\}.$$
#
# Three checks. (a) A general-purpose constrained solver (SciPy's SLSQP) finds the same point. (b) The
# optimality (KKT) conditions hold: with multiplier $\kappa$ for the equality and $\mu_j \ge 0$ for
# $p_j \ge 0$, stationarity $p_j - s_j + \kappa - \mu_j = 0$ and $\mu_j p_j = 0$ mean
# $p_j = s_j - \kappa$ on the support and $s_j \le \kappa$ (i.e. $\mu_j = \kappa - s_j \ge 0$) off it.
# (c) No point of the simplex is closer: random points (Dirichlet) and small feasible moves
# $p + \varepsilon(e_a - e_b)$ only increase the distance.

# %%
g = torch.Generator().manual_seed(2)
worst = 0.0
for trial in range(5):
    s_ = torch.randn(12, generator=g, dtype=f64)
    res = scipy.optimize.minimize(
        lambda x: float(((x - s_.numpy()) ** 2).sum()), np.full(12, 1 / 12),
        jac=lambda x: 2 * (x - s_.numpy()), method="SLSQP", bounds=[(0, None)] * 12,
        constraints=[{"type": "eq", "fun": lambda x: x.sum() - 1, "jac": lambda x: np.ones_like(x)}],
        options={"ftol": 1e-14, "maxiter": 500},
    )
    assert res.success
    worst = max(worst, float((torch.from_numpy(res.x) - soft_threshold(s_)).abs().max()))
print("(a) max |ST(s) - SLSQP(s)| over 5 vectors < 1e-6:", worst < 1e-6)

# (b) KKT conditions on the 64 rows of section 2.2
on = P > 0
mu = kappa - S  # the multipliers of p >= 0
assert_close(P[on], (S - kappa)[on])  # stationarity on the support
assert (mu[~on] >= 0).all()  # dual feasibility off the support
print("(b) KKT conditions hold on all", S.shape[0], "rows")

# (c) nothing in the simplex is closer
s_ = S[40]  # one row with support > 1
p_ = P[40]
d_best = float(((p_ - s_) ** 2).sum())
dirichlet = torch.distributions.Dirichlet(torch.full((500,), 0.05, dtype=f64))
_ = torch.manual_seed(3)
q_rand = dirichlet.sample((2000,))  # 2000 random points of the simplex
d_rand = ((q_rand - s_) ** 2).sum(-1)
moves = []
for a_, b_ in [(0, 1), (int(p_.argmax()), int(p_.argmin())), (int(p_.argmin()), int(p_.argmax()))]:
    eps = min(1e-3, float(p_[b_])) if p_[b_] > 0 else 0.0
    if eps > 0:
        q_ = p_.clone()
        q_[a_] += eps
        q_[b_] -= eps
        moves.append(float(((q_ - s_) ** 2).sum()) - d_best)
print(f"(c) support {int(T[40])}: no random simplex point closer: {bool((d_rand > d_best).all())}; "
      f"feasible moves increase the distance: {all(m > 0 for m in moves)}")
assert (d_rand > d_best).all() and all(m > 0 for m in moves)

# %% [markdown]
# **A picture for N = 3.** The simplex is a triangle in the plane $p_1 + p_2 + p_3 = 1$; since ST ignores a
# common shift of the scores, every score vector can be moved into that plane. Colour each point of the
# plane by the support size of its projection: inside the triangle nothing is cut (`T = 3`); in the strips
# beside an edge one weight is cut (`T = 2`); in the wedges beyond a corner only one key survives (`T = 1`).
# The arrows show a few projections. The farther the scores spread out, the more of the plane lands on the
# boundary, and with thousands of keys almost everything does: this is the paper's remark that the
# projection "tends to hit the boundary of the simplex".

# %%
corners = torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.5, math.sqrt(3) / 2]], dtype=f64)  # p = e1, e2, e3 drawn here
to_plane = torch.cat([corners.T, torch.ones(1, 3, dtype=f64)])  # (3, 3): [x; y; 1] = to_plane @ p


def plane_to_scores(xy: torch.Tensor) -> torch.Tensor:
    """2-D points (M, 2) -> score vectors (M, 3) with sum 1 that are drawn at those points."""
    rhs = torch.cat([xy, torch.ones(xy.shape[0], 1, dtype=f64)], dim=1)
    return torch.linalg.solve(to_plane, rhs.T).T


xs, ys = torch.meshgrid(torch.linspace(-0.8, 1.8, 261, dtype=f64), torch.linspace(-0.8, 1.6, 241, dtype=f64), indexing="xy")
grid_scores = plane_to_scores(torch.stack([xs.reshape(-1), ys.reshape(-1)], dim=1))
grid_T = support_sizes(soft_threshold(grid_scores)).reshape(xs.shape)
fig, ax = plt.subplots(figsize=(5.2, 4.6))
cmap3 = plt.matplotlib.colors.ListedColormap(["#f4a582", "#fddbc7", "#d1e5f0"])
im = ax.imshow(grid_T.numpy(), origin="lower", extent=(-0.8, 1.8, -0.8, 1.6), cmap=cmap3, vmin=0.5, vmax=3.5,
               interpolation="nearest")
ax.fill(*corners[[0, 1, 2, 0]].T.numpy(), fill=False, color="k", lw=1.5)
pts = torch.tensor([[1.5, 1.2], [-0.5, 0.3], [0.4, -0.5], [0.5, 0.3], [1.2, -0.6], [1.3, 0.5]], dtype=f64)
proj = (to_plane[:2] @ soft_threshold(plane_to_scores(pts)).T).T
for a_, b_ in zip(pts, proj):
    ax.annotate("", xy=b_.numpy(), xytext=a_.numpy(), arrowprops=dict(arrowstyle="->", color="k", lw=1))
    ax.plot(*a_.numpy(), "ko", ms=3)
for i_, c_ in enumerate(corners):
    ax.text(*(c_ + torch.tensor([-0.07, -0.07 if i_ < 2 else 0.04], dtype=f64)).numpy(), f"$e_{i_ + 1}$")
cb = fig.colorbar(im, ax=ax, ticks=[1, 2, 3], fraction=0.04)
cb.set_label("support size T of ST(s)")
ax.set_aspect("equal")
ax.set_title("ST = projection onto the simplex (N = 3)")
ax.set_xticks([])
ax.set_yticks([])
plt.show()

# %% [markdown]
# ### 2.4 Support size vs sequence length (Eq. 14), measured *(deep dive)*
#
# Eq. (14) bounds the chance that the support is larger than `k`. `T > k` means the condition of Eq. (11)
# holds at `k + 1`, i.e. the `k` gaps to the next score add up to less than one:
#
# $$P(\mathcal T > k) = P\Big(\sum_{j=1}^{k} \big(s_{(j)} - s_{(k+1)}\big) < 1\Big)
# \le P\Big(s_{(k)} - s_{(k+1)} < \tfrac1k\Big),$$
#
# because each of the `k` gaps is at least $s_{(k)} - s_{(k+1)}$. First: the measured support of
# $\sigma \cdot \mathcal N(0, 1)$ scores for `N` from 16 to 16,384 (100 vectors each) and three spreads
# $\sigma$.

# %%
ns_len = [16, 64, 256, 1024, 4096, 16384]
sup = support_vs_length(ns_len, trials=100, generator=torch.Generator().manual_seed(4), scales=(0.1, 1.0, 10.0))
print(f"{'N':>6} | " + " | ".join(f"sigma={s_:<4g} mean T (T/N)" for s_ in sup["scales"]))
for b_, n in enumerate(ns_len):
    cells = [f"{float(sup['mean'][a_, b_]):9.1f} ({float(sup['mean'][a_, b_]) / n:7.4f})" for a_ in range(3)]
    print(f"{n:6d} | " + " | ".join(f"{c:>24s}" for c in cells))
assert (sup["mean"][0].diff() > 0).all() and sup["mean"][1, -1] > sup["mean"][1, 0]  # grows with N ...
assert (sup["mean"][:, -1] / ns_len[-1] < sup["mean"][:, 0] / ns_len[0] / 100).all()  # ... far slower than N

fig, ax = plt.subplots(figsize=(5.5, 3.6))
for a_, s_ in enumerate(sup["scales"]):
    ax.fill_between(ns_len, sup["q10"][a_].numpy(), sup["q90"][a_].numpy(), alpha=0.25)
    ax.loglog(ns_len, sup["mean"][a_].numpy(), "o-", ms=3, label=f"sigma = {s_:g}")
ax.loglog(ns_len, ns_len, "k--", lw=1, label="T = N (softmax)")
ax.set_xlabel("sequence length N")
ax.set_ylabel("ST support size T (mean, 10-90 %)")
ax.legend(fontsize=8)
plt.show()

# %% [markdown]
# The support grows with `N`, but far more slowly than `N` (roughly logarithmically): the fraction of keys
# kept collapses as the sequence gets longer; for $\sigma = 1$ about 5 of 16,384 keys survive. The spread
# matters more than the length: with $\sigma = 0.1$ the scores are 10x closer together, so many more gaps
# fit under the budget of one (about 35 keys at `N = 16,384`); with $\sigma = 10$ ST is nearly an argmax.
# Next, the two sides of Eq. (14) at `N = 1024`, from 2000 draws:

# %%
e14 = eq14_probabilities(1024, ks=[1, 2, 3, 4, 6, 8, 12, 16], trials=2000, generator=torch.Generator().manual_seed(5))
print(f"{'k':>3} {'P(T > k)':>9} {'P(sum of gaps < 1)':>19} {'bound P(gap_k < 1/k)':>21}")
for i, k_ in enumerate(e14["k"]):
    print(f"{k_:3d} {e14['p_support_gt_k'][i]:9.3f} {e14['p_sum_of_gaps_lt_1'][i]:19.3f} {e14['p_gap_lt_1_over_k'][i]:21.3f}")
assert e14["p_support_gt_k"] == e14["p_sum_of_gaps_lt_1"]  # first line of Eq. (14): an identity
assert all(p_ <= b_ for p_, b_ in zip(e14["p_support_gt_k"], e14["p_gap_lt_1_over_k"]))  # second line: a bound

# %% [markdown]
# The identity holds exactly and the bound holds, but it is loose: the bound stays large for every `k` while
# the true probability drops to zero. It says only that one gap must be small; the event needs all `k` gaps
# together to be small. The paper's conclusion (a large support is unlikely) is right, and the measurements
# above show it better than the bound does.
#
# ### 2.5 The Jacobian (Eqs. 15-19), built explicitly *(deep dive)*
#
# On the support, $\mathrm{ST}_j = s_j - \kappa$ with $\partial\kappa/\partial s_k = c_k/\mathcal T$
# (Eq. 16), so (Eq. 18)
#
# $$J(s) = \mathrm{Diag}(c) - \frac{c\,c^\top}{\mathcal T},$$
#
# with `c` the indicator of the support. We build it for one score vector and compare with three others:
# (i) autograd through `st_by_hand` (sort, cumsum, gather and clamp are all differentiable, so this is an
# independent derivation), (ii) `torch.autograd.functional.jacobian` of `srlib`'s `soft_threshold`, whose
# backward implements Eq. (19) in closed form, and (iii) central finite differences.

# %%
s = torch.tensor([0.9, -0.3, 1.4, 0.2, 1.1, -1.0, 0.85, 0.0], dtype=f64)
p = soft_threshold(s)
c = (p > 0).to(f64)
T_ = c.sum()
J_eq18 = torch.diag(c) - torch.outer(c, c) / T_  # Eq. (18)
J_hand = torch.autograd.functional.jacobian(lambda x: st_by_hand(x)[0], s)
J_srlib = torch.autograd.functional.jacobian(lambda x: soft_threshold(x), s)
h_ = 1e-6
J_fd = torch.stack([(soft_threshold(s + h_ * e) - soft_threshold(s - h_ * e)) / (2 * h_) for e in torch.eye(8, dtype=f64)], dim=1)
assert_close(J_hand, J_eq18)
assert_close(J_srlib, J_eq18)
assert_close(J_fd, J_eq18, atol=1e-8, rtol=0)
print("support c =", c.long().tolist(), "| T =", int(T_))
print("J (Eq. 18) == autograd through Algorithm 1 == srlib backward == finite differences: True")
print("J is symmetric:", torch.equal(J_eq18, J_eq18.T), "| rank:", int(torch.linalg.matrix_rank(J_eq18)), "= T - 1")

# %%
fig, axes = plt.subplots(1, 2, figsize=(8, 3.4))
for ax, M, title in [(axes[0], J_eq18, "J = Diag(c) - c c^T / T  (Eq. 18)"), (axes[1], J_hand - J_eq18, "autograd - Eq. 18")]:
    im = ax.imshow(M.numpy(), cmap="RdBu_r", vmin=-1, vmax=1)
    ax.set_title(title, fontsize=10)
    ax.set_xlabel("k (score)")
    ax.set_ylabel("j (weight)")
fig.colorbar(im, ax=list(axes), fraction=0.03)
plt.show()

# %% [markdown]
# Only the `T x T` block of the support is non-zero: a key outside the support has no gradient at all, and
# a change of one score inside it moves the others by `-1/T` each so that the weights still sum to one.
# Because of that structure the backward pass never needs the matrix (Eq. 19):
# $J r = c \odot (r - \frac{c^\top r}{\mathcal T}\,\mathbf 1)$, which costs $O(\mathcal T)$ per row once the
# support is known. `srlib` keeps only the indices of the largest candidates (as many as the largest
# support in the batch); the official code does the same arithmetic densely over all `N` entries.
# A float64 `gradcheck` of both top-k modes, including rows that need the official fallback:

# %%
r = torch.randn(8, generator=torch.Generator().manual_seed(6), dtype=f64)
assert_close(J_eq18 @ r, c * (r - (c @ r) / T_))  # Eq. (19)
s_req = (0.3 * torch.randn(3, 40, generator=torch.Generator().manual_seed(7), dtype=f64)).requires_grad_()
ok = {mode: torch.autograd.gradcheck(lambda x: soft_threshold(x, dim=-1, topk=4, mode=mode), (s_req,))
      for mode in ("exact", "truncated")}
_, T_chk = threshold_and_support(s_req, topk=None)
print("Eq. 19 == J r: True | gradcheck (topk=4):", ok, "| supports:", T_chk.flatten().tolist())
assert all(ok.values()) and (T_chk > 4).any()

# %% [markdown]
# ### 2.6 Top-k: the official fallback versus a truly truncated top-k
#
# Only the largest scores can be in the support, so the paper replaces the sort by `torch.topk` (Sec. III-C)
# and describes `k` as the size of the query's *search space*, ablated in Fig. 6. The official
# `tau_support` computes `T` and `kappa` from the `k` largest entries, but a row whose support fills all `k`
# candidates (`T == k`) might have a larger true support, so it **recomputes that row with `2k`**, then
# `4k`, ..., and finally with a full sort. The output is then exact sparsemax **whatever `k`**; `k` only
# changes the cost. `srlib` offers both behaviours: `mode="exact"` (the official one, the default) and
# `mode="truncated"` (sparsemax over the `k` largest scores only, everything else zero).
#
# The threshold passes of the official algorithm, traced (`threshold_and_support(..., trace=...)`), on the
# 64 rows of section 2.2 with `k = 4`:

# %%
trace = []
threshold_and_support(S, dim=-1, topk=4, trace=trace)
for t_ in trace:
    print(t_)
assert trace[0]["rows"] == 64 and len(trace) > 2 and all(a_["rows"] >= b_["rows"] for a_, b_ in zip(trace, trace[1:]))

# %% [markdown]
# Now a real HSPA module (`srlib.attention.hspa.HSPA`, the official layer: three 1x1 conv + PReLU
# embeddings, scores `q . k` without scaling): 32 channels, seeded default initialisation, a 19 x 18 input
# (`L = 342`) of small random features, in float64, the setting of the official-code reference case
# `hspa_case1.pt` (a module, its input and the outputs the authors' code gave, saved by this project).
# For each `k`: how many rows have a support larger than `k`, how many rows the truncated top-k changes,
# and the largest change of a weight. The exact mode is compared bit for bit with the full sort.

# %%
_ = torch.manual_seed(0)
hspa = HSPA(channel=32, reduction=2, res_scale=0.5, topk=32).to(f64).eval()
x_feat = 0.3 * torch.randn(1, 32, 19, 18, generator=torch.Generator().manual_seed(7), dtype=f64)  # (B, C, H, W)
with torch.no_grad():
    scores = hspa.similarity(x_feat)  # (B, L, L), Eq. (7)
assert scores.shape == (1, 342, 342)
ks_mod = [1, 2, 4, 8, 16, 32, 64, 128, 342]
te = truncation_error(scores, ks_mod)
T_mod = support_sizes(soft_threshold(scores))
print(f"support sizes over the {te['rows']} rows: min {int(T_mod.min())}, median {int(T_mod.median())}, max {int(T_mod.max())}")
print(f"{'k':>4} {'rows T > k':>10} {'rows changed':>12} {'max |trunc - exact|':>20} {'exact == full sort':>19}")
for i, k_ in enumerate(te["k"]):
    print(f"{k_:4d} {te['rows_support_gt_k'][i]:10d} {te['rows_changed'][i]:12d} {te['max_abs_diff'][i]:20.1e} "
          f"{str(te['exact_equals_full'][i]):>19}")
assert all(te["exact_equals_full"]) and te["rows_changed"] == te["rows_support_gt_k"]

# %%
outs = {}
with torch.no_grad():
    for mode in ("exact", "truncated"):
        hspa.mode = mode
        for k_ in ks_mod:
            hspa.topk = k_
            outs[mode, k_] = hspa(x_feat)  # (B, C, H, W): res_scale * HSPA(x) + x
hspa.topk, hspa.mode = 32, "exact"
assert all(torch.equal(outs["exact", k_], outs["exact", 342]) for k_ in ks_mod)
diffs = [float((outs["truncated", k_] - outs["exact", k_]).abs().max()) for k_ in ks_mod]
print("module output, exact mode: bit-identical for every k")
print("module output, truncated vs exact, max abs diff:", {k_: float(f"{d_:.1e}") for k_, d_ in zip(ks_mod, diffs)})

# %% [markdown]
# With the official fallback, `k` changes nothing but the cost. A truly truncated top-k changes every row
# whose support does not fit into `k` candidates; the change shrinks as `k` grows and disappears once `k`
# exceeds the largest support. Both are valid probability distributions.
#
# The reference cases recorded from the authors' code ship with the repository (`tests/reference/`, which
# `SRLIB_REFERENCE` can override; `tests/test_hspan.py` runs the same case), so we also run the official module
# case: `srlib` must reproduce the
# authors' output, input gradient, the standalone ST output and gradient, and the exact sequence of fallback
# passes of their `tau_support`.

# %% tags=["nbval-ignore-output"]
ref_dir = reference_dir()  # tests/reference/ of this repository (SRLIB_REFERENCE overrides)
case_path = ref_dir / "modules" / "hspa_case1.pt"
if case_path.is_file():
    case = load_case(case_path)
    got, want = run_case(case), expected_outputs(case)
    for key in want:
        assert_close(got[key], want[key], rtol=1e-10, atol=1e-10)
        print(f"{key:15s} matches the official code (max abs diff {float((got[key] - want[key]).abs().max()):.1e})")
    trace_ref = []
    m_ref = HSPA(channel=32, reduction=2, res_scale=0.5, topk=32).to(f64)
    m_ref.load_state_dict(case["state_dict"])
    with torch.no_grad():
        threshold_and_support(m_ref.similarity(case["input"]), dim=-1, topk=32, trace=trace_ref)
    print("fallback passes:", [(t_["rows"], t_["topk"]) for t_ in trace_ref], "| official:", case["tau_support_calls_module"])
    assert [t_["rows"] for t_ in trace_ref][1] == 125  # the official tau_support recomputes 125 rows with top-k 64
else:
    print(f"reference case not found ({case_path}): skipped; tests/test_hspan.py runs it in CI")

# %% [markdown]
# ### 2.7 NLA vs HSPA on a real image: the same scores, two normalisers
#
# The scene of notebook 00: a facade with repeated windows (Urban100 `img_014`, x4 LR, 56 x 56), or
# scikit-image's brick wall without the benchmark data. Scores are the hand-crafted patch similarity of
# notebook 00, `cos(patch_i, patch_j) / tau` (`srlib.analysis.maps.patch_descriptors`), so nothing is learned and
# only the normaliser differs: softmax (NLA, Eq. 6) or ST (HSPA, Eq. 8). Notebook 00 used `tau = 0.05`
# for the softmax. ST is shown at that temperature and at `tau = 0.5` (scores 10x closer together).

# %% tags=["nbval-ignore-output"]
query = sdata.query_scene(56)  # notebook 00b's scene and its four query pixels (srlib.data.scenes)
image, scene, queries, query_names = query.image, query.description, query.queries, query.query_names
print("scene:", scene)
assert image.shape == (3, 56, 56)

# %%
H, W = image.shape[-2:]
L = H * W
desc = patch_descriptors(image, patch_size=5)  # (1, 75, H, W), unit length along dim 1
qk = desc.flatten(2).transpose(1, 2)  # (1, L, 75): theta = phi = descriptor
normalisers = {
    "NLA, tau 0.05": lambda cos_: torch.softmax(cos_ / 0.05, dim=-1),
    "HSPA, tau 0.05": lambda cos_: soft_threshold(cos_ / 0.05, dim=-1, topk=128),
    "HSPA, tau 0.5": lambda cos_: soft_threshold(cos_ / 0.5, dim=-1, topk=128),
}
# Rows of Eq. (6) / (8) are independent: the 4 query rows (1, 4, L) need no L x L matrix.
rows_q = [qy * W + qx for qy, qx in queries]
cos_q = qk[:, rows_q] @ qk.transpose(1, 2)  # (1, 4, L): cosine similarity of the 5 x 5 patches
maps = torch.stack([fn(cos_q)[0].reshape(4, H, W) for fn in normalisers.values()])  # (normalisers, queries, H, W)
assert maps.shape == (3, 4, H, W) and torch.allclose(maps.sum((2, 3)), torch.ones(3, 4))
fig = plot_map_grid(image, maps, queries, list(normalisers), [f"{k_ + 1}: {q_}" for k_, q_ in enumerate(query_names)])
plt.show()

# %% tags=["nbval-ignore-output"]
def scene_rows(fn):
    """(start, stop) -> those rows of the scene's attention map under normaliser ``fn`` (chunked statistics)."""
    return lambda a_, b_: fn(qk[:, a_:b_] @ qk.transpose(1, 2))


print(f"over all {L} queries | median support | median keys for 90 % | rows with support > 128")
stats_img = {}
for nm_, fn in normalisers.items():
    stats_img[nm_] = st_ = chunked_support_statistics(scene_rows(fn), L, ks=(128,))  # 512 rows at a time
    print(f"{nm_:19s} | {st_['support_median']:14d} | {st_['coverage_median']:20d} | {st_['frac_support_gt'][128]:9.1%}")
hot = chunked_support_statistics(scene_rows(lambda cos_: torch.softmax(cos_ / 0.5, dim=-1)), L)
print(f"{'(NLA, tau 0.5)':19s} | {hot['support_median']:14d} | {hot['coverage_median']:20d} |")
assert stats_img["NLA, tau 0.05"]["support_min"] == L
assert stats_img["HSPA, tau 0.05"]["support_median"] <= stats_img["HSPA, tau 0.5"]["support_median"] < L // 20

# %% [markdown]
# The colour scale is the square root of (weight / largest weight), so faint weights still show; dark grey
# means exactly zero. The softmax (NLA) lights up every similar *and* half-similar position: at
# `tau = 0.05` the median query needs many keys for 90 % of its weight (table above), and every key gets some.
# ST at the same temperature is close to an argmax: a patch's best match is itself (cosine 1), and only
# matches within about `tau` of it survive, so most queries keep a handful of keys (on the facade often
# just the pixel itself). At `tau = 0.5` ST keeps the tens of best matches (other windows for the window
# query, other bricks for the brick face) and still zeros the rest, where a softmax at that temperature is
# almost uniform (last line). Regions of many near-identical patches (the sky) keep hundreds of keys: those
# are the rows a truncated top-128 would change. Which normaliser serves super-resolution better is what
# training decides (Table I of the paper); what each does to a given set of scores is visible here.
#
# ### 2.8 Explore it yourself
# HSPA next to dense NLA on this scene, with the scores of the third row above (`cos / 0.5`). Move the query
# and compare the two normalisers on the same scores: ST keeps the best matches and zeros the rest, softmax
# spreads its weight over almost everything. The `top-k` and `ST mode` knobs reproduce section 2.6: in
# `exact` mode `k` changes nothing, while `truncated` with a `k` below the row's support changes the row. The
# readout counts the keys with non-zero weight (support) and the keys carrying 90 % of the weight.
# (Interactive: run the notebook in JupyterLab.)

# %% tags=["nbval-ignore-output"]
explorer = AttentionExplorer(image, mechanisms=("HSPA", "NLA"), query=queries[0], temperature=0.5)
ex_state = explorer.state()
assert ex_state["knobs"] == {"topk": 128, "mode": "exact"} and abs(ex_state["map_sum"] - 1) < 1e-4
assert_close(explorer.result["map"], maps[2, 0])  # the map of query 1 in the row "HSPA, tau 0.5" above
explorer

# %% [markdown]
# ### 2.9 The cost of HSPA: no `L × L` matrix
#
# The official HSPA builds the whole `L × L` score matrix, then thresholds each row. But soft thresholding is
# row-wise: a query's weights depend on its own scores only (Eqs. 9-12). So srlib scores a *block* of queries,
# thresholds it and multiplies by the values, block after block (`HSPA(block_size="auto")`, the default;
# `block_size=None` is the official dense path). The arithmetic stays `O(L² C)` like dense attention, but the
# memory falls from `O(B L²)` to `O(B L · block)` in the forward pass; for training, srlib keeps only each row's
# support and applies the backward of Eq. 19 there. The cell measures the peak of the tensors one forward pass
# holds, for the dense path and for blocks of 64 queries, and fits the growth with `L` on a log-log scale.

# %%
hspa_cost = HSPA(channel=64, reduction=2, topk=128).eval()
sides_cost = [20, 28, 40, 56]  # L = 400 ... 3136
L_cost = [s_ * s_ for s_ in sides_cost]
cost_slopes = {}
for name_, bs_ in (("dense (official, block_size=None)", None), ("blocks of 64 queries", 64)):
    hspa_cost.block_size = bs_
    _ = torch.manual_seed(0)
    with torch.no_grad():
        peaks_ = [peak_tensor_bytes(hspa_cost, torch.randn(1, 64, s_, s_)) / 2**20 for s_ in sides_cost]
    cost_slopes[name_] = (peaks_, loglog_slope(L_cost, peaks_))
    print(f"{name_:34s} peak MiB {[round(p_, 1) for p_ in peaks_]}, slope in L {cost_slopes[name_][1]:.2f}")
hspa_cost.block_size = "auto"
dense_peaks, dense_slope = cost_slopes["dense (official, block_size=None)"]
block_peaks, block_slope = cost_slopes["blocks of 64 queries"]
assert dense_slope > 1.7 and block_slope < 1.2 and block_peaks[-1] < dense_peaks[-1] / 10
display(Markdown(
    f"The dense peak grows with slope {dense_slope:.2f} in `L` (quadratic), the blockwise one with slope "
    f"{block_slope:.2f} (linear): at `L = {L_cost[-1]}` that is {block_peaks[-1]:.1f} MiB instead of "
    f"{dense_peaks[-1]:.1f} MiB. At `1 × 64 × 100 × 100` (the benchmark in `benchmarks/results/hspa_memory.md`) "
    "the blockwise forward pass needs about a twentieth of the dense peak, forward+backward about a tenth, "
    "and a `200 × 200` map, out of reach for the dense path on a laptop, runs."))

# %% [markdown]
# ## 3. Paper figures
#
# ### 3.1 Fig. 4 with the shipped trained HSPAN
#
# srlib ships small trained x2 networks (`srlib.pretrained`, README section "Trained small networks").
# `hspan-small-x2` is HSPAN with 32 channels, 2 HSPAMs of 4 residual blocks and top-k 64, trained for 650
# iterations on 30 photographs. That is far from the paper's
# protocol, but it is trained. Fig. 4 of the paper shows, for one query, the maps of several HSPA layers
# next to those of an NLA network. We run the shipped HSPAN on a 48 x 48 LR crop of a real image
# (`L = 2304` keys per query): the butterfly's wing in Set5, or the flag of scikit-image's astronaut
# without the benchmark data.
# `collect_attention_layers` returns each HSPA module with the features it received. We normalise the
# *same* learned scores `s_ij = phi_q(x_i) . phi_k(x_j)` (Eq. 7) in two ways: with the module's ST (HSPA)
# and with softmax (`nla_twin`: a copy of the module's embeddings with softmax, the NLA of Table I applied
# to HSPAN's scores). The same architecture with its initial random weights is the control.

# %% tags=["nbval-ignore-output"]
if "Set5" in sdata.available_benchmarks(scale=2):
    lr_tr = sdata.BenchmarkDataset("Set5", 2)[2]["lr"][:, 80:128, 70:118]  # butterfly (img_003), LR x2
    probe_name = "Set5 butterfly, LR x2, crop [80:128, 70:118]"
    queries_tr = [(38, 18), (30, 29), (24, 8), (42, 44)]
    query_names_tr = ["white spot", "black band", "yellow wing", "pink background"]
else:
    lr_tr = sdata.SampleImagesDataset(2, names=("astronaut",))[0]["lr"][:, :48, :48]
    probe_name = "scikit-image astronaut (offline fallback), LR x2, crop [0:48, 0:48]"
    queries_tr = [(31, 18), (20, 14), (24, 26), (30, 40)]
    query_names_tr = ["star", "blue field", "flag edge", "background"]
lr_tr = lr_tr[None].contiguous()  # (1, 3, 48, 48) RGB in [0, 1]
print("probe:", probe_name)
assert lr_tr.shape == (1, 3, 48, 48)

# %%
nets_tr = {"trained": pretrained("hspan-small-x2")}  # eval mode, SHA-256 of the weight file checked
_ = torch.manual_seed(0)
nets_tr["untrained"] = build_small("hspan").eval()  # same architecture, random initial weights
layers_of = {tag: collect_attention_layers(net, lr_tr)["HSPA"] for tag, net in nets_tr.items()}
print({tag: [tuple(x_.shape) for _, x_ in layers_] for tag, layers_ in layers_of.items()})
print("trained HSPA modules: top-k", [m_.topk for m_, _ in layers_of["trained"]],
      "| mode", layers_of["trained"][0][0].mode)

L_tr = 48 * 48
rows_q_tr = [qy * 48 + qx for qy, qx in queries_tr]
maps_fig4, labels_fig4 = [], []
for tag in ("trained", "untrained"):
    for i, (hspa_, x_) in enumerate(layers_of[tag]):
        maps_fig4.append(attention_rows(hspa_, x_, rows_q_tr)[0].reshape(4, 48, 48))  # ST rows, Eq. (8)
        labels_fig4.append(f"{tag}: ST {i + 1}")
        if tag == "trained":  # softmax of the same scores, Eq. (6)
            maps_fig4.append(attention_rows(nla_twin(hspa_), x_, rows_q_tr)[0].reshape(4, 48, 48))
            labels_fig4.append(f"{tag}: softmax {i + 1}")
maps_fig4 = torch.stack(maps_fig4)  # (6, 4, 48, 48): (network x layer x normaliser, queries, H, W)
assert maps_fig4.shape == (6, 4, 48, 48) and torch.allclose(maps_fig4.sum((2, 3)), torch.ones(6, 4))
fig = plot_map_grid(lr_tr, maps_fig4, queries_tr, labels_fig4,
                    [f"{k_ + 1}: {q_}" for k_, q_ in enumerate(query_names_tr)], panel_size=1.9)
plt.show()

# %% tags=["nbval-ignore-output"]
print(f"{probe_name}: L = {L_tr} keys per query; means over all {L_tr} queries")
print(f"{'network, layer':16s} | {'score range':>11s} | {'ST: support':>11s} {'(max)':>6s} {'keys for 90 %':>13s} | "
      f"{'softmax: support':>16s} {'keys for 90 %':>13s}")
stats_fig4, score_range = {}, {}
for tag, layers_ in layers_of.items():
    for i, (hspa_, x_) in enumerate(layers_):
        s_ = stats_fig4[tag, i] = same_scores_statistics(hspa_, x_)  # {"module": ST rows, "softmax": same scores}
        st_, sm_ = s_["module"], s_["softmax"]
        with torch.no_grad():
            scores_ = hspa_.similarity(x_)[0]  # (L, L): s_ij of Eq. (7)
        score_range[tag, i] = float((scores_.amax(-1) - scores_.amin(-1)).median())  # median over rows
        print(f"{tag:9s} HSPA {i + 1} | {score_range[tag, i]:11.2f} | {st_['support_mean']:11.1f} "
              f"{st_['support_max']:6d} {st_['coverage'].double().mean():13.1f} | {sm_['support_min']:16d} "
              f"{sm_['coverage'].double().mean():13.1f}")
print(f"score range: max - min of a row's scores, median over rows; a uniform row needs {math.ceil(0.9 * L_tr)} "
      "keys for 90 %")
for s_ in stats_fig4.values():
    assert s_["softmax"]["support_min"] == L_tr  # softmax gives every key a weight
    assert s_["softmax"]["coverage"].double().mean() > 0.8 * L_tr  # ... and is close to uniform here
    assert 10 * s_["module"]["coverage"].double().mean() < s_["softmax"]["coverage"].double().mean()
mean_support = {tag: sum(stats_fig4[tag, i]["module"]["support_mean"] for i in (0, 1)) / 2 for tag in nets_tr}
assert mean_support["trained"] < 0.1 * L_tr and mean_support["trained"] < mean_support["untrained"]

# %% [markdown]
# What the trained weights show, in the run stored here (Set5 butterfly; the offline crop gives other
# numbers, same conclusions):
#
# * **ST is sparse, softmax of the same scores is not.** The two trained HSPAs keep on average about 60 and
#   50 of the 2304 keys (under 3 %), and 90 % of the mass sits on about 40 and 35. Softmax applied to the
#   same learned scores gives every key a weight and needs about 2060 keys for 90 % of the mass, which is
#   almost uniform (2074).
# * **Why.** The learned scores of a row span only about 0.2 to 0.3 from the best key to the worst. Softmax
#   turns that into weight ratios of at most `e^0.3 = 1.35`: with 2304 keys this is Fig. 1's flattening, on
#   trained scores. ST works on absolute differences: the kept weights `s_j - kappa` must add up to one, and
#   with thousands of keys close together that budget is spent on the top few dozen, which lie within a few
#   hundredths of the best score (section 2.4: the spread and the length set the support).
# * **Training made ST sparser.** With the random initial weights the score range is only about 0.1 to 0.15,
#   and ST keeps about 150 and 170 keys.
# * **What the trained maps select.** The trained HSPA puts its weight on a few salient structures (on the
#   butterfly: pixels on and around the white spots), and different queries select many of the same ones.
#   Training at this scale has taught the module *what* is worth attending to more than *which query*
#   should attend to it. The untrained maps follow the edges of the image.
# * This is one network trained for 650 iterations (README: the same analysis over 10 crops gives 108 and
#   51 keys, 2064 for softmax, 184 and 211 before training). Softmax here is applied to HSPAN's scores; an
#   NLA network trained on its own could learn larger scores (a sharper softmax).
#
# ### 3.2 Explore it yourself (trained weights)
# The trained HSPAN's two attention layers on this crop (the `layer` slider). `HSPA` shows the module's ST
# map, with its `top-k` and `mode` settable at test time; `NLA` shows the softmax of the same trained scores
# (`nla_twin`). (Interactive: run the notebook in JupyterLab.)

# %% tags=["nbval-ignore-output"]
explorer_tr = AttentionExplorer(
    lr_tr[0], mechanisms=("HSPA", "NLA"), query=queries_tr[0],
    layer_modules={"HSPA": layers_of["trained"], "NLA": [(nla_twin(m_), x_) for m_, x_ in layers_of["trained"]]},
)
ex_state = explorer_tr.state()
assert ex_state["knobs"] == {"topk": 64, "mode": "exact"} and explorer_tr.controls["layer"].max == 1
assert_close(explorer_tr.result["map"], maps_fig4[0, 0])  # query 1, first trained HSPA, as in the figure
assert ex_state["support"] < L_tr // 10
explorer_tr

# %% [markdown]
# ### 3.3 Changing `k` at test time (the idea of Fig. 6)
#
# The paper: "The value of k can be set flexibly in testing phase ... the SR performance of our HSPAN peaks
# at k = 128". We take the shipped HSPAN, change `k` of both HSPA layers at test time
# (`HSPAN.set_topk(k, mode)`) and super-resolve a 48 x 48 LR crop (`L = 2304`, so one attention window
# covers it) of the first evaluation image, in both modes of section 2.6. `srlib.analysis.sparsity.topk_sweep`
# compares each output with the full-sort output and reports PSNR on the crop.

# %% tags=["nbval-ignore-output"]
eval_set, eval_name = sdata.default_eval_set(2, "Set5")
item = eval_set[0]
cy_, cx_ = item["lr"].shape[1] // 2 - 24, item["lr"].shape[2] // 2 - 24
lr_crop = item["lr"][None, :, cy_:cy_ + 48, cx_:cx_ + 48]
hr_crop = item["hr"][None, :, 2 * cy_:2 * cy_ + 96, 2 * cx_:2 * cx_ + 96]
ks_sweep = [1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 2304]
sweep = topk_sweep(nets_tr["trained"], lr_crop, ks_sweep, hr=hr_crop)
print(f"{eval_name}, image {item['name']}, LR crop 48 x 48 (L = 2304); full-sort PSNR {sweep['full_psnr']:.4f} dB")
print(f"{'k':>4} | {'exact: PSNR':>11} {'max|diff|':>9} | {'truncated: PSNR':>15} {'max|diff|':>9}")
for i, k_ in enumerate(ks_sweep):
    print(f"{k_:4d} | {sweep['exact']['psnr'][i]:11.4f} {sweep['exact']['max_abs_diff'][i]:9.1e} | "
          f"{sweep['truncated']['psnr'][i]:15.4f} {sweep['truncated']['max_abs_diff'][i]:9.1e}")
assert all(sweep["exact"]["equal_to_full"])  # the official behaviour: flat in k
assert sweep["truncated"]["max_abs_diff"][0] > 0 and sweep["truncated"]["equal_to_full"][-1]  # k = L: full sort
d_psnr = [p_ - sweep["full_psnr"] for p_ in sweep["truncated"]["psnr"]]  # dB, truncated minus full sort
max_dpsnr = max(abs(d_) for d_ in d_psnr)
print(f"truncated: largest |PSNR_k - PSNR_full| {max_dpsnr:.4f} dB; largest change of the output "
      f"{max(sweep['truncated']['max_abs_diff']):.1e}")
assert max_dpsnr < 0.05  # far below any difference the paper reports between methods (tenths of a dB)

# %%
fig, axes = plt.subplots(1, 2, figsize=(9.5, 3.4))
# PSNR *differences* from the full sort, on an axis of +-0.1 dB: the size of the gaps between methods in the
# papers' tables. The grey band is +-0.01 dB, one unit of the last digit those tables print.
axes[0].axhspan(-0.01, 0.01, color="0.85", label="|diff| < 0.01 dB (below table precision)")
axes[0].axhline(0, color="k", lw=0.8)
axes[0].semilogx(ks_sweep, [p_ - sweep["full_psnr"] for p_ in sweep["exact"]["psnr"]], "o-",
                 label="exact (official code)")
axes[0].semilogx(ks_sweep, d_psnr, "s--", label="truncated top-k")
axes[0].set_ylim(-0.1, 0.1)
axes[0].set_xlabel("test-time k")
axes[0].set_ylabel("PSNR_k - PSNR_full sort (dB)")
axes[0].legend(fontsize=7, loc="lower right")
nonzero = [(k_, d_) for k_, d_ in zip(ks_sweep, sweep["truncated"]["max_abs_diff"]) if d_ > 0]
axes[1].loglog(*zip(*nonzero), "s--", color="C1")
axes[1].set_xlabel("test-time k")
axes[1].set_ylabel("max |SR_k - SR_full| (truncated)")
axes[1].set_title("(zero, not drawn, once k covers every support)", fontsize=8)
for ax in axes:
    ax.set_xticks(ks_sweep, [str(k_) for k_ in ks_sweep], fontsize=7)
fig.tight_layout()
plt.show()

# %% [markdown]
# **Which behaviour did Fig. 6 measure?** With the released code (exact mode), the output is bit-identical
# for every `k >= 1`: a test-time sweep of `k` gives a flat line, and `k = 0` ("HSPA not used") cannot even
# run. Fig. 6 shows PSNR *varying* with `k` and peaking at 128, which only a truly truncated top-k can give
# (a version of the code without the `2k` fallback). Even then, once `k` exceeds every row's support,
# truncated equals exact: the curve must become flat for large `k`, as it does here. A peak at 128 with
# lower values above it also says that some rows of the trained model have a support larger than 128;
# otherwise every `k >= 128` would give the same output.
#
# In the shipped network the truncation changes the output only a little (largest change printed above),
# because the attention branch is scaled by `res_scale^2 = 0.01` (part 6). In the run stored here the PSNR
# moves by less than a hundredth of a dB for every `k` (left panel, inside the grey band): no `k` is "best"
# here, and a peak read off an axis stretched to those hundredths would be noise. A network trained with exact sparsemax and evaluated
# with a truncated one is evaluated under a condition it never saw; nothing general follows from one crop of a
# small network. Exercise 04.6 trains with the truncation instead.

# %% [markdown]
# ## 4. Training
#
# ### 4.1 A tiny HSPAN and its NLA twin, trained on CPU
#
# `build_model("hspan", preset="small")` is `HSPANConfig.small()`: 2 HSPAMs of 1 residual block, 32
# channels, top-k 64: the configuration of the official-code reference network case `hspan_case1`. The
# paper's network is `HSPANConfig()`: 10 HSPAMs of 4 blocks, 192 channels, top-k 128. Its NLA twin is the
# same network with `normalizer="softmax"` (the comparison of the paper's Table I).
#
# Both are trained with the course's one tiny recipe (`srlib.course.TINY_RECIPE`, the same in every
# notebook, printed below): random 48 x 48 HR patches (24 x 24 LR, so `L = 576` positions per attention,
# half the paper's 48 x 48 LR side) of the SunHays80 training photographs, LR made on the fly with
# MATLAB-compatible bicubic (or the bundled scikit-image photographs when the data is absent), a learning
# rate above the paper's so that something happens in a minute, same seed and same batches for both. This
# shows that the pipeline runs and gives the attention something to learn; it is **not** the paper's model
# (1,000,000 iterations on DIV2K). Part 5 puts both next to the shipped HSPAN (650 iterations on 30
# photographs).

# %%
cfg_small = HSPANConfig.small()
print(cfg_small)
models = {}
for name, norm in (("HSPAN", "st"), ("NLA twin", "softmax")):
    _ = torch.manual_seed(0)
    models[name] = build_model("hspan", scale=2, preset="small", normalizer=norm)
n_params = sum(p_.numel() for p_ in models["HSPAN"].parameters() if p_.requires_grad)
print(f"trainable parameters: {n_params:,}; HSPA modules at", [nm_ for nm_, _ in models["HSPAN"].attention_modules()])
assert n_params == 107_722  # reference case hspan_case1: the official code gives the same count
assert all(torch.equal(a_, b_) for a_, b_ in zip(models["HSPAN"].parameters(), models["NLA twin"].parameters()))

# %% tags=["nbval-ignore-output"]
print("recipe:", {k_: v_ for k_, v_ in TINY_RECIPE.items() if k_ not in ("val_every", "ckpt_every")})
results = {name: tiny_train(model) for name, model in models.items()}  # same seed, same batches
print("training photographs from", str(results["HSPAN"]["source"]).replace(str(data_dir()), "$SRLIB_DATA"))
for name, res in results.items():
    losses = res["losses"]
    print(f"{name:8s} L1 loss every 10 iterations:", [round(x_, 4) for x_ in losses])
    assert res["iteration"] == TINY_RECIPE["iterations"] and all(math.isfinite(x_) for x_ in losses)
    assert sum(losses[-3:]) < sum(losses[:3])  # it learns something
for name, key in (("HSPAN", "loss_hspan"), ("NLA twin", "loss_nla")):  # last logged loss, in its measured band
    assert_in_spread("04", "tiny pair", key, results[name]["losses"][-1], floor=0.01)

# %%
_ = plot_loss_history({name: res["history"] for name, res in results.items()}, "tiny HSPAN vs NLA twin, CPU")
plt.show()

# %% [markdown]
# ### 4.2 The real thing (GPU)
#
# The paper's configuration: `HSPANConfig()` (10 HSPAMs x 4 blocks, 192 channels,
# top-k 128, `res_scale` 0.1), DIV2K (`python -m srlib.data.download div2k --root data`), batches of 16 LR
# patches of 48 x 48 (HR 96), L1 loss, Adam (0.9, 0.999, 1e-8), learning rate 1e-4 halved every 200 epochs <!-- quoted -->
# of 1000 iterations, 1000 epochs. Validation on whole Set5 images would need `L x L` attention matrices of
# up to 65,536^2 entries, so it runs tiled (`--val-chop`), as the official test script does (`--chop`).
# The paper fine-tunes x3 and x4 from the x2 model (learning rate halved every 50 epochs, 200 epochs).
# Set `SRLIB_RUN_FULL=1` on a CUDA machine to run it from here; otherwise the command is printed.

# %%
FULL_CMD = paper_training("hspan", scale=2)  # prints the command; runs it with SRLIB_RUN_FULL=1 on CUDA

# %% [markdown]
# ## 5. Evaluation
#
# Standard protocol (`srlib.course.quality_table`, which calls `srlib.inference.evaluate` and
# `srlib.metrics`): super-resolve each LR image, quantise to 8 bits, compare with HR on the Y channel
# (BT.601), ignoring 2 border pixels. Bicubic upscaling comes first: every trained network must beat it.
# Dense attention over a whole Set5 image would need up to a 65,536 x 65,536 matrix, so the HSPA networks
# run tile by tile (`srlib.inference.forward_chop`; the official test script chops too): the shipped HSPAN
# through `srlib.course.shipped`, on LR tiles of 32 x 32 pixels with 8 pixels of context (attention within
# 48 x 48 windows, as the README's table); the tiny networks, trained on 24 x 24 LR patches, on tiles of
# 24 x 24 with 4 pixels of context (32 x 32 windows, five times fewer pairs to score). The EDSR of the same budget (same features, blocks, data and
# recipe as the shipped HSPAN, no attention) is the baseline that tells whether attention helps at this
# scale. The paper's HSPAN reaches 38.43 dB / 0.9622 on Set5 x2 (Table II). <!-- quoted -->

# %% tags=["nbval-ignore-output"]
def tiled(net, tile=24, overlap=4):
    """LR (1, 3, h, w) -> SR, tile by tile: the L x L attention never sees more than (tile + 2 overlap)^2 LR pixels."""
    return lambda lr_: forward_chop(net, lr_, 2, tile=tile, overlap=overlap, tile_batch=1)


shipped_hspan = shipped("hspan-small-x2")
entries = {"tiny HSPAN (this notebook)": tiled(models["HSPAN"].eval()),
           "tiny NLA twin (this notebook)": tiled(models["NLA twin"].eval()),
           "HSPAN small, shipped": shipped_hspan,
           "EDSR small, shipped (same budget)": shipped("edsr-small-x2")}
q_ = evaluation_table(entries, eval_set, eval_name, notebook="04",
                      title=f"{eval_name}: PSNR / SSIM on Y, 2-pixel border cropped",
                      stored={"HSPAN small, shipped": 34.60, "EDSR small, shipped (same budget)": 34.75},
                      tiny={"tiny HSPAN (this notebook)": ("tiny pair", "psnr_hspan"),
                            "tiny NLA twin (this notebook)": ("tiny pair", "psnr_nla")})

# %% tags=["nbval-ignore-output"]
tiny_h, tiny_n = q_["tiny HSPAN (this notebook)"], q_["tiny NLA twin (this notebook)"]
ship_h, ship_e = q_["HSPAN small, shipped"], q_["EDSR small, shipped (same budget)"]
spread_ = load_spread("04")[data_setting()]["tiny pair"]  # 3 seeds x 1 and 2 threads, this data setting
d_ = spread_["diff_hspan_minus_nla"]
gain_ = {k_: [v_ - q_["bicubic"]["psnr"] for v_ in spread_[k_]["values"]] for k_ in ("psnr_hspan", "psnr_nla")}
if (d_["min"] > 0 or d_["max"] < 0) and abs(d_["mean"]) > 2 * d_["std"]:  # same sign and beyond its spread
    verdict_ = (f"the {'HSPAN' if d_['mean'] > 0 else 'NLA twin'} is ahead in every measured run, by "
                f"{abs(d_['mean']):.2f} ± {d_['std']:.2f} dB: a difference at this budget, not a verdict on full "
                f"training (the paper reports HSPA ahead after it, Table I)")
else:
    verdict_ = (f"the difference HSPAN − NLA twin is {d_['mean']:+.2f} ± {d_['std']:.2f} dB ({d_['min']:+.2f} to "
                f"{d_['max']:+.2f} dB), not larger than its own spread: at this budget one run cannot say which "
                f"normaliser is better")
display(Markdown(
    f"**What the table shows.** After {TINY_RECIPE['iterations']} CPU iterations the tiny networks are "
    f"{tiny_h['gain_db']:+.2f} dB (HSPAN) and {tiny_n['gain_db']:+.2f} dB (NLA twin) from bicubic in this run; over "
    f"{d_['n']} runs (seeds × CPU thread counts, `srlib/spread/04.json`) HSPAN lies at {min(gain_['psnr_hspan']):+.2f} "
    f"to {max(gain_['psnr_hspan']):+.2f} dB and its twin at {min(gain_['psnr_nla']):+.2f} to "
    f"{max(gain_['psnr_nla']):+.2f} dB: the loop runs, the models are far from trained. Between the two, {verdict_}. "
    f"The shipped HSPAN is {ship_h['gain_db']:+.2f} dB above bicubic and the EDSR of the same budget "
    f"{ship_e['gain_db']:+.2f} dB: after 650 iterations the network without attention is "
    f"{'ahead' if ship_e['psnr'] > ship_h['psnr'] else 'behind'} by {abs(ship_e['psnr'] - ship_h['psnr']):.2f} dB "
    f"(the shipped networks are deterministic; that gap is real for these weights, but it is one training run each)."))

# %% [markdown]
# One crop side by side: bicubic, the tiny HSPAN, the shipped HSPAN and the HR image, with each method's
# PSNR on the whole image.

# %% tags=["nbval-ignore-output"]
crop_item = eval_set[2 if eval_name == "Set5 x2" else 0]  # Set5: the butterfly
fig, psnr_crop = sr_crops(crop_item["lr"], crop_item["hr"], {  # 8-bit results, as evaluated
    "tiny HSPAN": entries["tiny HSPAN (this notebook)"], "HSPAN shipped": shipped_hspan})
print(crop_item["name"], {k_: round(float(v_), 2) for k_, v_ in psnr_crop.items()})
assert psnr_crop["HSPAN shipped"] > psnr_crop["bicubic"]  # the trained network beats bicubic on this image too
plt.show()

# %% [markdown]
# ## 6. Paper vs code
#
# ### 6.1 Where the official code differs from the paper
#
#
# `srlib` follows the official code by default (so that the authors' checkpoints load and `tests/` match
# their outputs to 1e-10) and offers the paper's reading where the two disagree.
#
# 1. **Top-k** (section 2.6). Paper: `k` limits the search space and is ablated (Fig. 6). Code: rows with
#    `T == k` are recomputed with `2k`, ..., so the output is exact sparsemax whatever `k`.
#    `srlib`: `mode="exact"` (default) and `mode="truncated"`; `HSPAN.set_topk(k, mode)`.
# 2. **Embeddings.** Paper: 1x1 convolutions `phi_q, phi_k, phi_v` (Eq. 7). Code: each 1x1 conv is
#    followed by a PReLU (`srlib` too).
# 3. **Double residual scaling.** HSPA returns `res_scale * HSPA(x) + x` and the HSPAM scales its whole
#    branch by `res_scale` again, so the attention term enters with `0.1 * 0.1 = 0.01`.
# 4. **LEB.** Paper: an LEB is `n` residual blocks. Code: the class named `LEB` is *one* block; the blocks
#    ignore their `res_scale`; each HSPAM is `[blocks, HSPA, 3x3 conv]` in that order.
# 5. **Parameter count.** The network carries an unused 1-element parameter `a`, counted in the total (the
#    paper's "about 33.6M" at x4, checked below).
# 6. **Row maximum.** The code subtracts each row's maximum before thresholding; this changes nothing
#    (ST is shift-invariant, section 2.2).
# 7. **Backward cost.** Eq. (19) is `O(T)` per row; the official backward is dense, `O(N)` per row.
#    `srlib`'s is `O(largest support in the batch)`.
# 8. **`k = 0`** ("HSPA not used", Fig. 6) cannot run in the official code.
#    `srlib`: `HSPANConfig(attention_at="none")` builds the backbone without HSPA.
# 9. **A latent bug.** The official `roll_fun` helper mishandles a negative `dim < -1`; it is never called
#    with one, so results are unaffected.
# 10. **HSPAN_S** (Sec. IV-D, "only one HSPA in the middle of the backbone") has no official code. `srlib`
#     (`"hspan_s"`) places the HSPA in HSPAM `(m - 1) // 2`.
#
# ### 6.2 The paper's parameter count *(deep dive)*
#
# For point 5, the paper network is built on PyTorch's `meta` device: its tensors have shapes but no
# storage, so a 33-million-parameter network can be counted without allocating (or initialising) anything.

# %%
with torch.device("meta"):
    full_x4 = HSPAN(HSPANConfig(scale=4))
n_x4 = sum(p_.numel() for p_ in full_x4.parameters() if p_.requires_grad)
n_attn = sum(p_.numel() for _, m_ in full_x4.attention_modules() for p_ in m_.parameters())
print(f"HSPAN x4: {n_x4:,} trainable parameters (paper: about 33.6M), of which {n_attn:,} in "
      f"{len(full_x4.attention_modules())} HSPA modules and {full_x4.a.numel()} in the unused `a`")
assert n_x4 == 33_616_546

# %% [markdown]
# ## 7. Exercises
#
# Worked solutions are in `notebooks/solutions/04_hspan_solutions.ipynb` (a teacher can hand out this
# notebook without that folder). Each checked exercise has a cell: replace `None` by your answer and run it.
#
# **04.1** ★ warm-up — **ST by hand.** Apply Algorithm 1 on paper to the scores `s = [3, 1, 2.5, 0]`: the
# support size, the threshold and the four weights (in the order of `s`).

# %%
answer_04_1 = None  # your answer: the four weights ST(s), e.g. [w1, w2, w3, w4]
check("04.1", answer_04_1)

# %% [markdown]
# **04.2** ★★ practice — **Temperature.** Repeat section 2.1 with
# `compare_normalizers(HSPAN_FIG1_NS, trials=500, generator=torch.Generator().manual_seed(0), scale=0.1)`
# (scores ten times closer together). What is ST's mean support at the largest `n`? Then try `scale=10`:
# at which spread does ST keep about as many keys (for 90 % of the mass) as softmax does at `scale=1`?

# %%
answer_04_2 = None  # your answer: the mean ST support at n = 400 with scale=0.1
check("04.2", answer_04_2)

# %% [markdown]
# **04.3** ★★ practice — **Bisection.** `kappa` is the root of the decreasing function
# `f(kappa) = sum_j max(s_j - kappa, 0) - 1` on `[max(s) - 1, max(s)]`. Write a function `bisect_kappa(s)`
# that takes rows `s` of shape `(R, N)` (float64) and returns `kappa` of shape `(R, 1)` after 60 bisection
# steps; the check compares it with `threshold_and_support` on rows it draws itself. Why does Algorithm 1
# not need an iteration at all?

# %%
answer_04_3 = None  # your answer: a function s (R, N) -> kappa (R, 1)
check("04.3", answer_04_3)

# %% [markdown]
# **04.4** ★★★ challenge — **The bound of Eq. (14).** For standard-normal scores the gaps between the top
# order statistics are about `1 / sqrt(2 ln N)`. Use this to guess how the support of section 2.4 should
# grow with `N`, and compare with the measured curve. Then find a sharper bound than Eq. (14) from the *sum*
# of the gaps. (Open question: worked answer in the solutions.)
#
# **04.5** ★★★ challenge — **Second derivative.** ST is piecewise linear. Show with
# `torch.autograd.functional.hessian` that the Hessian of `sum(w * ST(s))` is zero away from the kinks, and
# find a score vector where finite differences of the Jacobian are not zero (hint: move one score across
# `kappa`). (Open question.)
#
# **04.6** ★★★ challenge — **Truncated training.** Train the tiny HSPAN with `st_mode="truncated"` and
# `topk=8` (`tiny_train` as in part 4), then sweep `k` at test time in both modes (section 3.3). Does the
# truncated curve now peak near the training `k`? (Open question; several minutes of CPU.)
#
# **04.7** ★★ practice — **ST elsewhere.** `srlib.attention.softthreshold.make_normalizer("st", topk=...)`
# gives an ST that fits any `srlib` attention taking a `normalizer`. Put it into the dense
# `NonLocalAttention` of notebook 00 on the scene of section 2.7, and compare the non-local-means image it
# produces with the softmax one. (Open question.)
