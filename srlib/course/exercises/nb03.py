"""Exercises of notebook 03 (DLSN: super-bit LSH, GLA, learnable similarity score).

Each checker computes the expected answer itself with srlib and returns ``(ok, message)``. Worked solutions:
``notebooks/solutions/03_dlsn_solutions.py``.
"""

from __future__ import annotations

import torch

from . import exercise


@exercise("03.1", "How many buckets does GLA use?", "★ warm-up", points=1,
          hint="b = min(L // c + (L // c) % 2, 128) for L positions and chunk size c: an odd L // c is rounded up.",
          solution="A 40x40 patch has L = 1600 and L // 48 = 33, odd, so b = 34; a 100x100 image with the "
                   "paper's chunks has L = 10000 and L // 128 = 78, even and below the cap, so b = 78.")
def _check_n_buckets(answer):
    """``answer``: ``(b for a 40x40 LR patch with chunks of 48, b for a 100x100 LR image with chunks of 128)``."""
    from srlib.attention.buckets import n_hash_buckets

    want = (n_hash_buckets(40 * 40, 48), n_hash_buckets(100 * 100, 128))
    try:
        got = tuple(int(v) for v in answer)
    except (TypeError, ValueError):
        return False, f"expected a pair of integers (b for 40x40, b for 100x100), got {answer!r}"
    if len(got) != 2:
        return False, f"expected two numbers, got {len(got)}"
    wrong = [name for name, g_, w_ in zip(("40x40", "100x100"), got, want) if g_ != w_]
    return not wrong, "" if not wrong else f"the number for {' and '.join(wrong)} is off"


@exercise("03.2", "Super-bit hash codes by hand (Eq. 12-13)", "★ warm-up", points=1,
          solution="One einsum projects every position on the b columns of each round's matrix (B, R, L, b); the "
                   "argmax over the last axis is the bucket (Eq. 13).",
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


@exercise("03.3", "When do the super-bit directions stop being orthonormal?", "★★ practice", points=2,
          solution="b exceeds C' = 64 first at L = 65 x 128 = 8320 (L // 128 = 65, odd, rounded up to 66): a square "
                   "LR image of about 91x91 pixels, smaller than every benchmark test image.",
          hint="orthonormal columns need b <= C'; find the smallest L with n_hash_buckets(L, 128) > 64.")
def _check_orthonormal_limit(answer):
    """``answer``: the smallest number of positions ``L`` for which the paper's GLA (``C' = 64``, chunks of
    128) has more buckets than embedding channels."""
    from srlib.attention.buckets import n_hash_buckets

    want = next(n for n in range(128, 128 * 130) if n_hash_buckets(n, 128) > 64)
    got = int(answer)
    return got == want, "" if got == want else f"{got} is {'too large' if got > want else 'too small'}"


@exercise("03.5", "A learnable score that never sees the query", "★★ practice", points=2,
          hint="s_l(i, j) = MLP(f_j)[i] depends on the key j. In how many chunks is a position one of the 3c keys? "
               "Remember what look_around puts next to a chunk.",
          solution="The official score depends on the key only, so the whole key column of the position (48 query "
                   "slots) changes in every chunk where it is a key: its own chunk and, through look_around, the "
                   "chunks before and after it, 3 x 48 = 144 entries (the paper's Eq. 11 changes one query row).")
def _check_lss_entries(answer):
    """``answer``: how many entries of one round's official learnable score ``s_l`` (all chunks, each ``(c, 3c)``)
    change when the LSS features of one position change (chunks of ``c = 48``, no padding, 5 chunks)."""
    from srlib.attention.buckets import BucketLayout
    from srlib.attention.gla import GlobalLearnableAttention

    try:
        got = int(answer)
    except (TypeError, ValueError):
        return False, f"expected an integer, got {answer!r}"
    g = torch.Generator().manual_seed(35)
    gla = GlobalLearnableAttention(n_hashes=1, channels=8, reduction=2, chunk_size=48).double()
    with torch.no_grad():
        for p in gla.fc.parameters():
            p.copy_(torch.randn(p.shape, generator=g, dtype=torch.float64))
    feats = torch.rand(1, 240, 8, generator=g, dtype=torch.float64)  # L = 5 chunks of 48, no padding
    layout = BucketLayout.from_codes(torch.randint(0, 6, (1, 1, 240), generator=g), 48)
    changed = feats.clone()
    changed[0, 100] += 1.0
    with torch.no_grad():
        delta = gla.learnable_score(changed, layout) - gla.learnable_score(feats, layout)
    want = int((delta.abs() > 1e-12).sum())
    if got == want:
        return True, ""
    return False, ("that is one chunk; is the position a key anywhere else?" if got == 48 else
                   f"{got} is {'too many' if got > want else 'too few'}")


# open questions: worked answers in prose in the solutions notebook
exercise("03.4", "Super-bit depth and the variance of the angle estimate", "★★ practice", points=2,
         solution="Independent super-bits average like independent estimates, so the relative gain depends on the "
                  "depth of each super-bit; it is largest near 90 degrees and shrinks in wider spaces, where "
                  "Gaussian directions are already nearly orthogonal.")(None)
exercise("03.6", "Train without the learnable score (Table 1)", "★★★ challenge", points=3,
         solution="Expect a difference of a few hundredths of a dB in either direction; to trust it, it must exceed "
                  "the spread over several seeds of both variants (srlib/spread/03.json gives the spread of one).")(None)
exercise("03.7", "Bucket balance with a wider embedding", "★★★ challenge", points=3,
         solution="A non-negative embedding has all its projections on one side, so a few directions win most "
                  "argmaxes and buckets collapse; a wider embedding spreads them somewhat, but the ReLU keeps the "
                  "bias.")(None)
