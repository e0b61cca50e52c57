"""Exercises of notebook 01 (NLSN): bucket counts, collisions over several hash rounds, and open questions."""

from __future__ import annotations

import math

import torch

from . import exercise


@exercise("01.1", "Buckets and keys", "★ warm-up",
          hint="buckets: srlib.attention.buckets.n_hash_buckets(L, k); keys: own chunk and two neighbours, per round")
def _buckets_and_keys(answer):
    from srlib.attention.buckets import n_hash_buckets

    buckets, keys = (int(v) for v in answer)
    want_buckets, want_keys = n_hash_buckets(48 * 48, 144), 4 * 3 * 144
    if buckets != want_buckets:
        return False, f"{buckets} buckets is not the official rule's count"
    if keys != want_keys:
        return False, f"the bucket count is right, but {keys} keys per query over 4 rounds is not"
    return True, f"{want_buckets} buckets, {want_keys} keys per query ({want_keys / (48 * 48):.0%} of the positions)"


def _collision_30deg_4_rounds() -> float:
    from srlib.analysis.buckets import lsh_collision_rate

    p = float(lsh_collision_rate(torch.tensor([math.radians(30)], dtype=torch.float64), 16, 8, 2000,
                                 generator=torch.Generator().manual_seed(0))[0])
    return 1 - (1 - p) ** 4


@exercise("01.2", "Collision over several rounds", "★★ practice",
          hint="measure p with lsh_collision_rate for one angle, then 1 - (1 - p)**4")
def _collision_rounds(answer):
    expected = _collision_30deg_4_rounds()
    ok = abs(float(answer) - expected) < 0.02
    return ok, f"{expected:.3f}" if ok else f"{float(answer):.3f} is not it"


for _key, _title, _level in (("01.3", "Stable vs unstable", "★★ practice"),
                             ("01.4", "Paper hash vs official hash", "★★ practice"),
                             ("01.5", "How much of dense attention survives?", "★★ practice"),
                             ("01.6", "Reproduce Table 5 your way", "★★★ challenge"),
                             ("01.7", "Where do the trained NLSA blocks look?", "★★ practice")):
    exercise(_key, _title, _level)(None)  # open questions: worked answers in the solutions notebook
