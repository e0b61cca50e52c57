"""Exercises of notebook 01 (NLSN): bucket counts, collisions over several hash rounds, and open questions."""

from __future__ import annotations

import math

import torch

from . import exercise


@exercise("01.1", "Buckets and keys", "★ warm-up", points=1,
          hint="buckets: srlib.attention.buckets.n_hash_buckets(L, k); keys: own chunk and two neighbours, per round",
          solution="L // k = 4096 // 144 = 28, already even: 28 buckets; each query sees its own chunk and the two "
                   "neighbouring ones, 3k = 432 slots per round, 1296 over three rounds.")
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


@exercise("01.2", "Collision over several rounds", "★★ practice", points=2,
          hint="measure p with lsh_collision_rate for one angle, then 1 - (1 - p)**4",
          solution="Rounds draw independent rotations, so a pair misses in all r rounds with probability (1 - p)^r; "
                   "with p measured at 30 degrees (m = 8, 16-D) about 0.97 over four rounds.")
def _collision_rounds(answer):
    expected = _collision_30deg_4_rounds()
    ok = abs(float(answer) - expected) < 0.02
    return ok, f"{expected:.3f}" if ok else f"{float(answer):.3f} is not it"


_OPEN = (
    ("01.3", "Stable vs unstable", "★★ practice", 2,
     "Both sorts put the same buckets in the same slots and differ only in the order inside a bucket, which "
     "changes the output only where a chunk boundary cuts a bucket."),
    ("01.4", "Paper hash vs official hash", "★★ practice", 2,
     "The official argmax over [xR, -xR] pairs its buckets antipodally, so features in a narrow cone cannot "
     "reach about half of them; the paper's independent directions have no such pairing."),
    ("01.5", "How much of dense attention survives?", "★★ practice", 2,
     "With small chunks more rounds lower the error to dense attention; with two chunks the error comes from "
     "keys counted twice and rounds do not remove it; with chunk = L NLSA is dense attention."),
    ("01.6", "Reproduce Table 5 your way", "★★★ challenge", 3,
     "Count the embedding convolutions, the hash and, per round, scores and sum over 3k keys; no such rule "
     "gives the paper's four rows, the closest is a fixed part plus 2k keys per round."),
    ("01.7", "Where do the trained NLSA blocks look?", "★★ practice", 2,
     "Count occupied buckets and the largest bucket of the shipped block against the untrained one of the same "
     "shape: the trained hash spreads positions over more, smaller buckets."),
)
for _key, _title, _level, _points, _solution in _OPEN:
    exercise(_key, _title, _level, points=_points, solution=_solution)(None)  # worked answers: solutions notebook
