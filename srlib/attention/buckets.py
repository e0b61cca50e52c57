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

from srlib.attention.blocking import items_per_block

__all__ = [
    "BucketLayout",
    "BucketedAttentionResult",
    "bucketed_attention",
    "combine_rounds",
    "look_around",
    "look_around_at",
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


def look_around_at(x: torch.Tensor, start: int, stop: int) -> torch.Tensor:
    """``look_around(x)[:, :, start:stop]`` without building the whole look-around tensor.

    Args:
        x: ``(B, R, n, c, D)`` chunked rows; start, stop: a range of chunks, ``0 <= start < stop <= n``.
    Returns:
        ``(B, R, stop - start, 3c, D)``: each chunk of the range with its previous and next chunk (cyclic).
    Raises:
        ValueError: an empty or out-of-range chunk range.
    """
    n = x.shape[2]
    if not 0 <= start < stop <= n:
        raise ValueError(f"chunk range [{start}, {stop}) is empty or outside the {n} chunks")
    ext = torch.arange(start - 1, stop + 1, device=x.device) % n  # one chunk of margin on each side, cyclic
    xe = x.index_select(2, ext)  # (B, R, stop - start + 2, c, D)
    return torch.cat([xe[:, :, 1:-1], xe[:, :, :-2], xe[:, :, 2:]], dim=3)


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
        # the inverse permutation, by a scatter (O(L)) rather than a second sort (O(L log L))
        slots = torch.arange(length, device=codes.device).expand_as(sort_idx)
        undo_idx = torch.empty_like(sort_idx).scatter_(-1, sort_idx, slots)
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
        shared = x.dim() == 3
        if (x.shape[:2] != (B, L)) if shared else (x.shape[:3] != (B, R, L)):
            raise ValueError(f"rows {tuple(x.shape)} do not match the layout (B, R, L) = {(B, R, L)}")
        idx = self.sort_idx
        if self.padding:
            # The official code appends a copy of the last `padding` sorted rows (not zeros, not wrap-around);
            # when padding > L (it fails there) the sorted rows repeat cyclically: the same formula mod L.
            pad_idx = (torch.arange(self.padding, device=idx.device) + (L - self.padding)) % L
            idx = torch.cat([idx, idx[:, :, pad_idx]], dim=2)
        # One row copy per slot (index_select on the flattened rows; a gather with an expanded index reads
        # element by element and is several times slower on large maps).
        D = x.shape[-1]
        per_seq = B if shared else B * R  # sequences of L rows in x
        offsets = torch.arange(per_seq, device=idx.device) * L
        offsets = offsets.view(B, 1, 1) if shared else offsets.view(B, R, 1)
        rows = x.contiguous().view(per_seq * L, D).index_select(0, (idx + offsets).flatten())
        return rows.view(B, R, self.n_chunks, self.chunk_size, D)

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
        D = y.shape[-1]
        slots = self.n_chunks * self.chunk_size  # L + padding: the padded rows are never selected
        offsets = (torch.arange(B * R, device=y.device) * slots).view(B, R, 1)
        rows = y.reshape(B * R * slots, D).index_select(0, (self.undo_idx + offsets).flatten())
        out = rows.view(B, R, L, D)
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
    score_bias_at: Callable[[BucketLayout, int, int], torch.Tensor] | None = None,
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
        score_bias_at: optional ``fn(layout, start, stop) -> (B, R, stop - start, c, 3c)``, the same bias for
            the chunks ``[start, stop)`` only; used by the inference path instead of ``score_bias`` so that the
            full bias tensor is never built.

    Returns:
        :class:`BucketedAttentionResult`.

    Without autograd (``torch.no_grad``) and without ``return_score``, the scores of all chunks are computed
    in one pass when they (with the looked-around keys and values) fit the block budget of the device
    (:mod:`srlib.attention.blocking`, CPU default 16 MiB), otherwise in as few blocks of chunks as the budget
    allows (:func:`look_around_at`), so that no ``(B, R, n, c, 3c)`` tensor larger than the budget is stored.
    Same arithmetic; the result equals the single-pass one up to float rounding.

    With autograd and without ``return_score`` the same blocks are used by :class:`_ChunkAttention`: its
    backward recomputes each block's scores from the saved queries, keys and log-normalisers instead of
    keeping the ``(B, R, n, c, 3c)`` weights and the looked-around copies for the backward (saved memory
    ``O(B·R·L·(Dq + Dv))``, and every elementwise pass stays in a block within the budget: time linear in
    ``L``). With ``return_score`` (visualisation, LCoA's shared weights) the single pass with the whole
    weight tensor is used.
    """
    qc = layout.to_chunks(q)  # (B, R, n, c, Dq)
    vc = layout.to_chunks(v)  # (B, R, n, c, Dv)
    if not return_score and not torch.is_grad_enabled():
        ret, bucket_score = _chunk_blocks(qc, vc, layout, key_eps, score_bias, score_bias_at)
        return BucketedAttentionResult(ret=layout.from_chunks(ret), bucket_score=layout.from_chunks(bucket_score),
                                       layout=layout)
    if not return_score and any(t.requires_grad for t in (qc, vc)):
        # training: blocked forward, blocked backward that recomputes each block's scores (_ChunkAttention)
        bias = score_bias(layout) if score_bias is not None else None
        kn = F.normalize(qc, p=2, dim=-1, eps=key_eps)
        ret, bucket_score = _ChunkAttention.apply(qc, kn, vc, bias)
        return BucketedAttentionResult(ret=layout.from_chunks(ret), bucket_score=layout.from_chunks(bucket_score),
                                       layout=layout)
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


def _block_steps(qc: torch.Tensor, vc: torch.Tensor) -> tuple[int, int]:
    """``(rounds, chunks)`` per block of the chunked attention within the block budget of the device: all
    rounds and chunks (a single pass) when the scores and looked-around keys and values fit."""
    B, R, n, c, _ = qc.shape
    # bytes of one chunk of one round: scores (c, 3c) and the looked-around keys and values (3c, Dq + Dv)
    per_chunk = B * 3 * c * (c + qc.shape[-1] + vc.shape[-1]) * qc.element_size()
    fit = items_per_block(R * n, per_chunk, qc.device)  # chunk-rounds per block; R * n: a single pass
    r_step = min(R, fit)  # rounds per block
    return r_step, max(1, fit // r_step)  # chunks per block


def _ranges(stop: int, step: int):
    for i0 in range(0, stop, step):
        yield i0, min(stop, i0 + step)


def _scatter_look_around(dst: torch.Tensor, grad: torch.Tensor, n0: int, n1: int) -> None:
    """Adjoint of :func:`look_around_at`: add ``grad`` ``(B, r, n1 - n0, 3c, D)`` (the ``[own, prev, next]``
    keys of chunks ``n0 .. n1 - 1``) into ``dst`` ``(B, r, n, c, D)`` at the chunks they were copied from."""
    n, c = dst.shape[2], dst.shape[3]
    own = torch.arange(n0, n1, device=dst.device)
    for part, shift in ((0, 0), (1, -1), (2, 1)):  # own chunk, previous chunk, next chunk (cyclic)
        dst.index_add_(2, (own + shift) % n, grad[:, :, :, part * c:(part + 1) * c])


class _ChunkAttention(torch.autograd.Function):
    """Steps 4-5 of :func:`bucketed_attention` for training, block by block (flash-attention-style backward).

    Inputs ``qc`` ``(B, R, n, c, Dq)`` queries, ``kn`` ``(B, R, n, c, Dq)`` normalised keys (not looked
    around), ``vc`` ``(B, R, n, c, Dv)`` values, ``bias`` ``(B, R, n, c, 3c)`` or ``None``; outputs ``ret``
    ``(B, R, n, c, Dv)`` and ``lse`` ``(B, R, n, c)`` (Eq. 10 normaliser = Eq. 11 bucket score). Saved: the
    inputs, ``ret`` and ``lse``. Backward per block, with ``w = exp(raw - lse)`` recomputed:
    ``dw = dret vᵀ``, ``draw = w (dw - <dret, ret> + dlse)``, ``dq = draw k``, ``dk = drawᵀ q``,
    ``dv = wᵀ dret``, ``dbias = draw``; key and value gradients go back to the chunks they were looked around
    from. First derivatives only (``gradcheck`` in ``tests/test_buckets.py``)."""

    @staticmethod
    def forward(ctx, qc, kn, vc, bias):
        B, R, n, c, _ = qc.shape
        r_step, n_step = _block_steps(qc, vc)
        ret = vc.new_empty(B, R, n, c, vc.shape[-1])
        lse_all = qc.new_empty(B, R, n, c)
        for n0, n1 in _ranges(n, n_step):
            for r0, r1 in _ranges(R, r_step):
                raw = torch.einsum("brncd,brnkd->brnck", qc[:, r0:r1, n0:n1], look_around_at(kn[:, r0:r1], n0, n1))
                if bias is not None:
                    raw += bias[:, r0:r1, n0:n1]
                lse = torch.logsumexp(raw, dim=-1, keepdim=True)
                w = raw.sub_(lse).exp_()
                ret[:, r0:r1, n0:n1] = torch.einsum("brnck,brnkd->brncd", w, look_around_at(vc[:, r0:r1], n0, n1))
                lse_all[:, r0:r1, n0:n1] = lse.squeeze(-1)
        ctx.save_for_backward(qc, kn, vc, bias, ret, lse_all)
        ctx.steps = (r_step, n_step)
        return ret, lse_all

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, dret, dlse):
        qc, kn, vc, bias, ret, lse_all = ctx.saved_tensors
        r_step, n_step = ctx.steps
        R, n = qc.shape[1], qc.shape[2]
        dq, dk, dv = torch.zeros_like(qc), torch.zeros_like(kn), torch.zeros_like(vc)
        dbias = torch.empty_like(bias) if bias is not None and ctx.needs_input_grad[3] else None
        delta = (dret * ret).sum(-1)  # (B, R, n, c): <dret, ret> = sum_k w_k dw_k, the softmax backward term
        for n0, n1 in _ranges(n, n_step):
            for r0, r1 in _ranges(R, r_step):
                sl = (slice(None), slice(r0, r1), slice(n0, n1))
                q_b, k_la, v_la = qc[sl], look_around_at(kn[:, r0:r1], n0, n1), look_around_at(vc[:, r0:r1], n0, n1)
                raw = torch.einsum("brncd,brnkd->brnck", q_b, k_la)
                if bias is not None:
                    raw += bias[sl]
                w = raw.sub_(lse_all[sl].unsqueeze(-1)).exp_()  # (B, r, nb, c, 3c)
                _scatter_look_around(dv[:, r0:r1], torch.einsum("brnck,brncd->brnkd", w, dret[sl]), n0, n1)
                dw = torch.einsum("brncd,brnkd->brnck", dret[sl], v_la)
                draw = dw.sub_((delta[sl] - dlse[sl]).unsqueeze(-1)).mul_(w)  # softmax + logsumexp backward
                if dbias is not None:
                    dbias[sl] = draw
                dq[sl] = torch.einsum("brnck,brnkd->brncd", draw, k_la)
                _scatter_look_around(dk[:, r0:r1], torch.einsum("brnck,brncd->brnkd", draw, q_b), n0, n1)
        return dq, dk, dv, dbias


def _chunk_blocks(qc, vc, layout, key_eps, score_bias, score_bias_at):
    """Steps 4-5 of :func:`bucketed_attention` over blocks of chunks (inference): ``(ret (B, R, n, c, Dv),
    bucket_score (B, R, n, c))`` in sorted, chunked order."""
    B, R, n, c, _ = qc.shape
    kn = F.normalize(qc, p=2, dim=-1, eps=key_eps)  # keys, not yet looked around
    full_bias = score_bias(layout) if score_bias is not None and score_bias_at is None else None
    ret = vc.new_empty(B, R, n, c, vc.shape[-1])
    bucket_score = qc.new_empty(B, R, n, c)
    r_step, n_step = _block_steps(qc, vc)
    for n0 in range(0, n, n_step):
        n1 = min(n, n0 + n_step)
        bias = None
        if score_bias_at is not None:
            bias = score_bias_at(layout, n0, n1)
        elif full_bias is not None:
            bias = full_bias[:, :, n0:n1]
        for r0 in range(0, R, r_step):
            r1 = min(R, r0 + r_step)
            raw = torch.einsum("brncd,brnkd->brnck", qc[:, r0:r1, n0:n1],
                               look_around_at(kn[:, r0:r1], n0, n1))  # (B, rb, nb, c, 3c)
            if bias is not None:
                raw += bias[:, r0:r1]
            lse = torch.logsumexp(raw, dim=-1, keepdim=True)  # Eq. (10) normaliser, Eq. (11) bucket score
            weights = raw.sub_(lse).exp_()
            ret[:, r0:r1, n0:n1] = torch.einsum("brnck,brnkd->brncd", weights, look_around_at(vc[:, r0:r1], n0, n1))
            bucket_score[:, r0:r1, n0:n1] = lse.squeeze(-1)
    return ret, bucket_score


def apply_shared_attention(score: torch.Tensor, v: torch.Tensor, layout: BucketLayout) -> torch.Tensor:
    """Apply attention weights computed elsewhere to new values (LCoAN's collaborative attention, Eq. 12).

    Args:
        score: ``(B, R, n, c, 3c)`` weights from an earlier :func:`bucketed_attention` with ``return_score``.
        v: ``(B, L, Dv)`` values of the current module.
        layout: the layout those weights were computed under.
    Returns:
        ``(B, R, L, Dv)`` per-round outputs in position order.
    """
    vc = layout.to_chunks(v)
    if torch.is_grad_enabled():
        return layout.from_chunks(torch.einsum("brnck,brnkd->brncd", score, look_around(vc)))
    # inference: blocks of chunks within the block budget, for the (B, R, n, 3c, Dv) look-around of the values
    B, R, n, c, _ = score.shape
    ret = vc.new_empty(vc.shape)
    step = items_per_block(n, B * R * 3 * c * vc.shape[-1] * vc.element_size(), vc.device)
    for n0 in range(0, n, step):
        n1 = min(n, n0 + step)
        ret[:, :, n0:n1] = torch.einsum("brnck,brnkd->brncd", score[:, :, n0:n1], look_around_at(vc, n0, n1))
    return layout.from_chunks(ret)


def combine_rounds(ret: torch.Tensor, bucket_score: torch.Tensor) -> torch.Tensor:
    """Combine hash rounds, NLSN Eq. (11): ``out_p = sum_r softmax_r(bucket_score_r(p)) * ret_r(p)``.

    Args:
        ret: ``(B, R, L, D)`` per-round outputs.
        bucket_score: ``(B, R, L)`` per-round log-normalisers.
    Returns:
        ``(B, L, D)``.
    """
    weights = torch.softmax(bucket_score, dim=1).unsqueeze(-1)  # (B, R, L, 1)
    # accumulated round by round: no (B, R, L, D) temporary (a trip to main memory on large maps)
    out = ret[:, 0] * weights[:, 0]
    for r in range(1, ret.shape[1]):
        out = out.addcmul_(ret[:, r], weights[:, r])
    return out
