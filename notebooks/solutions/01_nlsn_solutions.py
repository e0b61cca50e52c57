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
# # 01 · Worked solutions
#
# Solutions to the exercises of `01_nlsn`, computed and checked with `srlib.course.exercises.check`; the open
# questions get a worked answer, with a small computation where one settles it. No data set is needed.

# %%
import math

import torch
import torch.nn.functional as F

from srlib.attention.buckets import BucketLayout, bucketed_attention, combine_rounds, n_hash_buckets
from srlib.analysis.flops import NLSN_TABLE5_GFLOPS, nlsa_flops
from srlib.attention.hashing import spherical_lsh
from srlib.attention.nla import non_local_attention
from srlib.course.exercises import check
from srlib.analysis.buckets import lsh_collision_rate

torch.set_num_threads(2)

# %% [markdown]
# **01.1** ★ warm-up — *Buckets and keys.* `L // k = 4096 // 144 = 28`, already even, so the official rule
# `min(L//k + (L//k) % 2, 128)` gives 28 buckets. Each query sees its own chunk and the two neighbouring
# chunks, `3k = 432` window slots per round, `3 · 432` over three rounds:

# %%
answer_01_1 = (n_hash_buckets(64 * 64, 144), 3 * 3 * 144)
print(answer_01_1)
assert check("01.1", answer_01_1)

# %% [markdown]
# **01.2** ★★ practice — *Collision over several rounds.* Rounds draw independent rotations, so the pair
# misses in all `r` rounds with probability `(1 - p)^r`. Measured `p`, the formula, and a direct count over
# 2000 independent 4-round hashings:

# %%
def pair(angle_deg, dim=16):
    t = math.radians(angle_deg)
    u = torch.zeros(dim, dtype=torch.float64)
    v = torch.zeros(dim, dtype=torch.float64)
    u[0], v[0], v[1] = 1.0, math.cos(t), math.sin(t)
    return torch.stack([u, v])[None]  # (1, 2, dim)


for angle in (30, 90):
    p = float(lsh_collision_rate(torch.tensor([math.radians(angle)], dtype=torch.float64), 16, 8, 2000,
                                 generator=torch.Generator().manual_seed(0))[0])
    codes, _ = spherical_lsh(pair(angle), 8, 4 * 2000, generator=torch.Generator().manual_seed(1))  # (1, R, 2)
    met = (codes[0, :, 0] == codes[0, :, 1]).view(2000, 4).any(dim=1).double().mean()
    print(f"{angle:2d} deg: p = {p:.3f} | 1 - (1 - p)^4 = {1 - (1 - p) ** 4:.3f} | counted over 4 rounds {float(met):.3f}")
    if angle == 30:
        answer_01_2 = 1 - (1 - p) ** 4
assert check("01.2", answer_01_2)

# %% [markdown]
# The formula agrees with the direct count. At 90° one round seldom puts the pair together and four rounds
# still miss it more often than not, while the pair at 30° is found almost surely: extra rounds mostly
# rescue close pairs that one boundary happened to split, which are the ones attention should find.
#
# **01.3** ★★ practice (open) — *Stable vs unstable.* The two sorts agree on which bucket every slot holds;
# they differ only in the order *inside* a bucket, which changes the result only where a bucket is cut by
# a chunk boundary (its members then see different neighbours). On a 19 × 18 map with chunks of 48:

# %%
gen = torch.Generator().manual_seed(7)
for h, w, chunk in ((4, 5, 6), (19, 18, 48)):
    L = h * w
    q = torch.randn(1, L, 4, generator=gen, dtype=torch.float64)
    v = torch.randn(1, L, 3, generator=gen, dtype=torch.float64)
    codes, _ = spherical_lsh(q, n_hash_buckets(L, chunk), 2, generator=gen)
    stable = BucketLayout.from_codes(codes, chunk)
    sort_idx = torch.sort(codes, dim=-1).indices  # the official, unstable sort
    unstable = BucketLayout(sort_idx=sort_idx, undo_idx=torch.argsort(sort_idx, dim=-1), chunk_size=chunk, length=L)
    rs, ru = bucketed_attention(q, v, stable), bucketed_attention(q, v, unstable)
    ys, yu = combine_rounds(rs.ret, rs.bucket_score), combine_rounds(ru.ret, ru.bucket_score)
    moved = int((sort_idx != stable.sort_idx).sum())
    print(f"{h} x {w}, chunks of {chunk}: {moved} slots differ, largest output difference {float((ys - yu).abs().max()):.2e}")

# %% [markdown]
# (On this PyTorch build the unstable sort may or may not reorder ties; where it does, the outputs differ by
# far more than rounding, which is why srlib sorts stably.)
#
# **01.4** ★★ practice (open) — *Paper hash vs official hash.* The official hash takes the argmax over
# `[xR, -xR]`: its `m` buckets come in antipodal pairs `±r_j`. Features that point into a narrow cone (as
# the untrained EDSR head's do) can only reach the vertices on their side of the sphere, so about half of
# the official buckets are out of reach from the start; the paper's `m` independent directions have no such
# pairing. Both leave most buckets empty on such features; counting occupied buckets of 4 rounds for
# clustered random features (compare the two rows):

# %%
feats = torch.randn(1, 64 * 64, 16, generator=torch.Generator().manual_seed(0)) * 0.3 + 1.0  # a narrow cone
m = n_hash_buckets(64 * 64, 144)
for variant in ("official", "paper"):
    codes, _ = spherical_lsh(feats, m, 4, generator=torch.Generator().manual_seed(1), variant=variant)
    used = [int((torch.bincount(c, minlength=m) > 0).sum()) for c in codes[0]]
    print(f"{variant:8s}: occupied buckets per round {used} of {m}")

# %% [markdown]
# **01.5** ★★ practice (open) — *How much of dense attention survives?* Relative error against dense
# attention on the toy example (`L = 20`), for three chunk sizes and 1 to 8 rounds. With chunks of 6, more
# rounds give each query more chances to see its best keys and the error falls. With chunks of 10 there are
# only two chunks: "previous" and "next" are the same other chunk, so every key is seen but that chunk's
# keys count twice; the error comes from the duplicates, not from missing keys, and more rounds do not
# remove it. With `chunk = L` NLSA is dense attention exactly (notebook section 2.5).

# %%
L, chunk = 20, 6
g = torch.Generator().manual_seed(7)
q = torch.randn(1, L, 4, generator=g, dtype=torch.float64)
v = torch.randn(1, L, 3, generator=g, dtype=torch.float64)
y_full = non_local_attention(q, F.normalize(q, dim=-1, eps=5e-5), v)
for ch in (6, 10, 20):
    errs = []
    for r in (1, 2, 4, 8):
        codes, _ = spherical_lsh(q, n_hash_buckets(L, ch), r, generator=torch.Generator().manual_seed(8))
        res = bucketed_attention(q, v, BucketLayout.from_codes(codes, ch))
        y = combine_rounds(res.ret, res.bucket_score)
        errs.append(float((y - y_full).norm() / y_full.norm()))
    print(f"chunk {ch:2d}: relative error for 1, 2, 4, 8 rounds: " + ", ".join(f"{e:.3f}" for e in errs))

# %% [markdown]
# **01.6** ★★★ challenge (open) — *Reproduce Table 5 your way.* Counting what the official code multiplies
# (one multiply-add = 2 FLOPs): the 3 × 3 and 1 × 1 embedding convolutions, the hash projection, and per
# round the scores and the weighted sum over `3k` keys. Softmax, key normalisation, sort and gathers are
# `O(L)` or `O(L k)` element-wise work and change the total by a few percent at most. No such accounting
# reproduces the paper's four rows; the closest rule is a fixed part plus `2k` keys per round, whose growth
# per round is close to the paper's (compare the rows):

# %%
rows = []
for r in (1, 2, 4, 8):
    three = nlsa_flops(100, 100, 64, 144, r, include_embeddings=True).gflops
    two = nlsa_flops(100, 100, 64, 144, r, chunks_attended=2, include_embeddings=True).gflops
    print(f"NLSA-r{r}: paper {NLSN_TABLE5_GFLOPS[f'NLSA-r{r}']:.1f} | 3k keys + convs {three:.2f} | 2k keys + convs {two:.2f}")

# %% [markdown]
# **01.7** ★★ practice (open) — *Where do the trained NLSA blocks look?* Run the shipped network on an LR
# image with `keep_details` on its second NLSA block, and compare how the positions spread over the buckets
# with the same block's hash of the *untrained* network of the same shape. The drawing is one call,
# `plot_bucket_map(lr, codes, (h, w), n_buckets=m)`; here we count (on a bundled photograph, LR 64 × 64):

# %%
from srlib import pretrained
from srlib.data import load_sample
from srlib.models import build_model

lr = load_sample("chelsea")[:, 40:168, 120:248]
lr = torch.nn.functional.avg_pool2d(lr[None], 2)[0]  # (3, 64, 64), a quick LR stand-in
torch.manual_seed(0)  # the untrained network's random initialisation
untrained = build_model("nlsn", scale=2, preset="small").eval()
for name, net in (("trained (shipped)", pretrained("nlsn-small-x2")), ("untrained", untrained)):
    blk = net.body[9]
    blk.keep_details = True
    torch.manual_seed(0)
    with torch.no_grad():
        net(lr[None])
    codes = blk.details["codes"][0]  # (rounds, h*w), with a per-round offset
    sizes = [torch.unique(c, return_counts=True)[1] for c in codes]
    print(f"{name:18s}: occupied buckets per round {[len(z) for z in sizes]}, "
          f"largest bucket {[int(z.max()) for z in sizes]} of {codes.shape[1]} positions")

# %% [markdown]
# Read the counts together with the picture: a block whose hash puts most positions into a few large
# buckets groups by coarse appearance (flat versus textured), one that uses many buckets of similar size
# separates finer structure. Which of the two the trained block does, at this tiny training budget, is
# what the numbers above show; the full-size NLSN is not available offline to compare.
