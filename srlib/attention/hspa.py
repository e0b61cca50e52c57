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
"""

from __future__ import annotations

import operator
from typing import Callable

import torch
from torch.autograd.function import once_differentiable

from srlib.attention.nla import NonLocalAttention
from srlib.attention.softthreshold import (
    SoftThreshold,
    _check_mode,
    _check_topk,
    make_normalizer,
    soft_threshold,
    st_rows_shifted,
)
from srlib.reference import load_state_dict_strict, register_case_runner

__all__ = ["HSPA", "auto_block_size", "hspa_attention"]

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
    if block_size is None or block_size == "auto":
        return block_size
    if isinstance(block_size, bool):
        raise ValueError(f"block_size must be a positive integer, 'auto' or None, got {block_size!r}")
    try:
        b = operator.index(block_size)
    except TypeError:
        raise ValueError(f"block_size must be a positive integer, 'auto' or None, got {block_size!r}") from None
    if b < 1:
        raise ValueError(f"block_size must be >= 1 (or 'auto', or None for the dense path), got {b}")
    return b


def _st_block(s: torch.Tensor, topk: int | None, mode: str):
    """ST of a score block ``(B, b, L)`` along its last dim: ``(weights (B, b, L), row_max, tau (B, b, 1))``."""
    B, b, L = s.shape
    out, _, row_max, tau, _, _ = st_rows_shifted(s.reshape(B * b, L), topk, mode)
    return out.view(B, b, L), row_max.view(B, b, 1), tau.view(B, b, 1)


def _blocks(length: int, block: int):
    for i0 in range(0, length, block):
        yield i0, min(length, i0 + block)


def _hspa_forward_blocks(q, k, v, topk, mode, block, keep_thresholds: bool):
    """Blockwise Eqs. (7)-(8): for each block of queries, scores → ST weights → weights × values."""
    B, L, _ = q.shape
    out = v.new_empty(B, L, v.shape[-1])
    row_max = q.new_empty(B, L, 1) if keep_thresholds else None
    tau = q.new_empty(B, L, 1) if keep_thresholds else None
    kt = k.transpose(1, 2)
    for i0, i1 in _blocks(L, block):
        s = torch.bmm(q[:, i0:i1], kt)  # (B, b, L): Eq. (7) for this block of queries
        w, rm, t = _st_block(s, topk, mode)  # Eqs. (9)-(12), row by row
        del s
        out[:, i0:i1] = torch.bmm(w, v)  # Eq. (8)
        if keep_thresholds:
            row_max[:, i0:i1] = rm
            tau[:, i0:i1] = t
        del w
    return out, row_max, tau


class _BlockwiseHSPA(torch.autograd.Function):
    """``Σ_j ST_j(q_i · K) v_j`` in query blocks, forward and backward in ``O(B · block · L)`` extra memory.

    Saves only ``q, k, v`` and two floats per query (row max and threshold κ, in the shifted scale). The
    backward recomputes each block's scores and weights (exact mode: ``max(s − max − κ, 0)``, bit-identical
    to the forward's; truncated mode: the top-k pass again) and applies Eq. (19) row-wise:
    ``∇s = c ⊙ (r − (cᵀr / T)·1)`` with ``r = ∇y · vᵀ``, ``c`` the support indicator and ``T = |support|``.
    """

    @staticmethod
    def forward(ctx, q, k, v, topk, mode, block):
        out, row_max, tau = _hspa_forward_blocks(q, k, v, topk, mode, block, keep_thresholds=True)
        ctx.save_for_backward(q, k, v, row_max, tau)
        ctx.topk, ctx.mode, ctx.block = topk, mode, block
        return out

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_out):
        q, k, v, row_max, tau = ctx.saved_tensors
        B, L, _ = q.shape
        gq, gk, gv = torch.zeros_like(q), torch.zeros_like(k), torch.zeros_like(v)
        kt, vt = k.transpose(1, 2), v.transpose(1, 2)
        for i0, i1 in _blocks(L, ctx.block):
            q_b, g_b = q[:, i0:i1], grad_out[:, i0:i1]
            s = torch.bmm(q_b, kt)  # (B, b, L), as in the forward
            if ctx.mode == "exact":
                w = ((s - row_max[:, i0:i1]) - tau[:, i0:i1]).clamp_(min=0)
            else:
                w = _st_block(s, ctx.topk, ctx.mode)[0]
            del s
            gv.baddbmm_(w.transpose(1, 2), g_b)  # ∇V += Wᵀ ∇Y
            c = w > 0  # support indicator
            del w
            r = torch.bmm(g_b, vt).mul_(c)  # ∇W = ∇Y Vᵀ, restricted to the support
            v_hat = r.sum(dim=-1, keepdim=True) / c.sum(dim=-1, keepdim=True)  # cᵀr / T
            gs = r.sub_(v_hat).mul_(c)  # Eq. (19)
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
    by the values, then freed. Extra memory ``O(B · b · L)`` instead of ``O(B · L²)``, forward and backward
    (the backward recomputes each block, keeping only two floats per query); the arithmetic is that of the
    dense path. The output equals the dense ``soft_threshold(q kᵀ) v`` (bit for bit when one block holds
    every query, which :func:`auto_block_size` chooses whenever ``B·L² ≤ 2²²``).

    Args:
        q: ``(B, L, D)`` queries; k: ``(B, L, D)`` keys; v: ``(B, L, Dv)`` values (same floating dtype).
        topk, mode: of the ST operation (see :func:`~srlib.attention.softthreshold.soft_threshold`).
        block_size: queries per block: ``"auto"`` (:func:`auto_block_size`), a positive integer, or ``None``
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
    block = auto_block_size(max(L, k.shape[1]), B) if block_size == "auto" else min(block_size, L)
    if torch.is_grad_enabled() and any(t.requires_grad for t in (q, k, v)):
        return _BlockwiseHSPA.apply(q, k, v, topk, mode, block)
    with torch.no_grad():
        return _hspa_forward_blocks(q, k, v, topk, mode, block, keep_thresholds=False)[0]


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

    Raises:
        ValueError: ``channel`` not divisible by ``reduction``, bad ``topk`` / ``mode`` / normaliser name /
            ``block_size``; at call, an input that is not ``(B, C, H, W)``.
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
        if x.dim() != 4:
            raise ValueError(f"expected a feature map (B, C, H, W), got shape {tuple(x.shape)}")
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


@register_case_runner("HSPA")
def run_hspa_case(case: dict) -> dict:
    """Runner for ``modules/hspa_case*.pt`` (see :func:`srlib.reference.run_case`).

    Rebuilds :class:`HSPA` from ``case["config"]`` (``channel``, ``reduction``, ``res_scale``, ``topk``), loads
    ``state_dict`` strictly and returns ``output``; with ``grad_output`` also ``grad_input`` and ``grad_params``
    (a dict keyed like ``state_dict``); with ``st_scores`` also ``st_output`` and, with ``st_grad_output``,
    ``st_grad_scores`` (official ``softThresholdingOperation(st_scores, dim, topk)``).
    """
    cfg = case["config"]
    m = HSPA(
        channel=cfg.get("channel", 256),
        reduction=cfg.get("reduction", 2),
        res_scale=cfg.get("res_scale", 1.0),
        topk=cfg.get("topk", 128),
    )
    load_state_dict_strict(m, case["state_dict"], "HSPA")
    m.eval()
    result: dict = {}
    x = case["input"].clone().requires_grad_("grad_output" in case)
    with torch.set_grad_enabled("grad_output" in case):
        y = m(x)
    result["output"] = y.detach()
    if "grad_output" in case:
        names = [n for n, p in m.named_parameters()]
        grads = torch.autograd.grad(y, [x, *m.parameters()], case["grad_output"])
        result["grad_input"] = grads[0]
        result["grad_params"] = dict(zip(names, grads[1:]))
    if "st_scores" in case:
        st_cfg = case.get("st_config", {})
        dim, topk = st_cfg.get("dim", 2), st_cfg.get("topk", 128)
        s = case["st_scores"].clone().requires_grad_("st_grad_output" in case)
        with torch.set_grad_enabled("st_grad_output" in case):
            p = soft_threshold(s, dim=dim, topk=topk)
        result["st_output"] = p.detach()
        if "st_grad_output" in case:
            (result["st_grad_scores"],) = torch.autograd.grad(p, s, case["st_grad_output"])
    return result
