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

import functools
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
    key_bias: torch.Tensor | None = None,
    single_pass: bool = False,
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
            the chunks ``[start, stop)`` only; used without autograd instead of ``score_bias`` so that the
            full bias tensor is never built.
        key_bias: optional ``(B, R, n, c, c)`` bias rows of the *keys*, in sorted, chunked order: the bias of
            query slot ``i`` of a chunk for candidate key ``j`` is ``key_bias[..., j, i]`` of the chunk ``j``
            was looked around from (DLSN's official learned similarity score: an MLP of each key's features
            with one output per query slot, ``GLA.learnable_score``). Added to ``score_bias`` if both are
            given. A third of the ``(B, R, n, c, 3c)`` term, which is only built block by block.
        single_pass: compute steps 4-5 in one pass of plain tensor operations, autograd through all of them:
            the computation of the official code, kept as the reference the blocked paths are tested against
            (its memory grows with the whole ``(B, R, n, c, 3c)`` weight tensor and its copies).

    Returns:
        :class:`BucketedAttentionResult`.
    Raises:
        ValueError: ``q`` or ``v`` rows that do not match the layout (:meth:`BucketLayout.to_chunks`), or a
            ``key_bias`` that is not ``(B, R, n, c, c)`` for this layout.

    **Blocks.** By default the scores of all chunks are computed in one pass when they (with the
    looked-around keys and values) fit the block budget of the device (:mod:`srlib.attention.blocking`, CPU
    default 16 MiB), otherwise in as few blocks of chunks as the budget allows (:func:`look_around_at`), so
    that no score temporary larger than the budget is stored; same arithmetic, equal to the single pass up to
    float rounding. With autograd this is :class:`_ChunkAttention`: its backward recomputes each block's
    scores from the saved queries, keys, values and log-normalisers (the flash-attention idea) instead of
    keeping the weights and looked-around copies (saved memory ``O(B·R·L·(Dq + Dv))``; every elementwise
    pass stays in a block within the budget, so time stays linear in ``L``). With ``return_score`` the
    weights are an output: they are written once into the ``(B, R, n, c, 3c)`` tensor returned, and the
    backward reads them there (and takes the gradient that later users of the weights, LCoA's collaborative
    modules, send back to them) instead of recomputing them.
    """
    qc = layout.to_chunks(q)  # (B, R, n, c, Dq)
    vc = layout.to_chunks(v)  # (B, R, n, c, Dv)
    if key_bias is not None and tuple(key_bias.shape) != tuple(qc.shape[:4]) + (qc.shape[3],):
        raise ValueError(f"key_bias must be (B, R, n, c, c) = {tuple(qc.shape[:4]) + (qc.shape[3],)} for this "
                         f"layout, got {tuple(key_bias.shape)}")
    kn = F.normalize(qc, p=2, dim=-1, eps=key_eps)  # keys, not yet looked around
    score = None
    if single_pass:
        bias = _whole_bias(layout, score_bias, key_bias)
        ret, lse, score = _single_pass(qc, kn, vc, bias)
    elif torch.is_grad_enabled():
        bias = score_bias(layout) if score_bias is not None else None
        out = _ChunkAttention.apply(qc, kn, vc, bias, key_bias, return_score)
        ret, lse = out[0], out[1]
        score = out[2] if return_score else None
    else:  # inference: the blocked forward alone, the bias asked for block by block when possible
        bias = score_bias(layout) if score_bias is not None and score_bias_at is None else None
        bias_at = (lambda n0, n1: score_bias_at(layout, n0, n1)) if score_bias_at is not None else None
        if return_score:
            score = qc.new_empty(*qc.shape[:4], 3 * qc.shape[3])
        ret, lse = _attend_blocks(qc, kn, vc, bias, key_bias, bias_at=bias_at, score_out=score)
    return BucketedAttentionResult(
        ret=layout.from_chunks(ret),
        bucket_score=layout.from_chunks(lse),
        layout=layout,
        score=score if return_score else None,
        bucket_score_sorted=lse.flatten(2) if return_score else None,
    )


def _whole_bias(layout: BucketLayout, score_bias, key_bias: torch.Tensor | None) -> torch.Tensor | None:
    """The whole ``(B, R, n, c, 3c)`` bias of :func:`bucketed_attention` (single pass only)."""
    bias = score_bias(layout) if score_bias is not None else None
    if key_bias is not None:
        per_query = look_around(key_bias).transpose(-1, -2)  # [j, i] -> [i, j]
        bias = per_query if bias is None else bias + per_query
    return bias


def _single_pass(qc, kn, vc, bias):
    """Steps 4-5 as the official code computes them: ``(ret (B, R, n, c, Dv), lse (B, R, n, c), weights
    (B, R, n, c, 3c))``, every intermediate kept for autograd."""
    kc = look_around(kn)  # (B, R, n, 3c, Dq)
    raw = torch.einsum("brncd,brnkd->brnck", qc, kc)  # (B, R, n, c, 3c)
    if bias is not None:
        raw = raw + bias
    # Eq. (10): softmax within the bucket; keep the log-normaliser for the round weights of Eq. (11).
    lse = torch.logsumexp(raw, dim=-1, keepdim=True)  # (B, R, n, c, 1)
    score = torch.exp(raw - lse)
    ret = torch.einsum("brnck,brnkd->brncd", score, look_around(vc))  # (B, R, n, c, Dv)
    return ret, lse.squeeze(-1), score


def _block_steps(qc: torch.Tensor, vc: torch.Tensor, key_bias: torch.Tensor | None = None) -> tuple[int, int]:
    """``(rounds, chunks)`` per block of the chunked attention within the block budget of the device: all
    rounds and chunks (a single pass) when the scores and looked-around keys and values fit."""
    B, R, n, c, _ = qc.shape
    # bytes of one chunk of one round: scores (c, 3c), the looked-around keys and values (3c, Dq + Dv) and
    # key bias rows (3c, c)
    width = c + qc.shape[-1] + vc.shape[-1] + (c if key_bias is not None else 0)
    per_chunk = B * 3 * c * width * qc.element_size()
    fit = items_per_block(R * n, per_chunk, qc.device)  # chunk-rounds per block; R * n: a single pass
    r_step = min(R, fit)  # rounds per block
    return r_step, max(1, fit // r_step)  # chunks per block


def _blocks(qc: torch.Tensor, r_step: int, n_step: int):
    """``(r0, r1, n0, n1)`` of every block, chunk ranges outside, rounds inside."""
    R, n = qc.shape[1], qc.shape[2]
    for n0 in range(0, n, n_step):
        for r0 in range(0, R, r_step):
            yield r0, min(R, r0 + r_step), n0, min(n, n0 + n_step)


def _scatter_look_around(dst: torch.Tensor, grad: torch.Tensor, n0: int, n1: int) -> None:
    """Adjoint of :func:`look_around_at`: add ``grad`` ``(B, r, n1 - n0, 3c, D)`` (the ``[own, prev, next]``
    rows of chunks ``n0 .. n1 - 1``) into ``dst`` ``(B, r, n, c, D)`` at the chunks they were copied from."""
    n, c = dst.shape[2], dst.shape[3]
    own = torch.arange(n0, n1, device=dst.device)
    for part, shift in ((0, 0), (1, -1), (2, 1)):  # own chunk, previous chunk, next chunk (cyclic)
        dst.index_add_(2, (own + shift) % n, grad[:, :, :, part * c:(part + 1) * c])


def _raw_block(qc, kn, bias, key_bias, r0, r1, n0, n1, bias_at=None):
    """Raw scores ``q_i . k_j`` (+ bias) of rounds ``[r0, r1)`` and chunks ``[n0, n1)``:
    ``(B, r1 - r0, n1 - n0, c, 3c)``, a fresh tensor (safe to modify in place)."""
    raw = torch.einsum("brncd,brnkd->brnck", qc[:, r0:r1, n0:n1], look_around_at(kn[:, r0:r1], n0, n1))
    if bias is not None:
        raw += bias[:, r0:r1, n0:n1]
    if bias_at is not None:
        raw += bias_at(n0, n1)[:, r0:r1]
    if key_bias is not None:
        raw += look_around_at(key_bias[:, r0:r1], n0, n1).transpose(-1, -2)  # [j, i] -> [i, j]
    return raw


def _attend_blocks(qc, kn, vc, bias=None, key_bias=None, *, bias_at=None, score_out=None):
    """Steps 4-5 of :func:`bucketed_attention` block by block, without autograd: ``(ret (B, R, n, c, Dv),
    lse (B, R, n, c))`` in sorted, chunked order; the weights go into ``score_out`` ``(B, R, n, c, 3c)`` when
    given. ``bias_at(n0, n1)``: the bias of chunks ``[n0, n1)``, all rounds (used instead of ``bias``)."""
    B, R, n, c, _ = qc.shape
    ret = vc.new_empty(B, R, n, c, vc.shape[-1])
    lse_all = qc.new_empty(B, R, n, c)
    r_step, n_step = _block_steps(qc, vc, key_bias)
    if bias_at is not None and r_step < R:  # the bias of a chunk range is computed once for all its rounds
        bias_at = functools.lru_cache(maxsize=1)(bias_at)
    for r0, r1, n0, n1 in _blocks(qc, r_step, n_step):
        raw = _raw_block(qc, kn, bias, key_bias, r0, r1, n0, n1, bias_at)  # (B, rb, nb, c, 3c)
        lse = torch.logsumexp(raw, dim=-1, keepdim=True)  # Eq. (10) normaliser, Eq. (11) bucket score
        weights = raw.sub_(lse).exp_()
        if score_out is not None:
            score_out[:, r0:r1, n0:n1] = weights
        ret[:, r0:r1, n0:n1] = torch.einsum("brnck,brnkd->brncd", weights, look_around_at(vc[:, r0:r1], n0, n1))
        lse_all[:, r0:r1, n0:n1] = lse.squeeze(-1)
    return ret, lse_all


class _ChunkAttention(torch.autograd.Function):
    """Steps 4-5 of :func:`bucketed_attention` for training, block by block (flash-attention-style backward).

    Inputs ``qc`` ``(B, R, n, c, Dq)`` queries, ``kn`` ``(B, R, n, c, Dq)`` normalised keys (not looked
    around), ``vc`` ``(B, R, n, c, Dv)`` values, ``bias`` ``(B, R, n, c, 3c)`` or ``None``, ``key_bias``
    ``(B, R, n, c, c)`` or ``None`` (see :func:`bucketed_attention`), ``keep_weights``; outputs ``ret``
    ``(B, R, n, c, Dv)``, ``lse`` ``(B, R, n, c)`` (Eq. 10 normaliser = Eq. 11 bucket score) and, with
    ``keep_weights``, the weights ``w`` ``(B, R, n, c, 3c)``. Saved: the inputs, ``ret``, ``lse`` (and ``w``).

    Backward per block, with ``w = exp(raw - lse)`` recomputed (or read from the kept weights):
    ``dw = dret vᵀ (+ dw from later users of w)``, ``draw = w (dw - Σ_k w_k dw_k + dlse)``, ``dq = draw k``,
    ``dk = drawᵀ q``, ``dv = wᵀ dret``, ``dbias = draw``, ``dkey_bias = drawᵀ``; key, value and key-bias
    gradients go back to the chunks they were looked around from (without later users,
    ``Σ_k w_k dw_k = <dret, ret>``). First derivatives only (``gradcheck`` in ``tests/test_buckets.py``)."""

    @staticmethod
    def forward(ctx, qc, kn, vc, bias, key_bias, keep_weights):
        ctx.set_materialize_grads(False)
        score = qc.new_empty(*qc.shape[:4], 3 * qc.shape[3]) if keep_weights else None
        ret, lse = _attend_blocks(qc, kn, vc, bias, key_bias, score_out=score)
        ctx.save_for_backward(qc, kn, vc, bias, key_bias, ret, lse, score)
        return (ret, lse, score) if keep_weights else (ret, lse)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, dret, dlse, dscore=None):
        qc, kn, vc, bias, key_bias, ret, lse_all, score = ctx.saved_tensors
        dret = torch.zeros_like(ret) if dret is None else dret
        dlse = torch.zeros_like(lse_all) if dlse is None else dlse
        dq, dk, dv = torch.zeros_like(qc), torch.zeros_like(kn), torch.zeros_like(vc)
        dbias = torch.empty_like(bias) if bias is not None and ctx.needs_input_grad[3] else None
        dkey = torch.zeros_like(key_bias) if key_bias is not None and ctx.needs_input_grad[4] else None
        delta = (dret * ret).sum(-1) if dscore is None else None  # <dret, ret> = Σ_k w_k dw_k without dscore
        r_step, n_step = _block_steps(qc, vc, key_bias)
        for r0, r1, n0, n1 in _blocks(qc, r_step, n_step):
            sl = (slice(None), slice(r0, r1), slice(n0, n1))
            if score is not None:
                w = score[sl]  # the kept weights (read only)
            else:
                w = _raw_block(qc, kn, bias, key_bias, r0, r1, n0, n1).sub_(lse_all[sl].unsqueeze(-1)).exp_()
            v_la = look_around_at(vc[:, r0:r1], n0, n1)
            _scatter_look_around(dv[:, r0:r1], torch.einsum("brnck,brncd->brnkd", w, dret[sl]), n0, n1)
            dw = torch.einsum("brncd,brnkd->brnck", dret[sl], v_la)  # (B, r, nb, c, 3c)
            if dscore is None:
                row = delta[sl]
            else:
                dw += dscore[sl]
                row = (w * dw).sum(-1)
            draw = dw.sub_((row - dlse[sl]).unsqueeze(-1)).mul_(w)  # softmax + logsumexp backward
            if dbias is not None:
                dbias[sl] = draw
            if dkey is not None:
                _scatter_look_around(dkey[:, r0:r1], draw.transpose(-1, -2), n0, n1)
            q_b, k_la = qc[sl], look_around_at(kn[:, r0:r1], n0, n1)
            dq[sl] = torch.einsum("brnck,brnkd->brncd", draw, k_la)
            _scatter_look_around(dk[:, r0:r1], torch.einsum("brnck,brncd->brnkd", draw, q_b), n0, n1)
        return dq, dk, dv, dbias, dkey, None


def apply_shared_attention(score: torch.Tensor, v: torch.Tensor, layout: BucketLayout) -> torch.Tensor:
    """Apply attention weights computed elsewhere to new values (LCoAN's collaborative attention, Eq. 12).

    Args:
        score: ``(B, R, n, c, 3c)`` weights from an earlier :func:`bucketed_attention` with ``return_score``.
        v: ``(B, L, Dv)`` values of the current module.
        layout: the layout those weights were computed under.
    Returns:
        ``(B, R, L, Dv)`` per-round outputs in position order.

    Blocks of chunks within the block budget of the device (:mod:`srlib.attention.blocking`), forward and
    backward (:class:`_SharedAttention`): the ``(B, R, n, 3c, Dv)`` look-around of the values is never built
    whole; the gradient of the weights (``dscore = dret vᵀ``) is written block by block.
    """
    return layout.from_chunks(_SharedAttention.apply(score, layout.to_chunks(v)))


def _shared_steps(score: torch.Tensor, vc: torch.Tensor) -> int:
    """Chunks per block of :class:`_SharedAttention` within the block budget (all of them when they fit)."""
    B, R, n, c, _ = score.shape
    return items_per_block(n, B * R * 3 * c * (vc.shape[-1] + c) * vc.element_size(), vc.device)


class _SharedAttention(torch.autograd.Function):
    """``ret = w v`` over ``[own, prev, next]`` chunks for given weights ``w`` ``(B, R, n, c, 3c)`` and values
    ``vc`` ``(B, R, n, c, Dv)``, block by block; backward ``dw = dret vᵀ``, ``dv = wᵀ dret`` (looked-around
    rows go back to their chunks). Saved: the two inputs (the weights are kept by their producer anyway)."""

    @staticmethod
    def forward(ctx, score, vc):
        ctx.save_for_backward(score, vc)
        ret = vc.new_empty(vc.shape)
        step = _shared_steps(score, vc)
        for n0 in range(0, score.shape[2], step):
            n1 = min(score.shape[2], n0 + step)
            ret[:, :, n0:n1] = torch.einsum("brnck,brnkd->brncd", score[:, :, n0:n1], look_around_at(vc, n0, n1))
        return ret

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, dret):
        score, vc = ctx.saved_tensors
        dscore = torch.empty_like(score) if ctx.needs_input_grad[0] else None
        dv = torch.zeros_like(vc) if ctx.needs_input_grad[1] else None
        step = _shared_steps(score, vc)
        for n0 in range(0, score.shape[2], step):
            n1 = min(score.shape[2], n0 + step)
            if dscore is not None:
                dscore[:, :, n0:n1] = torch.einsum("brncd,brnkd->brnck", dret[:, :, n0:n1],
                                                   look_around_at(vc, n0, n1))
            if dv is not None:
                _scatter_look_around(dv, torch.einsum("brnck,brncd->brnkd", score[:, :, n0:n1],
                                                      dret[:, :, n0:n1]), n0, n1)
        return dscore, dv


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
