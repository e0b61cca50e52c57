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
# # Solutions · 04 HSPAN (soft thresholding)
#
# Worked answers to the exercises of `04_hspan`. Each checked answer is computed here and passed to the
# same `check` the notebook calls; open questions get a worked answer in prose (with a little code where it
# helps).

# %%
import math

import torch

from srlib.attention.softthreshold import soft_threshold, threshold_and_support
from srlib.course.exercises import check
from srlib.analysis.maps import HSPAN_FIG1_NS
from srlib.analysis.sparsity import compare_normalizers, support_vs_length

f64 = torch.float64

# %% [markdown]
# **04.1** ★ warm-up. Sorted, `s = (3, 2.5, 1, 0)`. The condition `k s_(k) + 1 > sum_{j<=k} s_(j)` holds
# for `k = 1` (`4 > 3`) and `k = 2` (`6 > 5.5`) and fails for `k = 3` (`4 > 6.5` is false), so `T = 2` and
# `kappa = (3 + 2.5 - 1) / 2 = 2.25`. The weights, in the order of `s`: `3 - 2.25`, `0`, `2.5 - 2.25`, `0`.

# %%
answer_04_1 = [0.75, 0.0, 0.25, 0.0]
assert check("04.1", answer_04_1)

# %% [markdown]
# **04.2** ★★ practice. Ten times closer scores: ST keeps many more keys, because the budget of one is shared
# by all keys within about one unit of the best score.

# %%
cmp_01 = compare_normalizers(HSPAN_FIG1_NS, trials=500, generator=torch.Generator().manual_seed(0), scale=0.1)
cmp_1 = compare_normalizers(HSPAN_FIG1_NS, trials=500, generator=torch.Generator().manual_seed(0), scale=1.0)
answer_04_2 = cmp_01["ST"]["support"][-1]
print(f"n = {cmp_01['n'][-1]}: ST support {answer_04_2:.2f} at scale 0.1, {cmp_1['ST']['support'][-1]:.2f} at scale 1")
print("keys for 90 %: ST at scale 0.1", cmp_01["ST"]["coverage"][-1], "| softmax at scale 1", cmp_1["softmax"]["coverage"][-1])
assert check("04.2", answer_04_2)

# %% [markdown]
# For ST to spread over as many keys as softmax does at `scale=1` (a good part of all `n` keys), the scores
# must be packed far more tightly (try `scale=0.01`): both normalisers flatten as the spread shrinks, but ST
# keeps exact zeros until the whole spread is below one unit.
#
# **04.3** ★★ practice. `f` is continuous and decreasing, `f(max s - 1) >= 0` and `f(max s) = -1`, so
# bisection halves a bracket of width one 60 times, down to about 1e-18.

# %%
def bisect_kappa(s: torch.Tensor, steps: int = 60) -> torch.Tensor:
    """kappa (R, 1) of the rows s (R, N) by bisection on f(kappa) = sum_j max(s_j - kappa, 0) - 1."""
    hi = s.amax(dim=-1, keepdim=True)
    lo = hi - 1
    for _ in range(steps):
        mid = (lo + hi) / 2
        positive = (s - mid).clamp_min(0).sum(-1, keepdim=True) - 1 > 0  # root lies above mid
        lo, hi = torch.where(positive, mid, lo), torch.where(positive, hi, mid)
    return (lo + hi) / 2


assert check("04.3", bisect_kappa)

# %% [markdown]
# Algorithm 1 needs no iteration because `f` is piecewise linear: between two consecutive sorted scores it is
# a straight line of slope `-k`, so once the sort tells us which piece holds the root (the support size `T`),
# the root is solved for exactly: `kappa = (sum_{j<=T} s_(j) - 1) / T`.
#
# **04.4** ★★★ challenge (open). If the top gaps are about `g = 1 / sqrt(2 ln N)` each, the `k` gaps to
# `s_(k+1)` add up to about `g k (k + 1) / 2`, and the support is the largest `k` with that sum below one:
# `T ≈ sqrt(2 / g) = (8 ln N)^(1/4)`, a very slow growth. Measured and guessed side by side:

# %%
ns = [16, 256, 4096, 16384]
sup = support_vs_length(ns, trials=100, generator=torch.Generator().manual_seed(4), scales=(1.0,))
for n, t in zip(ns, sup["mean"][0].tolist()):
    print(f"N = {n:6d}: measured mean T {t:5.2f} | guess (8 ln N)^(1/4) {(8 * math.log(n)) ** 0.25:5.2f}")

# %% [markdown]
# The guess has the right (very slow) growth and the right size. A sharper bound than Eq. (14):
# `P(T > k) = P(sum_{j<=k} (s_(j) - s_(k+1)) < 1)`, and every term of the sum is non-negative, so the sum is at
# least its first term `s_(1) - s_(k+1)` *and* (Eq. 14's argument) at least `k (s_(k) - s_(k+1))`. Hence
# `P(T > k) <= min(P(s_(1) - s_(k+1) < 1), P(s_(k) - s_(k+1) < 1/k))`. The range of the top `k + 1` scores grows
# with `k`, so the first probability falls to zero quickly, where Eq. (14)'s single gap does not.
#
# **04.5** ★★★ challenge (open). On the support `ST(s) = s - kappa(s)` with `kappa` linear in `s`, so
# `sum(w * ST(s))` is linear there and its Hessian is zero:

# %%
s = torch.tensor([0.9, -0.3, 1.4, 0.2, 1.1], dtype=f64)
w = torch.tensor([1.0, 2.0, -1.0, 0.5, 3.0], dtype=f64)
hess = torch.autograd.functional.hessian(lambda x: (w * soft_threshold(x)).sum(), s)
print("Hessian away from a kink: max |H| =", float(hess.abs().max()))
_, T_ = threshold_and_support(s)
kappa_ = threshold_and_support(s)[0]
jac = lambda x: torch.autograd.functional.jacobian(soft_threshold, x)
e = torch.zeros(5, dtype=f64)
i_out = int((s - kappa_).clamp_max(0).argmax())  # the best score just outside the support
e[i_out] = float(kappa_ - s[i_out]) + 1e-3  # push it just across kappa
print("Jacobian changes when one score crosses kappa:", not torch.equal(jac(s), jac(s + e)))

# %% [markdown]
# Finite differences of the Jacobian are zero everywhere except across such a kink, where the support (and
# with it the block `Diag(c) - c c^T / T`) changes: the second derivative is a sum of Dirac masses there.
#
# **04.6** ★★★ challenge (open). With `st_mode="truncated"` and `topk=8` the network is trained under the
# truncation, so at test time `k = 8` is the condition it saw; the truncated sweep typically peaks at or
# near the training `k` and decreases for smaller `k`, while for large `k` it becomes flat (then it equals
# exact sparsemax, which the network never saw in training, so the flat value can be a little lower). At the
# tiny scale the differences are small and noisy: repeat with two seeds before concluding.
#
# **04.7** ★★ practice (open). With ST as normaliser the dense non-local attention keeps only the keys whose
# score is within about one unit of the best, so the non-local-means image averages over a handful of truly
# similar patches: edges stay sharper and flat areas are less smoothed than with softmax, which at the same
# temperature averages over many half-similar patches. Raising the temperature widens ST's support, the
# opposite knob to softmax's flattening.
