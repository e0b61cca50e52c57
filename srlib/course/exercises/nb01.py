"""Exercises of notebook 01 (NLSN): bucket counts, collisions over several hash rounds, and open questions."""

from __future__ import annotations

import math

import torch

from ._texts import checks


@checks("01.1")
def _buckets_and_keys(answer):
    from srlib.attention.buckets import n_hash_buckets

    buckets, keys = (int(v) for v in answer)
    want_buckets, want_keys = n_hash_buckets(64 * 64, 144), 3 * 3 * 144  # L = 64 x 64, k = 144, r = 3
    if buckets != want_buckets:
        return False, f"{buckets} buckets is not the official rule's count"
    if keys != want_keys:
        return False, f"the bucket count is right, but {keys} keys per query over 3 rounds is not"
    return True, f"{want_buckets} buckets, {want_keys} keys per query ({want_keys / (64 * 64):.0%} of the positions)"


def _collision_30deg_4_rounds() -> float:
    from srlib.analysis.buckets import lsh_collision_rate

    p = float(lsh_collision_rate(torch.tensor([math.radians(30)], dtype=torch.float64), 16, 8, 2000,
                                 generator=torch.Generator().manual_seed(0))[0])
    return 1 - (1 - p) ** 4


@checks("01.2")
def _collision_rounds(answer):
    expected = _collision_30deg_4_rounds()
    ok = abs(float(answer) - expected) < 0.02
    return ok, f"{expected:.3f}" if ok else f"{float(answer):.3f} is not it"
