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
# # 00a · Worked solutions
#
# Solutions to the exercises of `00a_super_resolution`. Each answer is computed, then checked with
# `srlib.course.exercises.check`, the same call the student makes.

# %%
import math

import torch

from srlib.course.exercises import check

# %% [markdown]
# **00a.1** ★ warm-up — *PSNR of one grey level.* A difference of one level at every pixel gives
# MSE = 1 (in grey levels squared), so PSNR = 10 log10(255² / 1) = 20 log10(255):

# %%
answer_00a_1 = 10 * math.log10(255**2 / 1)
print(f"{answer_00a_1:.3f} dB")
assert check("00a.1", answer_00a_1)

# %% [markdown]
# **00a.2** ★★ practice — *Parameters of a residual block.* Each 3 × 3 convolution from `F = 32` to 32
# channels has `32 · 32 · 3 · 3` weights and 32 biases; the block has two of them (ReLU has no parameters):

# %%
answer_00a_2 = 2 * (32 * 32 * 3 * 3 + 32)
print(answer_00a_2)
assert check("00a.2", answer_00a_2)

# %% [markdown]
# **00a.3** ★★ practice — *The inverse of the pixel shuffle.* The shuffle read channel `c·s² + i·s + j` at
# `(y, x)` into pixel `(s·y + i, s·x + j)` of channel `c`. Going back: split the rows into `(h, s)` and the
# columns into `(w, s)`, move the two `s` axes next to the channel axis, merge them into it.

# %%
def pixel_unshuffle(y, s):
    """(B, F, s*h, s*w) -> (B, s*s*F, h, w), the inverse of the pixel shuffle."""
    b, f, hh, ww = y.shape
    h, w = hh // s, ww // s
    return y.view(b, f, h, s, w, s).permute(0, 1, 3, 5, 2, 4).reshape(b, f * s * s, h, w)


def pixel_shuffle_by_hand(z, s):  # as in the notebook
    b, c, h, w = z.shape
    return z.view(b, c // (s * s), s, s, h, w).permute(0, 1, 4, 2, 5, 3).reshape(b, c // (s * s), s * h, s * w)


y = torch.randn(1, 3, 6, 9)
assert torch.equal(pixel_shuffle_by_hand(pixel_unshuffle(y, 3), 3), y)
assert check("00a.3", pixel_unshuffle)

# %% [markdown]
# **00a.4** ★★★ challenge (open) — *The residual scale.* With `res_scale = 0.1` every residual branch
# contributes a tenth of what it computes, so at initialisation the body is close to the identity and
# the gradients reaching each branch's weights are scaled by the same factor: with Adam (which normalises
# the gradient's size) the weights still move at the learning rate, but their effect on the output is ten
# times smaller, so in a run of 200 steps the loss falls more slowly and the tiny network ends further below
# bicubic. The EDSR paper introduced the factor for its wide network (256 features, 32 blocks), where
# branches of full size made the training numerically unstable; over the papers' hundreds of thousands of
# steps the slow start does not matter, and the stability does. This is also one of the likely reasons the
# shipped attention networks of the course (which keep the papers' `res_scale = 0.1`) trail the same-budget EDSR
# (`res_scale = 1`) after their short training.
