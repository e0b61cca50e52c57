"""High-Similarity-Pass Attention (HSPA): dense non-local attention normalised by soft thresholding.

HSPAN paper (Su et al.), Sec. III-B2: for the feature map ``X ∈ R^{H×W×C}`` flattened to ``L = H·W``
positions (row-major, ``p = h·W + w``),

    s_ij       = φ_q(x_i)ᵀ φ_k(x_j)                    Eq. (7)   (no 1/√d scaling)
    HSPA(x_i)  = Σ_j ST_j(s_i) φ_v(x_j)                 Eq. (8)   (ST = soft thresholding, Eqs. 9-12)
    output     = res_scale · HSPA(x) + x               (official code; the paper's Fig. 3 shows the skip)

where ``φ_q``, ``φ_k`` (``C → C/reduction``) and ``φ_v`` (``C → C``) are 1×1 convolutions, **each followed by a
PReLU** in the official code (the paper only says "1×1 convolution"). Compared with the dense
:class:`~srlib.attention.nla.NonLocalAttention` (Eq. 6) only the normaliser changes, softmax → ST, so
:class:`HSPA` *is* a ``NonLocalAttention`` with a :class:`~srlib.attention.softthreshold.SoftThreshold`
normaliser; passing ``normalizer="softmax"`` gives back the NLA of the paper's Table I.

Official code: laoyangui/HSPAN ``src/model/attention.py`` (``HSPA``, ``SoftThresholdingOperation``). State-dict
keys match it: ``conv_match1.{0.weight,0.bias,1.weight}``, ``conv_match2.*``, ``conv_assembly.*``.

**Cost.** The official code builds the full ``(B, L, L)`` score matrix: ``O(B·L²)`` memory (1.1 GiB at
``1 × 64 × 100 × 100``). ST is row-wise, so :func:`hspa_attention` (the default, ``block_size="auto"``)
processes the queries in blocks: time stays ``O(B·L²·(D + Dv))``, memory falls to ``O(B·L·block)`` in the
forward pass and ``O(B·L·T)`` saved for training (``T`` the largest support of a block), with the backward of
Eq. (19) on the support only. ``block_size=None`` keeps the official dense path (``benchmarks/hspa_memory.py``
measures both).
"""

from __future__ import annotations

from typing import Callable

import torch
from torch.autograd.function import once_differentiable

from srlib._checks import check_feature_map, check_int
from srlib.attention.blocking import get_block_budget
from srlib.attention.nla import NonLocalAttention
from srlib.attention.softthreshold import (
    SoftThreshold,
    _check_mode,
    _check_topk,
    make_normalizer,
    soft_threshold,
    st_rows_shifted,
)

__all__ = ["BLOCK_ELEMENTS", "HSPA", "SPARSE_MAX_SUPPORT", "auto_block_size", "hspa_attention"]

#: Score entries per query block chosen by :func:`auto_block_size` (``2**22`` float32 = 16 MiB per block).
BLOCK_ELEMENTS = 2**22


def auto_block_size(length: int, batch: int = 1, budget: int = BLOCK_ELEMENTS) -> int:
    """Query rows per block so that one block of scores ``(batch, rows, length)`` has about ``budget`` entries.

    ``min(length, max(1, budget // (batch · length)))``: the whole sequence in one block while ``B·L²`` fits
    the budget (small maps compute exactly as the dense path), otherwise ``O(budget / L)`` rows.

    Raises:
        ValueError: non-positive ``length``, ``batch`` or ``budget``.
    """
    if length < 1 or batch < 1 or budget < 1:
        raise ValueError(f"need positive length, batch and budget, got {length}, {batch}, {budget}")
    return min(length, max(1, budget // (batch * length)))


def _check_block_size(block_size):
    """``None`` (dense path), ``"auto"`` or a positive integer; raises ``ValueError`` naming the value."""
    if block_size is None or block_size == "auto":
        return block_size
    return check_int("HSPA", "block_size", block_size)  # or 'auto', or None for the dense path


#: Largest per-block support for which the training path saves the support (indices and weights) instead of
#: recomputing the block's scores in the backward: saved memory stays ``O(L · SPARSE_MAX_SUPPORT)``.
SPARSE_MAX_SUPPORT = 512


def _blocks(length: int, block: int):
    for i0 in range(0, length, block):
        yield i0, min(length, i0 + block)


def _gather_rows(x: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    """Rows of ``x`` ``(B, L, D)`` at ``idx`` ``(B, b, t)``: ``(B, b, t, D)``."""
    B, b, t = idx.shape
    return x.gather(1, idx.reshape(B, b * t, 1).expand(-1, -1, x.shape[-1])).view(B, b, t, x.shape[-1])


def _scatter_rows_(acc: torch.Tensor, idx: torch.Tensor, rows: torch.Tensor) -> None:
    """``acc[b, idx[b, i, t]] += rows[b, i, t]`` for ``acc`` ``(B, L, D)``, ``idx`` ``(B, b, t)``, ``rows``
    ``(B, b, t, D)``."""
    B, b, t = idx.shape
    D = acc.shape[-1]
    acc.scatter_add_(1, idx.reshape(B, b * t, 1).expand(-1, -1, D), rows.reshape(B, b * t, D))


def _hspa_forward_blocks(q, k, v, topk, mode, block, save: list | None):
    """Blockwise Eqs. (7)-(8): for each block of queries, scores → ST weights → weights × values.

    With ``save`` (a list), appends per block what the backward needs: ``("sparse", i0, i1, sel, w_sel)`` with
    ``sel`` ``(B, b, t)`` the indices of the ``t`` = largest support of the block top candidates (a superset of
    every row's support) and ``w_sel`` the weights there; or, when ``t > SPARSE_MAX_SUPPORT``,
    ``("dense", i0, i1, row_max, tau)`` to recompute the block's weights.
    """
    B, L, _ = q.shape
    out = v.new_empty(B, L, v.shape[-1])
    kt = k.transpose(1, 2)
    for i0, i1 in _blocks(L, block):
        b = i1 - i0
        s = torch.bmm(q[:, i0:i1], kt)  # (B, b, L): Eq. (7) for this block of queries
        w, s_shift, row_max, tau, support, idx = st_rows_shifted(  # Eqs. (9)-(12), row by row
            s.view(B * b, L), topk, mode, keep_idx=save is not None)
        del s
        out[:, i0:i1] = torch.bmm(w.view(B, b, L), v)  # Eq. (8)
        if save is not None:
            t_max = int(support.max())
            if t_max > SPARSE_MAX_SUPPORT:
                save.append(("dense", i0, i1, row_max.view(B, b, 1), tau.view(B, b, 1)))
            else:
                # the candidates are in descending order of score, so the first t_max hold every row's support
                sel = idx[:, :t_max] if t_max <= idx.shape[-1] else torch.topk(s_shift, t_max, dim=-1).indices
                save.append(("sparse", i0, i1, sel.view(B, b, t_max), w.gather(-1, sel).view(B, b, t_max)))
        del w, s_shift, idx
    return out


def _grad_rows(r: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
    """Eq. (19) along the last dim: ``c ⊙ (r − (cᵀr / T)·1)``, ``c`` the 0/1 support indicator (in place on r)."""
    r.mul_(c)
    v_hat = r.sum(dim=-1, keepdim=True) / c.sum(dim=-1, keepdim=True)  # cᵀr / T (T ≥ 1)
    return r.sub_(v_hat).mul_(c)


class _BlockwiseHSPA(torch.autograd.Function):
    """``y_i = Σ_j ST_j(q_i · K) v_j`` in query blocks; nothing of size ``L × L`` is stored.

    Forward: :func:`_hspa_forward_blocks`. Saved: ``q, k, v`` and, per block, the support of its rows
    (indices and weights of the ``t`` largest candidates, ``t`` = largest support in the block): ``O(L·t)``.
    Backward, Eq. (19) row by row with ``r_ij = ∇y_i · v_j`` on the support only (``O(L·t·(D + Dv))``):
    ``∇s = c ⊙ (r − (cᵀr / T)·1)``, ``∇q_i = Σ_j ∇s_ij k_j``, ``∇k_j += ∇s_ij q_i``, ``∇v_j += w_ij ∇y_i``
    (gathers and ``scatter_add``). A block whose support exceeds :data:`SPARSE_MAX_SUPPORT` instead keeps the
    row max and threshold κ of its rows and recomputes its scores and weights in the backward,
    ``max(s − max − κ, 0)``, bit-identical to the forward's (exact mode; truncated mode runs its top-k again).
    """

    @staticmethod
    def forward(ctx, q, k, v, topk, mode, block):
        saved: list = []
        out = _hspa_forward_blocks(q, k, v, topk, mode, block, saved)
        ctx.save_for_backward(q, k, v)
        ctx.blocks = saved
        ctx.topk, ctx.mode = topk, mode
        return out

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_out):
        q, k, v = ctx.saved_tensors
        B, L, D = q.shape
        Dv = v.shape[-1]
        gq, gk, gv = torch.zeros_like(q), torch.zeros_like(k), torch.zeros_like(v)
        kt, vt = k.transpose(1, 2), v.transpose(1, 2)
        for kind, i0, i1, a, b_ in ctx.blocks:
            if kind == "sparse":
                sel, w_sel = a, b_  # (B, b, t)
                t = sel.shape[-1]
                step = max(1, BLOCK_ELEMENTS // (B * t * max(D, Dv)))  # rows per gather, bounded memory
                for j0 in range(0, i1 - i0, step):
                    j1 = min(i1 - i0, j0 + step)
                    idx, w = sel[:, j0:j1], w_sel[:, j0:j1]
                    g_b, q_b = grad_out[:, i0 + j0:i0 + j1], q[:, i0 + j0:i0 + j1]
                    _scatter_rows_(gv, idx, w.unsqueeze(-1) * g_b.unsqueeze(2))  # ∇v_j += w_ij ∇y_i
                    r = (_gather_rows(v, idx) @ g_b.unsqueeze(-1)).squeeze(-1)  # r_ij = ∇y_i · v_j
                    gs = _grad_rows(r, (w > 0).to(r.dtype))  # Eq. (19)
                    k_sel = _gather_rows(k, idx)
                    gq[:, i0 + j0:i0 + j1] = (gs.unsqueeze(-2) @ k_sel).squeeze(-2)  # ∇q_i = Σ_j ∇s_ij k_j
                    del k_sel
                    _scatter_rows_(gk, idx, gs.unsqueeze(-1) * q_b.unsqueeze(2))  # ∇k_j += ∇s_ij q_i
                continue
            row_max, tau = a, b_
            q_b, g_b = q[:, i0:i1], grad_out[:, i0:i1]
            s = torch.bmm(q_b, kt)  # (B, b, L), as in the forward
            if ctx.mode == "exact":  # in place, the same operations as the forward: bit-identical weights
                w = s.sub_(row_max).sub_(tau).clamp_(min=0)
            else:
                b = i1 - i0
                w = st_rows_shifted(s.view(B * b, L), ctx.topk, ctx.mode)[0].view(B, b, L)
            del s
            gv.baddbmm_(w.transpose(1, 2), g_b)  # ∇V += Wᵀ ∇Y
            c = (w > 0).to(w.dtype)  # support indicator
            del w
            gs = _grad_rows(torch.bmm(g_b, vt), c)  # Eq. (19) with ∇W = ∇Y Vᵀ
            del c
            gq[:, i0:i1] = torch.bmm(gs, k)  # ∇Q = ∇S K
            gk.baddbmm_(gs.transpose(1, 2), q_b)  # ∇K += ∇Sᵀ Q
        return gq, gk, gv, None, None, None


def hspa_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    *,
    topk: int | None = 128,
    mode: str = "exact",
    block_size: int | str | None = "auto",
) -> torch.Tensor:
    """HSPA's attention ``y_i = Σ_j ST_j(s_i) v_j`` with ``s_ij = q_i · k_j`` (HSPAN Eqs. 7-8), query block by
    query block.

    ST (Eqs. 9-12) is row-wise: each query's weights depend only on its own scores. So the ``L × L`` matrix
    need not exist: for each block of ``b`` queries the scores ``(B, b, L)`` are computed, thresholded
    (top-k and the exact fallback of :func:`~srlib.attention.softthreshold.soft_threshold`) and multiplied
    by the values, then freed. Extra memory ``O(B · b · L)`` instead of ``O(B · L²)``. For training only the
    support of each row is kept (indices and weights of its block's ``t`` largest candidates, ``t`` = largest
    support, ``O(B · L · t)``), and the backward of Eq. (19) works on it alone, ``O(B · L · t · (D + Dv))``
    instead of ``O(B · L² · (D + Dv))``; a block with a support above :data:`SPARSE_MAX_SUPPORT` recomputes its
    scores instead. The forward output equals the dense ``soft_threshold(q kᵀ) v`` (bit for bit when one
    block holds every query, which :func:`auto_block_size` chooses whenever the ``B·L²`` scores fit the block
    budget: ``2²²`` float32 on the CPU by default); gradients
    equal the dense path's up to summation order. The backward is not itself differentiable (no double
    backward; use ``block_size=None`` for that).

    Args:
        q: ``(B, L, D)`` queries; k: ``(B, L, D)`` keys; v: ``(B, L, Dv)`` values (same floating dtype).
        topk, mode: of the ST operation (see :func:`~srlib.attention.softthreshold.soft_threshold`).
        block_size: queries per block: ``"auto"`` (:func:`auto_block_size` with the block budget of the
            device, :mod:`srlib.attention.blocking`: 16 MiB of scores on the CPU, 1 GiB on CUDA, settable), a
            positive integer, or ``None``
            for the dense path (the official code's: full ``(B, L, L)`` scores).

    Returns:
        ``(B, L, Dv)``.

    Raises:
        ValueError: shapes that do not fit, non-floating inputs, bad ``topk`` / ``mode`` / ``block_size``.

    Source: HSPAN paper Eqs. (7)-(12), (19); the blocking is ours (the official ``HSPA`` builds the whole
    score matrix).
    """
    topk, mode, block_size = _check_topk(topk), _check_mode(mode), _check_block_size(block_size)
    if q.dim() != 3 or k.dim() != 3 or v.dim() != 3 or q.shape[0] != k.shape[0] or k.shape[:2] != v.shape[:2] \
            or q.shape[2] != k.shape[2]:
        raise ValueError(f"need q (B, L, D), k (B, S, D), v (B, S, Dv); got {tuple(q.shape)}, {tuple(k.shape)}, "
                         f"{tuple(v.shape)}")
    if not q.is_floating_point():
        raise ValueError(f"q, k, v must be floating-point, got {q.dtype}")
    if block_size is None:  # dense, as the official code
        return torch.bmm(soft_threshold(torch.bmm(q, k.transpose(1, 2)), dim=-1, topk=topk, mode=mode), v)
    B, L, _ = q.shape
    if block_size == "auto":  # the block budget of the device, in score entries (CPU default 16 MiB = 2**22 float32)
        block = auto_block_size(max(L, k.shape[1]), B, budget=max(1, get_block_budget(q.device) // q.element_size()))
    else:
        block = min(block_size, L)
    if torch.is_grad_enabled() and any(t.requires_grad for t in (q, k, v)):
        return _BlockwiseHSPA.apply(q, k, v, topk, mode, block)
    with torch.no_grad():
        return _hspa_forward_blocks(q, k, v, topk, mode, block, None)


class HSPA(NonLocalAttention):
    """High-similarity-pass attention block with residual connection (HSPAN Eqs. 7-12).

    Args:
        channel: input/output channels ``C`` (official name; paper HSPAN: 192). Must be divisible by
            ``reduction``.
        reduction: query/key embeddings have ``C // reduction`` channels (official: 2).
        res_scale: residual scale, ``out = res_scale · y + x`` (inside HSPAN: ``args.res_scale`` = 0.1).
        topk: ST top-k (official default 128; ``None`` = full sort).
        mode: ``"exact"`` (official: output independent of ``topk``) or ``"truncated"`` (sparsemax over the
            top-k scores only, the paper's Fig. 6 reading); see :mod:`srlib.attention.softthreshold`.
        normalizer: ``None`` (ST with ``topk``/``mode``), ``"st"``, ``"softmax"`` or any callable mapping scores
            ``(B, L, L)`` to weights along the last dim (then ``topk``/``mode`` are ignored).
        block_size: ST path only: queries per block of :func:`hspa_attention` (``"auto"``, default: chosen
            from ``L`` by :func:`auto_block_size`; a positive integer; or ``None`` for the dense path of the
            official code, which stores the full ``(B, L, L)`` scores). Settable.

    Shapes: ``x: (B, C, H, W) -> (B, C, H, W)``; attention weights ``(B, L, L)`` with ``L = H·W`` (row =
    query). Time ``O(B·L²)`` like dense NLA; memory ``O(B·L·block)`` with blocks (forward and backward),
    ``O(B·L²)`` with ``block_size=None`` (ST avoids the full sort, the blocks avoid the score matrix).
    Set ``keep_map = True`` to keep the last weights in ``last_map`` (this takes the dense path).

    Small inputs: any ``H, W >= 1``, as every srlib attention (3x3 and 5x7 maps run and keep their shape);
    a ``topk`` larger than ``H*W`` simply sorts all scores.

    Raises:
        ValueError: ``channel`` not divisible by ``reduction``, bad ``topk`` / ``mode`` / normaliser name /
            ``block_size``; at call, an input that is not a floating point ``(B, C, H, W)`` map or holds NaN/Inf.
    """

    def __init__(
        self,
        channel: int = 256,
        reduction: int = 2,
        res_scale: float = 1.0,
        topk: int | None = 128,
        mode: str = "exact",
        normalizer: str | Callable[[torch.Tensor], torch.Tensor] | None = None,
        block_size: int | str | None = "auto",
    ) -> None:
        norm = make_normalizer("st" if normalizer is None else normalizer, dim=-1, topk=topk, mode=mode)
        super().__init__(channel=channel, reduction=reduction, res_scale=res_scale, normalizer=norm)
        self.block_size = block_size

    @property
    def block_size(self) -> int | str | None:
        """Queries per block (``"auto"``, an integer, or ``None`` = dense official path); settable."""
        return self._block_size

    @block_size.setter
    def block_size(self, value: int | str | None) -> None:
        self._block_size = _check_block_size(value)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not isinstance(self.normalizer, SoftThreshold) or self.keep_map or self.block_size is None:
            return super().forward(x)  # dense: full (B, L, L) scores (official code)
        check_feature_map(x, f"{type(self).__name__} input x", self.conv_assembly[0].in_channels)
        B, C, H, W = x.shape
        q, k, v = self.embed(x)
        st = self.normalizer
        y = hspa_attention(q, k, v, topk=st.topk, mode=st.mode, block_size=self.block_size)
        return self.res_scale * y.transpose(1, 2).reshape(B, C, H, W) + x

    @property
    def topk(self) -> int | None:
        """Top-k of the ST normaliser (settable, e.g. to change ``k`` at test time as in the paper's Fig. 6)."""
        return self._st().topk

    @topk.setter
    def topk(self, value: int | None) -> None:
        self._st().topk = _check_topk(value)

    @property
    def mode(self) -> str:
        """``"exact"`` or ``"truncated"`` (settable)."""
        return self._st().mode

    @mode.setter
    def mode(self, value: str) -> None:
        self._st().mode = _check_mode(value)

    def _st(self) -> SoftThreshold:
        if not isinstance(self.normalizer, SoftThreshold):
            raise ValueError(f"this HSPA uses the normaliser {self.normalizer!r}, which has no top-k / mode")
        return self.normalizer

    def similarity(self, x: torch.Tensor) -> torch.Tensor:
        """Raw scores ``s_ij = φ_q(x_i)ᵀ φ_k(x_j)`` (Eq. 7), ``x: (B, C, H, W) -> (B, L, L)``."""
        q, k, _ = self.embed(x)
        return torch.bmm(q, k.transpose(1, 2))
