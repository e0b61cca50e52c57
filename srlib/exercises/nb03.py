"""Exercises of notebook 03 (DLSN: super-bit LSH, GLA, learnable similarity score).

Each checker computes the expected answer itself with srlib and returns ``(ok, message)``. Worked solutions:
``notebooks/solutions/03_dlsn_solutions.py``.
"""

from __future__ import annotations

import torch

from . import exercise


@exercise("03.1", "How many buckets does GLA use?", "★ warm-up",
          hint="b = min(L // c + (L // c) % 2, 128) for L positions and chunk size c: "
               "srlib.attention.buckets.n_hash_buckets.")
def _check_n_buckets(answer):
    """``answer``: ``(b for a 24x24 LR patch, b for a 64x96 LR crop)`` with chunk size 48."""
    from srlib.attention.buckets import n_hash_buckets

    want = (n_hash_buckets(24 * 24, 48), n_hash_buckets(64 * 96, 48))
    got = tuple(int(v) for v in answer)
    return got == want, "" if got == want else f"got {got}; one of the two is off"


@exercise("03.2", "Super-bit hash codes by hand (Eq. 12-13)", "★ warm-up",
          hint="codes[b, r, l] = argmax over the b columns of x[b, l] @ M[:, r] (einsum 'blc,crm->brlm').")
def _check_superbit_codes(answer):
    """``answer``: a function ``codes(x, M)`` for ``x (B, L, C')`` and ``M (C', R, b)`` -> ``(B, R, L)`` int."""
    from srlib.attention.gla import superbit_lsh, superbit_projections

    if not callable(answer):
        return False, f"expected a function codes(x, M), got {type(answer).__name__}"
    g = torch.Generator().manual_seed(31)
    x = torch.randn(2, 50, 8, generator=g, dtype=torch.float64)
    proj = superbit_projections(8, 3, 6, generator=g, dtype=torch.float64)
    want, _ = superbit_lsh(x, 6, 3, projections=proj)
    got = torch.as_tensor(answer(x, proj))
    if tuple(got.shape) != tuple(want.shape):
        return False, f"codes should have shape {tuple(want.shape)} (B, R, L); got {tuple(got.shape)}"
    same = float((got.long() == want).double().mean())
    return same == 1.0, f"{same:.0%} of the codes agree with superbit_lsh"


@exercise("03.3", "When do the super-bit directions stop being orthonormal?", "★★ practice",
          hint="orthonormal columns need b <= C'; find the smallest L with n_hash_buckets(L, 128) > 64.")
def _check_orthonormal_limit(answer):
    """``answer``: the smallest number of positions ``L`` for which the paper's GLA (``C' = 64``, chunks of
    128) has more buckets than embedding channels."""
    from srlib.attention.buckets import n_hash_buckets

    want = next(n for n in range(128, 128 * 130) if n_hash_buckets(n, 128) > 64)
    got = int(answer)
    return got == want, "" if got == want else f"{got} is {'too large' if got > want else 'too small'}"


@exercise("03.5", "A learnable score that never sees the query", "★★ practice",
          hint="official s_l(i, j) = MLP(f_j)[i]: changing one position's features changes one key column "
               "of every row of its chunk; the paper's form changes that query's row.")
def _check_lss_column(answer):
    """``answer``: how many of the 48 rows (query slots) of a chunk's official ``(c, 3c)`` ``s_l`` change when
    the LSS features of one position of that chunk change (chunk size ``c = 48``, no padding)."""
    return int(answer) == 48, "" if int(answer) == 48 else "count the rows of the chunk that see that key"


# open questions: worked answers in prose in the solutions notebook
exercise("03.4", "Super-bit depth and the variance of the angle estimate", "★★ practice")(None)
exercise("03.6", "Train without the learnable score (Table 1)", "★★★ challenge")(None)
exercise("03.7", "Bucket balance with a wider embedding", "★★★ challenge")(None)
