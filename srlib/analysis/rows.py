"""One row of attention, computed one way: the weights one query gives to every position.

Every place in srlib that needs a few rows of an attention matrix without forming it (the explorer,
:mod:`srlib.analysis.sparsity`, :mod:`srlib.analysis.enla`, :mod:`srlib.analysis.hashing`) calls these
functions:

===============================  ==========================================================================
:func:`dense_rows`               ``normalizer(q_i . k_j)`` over all keys: NLA's softmax (NLSN Eq. 4), HSPA's
                                 soft thresholding (HSPAN Eqs. 7-12)
:func:`softmax_rows`             ``softmax_j(q_i . k_j)`` for ``(..., L, d)`` queries (ENLCN Eq. 1, what ENLA
                                 approximates)
:func:`feature_rows`             ``phi(q_i) . phi(k_j) / sum_j' phi(q_i) . phi(k_j')`` from positive random
                                 features (ENLCN Eqs. 4-6)
:func:`bucketed_row`             one query of a bucketed mechanism (NLSA, GLA, LCoA) recomputed from the
                                 shared embedding and the bucket layout, ``O(R * 3c * D)``
:func:`attention_on_positions`   the same row read from the ``details`` of a ``keep_details`` forward pass
:func:`scatter_rounds`           the last step both bucketed paths share: per-round key weights, mixed with
                                 the round weights, added onto positions
===============================  ==========================================================================

Conventions: positions are flattened row-major, ``p = y * W + x``; ``L = H * W``.
"""

from __future__ import annotations

from typing import Callable, Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from srlib.analysis.buckets import attended_keys
from srlib.attention.buckets import BucketLayout
from srlib.attention.gla import paper_round_weights

__all__ = [
    "attention_on_positions",
    "bucketed_row",
    "dense_rows",
    "feature_rows",
    "scatter_rounds",
    "softmax_rows",
]


def dense_rows(q: Tensor, k: Tensor, queries: Tensor | Sequence[int], normalizer: Callable | None = None) -> Tensor:
    """Rows ``normalizer(q[queries] k^T)`` of dense attention (each row normalised on its own).

    Args:
        q: ``(B, L, d)`` queries; k: ``(B, S, d)`` keys (e.g. ``module.embed(x)`` of NLA / HSPA).
        queries: 1-D positions in ``[0, L)`` (not checked here).
        normalizer: applied to the ``(B, n, S)`` scores along the last dimension (``None``: softmax).
    Returns:
        ``(B, n, S)`` weights.
    """
    idx = torch.as_tensor(queries, dtype=torch.int64).reshape(-1).to(q.device)
    normalizer = normalizer or (lambda s: torch.softmax(s, dim=-1))
    return normalizer(torch.bmm(q[:, idx], k.transpose(1, 2)))


def softmax_rows(q: Tensor, k: Tensor, queries: Tensor) -> Tensor:
    """Rows ``softmax_j(q_i . k_j)`` for the positions ``queries``.

    Args:
        q: ``(..., L, d)``; k: ``(..., S, d)``; queries: 1-D int64 positions on ``q``'s device.
    Returns:
        ``(..., n, S)`` rows summing to 1.
    """
    return torch.softmax(q.index_select(-2, queries) @ k.transpose(-1, -2), dim=-1)


def feature_rows(phi_q: Tensor, phi_k: Tensor, key_sum: Tensor | None = None) -> Tensor:
    """ENLA's implicit weights ``phi(q_i) . phi(k_j) / D_i`` (ENLCN Eqs. 4-6), for the given query features.

    ``D_i = sum_j phi(q_i) . phi(k_j)``: the sum of the row's scores, or, when the key sum
    ``key_sum = sum_j phi(k_j)`` ``(..., m)`` is given (kept once for many queries), ``phi(q_i) . key_sum``
    (Eq. 6 as written, ``O(m)`` per query). Both are the same number up to rounding.

    Args:
        phi_q: ``(..., n, m)`` query features; phi_k: ``(..., S, m)`` key features (positive).
        key_sum: ``(m,)`` / ``(..., m)`` or ``None``.
    Returns:
        ``(..., n, S)`` positive rows summing to 1.
    """
    scores = phi_q @ phi_k.transpose(-1, -2)
    if key_sum is None:
        return scores / scores.sum(dim=-1, keepdim=True)
    return scores / (phi_q * key_sum).sum(dim=-1, keepdim=True)


def scatter_rounds(keys: Tensor, weights: Tensor, round_weights: Tensor, length: int) -> Tensor:
    """``row_j = sum_r w_r * sum_{slots s holding j} a_rs``: per-round weights on key slots onto positions.

    A key reached in several rounds (or a padded duplicate of a position) adds up, which is exactly what the
    bucketed forward pass applies to the values (NLSN Eq. 11, DLSN Eq. 17).

    Args:
        keys: ``(R, K)`` positions of the key slots; weights: ``(R, K)`` per-round weights ``a_rs``;
        round_weights: ``(R,)`` ``w_r``; length: ``L``.
    Returns:
        ``(L,)`` weights in ``weights``' dtype.
    """
    row = torch.zeros(length, dtype=weights.dtype, device=weights.device)
    return row.index_add_(0, keys.reshape(-1), (weights * round_weights.unsqueeze(-1)).reshape(-1))


def bucketed_row(
    embedding: Tensor,
    layout: BucketLayout,
    position: int,
    *,
    key_eps: float = 5e-5,
    learned: Callable[[Tensor], Tensor] | None = None,
    round_weights: str = "official",
) -> tuple[Tensor, Tensor, Tensor]:
    """Row ``p`` of a bucketed mechanism from the shared embedding and the layout alone, ``O(R * 3c * D)``.

    In round ``r`` query ``p`` scores its ``3c`` keys ``j`` (its chunk and the two neighbouring chunks of the
    sorted order, :func:`~srlib.analysis.buckets.attended_keys`) with ``raw_rj = q_p . k_j``, ``k_j = q_j /
    max(|q_j|, key_eps)`` (+ a learned term), takes the softmax ``a_rj`` and the log-normaliser ``b_r =
    logsumexp_j raw_rj`` (NLSN Eqs. 9-10, DLSN Eq. 14); rounds are mixed with ``w_r = softmax_r(b_r)`` (NLSN
    Eq. 11, ``round_weights="official"``) or DLSN Eq. 18 as written (``"paper"``: ``sum_j raw_rj`` normalised
    over rounds), then :func:`scatter_rounds`.

    Args:
        embedding: ``(L, D)`` shared query/key embedding; layout: its :class:`BucketLayout` (batch 1).
        position: query position ``p``.
        key_eps: ``eps`` of the key normalisation (official ``5e-5``).
        learned: ``keys (R, 3c) -> (R, 3c)`` learned score added to the raw scores (GLA), or ``None``.
        round_weights: ``"official"`` or ``"paper"``.
    Returns:
        ``(row (L,), keys (R, 3c) positions, w (R,) round weights)``.
    """
    keys = attended_keys(layout, [position])[0, :, 0]  # (R, 3c) key positions, [own, prev, next] chunks
    k = F.normalize(embedding[keys], p=2, dim=-1, eps=key_eps)  # (R, 3c, D)
    raw = k @ embedding[position]  # (R, 3c): q_p . k_j, NLSN Eq. 9 / DLSN Eq. 10
    if learned is not None:
        raw = raw + learned(keys)
    log_norm = torch.logsumexp(raw, dim=-1)  # (R,) bucket scores b_r(p)
    weights = torch.exp(raw - log_norm.unsqueeze(-1))  # (R, 3c), Eq. 10
    if round_weights == "paper":  # DLSN Eq. 18 as written
        w = paper_round_weights(raw.sum(-1).view(1, -1, 1)).view(-1)
    else:  # NLSN Eq. 11 (official NLSA, GLA and LCoA)
        w = torch.softmax(log_norm, dim=0)
    return scatter_rounds(keys, weights, w, embedding.shape[0]), keys, w


def attention_on_positions(details: Mapping, position: int, *, batch: int = 0) -> Tensor:
    """The weight that query ``position`` gives to every position, all hash rounds combined, read from the
    ``details`` of a forward pass.

    GLA (and NLSA, LCoA) compute, in round ``r``, softmax weights over the ``3c`` keys of the query's chunk
    and its two neighbours (DLSN Eq. 14), then mix the rounds with weights ``w_r(p)`` (Eq. 17). The effective
    weight on position ``j`` is therefore ``A_pj = sum_r w_r(p) * sum_{key slots holding j} score_r(p, slot)``
    (a padded duplicate adds to the position it copies). The block output is ``y_p = sum_j A_pj v_j``.

    Args:
        details: ``module.details`` of a :class:`~srlib.attention.gla.GlobalLearnableAttention` or
            :class:`~srlib.attention.nlsa.NonLocalSparseAttention` run with ``keep_details = True``
            (needs ``"layout"``, ``"score"``, and ``"round_weights"`` or ``"bucket_score"``).
        position: flattened query position ``0 <= p < L``.
        batch: which image of the batch.
    Returns:
        ``(L,)`` non-negative weights (sum 1 with the official round weights).
    Raises:
        ValueError: missing details (``keep_details`` was off) or ``position`` / ``batch`` out of range.
    """
    layout: BucketLayout | None = details.get("layout")
    score: Tensor | None = details.get("score")
    if layout is None or score is None:
        raise ValueError("details lack 'layout' / 'score': set module.keep_details = True before the forward call")
    B, R, L = layout.sort_idx.shape
    if not 0 <= position < L:
        raise ValueError(f"position must be in [0, {L}), got {position}")
    if not 0 <= batch < B:
        raise ValueError(f"batch must be in [0, {B}), got {batch}")
    c = layout.chunk_size
    slot = layout.undo_idx[batch, :, position]  # (R,) sorted slot of the query in each round
    chunk, row = slot // c, slot % c
    weights = score[batch, torch.arange(R, device=score.device), chunk, row]  # (R, 3c), keys [own, prev, next]
    key_pos = attended_keys(layout, [position])[batch, :, 0]  # (R, 3c) positions, same order
    rw = details.get("round_weights")
    if rw is None:  # NLSA details: the official weights softmax_r(bucket_score), NLSN Eq. 11
        rw = torch.softmax(details["bucket_score"], dim=1)
    return scatter_rounds(key_pos, weights, rw[batch, :, position], L)
