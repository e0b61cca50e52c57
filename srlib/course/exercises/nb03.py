"""Exercises of notebook 03 (DLSN: super-bit LSH, GLA, learnable similarity score).

Each checker computes the expected answer itself with srlib and returns ``(ok, message)``. Worked solutions:
``notebooks/solutions/03_dlsn_solutions.py``.
"""

from __future__ import annotations

import torch

from ._texts import checks


@checks("03.1")
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


@checks("03.2")
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


@checks("03.3")
def _check_orthonormal_limit(answer):
    """``answer``: the smallest number of positions ``L`` for which the paper's GLA (``C' = 64``, chunks of
    128) has more buckets than embedding channels."""
    from srlib.attention.buckets import n_hash_buckets

    want = next(n for n in range(128, 128 * 130) if n_hash_buckets(n, 128) > 64)
    got = int(answer)
    return got == want, "" if got == want else f"{got} is {'too large' if got > want else 'too small'}"


@checks("03.5")
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
