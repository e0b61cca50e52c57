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

from typing import Callable

import torch

from srlib.attention.nla import NonLocalAttention
from srlib.attention.softthreshold import SoftThreshold, _check_mode, _check_topk, make_normalizer

__all__ = ["HSPA"]


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

    Shapes: ``x: (B, C, H, W) -> (B, C, H, W)``; attention weights ``(B, L, L)`` with ``L = H·W`` (row =
    query). Memory and time ``O(B·L²)`` like dense NLA (ST avoids the full sort, not the score matrix).
    Set ``keep_map = True`` to keep the last weights in ``last_map``.

    Small inputs: any ``H, W >= 1``, as every srlib attention (3x3 and 5x7 maps run and keep their shape);
    a ``topk`` larger than ``H*W`` simply sorts all scores.

    Raises:
        ValueError: ``channel`` not divisible by ``reduction``, bad ``topk`` / ``mode`` / normaliser name;
            at call, an input that is not a floating point ``(B, C, H, W)`` map or holds NaN/Inf.
    """

    def __init__(
        self,
        channel: int = 256,
        reduction: int = 2,
        res_scale: float = 1.0,
        topk: int | None = 128,
        mode: str = "exact",
        normalizer: str | Callable[[torch.Tensor], torch.Tensor] | None = None,
    ) -> None:
        norm = make_normalizer("st" if normalizer is None else normalizer, dim=-1, topk=topk, mode=mode)
        super().__init__(channel=channel, reduction=reduction, res_scale=res_scale, normalizer=norm)

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
