"""How much two attention patterns agree, and how well a bucketing keeps true neighbours together.

Two questions of the LCoAN paper (Zhao et al., "Learnable Collaborative Attention for Single Image
Super-Resolution") that the paper answers only with pictures:

* **Fig. 5, "distribution overlap rate between shallow and deep attention maps"**: the paper shares the
  attention weights of the first (shallow) module with every deeper one (collaborative attention, Eq. 11-12)
  because "the texture structure information of the image is stable in the network". The paper does not
  define the rate; this module does (:func:`overlap_rate`, :func:`topk_overlap`, :func:`pattern_overlap`)
  and computes it layer by layer (:func:`layer_overlaps`; over a network's depth and several inputs,
  :func:`depth_overlap_curve`); :func:`pattern_agreement` asks the same of the sparse pattern itself (the
  clusters and windows the shallow module would compute from deeper features).
* **Fig. 3a, k-means vs LSH**: a learned bucketing should put the keys a query cares about in the query's
  bucket more often than a random hash does. :func:`true_neighbours` finds the keys dense attention ranks
  highest, :func:`bucket_recall` measures how many share the query's bucket (Eq. 7, "same cluster") and
  :func:`window_recall` how many lie in the windows the query actually attends to (sorted windows and their
  two neighbours, the official code's pattern).

Definitions (``p``, ``q``: two attention maps, each row a distribution over the ``L`` keys):

* overlap rate of query ``i``: ``OVL_i = sum_j min(p_ij, q_ij) = 1 - TV(p_i, q_i)`` (the overlapping
  coefficient, one minus the total-variation distance): the probability mass the two rows have in common.
  1 for identical rows, 0 for rows with disjoint support; independent of the key order.
* top-k overlap of query ``i``: ``|topk(p_i) ∩ topk(q_i)| / k``: how many of the ``k`` keys one map weights
  most are also among the ``k`` the other weights most (ignores the weights' values, so it does not depend
  on the softmax temperature).
* pattern overlap (sparse patterns as key sets ``S_i``, ``T_i``): Jaccard ``|S_i ∩ T_i| / |S_i ∪ T_i|``.

Conventions: positions are flattened row-major, ``p = h*W + w``; maps are ``(B, L, L)`` with row = query,
column = key; layouts and scores are those of :mod:`srlib.attention.buckets`. Everything here is exact and
deterministic (no sampling), except where ties make ``topk`` choose (documented per function).
"""

from __future__ import annotations

from typing import Mapping, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

from srlib.attention.buckets import BucketLayout

from .capture import module_inputs

__all__ = [
    "bucket_recall",
    "bucket_share",
    "bucketed_to_dense",
    "dense_attention_map",
    "depth_overlap_curve",
    "feature_attention_map",
    "layer_overlaps",
    "overlap_rate",
    "pattern_agreement",
    "pattern_overlap",
    "topk_overlap",
    "true_neighbours",
    "window_recall",
]


def _check_pair(p: Tensor, q: Tensor, what: str) -> None:
    if not isinstance(p, Tensor) or not isinstance(q, Tensor):
        raise ValueError(f"{what}: both maps must be tensors")
    if p.shape != q.shape:
        raise ValueError(f"{what}: maps have different shapes {tuple(p.shape)} and {tuple(q.shape)}")
    if p.dim() < 1 or p.shape[-1] < 1:
        raise ValueError(f"{what}: maps need a non-empty last (key) dimension, got {tuple(p.shape)}")


# ----------------------------------------------------------------------------------------------------------
# Overlap of two attention maps / patterns
# ----------------------------------------------------------------------------------------------------------
def overlap_rate(p: Tensor, q: Tensor) -> Tensor:
    """Overlap rate of two attention maps, per query: ``OVL_i = sum_j min(p_ij, q_ij)``.

    For rows that are probability distributions (softmax outputs) this is ``1 - TV(p_i, q_i)`` with the
    total-variation distance ``TV = 1/2 sum_j |p_ij - q_ij|``: the share of attention mass the two maps place
    on the same keys. It lies in ``[0, 1]``: 1 iff the rows are equal, 0 iff they put weight on disjoint key
    sets. Our precise reading of the LCoAN paper's Fig. 5 "distribution overlap rate".

    Args:
        p, q: ``(..., L)`` non-negative maps of the same shape; the last dimension is the keys (e.g.
            ``(B, L, L)`` attention maps, or ``(L,)`` single rows). Rows should sum to 1 for the
            ``[0, 1]`` interpretation (not enforced).
    Returns:
        ``(...)`` overlap per query (the last dimension summed out), in the dtype of ``p``.
    Raises:
        ValueError: shapes differ, empty key dimension, or negative entries.
    """
    _check_pair(p, q, "overlap_rate")
    if bool((p < 0).any()) or bool((q < 0).any()):
        raise ValueError("overlap_rate: attention maps must be non-negative")
    return torch.minimum(p, q.to(p.dtype)).sum(-1)


def topk_overlap(p: Tensor, q: Tensor, k: int) -> Tensor:
    """Share of the ``k`` most-attended keys two maps have in common, per query: ``|topk(p) ∩ topk(q)| / k``.

    Temperature-free companion of :func:`overlap_rate`: it compares *which* keys each map ranks highest,
    not how much weight they get. Among tied values ``torch.topk`` picks one; maps with many exactly tied
    entries (e.g. uniform rows) then give an arbitrary but deterministic answer.

    Args:
        p, q: ``(..., L)`` maps of the same shape (any real values: only the ranking matters).
        k: ``1 <= k <= L``.
    Returns:
        ``(...)`` float tensor in ``{0, 1/k, ..., 1}``.
    Raises:
        ValueError: shapes differ or ``k`` is outside ``[1, L]``.
    """
    _check_pair(p, q, "topk_overlap")
    L = p.shape[-1]
    if not 1 <= int(k) <= L:
        raise ValueError(f"topk_overlap: k must lie in [1, {L}], got {k}")
    k = int(k)
    in_p = torch.zeros(p.shape, dtype=torch.bool, device=p.device)
    in_p.scatter_(-1, p.topk(k, dim=-1).indices, True)
    common = torch.gather(in_p, -1, q.topk(k, dim=-1).indices).sum(-1)
    return common.to(torch.get_default_dtype()) / k


def pattern_overlap(mask_a: Tensor, mask_b: Tensor) -> Tensor:
    """Jaccard overlap of two sparse attention patterns (key sets), per query: ``|S ∩ T| / |S ∪ T|``.

    Args:
        mask_a, mask_b: ``(..., L)`` boolean masks, ``True`` where the query attends to the key (e.g. from
            :func:`srlib.analysis.buckets.attended_mask`, or ``map > 0`` of :func:`bucketed_to_dense`).
    Returns:
        ``(...)`` float tensor in ``[0, 1]``; two empty sets count as identical (1).
    Raises:
        ValueError: shapes differ or the masks are not boolean.
    """
    _check_pair(mask_a, mask_b, "pattern_overlap")
    if mask_a.dtype != torch.bool or mask_b.dtype != torch.bool:
        raise ValueError(f"pattern_overlap: masks must be boolean, got {mask_a.dtype} and {mask_b.dtype}")
    inter = (mask_a & mask_b).sum(-1)
    union = (mask_a | mask_b).sum(-1)
    dtype = torch.get_default_dtype()
    return torch.where(union == 0, torch.ones((), dtype=dtype, device=inter.device),
                       inter.to(dtype) / union.clamp_min(1).to(dtype))


def layer_overlaps(
    maps: Sequence[Tensor] | Mapping[str, Tensor],
    reference: int | str = 0,
    *,
    top_k: int | None = None,
) -> dict[str, Tensor]:
    """Overlap of every layer's attention map with one reference layer (LCoAN Fig. 5, computed per layer).

    Args:
        maps: ``M`` attention maps ``(B, L, L)`` in depth order, as a list or a ``{name: map}`` dict (e.g.
            :func:`feature_attention_map` of the features entering each attention module).
        reference: index (or name) of the reference layer, default the first (shallowest) one.
        top_k: also compute the mean :func:`topk_overlap` with this ``k``.
    Returns:
        ``{"names": list of M names, "overlap": (M,) mean overlap rate over batch and queries,
        "overlap_per_query": (M, B, L), "topk": (M,) mean top-k overlap (only with top_k)}``. The
        reference layer's own entry is 1.
    Raises:
        ValueError: no maps, an unknown reference, or maps of different shapes.
    """
    if isinstance(maps, Mapping):
        names, tensors = [str(n) for n in maps.keys()], list(maps.values())
    else:
        tensors = list(maps)
        names = [str(i) for i in range(len(tensors))]
    if not tensors:
        raise ValueError("layer_overlaps: no attention maps given")
    if isinstance(reference, str):
        if reference not in names:
            raise ValueError(f"layer_overlaps: reference {reference!r} not among the layers {names}")
        ref = names.index(reference)
    else:
        ref = int(reference)
        if not -len(tensors) <= ref < len(tensors):
            raise ValueError(f"layer_overlaps: reference index {reference} out of range for {len(tensors)} maps")
    base = tensors[ref]
    for name, m in zip(names, tensors):
        if m.shape != base.shape:
            raise ValueError(f"layer_overlaps: map {name!r} has shape {tuple(m.shape)}, "
                             f"the reference has {tuple(base.shape)}")
    per_query = torch.stack([overlap_rate(m, base) for m in tensors])
    out: dict = {"names": names, "overlap": per_query.flatten(1).mean(1), "overlap_per_query": per_query}
    if top_k is not None:
        out["topk"] = torch.stack([topk_overlap(m, base, top_k).flatten().mean() for m in tensors])
    return out


# ----------------------------------------------------------------------------------------------------------
# Attention maps as dense (B, L, L) matrices
# ----------------------------------------------------------------------------------------------------------
def dense_attention_map(emb: Tensor, *, key_eps: float = 5e-5) -> Tensor:
    """The dense attention map the LCoA/NLSA similarity would give over *all* positions.

    ``A_ij = softmax_j(x_i . x_j / max(|x_j|, key_eps))`` with one shared embedding for queries and keys
    (keys normalised, queries not), the score of the official NLSA and LCoA (``docs/official_code.md``). The
    LSP of LCoAN (Eq. 7) keeps only part of each row; this is the full row it approximates (Eq. 2-3).

    Args:
        emb: ``(B, L, C)`` embeddings (``conv_match`` output flattened), or ``(B, C, H, W)``.
        key_eps: eps of the key normalisation (official 5e-5).
    Returns:
        ``(B, L, L)`` rows summing to 1 (``O(L²)`` memory).
    Raises:
        ValueError: input not 3-D or 4-D.
    """
    if emb.dim() == 4:
        emb = emb.flatten(2).transpose(1, 2)
    if emb.dim() != 3:
        raise ValueError(f"dense_attention_map: expected (B, L, C) or (B, C, H, W), got {tuple(emb.shape)}")
    keys = F.normalize(emb, p=2, dim=-1, eps=key_eps)
    return torch.softmax(emb @ keys.transpose(1, 2), dim=-1)


def feature_attention_map(x: Tensor, temperature: float = 0.1) -> Tensor:
    """A parameter-free attention map of a feature map: ``A_ij = softmax_j(cos(x_i, x_j) / temperature)``.

    Used to compare the similarity structure of features at different depths with the same yardstick: no
    embedding is learned, so a change between layers is a change of the features themselves (the premise of
    LCoAN's collaborative attention: "the texture structure information of the image is stable in the
    network", Sec. III-B.2). Feature vectors of zero norm are treated as the zero direction (eps 1e-12).

    Args:
        x: ``(B, C, H, W)`` features, or ``(B, L, C)``.
        temperature: ``> 0``; smaller is sharper.
    Returns:
        ``(B, L, L)`` rows summing to 1.
    Raises:
        ValueError: bad shape or non-positive temperature.
    """
    if temperature <= 0:
        raise ValueError(f"feature_attention_map: temperature must be positive, got {temperature}")
    if x.dim() == 4:
        x = x.flatten(2).transpose(1, 2)
    if x.dim() != 3:
        raise ValueError(f"feature_attention_map: expected (B, C, H, W) or (B, L, C), got {tuple(x.shape)}")
    u = F.normalize(x, p=2, dim=-1, eps=1e-12)
    return torch.softmax(u @ u.transpose(1, 2) / temperature, dim=-1)


def bucketed_to_dense(score: Tensor, layout: BucketLayout, bucket_score: Tensor | None = None) -> Tensor:
    """Scatter the window attention weights of a bucketed attention into a dense ``(B, L, L)`` map.

    Query ``i`` sits at sorted slot ``undo_idx[i]``; its ``3c`` weights (own, previous and next window,
    cyclic, :func:`srlib.attention.buckets.look_around`) are added to the columns of the key *positions*
    those slots hold. A padded slot ``L + t`` holds a copy of sorted slot ``(L - padding + t) mod L``, so a duplicated
    key receives the sum of both weights, exactly as the sparse attention uses it. Rounds are combined with
    ``softmax_r(bucket_score_r(i))`` (NLSN Eq. 11). The result satisfies ``dense @ v == combine_rounds(...)``:
    the sparse attention *is* this matrix applied to the values.

    Args:
        score: ``(B, R, n, c, 3c)`` softmax weights in sorted, padded order (``BucketedAttentionResult.score``,
            ``SharedAttention.score``, LCoA ``details["score"]``).
        layout: the :class:`~srlib.attention.buckets.BucketLayout` they were computed under.
        bucket_score: ``(B, R, L)`` per-round log-normalisers in position order; required when ``R > 1``
            (``BucketedAttentionResult.bucket_score``, ``SharedAttention.position_bucket_score``).
    Returns:
        ``(B, L, L)`` map, rows summing to 1 (``O(B R L²)`` memory: for small ``L`` only).
    Raises:
        ValueError: shapes that do not fit the layout, or several rounds without ``bucket_score``.
    """
    B, R, L = layout.sort_idx.shape
    n, c, pad = layout.n_chunks, layout.chunk_size, layout.padding
    if score.dim() != 5 or tuple(score.shape) != (B, R, n, c, 3 * c):
        raise ValueError(f"bucketed_to_dense: score must be (B, R, n, c, 3c) = {(B, R, n, c, 3 * c)}, "
                         f"got {tuple(score.shape)}")
    if R > 1 and bucket_score is None:
        raise ValueError(f"bucketed_to_dense: {R} rounds need bucket_score (B, R, L) to be combined")
    if bucket_score is not None and tuple(bucket_score.shape) != (B, R, L):
        raise ValueError(f"bucketed_to_dense: bucket_score must be (B, R, L) = {(B, R, L)}, "
                         f"got {tuple(bucket_score.shape)}")
    device = score.device
    chunk_slots = torch.arange(n * c, device=device).view(n, c)
    key_slots = torch.cat([chunk_slots, chunk_slots.roll(1, 0), chunk_slots.roll(-1, 0)], dim=1)  # (n, 3c)
    key_slots = torch.where(key_slots >= L, (key_slots - pad) % L, key_slots)  # padded slot -> the slot it copies
    key_pos = torch.gather(layout.sort_idx, 2, key_slots.reshape(1, 1, -1).expand(B, R, -1))  # (B, R, n*3c)
    key_pos = key_pos.view(B, R, n, 1, 3 * c).expand(B, R, n, c, 3 * c)
    rows = score.new_zeros(B, R, n, c, L).scatter_add_(4, key_pos, score)  # per sorted slot, key positions
    per_round = layout.from_chunks(rows)  # (B, R, L, L): padded query rows dropped, un-sorted
    if R == 1:
        return per_round[:, 0]
    weights = torch.softmax(bucket_score.to(score.dtype), dim=1).unsqueeze(-1)  # (B, R, L, 1)
    return (per_round * weights).sum(1)


# ----------------------------------------------------------------------------------------------------------
# Do true neighbours share a bucket? (LCoAN Fig. 3a: k-means vs LSH)
# ----------------------------------------------------------------------------------------------------------
def true_neighbours(x: Tensor, k: int, *, exclude_self: bool = True, block: int = 256) -> Tensor:
    """The ``k`` keys with the highest cosine similarity to each query (the ones dense attention favours).

    With one shared embedding and normalised keys (official NLSA/LCoA score ``x_i . x_j / |x_j|``), the
    attention weights of query ``i`` are ordered like ``cos(x_i, x_j)``, so these are the keys a dense
    attention would weight most. Computed in float64; among exact ties ``torch.topk`` picks (deterministically).

    Args:
        x: ``(B, L, C)`` embeddings, or ``(B, C, H, W)``.
        k: neighbours per query, ``1 <= k <= L - 1`` (``<= L`` when ``exclude_self`` is False).
        exclude_self: leave the query itself out.
        block: queries per similarity block (memory ``8 B block L`` bytes; the result does not depend on it).
    Returns:
        ``(B, L, k)`` int64 key positions, most similar first.
    Raises:
        ValueError: bad shape or ``k``.
    """
    if x.dim() == 4:
        x = x.flatten(2).transpose(1, 2)
    if x.dim() != 3:
        raise ValueError(f"true_neighbours: expected (B, L, C) or (B, C, H, W), got {tuple(x.shape)}")
    L = x.shape[1]
    k_max = L - 1 if exclude_self else L
    if not 1 <= int(k) <= k_max:
        raise ValueError(f"true_neighbours: k must lie in [1, {k_max}] for L = {L}, got {k}")
    u = F.normalize(x.double(), p=2, dim=-1, eps=1e-12)
    out = []
    for start in range(0, L, block):  # (B, block, L) similarities at a time: bounded memory
        sim = u[:, start : start + block] @ u.transpose(1, 2)
        if exclude_self:
            rows = torch.arange(sim.shape[1], device=sim.device)
            sim[:, rows, start + rows] = -float("inf")
        out.append(sim.topk(int(k), dim=-1).indices)
    return torch.cat(out, dim=1)


def _check_neighbours(neighbours: Tensor, B: int, L: int, what: str) -> None:
    if neighbours.dim() != 3 or tuple(neighbours.shape[:2]) != (B, L) or neighbours.is_floating_point():
        raise ValueError(f"{what}: neighbours must be integer (B, L, k) = ({B}, {L}, k), "
                         f"got {tuple(neighbours.shape)} {neighbours.dtype}")
    if neighbours.numel() and (int(neighbours.min()) < 0 or int(neighbours.max()) >= L):
        raise ValueError(f"{what}: neighbour positions must lie in [0, {L})")


def bucket_recall(neighbours: Tensor, codes: Tensor) -> Tensor:
    """Per query, the fraction of its true neighbours that share its bucket in at least one round.

    This is the sparsity of LCoAN Eq. (7) taken literally (attend to keys ``j`` with ``u(K_j) = u(Q_i)``) and
    of NLSN's "same hash bucket" (Eq. 9): a recall of the keys that dense attention weights most.

    Args:
        neighbours: ``(B, L, k)`` key positions per query (:func:`true_neighbours`).
        codes: ``(B, R, L)`` integer bucket codes (any round offsets; compared within a round).
    Returns:
        ``(B, L)`` float in ``[0, 1]``.
    Raises:
        ValueError: shapes or dtypes that do not fit.
    """
    if codes.dim() != 3 or codes.is_floating_point():
        raise ValueError(f"bucket_recall: codes must be integer (B, R, L), got {tuple(codes.shape)} {codes.dtype}")
    B, R, L = codes.shape
    _check_neighbours(neighbours, B, L, "bucket_recall")
    k = neighbours.shape[-1]
    own = codes.unsqueeze(-1)  # (B, R, L, 1)
    theirs = torch.gather(codes, 2, neighbours.reshape(B, 1, L * k).expand(B, R, L * k)).view(B, R, L, k)
    hit = (theirs == own).any(dim=1)  # (B, L, k): same bucket in some round
    return hit.to(torch.get_default_dtype()).mean(-1)


def bucket_share(codes: Tensor) -> Tensor:
    """Per query, the fraction of the *other* positions that share its bucket in at least one round.

    The price of :func:`bucket_recall`: one bucket holding everything has recall 1 and share 1. A bucketing
    that groups neighbours well has a recall much higher than its share (a random bucketing with the same
    bucket sizes has recall equal to the share, on average). For one round with bucket sizes ``n_k`` the
    mean over queries is ``sum_k n_k (n_k - 1) / (L (L - 1))``.

    Computed without the ``L x L`` comparison, by inclusion-exclusion over the rounds: the positions sharing
    the query's bucket in every round of a subset ``S`` are those with the same code tuple on ``S``, counted
    with ``torch.unique``; ``|A_1 ∪ ... ∪ A_R| = sum_S (-1)^(|S|+1) |∩_{r in S} A_r|``. Cost
    ``O(2^R L log L)`` time and ``O(L)`` memory (fine for the few rounds these papers use).

    Args:
        codes: ``(B, R, L)`` integer codes, ``L >= 2``.
    Returns:
        ``(B, L)`` float in ``[0, 1]``.
    Raises:
        ValueError: codes not integer ``(B, R, L)``, ``L < 2`` or more than 12 rounds.
    """
    if codes.dim() != 3 or codes.is_floating_point() or codes.shape[-1] < 2:
        raise ValueError(f"bucket_share: codes must be integer (B, R, L) with L >= 2, got {tuple(codes.shape)} "
                         f"{codes.dtype}")
    B, R, L = codes.shape
    if R > 12:
        raise ValueError(f"bucket_share: inclusion-exclusion over {R} rounds needs 2^{R} terms; use at most 12")
    union = torch.zeros(B, L, dtype=torch.long, device=codes.device)
    for subset in range(1, 2**R):
        rounds = [r for r in range(R) if subset >> r & 1]
        sign = 1 if len(rounds) % 2 else -1
        for b in range(B):
            rows = codes[b, rounds].T  # (L, |S|): the code tuple of every position
            _, inverse, counts = torch.unique(rows, dim=0, return_inverse=True, return_counts=True)
            union[b] += sign * counts[inverse]  # positions (the query included) matching on all rounds of S
    return (union - 1).to(torch.get_default_dtype()) / (L - 1)


def window_recall(neighbours: Tensor, layout: BucketLayout) -> Tensor:
    """Per query, the fraction of its true neighbours it actually attends to in at least one round.

    What the official NLSA/GLA/LCoA attend to is not "the same bucket" but the query's sorted window and the
    two adjacent windows (cyclic), where the last window is filled with copies of the last sorted rows
    (:mod:`srlib.attention.buckets`). Key ``j`` is attended by query ``i`` in a round iff the window of ``j``'s
    slot (or, for a duplicated row, the last window) is within cyclic distance 1 of the window of ``i``'s
    slot. Same answer as :func:`srlib.analysis.buckets.attended_mask`, for all queries at once.

    Args:
        neighbours: ``(B, L, k)`` key positions per query (:func:`true_neighbours`).
        layout: the :class:`~srlib.attention.buckets.BucketLayout` (sort order and window size).
    Returns:
        ``(B, L)`` float in ``[0, 1]``.
    Raises:
        ValueError: neighbours that do not fit the layout.
    """
    B, R, L = layout.sort_idx.shape
    _check_neighbours(neighbours, B, L, "window_recall")
    k = neighbours.shape[-1]
    n, c, pad = layout.n_chunks, layout.chunk_size, layout.padding
    slot = layout.undo_idx  # (B, R, L) sorted slot of each position
    q_win = (slot // c).unsqueeze(-1)  # (B, R, L, 1) window of the query
    key_slot = torch.gather(slot, 2, neighbours.reshape(B, 1, L * k).expand(B, R, L * k)).view(B, R, L, k)

    def near(win: Tensor) -> Tensor:
        d = (win - q_win) % n
        return (d == 0) | (d == 1) | (d == n - 1)

    hit = near(key_slot // c)
    if pad:
        # Rows at sorted slots >= L - pad also appear, as copies, in the last window n - 1.
        hit = hit | ((key_slot >= L - pad) & near(torch.full_like(key_slot, n - 1)))
    return hit.any(dim=1).to(torch.get_default_dtype()).mean(-1)


# ----------------------------------------------------------------------------------------------------------
# Grabbing the features that enter each attention module
# ----------------------------------------------------------------------------------------------------------
def depth_overlap_curve(
    model: nn.Module,
    inputs: Tensor | Sequence[Tensor],
    names: Sequence[str],
    *,
    temperature: float = 0.1,
    reference: int = 0,
    top_k: int | None = None,
) -> dict:
    """Overlap of the features at every depth with those at a reference depth, averaged over inputs (Fig. 5).

    For each input, the features ``X_m`` entering the named submodules (:func:`srlib.analysis.capture.module_inputs`) are turned into
    the parameter-free map ``A_m = softmax_j(cos(x_i, x_j) / temperature)`` (:func:`feature_attention_map`),
    and each ``A_m`` is compared with the reference map ``A_ref`` by :func:`overlap_rate` (and
    :func:`topk_overlap` with ``top_k``), averaged over the queries. The maps are built one at a time next to the
    reference, so memory is two ``(B, L, L)`` maps whatever the number of depths. This is the measurement of
    LCoAN Fig. 5 with one yardstick for every depth: a layer that reuses the shallow attention (collaborative
    attention, Eq. 12) is well served when its own features would give a similar map.

    Args:
        model: the network (run once per input under ``torch.no_grad()``; its train/eval mode is left as is).
        inputs: one ``(B, 3, h, w)`` network input or a sequence of them (e.g. LR crops), possibly of
            different sizes.
        names: submodule names in depth order (``model.named_modules()`` names, e.g. residual blocks and
            attention modules); every one must be called during the forward pass.
        temperature: ``> 0``, of :func:`feature_attention_map`.
        reference: index into ``names`` of the reference depth (default 0, the shallowest).
        top_k: also the mean top-k overlap (``1 <= top_k <= L`` of every input).

    Returns:
        ``{"names": list of M names, "overlap": (M,) float64 mean over inputs, "per_input": (N, M) float64,
        "topk": (M,) / None, "per_input_topk": (N, M) / None}``; the reference entry is 1 for every input.

    Raises:
        ValueError: no inputs or names, ``reference`` out of range, an unknown or uncalled name (from
            :func:`srlib.analysis.capture.module_inputs`), a bad temperature or ``top_k``.
    """
    batch = [inputs] if isinstance(inputs, Tensor) else list(inputs)
    names = list(names)
    if not batch or not names:
        raise ValueError("depth_overlap_curve: need at least one input and one module name")
    if not -len(names) <= int(reference) < len(names):
        raise ValueError(f"depth_overlap_curve: reference index {reference} out of range for {len(names)} names")
    ref_name = names[int(reference)]
    rows, rows_top = [], []
    for x in batch:
        feats = module_inputs(model, x, names)
        base = feature_attention_map(feats[ref_name], temperature)
        ovl, top = [], []
        for name in names:
            m = base if name == ref_name else feature_attention_map(feats[name], temperature)
            ovl.append(overlap_rate(m, base).double().mean())
            if top_k is not None:
                top.append(topk_overlap(m, base, top_k).double().mean())
            del m
        rows.append(torch.stack(ovl))
        if top_k is not None:
            rows_top.append(torch.stack(top))
        del feats, base
    per_input = torch.stack(rows)
    per_top = torch.stack(rows_top) if top_k is not None else None
    return {"names": names, "overlap": per_input.mean(0), "per_input": per_input,
            "topk": per_top.mean(0) if per_top is not None else None, "per_input_topk": per_top}


@torch.no_grad()
def pattern_agreement(
    module: nn.Module,
    features: Sequence[Tensor] | Mapping[str, Tensor],
    reference: int | str = 0,
) -> dict:
    """Would one bucketed attention module compute the same sparse pattern from features at other depths?

    LCoAN's shallow LCoA computes the pattern (k-means codes, cluster-sorted windows; Eqs. 6-11) from its input
    ``X_1``, and every deeper module reuses it (collaborative attention, Eq. 12). This runs that module, with its
    own embedding and centroids, on each given feature map ``X_m`` and compares the result with its pattern on
    the reference features:

    * code agreement: the fraction of positions (and rounds) whose bucket / cluster code is the same;
    * pattern overlap: the mean over queries of the Jaccard overlap (:func:`pattern_overlap`) of the key sets
      the query can see (its window and the two adjacent ones, every round). Structural: which keys, not their
      weights. Two random sets of ``3c`` of ``L`` keys overlap by about ``3c / (2L)``.

    The module runs in eval mode with ``keep_details`` (both restored afterwards, as is its ``details``); the
    reference is run first, so an uninitialised k-means (first call) is initialised from the reference features.
    Hashing modules that draw random rotations (NLSA, GLA) need a fixed generator / projections, or the codes
    differ from call to call.

    Args:
        module: an srlib bucketed attention (LCoA, NLSA, GLA) with ``keep_details`` / ``details`` holding
            ``codes (B, R, L)`` and ``layout``.
        features: ``M`` feature maps ``(B, C, H, W)`` of one shape (a list, or ``{name: tensor}`` e.g. from
            :func:`srlib.analysis.capture.module_inputs`).
        reference: index or name of the reference feature map.

    Returns:
        ``{"names": M names, "code_agreement": (M,) float64, "pattern_overlap": (M,) float64}``; the
        reference entries are 1.

    Raises:
        ValueError: no features, maps of different shapes, an unknown reference, or a module without
            ``keep_details``.
    """
    if isinstance(features, Mapping):
        names, tensors = [str(n) for n in features.keys()], list(features.values())
    else:
        tensors = list(features)
        names = [str(i) for i in range(len(tensors))]
    if not tensors:
        raise ValueError("pattern_agreement: no feature maps given")
    if not hasattr(module, "keep_details"):
        raise ValueError(f"pattern_agreement: {type(module).__name__} has no keep_details (not a bucketed attention)")
    if isinstance(reference, str):
        if reference not in names:
            raise ValueError(f"pattern_agreement: reference {reference!r} not among {names}")
        ref = names.index(reference)
    else:
        ref = int(reference)
        if not -len(tensors) <= ref < len(tensors):
            raise ValueError(f"pattern_agreement: reference index {reference} out of range for {len(tensors)} maps")
        ref %= len(tensors)
    for name, t in zip(names, tensors):
        if t.shape != tensors[ref].shape:
            raise ValueError(f"pattern_agreement: features {name!r} have shape {tuple(t.shape)}, "
                             f"the reference has {tuple(tensors[ref].shape)}")

    def pattern(x: Tensor) -> tuple[Tensor, Tensor]:
        module(x)
        d = module.details
        codes, layout = d["codes"], d["layout"]
        B, R, L = layout.sort_idx.shape
        n, c = layout.n_chunks, layout.chunk_size
        ones = torch.ones(B, R, n, c, 3 * c, device=codes.device)
        # every key a query's windows hold gets weight > 0 (rounds weighted equally): the structural key set
        seen = bucketed_to_dense(ones, layout, torch.zeros(B, R, L, device=codes.device) if R > 1 else None) > 0
        return codes, seen

    saved = (module.training, module.keep_details, getattr(module, "details", None))
    module.eval()
    module.keep_details = True
    try:
        ref_codes, ref_seen = pattern(tensors[ref])
        codes_agree, overlaps = [], []
        for i, x in enumerate(tensors):
            codes, seen = (ref_codes, ref_seen) if i == ref else pattern(x)
            codes_agree.append((codes == ref_codes).double().mean())
            overlaps.append(pattern_overlap(seen, ref_seen).double().mean())
    finally:
        module.train(saved[0])
        module.keep_details, module.details = saved[1], saved[2]
    return {"names": names, "code_agreement": torch.stack(codes_agree), "pattern_overlap": torch.stack(overlaps)}
