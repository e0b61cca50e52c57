"""Analytic FLOP counts of the attention blocks, to reproduce the papers' efficiency tables.

Convention (used by every function here): **one multiply-add = 2 FLOPs**, and only the matrix products are
counted (convolutions, score products ``q k^T``, weighted sums ``w v``, hash projections). Softmax /
``exp`` / ``logsumexp``, the L2 normalisation of keys, sorting, gathers, padding and the round combination
are element-wise or index work (``O(L)`` to ``O(R L 3k)`` operations, under 2% of the total at the papers'
sizes) and are left out, as the papers leave them out. This is also what
``torch.utils.flop_counter.FlopCounterMode`` counts for our implementations (the tests check the terms
against it).

How the papers count (``H = W = 100``, ``C = 64`` in NLSN Table 5 and ENLCN Table 4):

* NLSN Table 5 "Conv 0.7" is ``2 * H*W * 3*3 * 64 * 64 = 0.737`` GFLOPs (ENLCN Table 4 prints it as 0.74):
  2 FLOPs per multiply-add, bias ignored.
* NLSN Table 5 "NLA 16.0" is exactly ``2 * L^2 * (C/4 + C)`` with ``L = H*W``: scores with the
  ``C/4 = 16``-channel embedding (the official ``reduction = 4``) plus the weighted sum of the ``C = 64``
  value channels; the 1x1 embedding convolutions are *not* counted. ENLCN Table 4 "NLA 25.60" is
  ``2 * L^2 * (C + C)``: the same formula with unreduced 64-channel embeddings.
* ENLCN Table 4 "NLSA-r4 5.08" is ``R * (2*L*3k*C + 2*L*3k*C + 2*L*C*128)`` with ``R = 4``, ``k = 144``:
  64-channel scores and values over the ``3k`` keys of ``[own, previous, next]`` chunk, a hash projection on
  128 directions (the bucket cap), no padding, no convolutions (:func:`nlsa_flops` with ``reduction=1,
  n_buckets=128, hash_variant="paper", padded=False`` gives 5.079).
* NLSN Table 5 "NLSA-r1/r2/r4/r8 = 0.9/1.4/2.4/4.3" is **not** reproduced by any such accounting we tried
  (3, 2 or 1 attended chunks; 16- or 64-channel embeddings; with or without the embedding convolutions,
  padding, hashing). The table grows by ``~0.49`` GFLOPs per round on top of a fixed ``~0.41``. What the
  official code computes (:func:`nlsa_flops` defaults, ``3k`` keys) is ``0.71`` GFLOPs per round (``0.27``
  more for the two embedding convolutions); the per-round growth of the table matches a query attending to
  ``2k`` keys (own chunk plus one neighbour, as in Reformer) instead. The paper's numbers lie between the
  ``2k``- and ``3k``-key counts for every ``r`` (tests/test_flops.py checks this bracket).

Source: NLSN paper (Mei et al., CVPR 2021) Sec. 3.3 "Computational complexity" (``O(r n c k + r n c m +
r n m)``) and Table 5; ENLCN paper (Xia et al., AAAI 2022) Table 4; official NLSA
``HarukiYqM/Non-Local-Sparse-Attention`` ``src/model/attention.py`` for what is actually computed.

Results are :class:`FlopCount` objects (named terms), one function per mechanism (:func:`nla_flops`,
:func:`nlsa_flops`, :func:`enla_flops`, :func:`gla_flops`, :func:`hspa_flops`, :func:`lcoa_flops`), so that
:func:`attention_flops_table` prints one table for all of them; which rows it has comes from
:mod:`srlib.attention.registry` (each entry names its row function here).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from srlib.attention import registry
from srlib.attention.buckets import n_hash_buckets

__all__ = [
    "FLOPS_PER_MAC",
    "ENLCN_TABLE4_GFLOPS",
    "NLSN_TABLE5_GFLOPS",
    "FlopCount",
    "conv_flops",
    "nla_flops",
    "nlsa_flops",
    "ENLCN_TABLE4_ENLCA_GFLOPS",
    "enla_flops",
]

#: FLOPs per multiply-add (the papers' convention, see the module docstring).
FLOPS_PER_MAC = 2

#: NLSN paper Table 5 (Set5 x2; input 100 x 100, 64 channels): GFLOPs as printed.
NLSN_TABLE5_GFLOPS = {"Conv": 0.7, "NLA": 16.0, "NLSA-r1": 0.9, "NLSA-r2": 1.4, "NLSA-r4": 2.4, "NLSA-r8": 4.3}

#: ENLCN paper Table 4 (Urban100 x4; same 100 x 100 x 64 setting): GFLOPs as printed (NLA, Conv, NLSA rows).
ENLCN_TABLE4_GFLOPS = {"Conv": 0.74, "NLA": 25.60, "NLSA-r4": 5.08}


@dataclass(frozen=True)
class FlopCount:
    """FLOPs of one block as named terms (1 multiply-add = 2 FLOPs).

    Attributes:
        terms: ``name -> FLOPs`` (int), e.g. ``{"scores": ..., "aggregate": ..., "hash": ...}``.
        notes: free text saying what is and is not counted.

    ``total`` is the sum of the terms, ``gflops`` the total in units of ``1e9``. Two counts add up
    term by term (``a + b``).
    """

    terms: dict[str, int]
    notes: str = field(default="", compare=False)

    @property
    def total(self) -> int:
        return sum(self.terms.values())

    @property
    def gflops(self) -> float:
        return self.total / 1e9

    def __add__(self, other: "FlopCount") -> "FlopCount":
        terms = dict(self.terms)
        for k, v in other.terms.items():
            terms[k] = terms.get(k, 0) + v
        return FlopCount(terms, "; ".join(n for n in (self.notes, other.notes) if n))


def _positive(**values: int) -> None:
    for name, v in values.items():
        if not isinstance(v, int) or isinstance(v, bool) or v <= 0:
            raise ValueError(f"{name} must be a positive integer, got {v!r}")


def _channels(c: int, reduction: int, embed_channels: int | None, value_channels: int | None) -> tuple[int, int]:
    _positive(c=c, reduction=reduction)
    if embed_channels is None:
        if c % reduction:
            raise ValueError(f"channels c = {c} must be divisible by reduction = {reduction}")
        embed_channels = c // reduction
    value_channels = c if value_channels is None else value_channels
    _positive(embed_channels=embed_channels, value_channels=value_channels)
    return embed_channels, value_channels


def _qkv_embeddings(h: int, w: int, c: int, d: int, dv: int) -> dict[str, int]:
    """The three 1x1 embedding convolutions of the dense mechanisms and ENLA: ``c -> d`` (queries, keys) and
    ``c -> dv`` (values)."""
    return {"embed_q": conv_flops(h, w, c, d, 1), "embed_k": conv_flops(h, w, c, d, 1),
            "embed_v": conv_flops(h, w, c, dv, 1)}


def _chunked_length(L: int, chunk: int, padded: bool) -> int:
    """Positions the chunked attention runs over: ``L`` padded to a multiple of ``chunk`` (official), or ``L``."""
    return -(-L // chunk) * chunk if padded else L


def _hash_buckets(L: int, chunk: int, max_buckets: int, n_buckets: int | None) -> int:
    """Buckets of an LSH: ``n_buckets``, or the official ``n_hash_buckets(L, chunk, max_buckets)``."""
    m = n_hash_buckets(L, chunk, max_buckets) if n_buckets is None else n_buckets
    _positive(n_buckets=m)
    return m


def conv_flops(h: int, w: int, c_in: int, c_out: int, kernel_size: int = 3, *, bias: bool = False) -> int:
    """FLOPs of a stride-1, 'same'-padded ``kernel_size x kernel_size`` convolution on an ``h x w`` map.

    ``2 * h*w * k^2 * c_in * c_out`` (+ ``h*w*c_out`` additions with ``bias``). NLSN Table 5 "Conv 0.7" is
    ``conv_flops(100, 100, 64, 64, 3) = 0.737e9``.

    Raises:
        ValueError: a non-positive size.
    """
    _positive(h=h, w=w, c_in=c_in, c_out=c_out, kernel_size=kernel_size)
    flops = FLOPS_PER_MAC * h * w * kernel_size * kernel_size * c_in * c_out
    return flops + (h * w * c_out if bias else 0)


def nla_flops(
    h: int,
    w: int,
    c: int,
    *,
    reduction: int = 4,
    embed_channels: int | None = None,
    value_channels: int | None = None,
    include_embeddings: bool = False,
) -> FlopCount:
    """FLOPs of dense non-local attention (NLSN Eq. 4) on an ``h x w x c`` feature map.

    Terms (``L = h*w``, ``d = embed_channels``, ``dv = value_channels``):

    * ``scores``: ``q k^T`` for all ``L x L`` pairs, ``2 * L^2 * d``;
    * ``aggregate``: ``softmax(.) v``, ``2 * L^2 * dv``;
    * with ``include_embeddings``: ``embed_q``, ``embed_k`` (1x1 convs ``c -> d``) and ``embed_v``
      (1x1 conv ``c -> dv``).

    ``nla_flops(100, 100, 64)`` = 16.0 GFLOPs, NLSN Table 5 (``d = c/4 = 16``, ``dv = 64``, no embeddings);
    ``nla_flops(100, 100, 64, reduction=1)`` = 25.6 GFLOPs, ENLCN Table 4.

    Args:
        h, w: spatial size; c: input channels.
        reduction: ``d = c // reduction`` unless ``embed_channels`` is given (official NLSA: 4).
        embed_channels, value_channels: override ``d`` and ``dv`` (default ``dv = c``).
        include_embeddings: also count the three 1x1 embedding convolutions.
    Raises:
        ValueError: non-positive sizes, or ``c`` not divisible by ``reduction``.
    """
    _positive(h=h, w=w)
    d, dv = _channels(c, reduction, embed_channels, value_channels)
    L = h * w
    terms = {"scores": FLOPS_PER_MAC * L * L * d, "aggregate": FLOPS_PER_MAC * L * L * dv}
    if include_embeddings:
        terms.update(_qkv_embeddings(h, w, c, d, dv))
    notes = "dense attention: L^2 pairs; softmax not counted"
    return FlopCount(terms, notes)


def nlsa_flops(
    h: int,
    w: int,
    c: int,
    chunk: int = 144,
    n_hashes: int = 1,
    *,
    reduction: int = 4,
    embed_channels: int | None = None,
    value_channels: int | None = None,
    n_buckets: int | None = None,
    max_buckets: int = 128,
    hash_variant: str = "official",
    chunks_attended: int = 3,
    padded: bool = True,
    include_embeddings: bool = False,
    match_kernel: int = 3,
) -> FlopCount:
    """FLOPs of Non-Local Sparse Attention (NLSN Eqs. 7-11) on an ``h x w x c`` feature map.

    Terms, per hash round and summed over ``R = n_hashes`` rounds (``L = h*w``; ``L' = ceil(L/k)*k`` the
    padded length when ``padded``, else ``L``; ``d``, ``dv`` embedding / value channels; ``K =
    chunks_attended * k`` keys per query):

    * ``hash``: the projection ``x R`` of Eq. (7), ``2 * L * d * n_dir`` with ``n_dir = m/2`` directions
      for the official ``[xR, -xR]`` hash or ``m`` for the paper's ``argmax(A x)``;
    * ``scores``: ``q k^T`` inside the chunks, ``2 * L' * K * d`` (Eq. 9-10);
    * ``aggregate``: ``softmax(.) v``, ``2 * L' * K * dv``;
    * with ``include_embeddings``: ``embed_match`` (``match_kernel`` conv ``c -> d``) and
      ``embed_assembly`` (1x1 conv ``c -> dv``), counted once (shared by all rounds).

    The defaults describe what the official code computes (3 chunks ``[own, prev, next]``, padded
    sequence, ``m = n_hash_buckets(L, k)`` buckets). See the module docstring for how these numbers compare
    with NLSN Table 5 (not reproduced) and ENLCN Table 4 (reproduced).

    Args:
        h, w: spatial size; c: input channels; chunk: chunk size ``k`` (paper 144); n_hashes: rounds ``R``.
        reduction, embed_channels, value_channels: as in :func:`nla_flops`.
        n_buckets: number of buckets ``m``; default ``n_hash_buckets(L, chunk, max_buckets)`` (official).
        hash_variant: ``"official"`` (``m/2`` directions) or ``"paper"`` (``m`` directions).
        chunks_attended: chunks each query attends to (official 3; 1 = its own chunk only, Eq. 9).
        padded: count the padded length ``L'`` (official) instead of ``L``.
        include_embeddings: also count the two embedding convolutions.
        match_kernel: kernel size of the matching embedding (official 3).
    Raises:
        ValueError: non-positive sizes, ``c`` not divisible by ``reduction``, unknown ``hash_variant``,
            ``L < chunk``, or an odd ``n_buckets`` with the official hash.
    """
    _positive(h=h, w=w, chunk=chunk, n_hashes=n_hashes, chunks_attended=chunks_attended, match_kernel=match_kernel)
    d, dv = _channels(c, reduction, embed_channels, value_channels)
    if hash_variant not in ("official", "paper"):
        raise ValueError(f"hash_variant must be 'official' or 'paper', got {hash_variant!r}")
    L = h * w
    m = _hash_buckets(L, chunk, max_buckets, n_buckets)
    if hash_variant == "official" and m % 2:
        raise ValueError(f"the official hash needs an even number of buckets, got n_buckets = {m}")
    n_dir = m // 2 if hash_variant == "official" else m
    length = _chunked_length(L, chunk, padded)
    keys = chunks_attended * chunk
    R = n_hashes
    terms = {
        "hash": R * FLOPS_PER_MAC * L * d * n_dir,
        "scores": R * FLOPS_PER_MAC * length * keys * d,
        "aggregate": R * FLOPS_PER_MAC * length * keys * dv,
    }
    if include_embeddings:
        terms["embed_match"] = conv_flops(h, w, c, d, match_kernel)
        terms["embed_assembly"] = conv_flops(h, w, c, dv, 1)
    notes = (
        f"{R} round(s), {m} buckets, {keys} keys per query, length {length}; "
        "softmax, sorting and round combination not counted"
    )
    return FlopCount(terms, notes)


#: ENLCN paper Table 4: GFLOPs of ENLCA with ``m`` random features (100 x 100 input, 64 channels), by ``m``.
ENLCN_TABLE4_ENLCA_GFLOPS = {256: 1.31, 128: 0.66, 64: 0.33, 32: 0.16, 16: 0.08, 8: 0.04, 4: 0.02, 2: 0.01}


def enla_flops(
    h: int,
    w: int,
    c: int,
    n_features: int = 128,
    *,
    reduction: int = 4,
    embed_channels: int | None = None,
    value_channels: int | None = None,
    include_embeddings: bool = False,
) -> FlopCount:
    """FLOPs of Efficient Non-Local Attention (ENLCN paper Eqs. 4-6) on an ``h x w x c`` feature map.

    The paper's "Computational Complexity" paragraph counts ``O(2mNc + 2mNc_out + mN)`` multiply-adds
    (``N = h*w``, ``c`` embedding channels, ``c_out`` value channels, ``m`` random features); with 2 FLOPs
    per multiply-add the terms are (``d = embed_channels``, ``dv = value_channels``):

    * ``features``: the projections ``F Q`` and ``F K`` of Eq. (4), ``2 * 2 * N * m * d``;
    * ``context``: ``phi(K) V^T`` of Eq. (5), ``2 * N * m * dv``;
    * ``output``: ``phi(Q)^T (phi(K) V^T)``, ``2 * N * m * dv``;
    * ``normaliser``: ``D = diag(phi(Q)^T (phi(K) 1_N))`` of Eq. (6), ``2 * N * m`` (the paper's ``mN``);
    * with ``include_embeddings``: ``embed_q``, ``embed_k`` (1x1 convs ``c -> d``, as in the official
      ENLCA) and ``embed_v`` (1x1 conv ``c -> dv``).

    The ``exp`` of the feature map, the L2 normalisation of Eq. (3) and the sum ``phi(K) 1_N`` are
    element-wise work and are not counted (module docstring). ``torch.utils.flop_counter.FlopCounterMode``
    on :func:`srlib.attention.enla.enla` counts exactly ``features + context + output`` (the normaliser is an
    element-wise product and a sum there).

    ENLCN Table 4 (``100 x 100`` input, "both input and output channels are 64", so ``d = dv = 64``:
    ``enla_flops(100, 100, 64, m, reduction=1)``) is reproduced to within 3% for every
    ``m = 2 ... 256`` (:data:`ENLCN_TABLE4_ENLCA_GFLOPS`; e.g. ``m = 128``: 0.658 vs 0.66). In the same table
    "NLA 25.60" is :func:`nla_flops` with 64-channel embeddings (``reduction=1``: ``2 N^2 (64 + 64)``),
    whereas NLSN's Table 5 prints 16.0 for the same input because NLSN's NLA embeds into ``C/4 = 16``
    channels (``2 N^2 (16 + 64)``): the two papers count the same dense attention with different
    embedding widths, not different accountings.

    Args:
        h, w: spatial size; c: input channels.
        n_features: ``m`` (paper: 128).
        reduction: ``d = c // reduction`` unless ``embed_channels`` is given (ENLCN: 256 channels,
            reduction 4 -> ``d = 64``; Table 4 uses ``c = d = 64``, i.e. ``reduction=1``).
        embed_channels, value_channels: override ``d`` and ``dv`` (default ``dv = c``).
        include_embeddings: also count the three 1x1 embedding convolutions.

    Raises:
        ValueError: non-positive sizes, or ``c`` not divisible by ``reduction``.
    """
    _positive(h=h, w=w, n_features=n_features)
    d, dv = _channels(c, reduction, embed_channels, value_channels)
    L, m = h * w, n_features
    terms = {
        "features": 2 * FLOPS_PER_MAC * L * m * d,
        "context": FLOPS_PER_MAC * L * m * dv,
        "output": FLOPS_PER_MAC * L * m * dv,
        "normaliser": FLOPS_PER_MAC * L * m,
    }
    if include_embeddings:
        terms.update(_qkv_embeddings(h, w, c, d, dv))
    notes = f"{m} random features: linear in L = {L}; exp and normalisation of Q, K not counted"
    return FlopCount(terms, notes)


# ----------------------------------------------------------------------------------------------------------
# GLA, HSPA, LCoA, and one table for all mechanisms
# ----------------------------------------------------------------------------------------------------------
#: GLA learnable-score variants understood by :func:`gla_flops` (as :data:`srlib.attention.gla.LSS_VARIANTS`).
_GLA_LSS = ("official", "paper", "none")


def gla_flops(
    h: int,
    w: int,
    c: int,
    chunk: int = 128,
    n_hashes: int = 3,
    *,
    reduction: int = 4,
    embed_channels: int | None = None,
    value_channels: int | None = None,
    n_buckets: int | None = None,
    max_buckets: int = 128,
    lss_variant: str = "official",
    padded: bool = True,
    include_embeddings: bool = False,
    k_size: int = 3,
) -> FlopCount:
    """FLOPs of Global Learnable Attention (DLSN paper Eqs. 8-18) on an ``h x w x c`` feature map.

    GLA is NLSA with super-bit LSH and a learned score term, so the terms are those of :func:`nlsa_flops` plus
    ``lss`` (per round ``r`` of ``R = n_hashes``; ``L = h*w``, ``L'`` the padded length, ``b`` buckets,
    ``d``/``dv`` embedding/value channels, ``3k`` keys per query):

    * ``hash``: super-bit projection on ``b`` orthonormal directions (Eq. 12-13, no ``±`` pairs),
      ``R * 2 * L * d * b``;
    * ``scores``: ``R * 2 * L' * 3k * d`` (the fixed dot-product score ``s_f``, Eq. 10);
    * ``lss``: the MLP of the learnable similarity score ``s_l`` (Eq. 11), applied to every sorted row of
      every round: ``"official"`` ``Linear(c -> k), Linear(k -> k)``: ``R * 2 * L' * (c k + k^2)``;
      ``"paper"`` ``Linear(c -> 3k), Linear(3k -> 3k)``: ``R * 2 * L' * (3 c k + 9 k^2)``; ``"none"``: 0;
    * ``aggregate``: ``R * 2 * L' * 3k * dv``;
    * with ``include_embeddings``: ``embed_match`` (``k_size`` conv ``c -> d``), ``embed_assembly`` and, with
      a learned score, ``embed_lss`` (``k_size`` convs ``c -> dv`` and ``c -> c``), once for all rounds.

    DLSN Sec. 3.4 states the cost of the scores as ``O(hwlc)`` for ``s_f`` plus ``O(hwlc + hwl^2)`` for
    ``s_l`` (bucket size ``l``): the ``scores`` and ``lss`` terms here, with the constants (``3`` keys per
    chunk, 2 FLOPs per multiply-add) that the O-notation drops. The DLSN paper prints no FLOP table (its
    Fig. 8 gives GPU time and memory), so there is no number to reproduce. The addition of ``s_l`` to the
    scores and the ReLUs are element-wise and not counted (module docstring).

    Args:
        h, w: spatial size; c: input channels; chunk: bucket size ``k`` (DLSN ``l`` = 128);
        n_hashes: rounds ``R`` (DLSN: 3).
        reduction, embed_channels, value_channels: as in :func:`nla_flops` (official ``reduction=4``).
        n_buckets: ``b``; default ``n_hash_buckets(L, chunk, max_buckets)`` (official).
        lss_variant: ``"official"``, ``"paper"`` or ``"none"`` (see :mod:`srlib.attention.gla`).
        padded: count the padded length ``L'`` (official) instead of ``L``.
        include_embeddings: also count the embedding convolutions; k_size: their kernel (official 3).
    Raises:
        ValueError: non-positive sizes, ``c`` not divisible by ``reduction``, ``L < chunk``, unknown
            ``lss_variant``.
    """
    _positive(h=h, w=w, chunk=chunk, n_hashes=n_hashes, k_size=k_size)
    d, dv = _channels(c, reduction, embed_channels, value_channels)
    if lss_variant not in _GLA_LSS:
        raise ValueError(f"lss_variant must be one of {_GLA_LSS}, got {lss_variant!r}")
    L = h * w
    b = _hash_buckets(L, chunk, max_buckets, n_buckets)
    length = _chunked_length(L, chunk, padded)
    R, keys = n_hashes, 3 * chunk
    terms = {
        "hash": R * FLOPS_PER_MAC * L * d * b,
        "scores": R * FLOPS_PER_MAC * length * keys * d,
    }
    if lss_variant == "official":
        terms["lss"] = R * FLOPS_PER_MAC * length * (c * chunk + chunk * chunk)
    elif lss_variant == "paper":
        terms["lss"] = R * FLOPS_PER_MAC * length * (c * keys + keys * keys)
    terms["aggregate"] = R * FLOPS_PER_MAC * length * keys * dv
    if include_embeddings:
        terms["embed_match"] = conv_flops(h, w, c, d, k_size)
        terms["embed_assembly"] = conv_flops(h, w, c, dv, k_size)
        if lss_variant != "none":
            terms["embed_lss"] = conv_flops(h, w, c, c, k_size)
    notes = (
        f"{R} round(s), {b} super-bit buckets, {keys} keys per query, learned score {lss_variant!r}; "
        "softmax, sorting and round combination not counted"
    )
    return FlopCount(terms, notes)


def hspa_flops(
    h: int,
    w: int,
    c: int,
    topk: int | None = 128,
    *,
    reduction: int = 2,
    embed_channels: int | None = None,
    value_channels: int | None = None,
    sparse_aggregate: bool = False,
    include_embeddings: bool = False,
) -> FlopCount:
    """FLOPs of High-Similarity-Pass Attention (HSPAN paper Eqs. 7-12) on an ``h x w x c`` feature map.

    HSPA is dense attention with soft thresholding instead of softmax, so the multiply-adds are those of
    :func:`nla_flops` (``L = h*w``, ``d``/``dv`` embedding/value channels):

    * ``scores``: ``2 * L^2 * d`` (Eq. 7, every pair: the top-k does not avoid computing them);
    * ``aggregate``: ``2 * L^2 * dv`` as the official code computes it (a dense ``(L, L)`` weight matrix,
      mostly zeros, times the values); with ``sparse_aggregate`` the count of a kernel that gathers only the
      at most ``min(topk, L)`` non-zero weights per query (exact when ``mode="truncated"``; a lower bound in
      the official ``"exact"`` mode, whose support may exceed ``topk``): ``2 * L * min(topk, L) * dv``;
    * with ``include_embeddings``: ``embed_q``, ``embed_k`` (1x1 convs ``c -> d``), ``embed_v`` (``c -> dv``).

    Not counted (comparisons and element-wise work, module docstring): the top-k selection
    (``O(L^2 log k)`` comparisons), the cumulative sums and threshold of Eqs. 11-12 (``O(L k)``), the
    ``max(s - tau, 0)`` of Eq. 9. The HSPAN paper prints no FLOP table; the operation count of the
    normaliser is what top-k saves over a full sort (``O(L^2 log L)`` comparisons), not multiply-adds.

    Args:
        h, w: spatial size; c: input channels.
        topk: ST top-k (official 128; ``None`` = full sort). Only used with ``sparse_aggregate``.
        reduction, embed_channels, value_channels: as in :func:`nla_flops` (official HSPA ``reduction=2``).
        sparse_aggregate: count a sparse aggregation instead of the official dense one.
        include_embeddings: also count the three 1x1 embedding convolutions.
    Raises:
        ValueError: non-positive sizes or ``topk``, ``c`` not divisible by ``reduction``.
    """
    _positive(h=h, w=w)
    if topk is not None:
        _positive(topk=topk)
    d, dv = _channels(c, reduction, embed_channels, value_channels)
    L = h * w
    keys = L if (topk is None or not sparse_aggregate) else min(topk, L)
    terms = {"scores": FLOPS_PER_MAC * L * L * d, "aggregate": FLOPS_PER_MAC * L * keys * dv}
    if include_embeddings:
        terms.update(_qkv_embeddings(h, w, c, d, dv))
    how = f"sparse aggregation over {keys} keys" if sparse_aggregate else "dense aggregation (official)"
    notes = f"dense scores (L^2 pairs), {how}; top-k selection and thresholding not counted"
    return FlopCount(terms, notes)


def lcoa_flops(
    h: int,
    w: int,
    c: int,
    n_clusters: int = 128,
    window: int = 144,
    n_rounds: int = 1,
    *,
    shared: bool = False,
    reduction: int = 4,
    embed_channels: int | None = None,
    value_channels: int | None = None,
    padded: bool = True,
    include_embeddings: bool = False,
    k_size: int = 3,
) -> FlopCount:
    """FLOPs of one Learnable Collaborative Attention module (LCoAN paper Eqs. 6-12).

    Computing module (LSP, ``shared=False``): NLSA's bucketed attention with a nearest-centroid hash
    (``L = h*w``, ``L'`` padded length, ``K`` clusters, ``R`` rounds, ``3 * window`` keys per query):

    * ``hash``: dot products with the ``K`` centroids (Eq. 7-8), ``R * 2 * L * d * K``;
    * ``scores``: ``R * 2 * L' * 3 window * d``;
    * ``aggregate``: ``R * 2 * L' * 3 window * dv``;
    * with ``include_embeddings``: ``embed_match`` (``k_size`` conv ``c -> d``), ``embed_assembly``
      (1x1 conv ``c -> dv``).

    Collaborative module (CoA, ``shared=True``, Eq. 12): it reuses the layout and weights of the computing
    module and only aggregates its own values: ``aggregate`` (and ``embed_assembly``) alone. A network with
    one LSP and ``n - 1`` CoA modules costs ``lcoa_flops(...) + (n - 1) * lcoa_flops(..., shared=True)``
    instead of ``n`` times the first.

    Not counted: the L2 normalisation before the assignment (Eq. 8), sorting, and the data-dependent k-means
    initialisation (10 Lloyd iterations, once in the life of a model). The LCoAN paper reports time and
    memory (Table I, Fig. 2), not FLOPs, so there is no number to reproduce.

    Args:
        h, w: spatial size; c: input channels; n_clusters: ``K`` (128); window: window size (official 144);
        n_rounds: k-means rounds ``R`` (LCoAN: 1).
        shared: count a CoA module instead of the computing module.
        reduction, embed_channels, value_channels: as in :func:`nla_flops` (official default
            ``reduction=4``; the LCoAN network uses 1).
        padded: count the padded length ``L'`` (official) instead of ``L``.
        include_embeddings: also count the embedding convolution(s); k_size: ``conv_match`` kernel (3).
    Raises:
        ValueError: non-positive sizes, ``c`` not divisible by ``reduction``, ``L < window``.
    """
    _positive(h=h, w=w, n_clusters=n_clusters, window=window, n_rounds=n_rounds, k_size=k_size)
    d, dv = _channels(c, reduction, embed_channels, value_channels)
    L = h * w
    if L < window:
        raise ValueError(f"input too small: H*W = {L} positions < window = {window}")
    length = _chunked_length(L, window, padded)
    R, keys = n_rounds, 3 * window
    terms: dict[str, int] = {}
    if not shared:
        terms["hash"] = R * FLOPS_PER_MAC * L * d * n_clusters
        terms["scores"] = R * FLOPS_PER_MAC * length * keys * d
    terms["aggregate"] = R * FLOPS_PER_MAC * length * keys * dv
    if include_embeddings:
        if not shared:
            terms["embed_match"] = conv_flops(h, w, c, d, k_size)
        terms["embed_assembly"] = conv_flops(h, w, c, dv, 1)
    role = "CoA (shared weights: aggregation only)" if shared else f"LSP ({n_clusters} clusters)"
    notes = f"{role}, {R} round(s), {keys} keys per query; normalisation, sorting, k-means init not counted"
    return FlopCount(terms, notes)


def attention_flops_table(
    h: int = 100,
    w: int = 100,
    c: int = 64,
    *,
    reduction: int = 4,
    nlsa_rounds: tuple[int, ...] = (1, 2, 4, 8),
    enla_features: tuple[int, ...] = (16, 32, 64, 128, 256),
    chunk: int = 144,
    gla_chunk: int = 128,
    gla_rounds: int = 3,
    hspa_topk: int | None = 128,
    lcoa_clusters: int = 128,
    coa_layers: int = 4,
    include_embeddings: bool = False,
) -> dict[str, FlopCount]:
    """FLOPs of every registered mechanism (:mod:`srlib.attention.registry`: the six, then any added) on one
    ``h x w x c`` feature map, in one accounting (module docstring).

    Every query/key embedding has ``d = c // reduction`` channels and the values ``c`` (default ``d = 16``
    at ``c = 64``: NLSN Table 5's setting and the official reduction of NLSA, GLA, LCoA and ENLCA; the
    official HSPA uses ``reduction=2``), so the rows differ only in *which pairs* are scored and how.

    Rows (keys of the returned dict, in this order): ``"Conv 3x3"`` (one ``c -> c`` 3x3 convolution, the
    papers' yardstick), ``"NLA"``, ``"NLSA-r{R}"`` for ``R`` in ``nlsa_rounds`` (chunk ``chunk``),
    ``"ENLA-m{m}"`` for ``m`` in ``enla_features``, ``"GLA-r{gla_rounds}"`` (chunk ``gla_chunk``, official
    learned score), ``"HSPA-k{topk}"`` (official dense aggregation), ``"LCoA-LSP"`` (computing module,
    ``lcoa_clusters`` clusters, window ``chunk``), ``"LCoA-CoA"`` (one sharing module) and
    ``"LCoA-{coa_layers} layers"`` (one LSP plus ``coa_layers - 1`` CoA modules, per layer: total divided
    by ``coa_layers``, rounded down). A registered mechanism adds the rows of its entry's ``flop_rows``.

    Returns:
        ``{row name: FlopCount}``. The paper tables use other widths; see the tests for
        ``nla_flops(100, 100, 64, reduction=1)`` (ENLCN Table 4) etc.
    Raises:
        ValueError: from the individual functions (e.g. a map smaller than one chunk), or ``coa_layers < 1``.
    """
    _positive(coa_layers=coa_layers)
    settings = dict(reduction=reduction, nlsa_rounds=nlsa_rounds, enla_features=enla_features, chunk=chunk,
                    gla_chunk=gla_chunk, gla_rounds=gla_rounds, hspa_topk=hspa_topk, lcoa_clusters=lcoa_clusters,
                    coa_layers=coa_layers, include_embeddings=include_embeddings)
    conv = FlopCount({"conv": conv_flops(h, w, c, c, 3)}, "one 3x3 convolution c -> c")
    rows: dict[str, FlopCount] = {"Conv 3x3": conv}
    for name in registry.mechanisms():  # every registered mechanism, in registration order
        flop_rows = registry.resolve(registry.get(name).flop_rows)
        if flop_rows is not None:
            rows.update(flop_rows(h, w, c, settings))
    return rows


# The rows of each mechanism in :func:`attention_flops_table` (named by its entry in srlib.attention.registry):
# ``(h, w, c, settings) -> {row name: FlopCount}``, ``settings`` the table's keyword arguments.
def _nla_rows(h: int, w: int, c: int, s: dict) -> dict[str, FlopCount]:
    return {"NLA": nla_flops(h, w, c, reduction=s["reduction"], include_embeddings=s["include_embeddings"])}


def _nlsa_rows(h: int, w: int, c: int, s: dict) -> dict[str, FlopCount]:
    return {f"NLSA-r{r}": nlsa_flops(h, w, c, s["chunk"], r, reduction=s["reduction"],
                                     include_embeddings=s["include_embeddings"]) for r in s["nlsa_rounds"]}


def _enla_rows(h: int, w: int, c: int, s: dict) -> dict[str, FlopCount]:
    return {f"ENLA-m{m}": enla_flops(h, w, c, m, reduction=s["reduction"], include_embeddings=s["include_embeddings"])
            for m in s["enla_features"]}


def _gla_rows(h: int, w: int, c: int, s: dict) -> dict[str, FlopCount]:
    return {f"GLA-r{s['gla_rounds']}": gla_flops(h, w, c, s["gla_chunk"], s["gla_rounds"], reduction=s["reduction"],
                                                 include_embeddings=s["include_embeddings"])}


def _hspa_rows(h: int, w: int, c: int, s: dict) -> dict[str, FlopCount]:
    return {f"HSPA-k{s['hspa_topk']}": hspa_flops(h, w, c, s["hspa_topk"], reduction=s["reduction"],
                                                  include_embeddings=s["include_embeddings"])}


def _lcoa_rows(h: int, w: int, c: int, s: dict) -> dict[str, FlopCount]:
    """The computing module (LSP), one sharing module (CoA) and the per-layer cost of a stack."""
    kw = dict(reduction=s["reduction"], include_embeddings=s["include_embeddings"])
    lsp = lcoa_flops(h, w, c, s["lcoa_clusters"], s["chunk"], **kw)
    coa = lcoa_flops(h, w, c, s["lcoa_clusters"], s["chunk"], shared=True, **kw)
    n = s["coa_layers"]
    total = lsp.total + (n - 1) * coa.total
    return {"LCoA-LSP": lsp, "LCoA-CoA": coa,
            f"LCoA-{n} layers": FlopCount({"per_layer": total // n}, f"(1 LSP + {n - 1} CoA) / {n}")}


def format_flops_table(rows: dict[str, FlopCount], paper: dict[str, float] | None = None, digits: int = 3) -> str:
    """A markdown table of :func:`attention_flops_table`-style rows, optionally next to a paper's numbers.

    Columns: row name, GFLOPs (``digits`` decimals), ratio to the ``"Conv 3x3"`` row when present, and with
    ``paper`` (``{row name: printed GFLOPs}``) the printed value and the relative difference in percent for
    the rows it names.

    Raises:
        ValueError: ``digits < 0`` or a ``paper`` row missing from ``rows``.
    """
    if digits < 0:
        raise ValueError(f"digits must be >= 0, got {digits}")
    paper = paper or {}
    missing = sorted(set(paper) - set(rows))
    if missing:
        raise ValueError(f"paper rows {missing} are not in the table (rows: {list(rows)})")
    conv = rows["Conv 3x3"].total if "Conv 3x3" in rows else None
    head = "| mechanism | GFLOPs |" + (" x conv |" if conv else "") + (" paper | diff |" if paper else "")
    sep = "|---|---:|" + ("---:|" if conv else "") + ("---:|---:|" if paper else "")
    lines = [head, sep]
    for name, f in rows.items():
        line = f"| {name} | {f.gflops:.{digits}f} |"
        if conv:
            line += f" {f.total / conv:.2f} |"
        if paper:
            if name in paper:
                line += f" {paper[name]:g} | {100 * (f.gflops - paper[name]) / paper[name]:+.1f}% |"
            else:
                line += " | |"
        lines.append(line)
    return "\n".join(lines)


__all__ += [
    "gla_flops",
    "hspa_flops",
    "lcoa_flops",
    "attention_flops_table",
    "format_flops_table",
]


def paper_flops_comparison() -> list[dict]:
    """Every FLOP count printed in the papers (NLSN Table 5, ENLCN Table 4) next to ours, in each paper's own
    setting (``100 x 100`` input, 64 channels).

    Conventions: NLSN embeds queries/keys in ``C/4 = 16`` channels (``reduction=4``), ENLCN in 64
    (``reduction=1``); both count 2 FLOPs per multiply-add and leave out the embedding convolutions. ENLCN's
    NLSA-r4 is reproduced by the paper's Eq. (7) hash over 128 directions, 64-channel embeddings and no padding
    (:func:`nlsa_flops` docstring). NLSN's NLSA rows are compared with what the official code computes (3
    chunks of 144 keys, padded, ``m/2`` hash directions): they are **not** reproduced (module docstring).

    Returns:
        list of dicts ``{"table", "row", "paper", "ours", "diff", "setting"}`` (GFLOPs; ``diff`` relative).
    """
    H = W = 100
    C = 64
    ours: list[tuple[str, str, float, float, str]] = [
        ("NLSN Table 5", "Conv", NLSN_TABLE5_GFLOPS["Conv"], conv_flops(H, W, C, C, 3) / 1e9, "3x3 conv 64 -> 64"),
        ("NLSN Table 5", "NLA", NLSN_TABLE5_GFLOPS["NLA"], nla_flops(H, W, C, reduction=4).gflops, "d = 16, dv = 64"),
    ]
    for r in (1, 2, 4, 8):
        ours.append(("NLSN Table 5", f"NLSA-r{r}", NLSN_TABLE5_GFLOPS[f"NLSA-r{r}"],
                     nlsa_flops(H, W, C, 144, r).gflops, "official code: 3 x 144 keys, d = 16, padded"))
    ours += [
        ("ENLCN Table 4", "Conv", ENLCN_TABLE4_GFLOPS["Conv"], conv_flops(H, W, C, C, 3) / 1e9, "3x3 conv 64 -> 64"),
        ("ENLCN Table 4", "NLA", ENLCN_TABLE4_GFLOPS["NLA"], nla_flops(H, W, C, reduction=1).gflops, "d = dv = 64"),
        ("ENLCN Table 4", "NLSA-r4", ENLCN_TABLE4_GFLOPS["NLSA-r4"],
         nlsa_flops(H, W, C, 144, 4, reduction=1, n_buckets=128, hash_variant="paper", padded=False).gflops,
         "d = dv = 64, 3 x 144 keys, 128 hash directions, unpadded"),
    ]
    for m in sorted(ENLCN_TABLE4_ENLCA_GFLOPS, reverse=True):
        ours.append(("ENLCN Table 4", f"ENLCA-m{m}", ENLCN_TABLE4_ENLCA_GFLOPS[m],
                     enla_flops(H, W, C, m, reduction=1).gflops, "d = dv = 64"))
    return [
        {"table": t, "row": row, "paper": p, "ours": o, "diff": (o - p) / p, "setting": s}
        for t, row, p, o, s in ours
    ]


__all__ += ["paper_flops_comparison"]
