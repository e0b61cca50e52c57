"""Bucketed (sparse) attention: the machinery NLSA, GLA and LCoA share.

Every bucketed attention in these papers follows the same recipe; only the *hash function* that assigns a
bucket code to each position differs (spherical LSH in NLSN, super-bit LSH in DLSN, nearest k-means
centroid in LCoAN):

1. **hash** each position ``p`` into a code ``h_r(p)`` for every hash round ``r``;
2. **sort** positions by code (stable: ties keep ascending position; ``docs/official_code.md``, "Sort ties");
3. **chunk** the sorted sequence into fixed-size chunks of ``chunk_size`` positions (if ``L`` is not a
   multiple, the last sorted rows are *duplicated* to fill the last chunk, as the official code does; a
   sequence shorter than the padding -- a feature map smaller than about half a chunk, where the official
   code fails -- is repeated cyclically instead, so every ``H, W >= 1`` works);
4. **attend** from each chunk to the keys of its own chunk and its two neighbours
   (``[own, previous, next]``, cyclic over the chunks of a round: ``3 * chunk_size`` keys);
5. **un-sort** the results back to position order and drop the duplicated rows;
6. **combine rounds** with weights ``softmax_r(bucket_score_r(p))`` (NLSN paper Eq. 11).

This module implements steps 2-6 once. Shapes, with ``B`` batch, ``R`` hash rounds, ``L = H*W`` positions,
``n = n_chunks``, ``c = chunk_size``:

* codes ``(B, R, L)`` integer bucket ids (per round, without round offsets)
* chunked tensors ``(B, R, n, c, D)``, keys after look-around ``(B, R, n, 3c, D)``
* scores ``(B, R, n, c, 3c)``; per-round results ``(B, R, L, D)``; bucket scores ``(B, R, L)``

Source: NLSN paper (Mei et al., CVPR 2021) Eqs. (6)-(11); official behaviour from
``HarukiYqM/Non-Local-Sparse-Attention`` ``src/model/attention.py`` (``NonLocalSparseAttention``), which DLSN
(``GLA``) and LCoAN (``RecurrentNonLocalKmeansAttention``) copy.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F

__all__ = [
    "BucketLayout",
    "BucketedAttentionResult",
    "bucketed_attention",
    "combine_rounds",
    "look_around",
    "n_hash_buckets",
]


def n_hash_buckets(length: int, chunk_size: int, max_buckets: int = 128) -> int:
    """Number of hash buckets the official NLSA/GLA use for a sequence of ``length`` positions.

    ``min(L // chunk + (L // chunk) % 2, max_buckets)``: about one bucket per chunk, rounded up to an even
    number (spherical LSH needs pairs ``±``). The paper (NLSN Eq. 7 text) says ``min(hw / k, 128)``.

    Raises:
        ValueError: ``length < chunk_size`` (the official code fails with 0 buckets; we say why).
    """
    if chunk_size <= 0:
        raise ValueError(f"chunk_size must be positive, got {chunk_size}")
    if length < chunk_size:
        raise ValueError(
            f"input too small for bucketed attention: H*W = {length} positions < chunk_size = {chunk_size}; "
            f"use a larger input or a smaller chunk_size"
        )
    n = length // chunk_size
    return min(n + n % 2, max_buckets)


def look_around(x: torch.Tensor) -> torch.Tensor:
    """Concatenate each chunk with its previous and next chunk: ``[own, prev, next]``.

    Args:
        x: ``(B, R, n, c, D)`` chunked rows.
    Returns:
        ``(B, R, n, 3c, D)``; neighbours wrap around cyclically within a round (official behaviour).
    """
    prev = torch.roll(x, shifts=1, dims=2)
    nxt = torch.roll(x, shifts=-1, dims=2)
    return torch.cat([x, prev, nxt], dim=3)


@dataclass
class BucketLayout:
    """Where every position goes once sorted by bucket code and cut into chunks.

    Build it from codes with :meth:`from_codes`; then :meth:`to_chunks` moves any per-position tensor
    (queries, values, GLA's learnable-score features, LCoA's shared values) into sorted, padded chunks, and
    :meth:`from_chunks` brings per-position results back. Because the layout is an object, LCoA's
    collaborative attention can reuse the layout of the first module for the values of later modules.

    Attributes:
        sort_idx: ``(B, R, L)`` int64, the position sitting at each sorted slot.
        undo_idx: ``(B, R, L)`` int64, the sorted slot of each position (inverse permutation).
        chunk_size: ``c``, positions per chunk.
        length: ``L``.
    """

    sort_idx: torch.Tensor
    undo_idx: torch.Tensor
    chunk_size: int
    length: int

    @classmethod
    def from_codes(cls, codes: torch.Tensor, chunk_size: int) -> "BucketLayout":
        """Stable-sort positions by their codes (step 2).

        Args:
            codes: ``(B, R, L)`` integer codes (round offsets optional: sorting is per round).
            chunk_size: positions per chunk (``L`` positions fill ``ceil(L / c)`` chunks; any ``L >= 1``).
        Raises:
            ValueError: codes not 3-D, not integer or with ``L = 0``, or ``chunk_size`` not positive.
        """
        if codes.dim() != 3 or codes.is_floating_point():
            raise ValueError(f"codes must be an integer tensor (B, R, L), got {tuple(codes.shape)} {codes.dtype}")
        if chunk_size <= 0:
            raise ValueError(f"chunk_size must be positive, got {chunk_size}")
        length = codes.shape[-1]
        if length < 1:
            raise ValueError(f"codes must have at least one position, got shape {tuple(codes.shape)}")
        # Ties (equal codes) keep ascending position: the reproducible order (docs/official_code.md, "Sort ties").
        sort_idx = torch.argsort(codes, dim=-1, stable=True)
        undo_idx = torch.argsort(sort_idx, dim=-1)
        return cls(sort_idx=sort_idx, undo_idx=undo_idx, chunk_size=chunk_size, length=length)

    @property
    def n_rounds(self) -> int:
        return self.sort_idx.shape[1]

    @property
    def padding(self) -> int:
        """Rows duplicated at the end of each round so that ``L + padding`` is a multiple of ``c``.

        Padded slot ``L + t`` copies sorted slot ``(L - padding + t) mod L``: the last ``padding`` sorted rows
        (official), or the whole sorted sequence repeated cyclically when ``padding > L``.
        """
        return (-self.length) % self.chunk_size

    @property
    def n_chunks(self) -> int:
        return (self.length + self.padding) // self.chunk_size

    def to_chunks(self, x: torch.Tensor) -> torch.Tensor:
        """Gather rows in sorted order, pad and cut into chunks (step 2-3).

        Args:
            x: ``(B, L, D)`` per-position rows (shared by all rounds) or ``(B, R, L, D)`` per round.
        Returns:
            ``(B, R, n, c, D)``.
        """
        B, R, L = self.sort_idx.shape
        if x.dim() == 3:
            x = x.unsqueeze(1).expand(-1, R, -1, -1)
        if x.shape[:3] != (B, R, L):
            raise ValueError(f"rows {tuple(x.shape)} do not match the layout (B, R, L) = {(B, R, L)}")
        idx = self.sort_idx.unsqueeze(-1).expand(-1, -1, -1, x.shape[-1])
        xs = torch.gather(x, 2, idx)
        if self.padding:
            # The official code appends a copy of the last `padding` sorted rows (not zeros, not wrap-around);
            # when padding > L (it fails there) the sorted rows repeat cyclically: the same formula mod L.
            pad_idx = (torch.arange(self.padding, device=xs.device) + (L - self.padding)) % L
            xs = torch.cat([xs, xs[:, :, pad_idx]], dim=2)
        return xs.reshape(B, R, self.n_chunks, self.chunk_size, x.shape[-1])

    def from_chunks(self, y: torch.Tensor) -> torch.Tensor:
        """Drop padded rows and un-sort back to position order (step 5).

        Args:
            y: ``(B, R, n, c, D)`` or ``(B, R, n, c)`` per-slot results.
        Returns:
            ``(B, R, L, D)`` or ``(B, R, L)`` in position order.
        """
        B, R, L = self.sort_idx.shape
        squeeze = y.dim() == 4
        if squeeze:
            y = y.unsqueeze(-1)
        y = y.reshape(B, R, -1, y.shape[-1])[:, :, :L]
        idx = self.undo_idx.unsqueeze(-1).expand(-1, -1, -1, y.shape[-1])
        out = torch.gather(y, 2, idx)
        return out.squeeze(-1) if squeeze else out


@dataclass
class BucketedAttentionResult:
    """What :func:`bucketed_attention` returns.

    Attributes:
        ret: ``(B, R, L, D)`` per-round outputs in position order.
        bucket_score: ``(B, R, L)`` per-round log-normaliser ``logsumexp_j raw_ij`` in position order.
        score: ``(B, R, n, c, 3c)`` attention weights in sorted, padded, chunked order (the official
            ``att_map``), or ``None`` unless requested.
        bucket_score_sorted: ``(B, R, n*c)`` bucket scores in sorted, padded order, or ``None``.
        layout: the :class:`BucketLayout` used.
    """

    ret: torch.Tensor
    bucket_score: torch.Tensor
    layout: BucketLayout
    score: torch.Tensor | None = None
    bucket_score_sorted: torch.Tensor | None = None


def bucketed_attention(
    q: torch.Tensor,
    v: torch.Tensor,
    layout: BucketLayout,
    *,
    key_eps: float = 5e-5,
    score_bias: Callable[[BucketLayout], torch.Tensor] | None = None,
    return_score: bool = False,
) -> BucketedAttentionResult:
    """Attention inside sorted chunks and their neighbours (steps 3-5), one result per hash round.

    Queries and keys share one embedding, as in the official code: keys are ``k = q / max(|q|, key_eps)``,
    queries are not normalised, and the similarity is ``raw_ij = q_i . k_j`` (NLSN: ``f(q_i, k_j) =
    exp(q_i . q_j / |q_j|)``). For each query ``i`` the ``3c`` candidate keys ``j`` are those of its chunk and
    the two neighbouring chunks (NLSN Eq. 9-10: attention restricted to the query's bucket).

    Args:
        q: ``(B, L, Dq)`` matching embedding (shared by all rounds) or ``(B, R, L, Dq)``.
        v: ``(B, L, Dv)`` values (assembly embedding) or ``(B, R, L, Dv)``.
        layout: from :meth:`BucketLayout.from_codes`.
        key_eps: ``eps`` of the key L2 normalisation (official: 5e-5).
        score_bias: optional ``fn(layout) -> (B, R, n, c, 3c)`` added to the raw scores before the softmax
            (DLSN's learnable similarity score, DLSN Eq. 9-11).
        return_score: also return the attention weights and sorted bucket scores (visualisation; LCoA's
            collaborative attention reuses them).

    Returns:
        :class:`BucketedAttentionResult`.
    """
    qc = layout.to_chunks(q)  # (B, R, n, c, Dq)
    vc = layout.to_chunks(v)  # (B, R, n, c, Dv)
    kc = look_around(F.normalize(qc, p=2, dim=-1, eps=key_eps))  # (B, R, n, 3c, Dq)
    vc = look_around(vc)  # (B, R, n, 3c, Dv)
    raw = torch.einsum("brncd,brnkd->brnck", qc, kc)  # (B, R, n, c, 3c)
    if score_bias is not None:
        raw = raw + score_bias(layout)
    # Eq. (10): softmax within the bucket; keep the log-normaliser for the round weights of Eq. (11).
    bucket_score = torch.logsumexp(raw, dim=-1, keepdim=True)  # (B, R, n, c, 1)
    score = torch.exp(raw - bucket_score)
    ret = torch.einsum("brnck,brnkd->brncd", score, vc)  # (B, R, n, c, Dv)
    return BucketedAttentionResult(
        ret=layout.from_chunks(ret),
        bucket_score=layout.from_chunks(bucket_score.squeeze(-1)),
        layout=layout,
        score=score if return_score else None,
        bucket_score_sorted=bucket_score.flatten(2) if return_score else None,
    )


def apply_shared_attention(score: torch.Tensor, v: torch.Tensor, layout: BucketLayout) -> torch.Tensor:
    """Apply attention weights computed elsewhere to new values (LCoAN's collaborative attention, Eq. 12).

    Args:
        score: ``(B, R, n, c, 3c)`` weights from an earlier :func:`bucketed_attention` with ``return_score``.
        v: ``(B, L, Dv)`` values of the current module.
        layout: the layout those weights were computed under.
    Returns:
        ``(B, R, L, Dv)`` per-round outputs in position order.
    """
    vc = look_around(layout.to_chunks(v))
    return layout.from_chunks(torch.einsum("brnck,brnkd->brncd", score, vc))


def combine_rounds(ret: torch.Tensor, bucket_score: torch.Tensor) -> torch.Tensor:
    """Combine hash rounds, NLSN Eq. (11): ``out_p = sum_r softmax_r(bucket_score_r(p)) * ret_r(p)``.

    Args:
        ret: ``(B, R, L, D)`` per-round outputs.
        bucket_score: ``(B, R, L)`` per-round log-normalisers.
    Returns:
        ``(B, L, D)``.
    """
    weights = torch.softmax(bucket_score, dim=1).unsqueeze(-1)  # (B, R, L, 1)
    return (ret * weights).sum(dim=1)
