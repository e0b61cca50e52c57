"""Dense non-local attention (NLA), the baseline every paper in this project sparsifies.

NLSN paper (Mei et al., CVPR 2021) Eq. (4), the *embedded Gaussian* form of Wang et al.'s non-local block:

    y_i = sum_j  exp(theta(x_i)^T phi(x_j)) / sum_k exp(theta(x_i)^T phi(x_k))  *  g(x_j)

i.e. softmax attention over all ``L = H*W`` positions, with query ``theta``, key ``phi`` and value ``g``
embeddings. The cost is ``O(L^2)`` in time and memory: the point of the other five mechanisms.

The module follows the ``NonLocalAttention`` class of the official HSPAN repository
(``laoyangui/HSPAN`` ``src/model/attention.py``), the only official code with a standalone dense NLA: three
1x1 convolutions each followed by a PReLU, no scaling of the scores, and a residual connection
``out = res_scale * y + x``. The normaliser is a parameter, so the same module with the soft-thresholding
operation is HSPAN's HSPA.
"""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn as nn
import torch.nn.functional as F

from srlib._checks import check_attention_args, check_feature_map

__all__ = ["NonLocalAttention", "fused_softmax_attention", "non_local_attention", "softmax_last"]


def softmax_last(scores: torch.Tensor) -> torch.Tensor:
    """Softmax over the last dimension (the keys): the normaliser of Eq. (4)."""
    return torch.softmax(scores, dim=-1)


def fused_softmax_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """``softmax(q k^T) v`` through PyTorch's fused ``scaled_dot_product_attention``, never storing ``L x L``.

    PyTorch picks a fused (flash / memory-efficient) kernel only for 4-D ``(B, heads, L, D)`` inputs whose
    last dimension is contiguous and, for the flash kernels, with one width for queries, keys and values.
    Given anything else it silently falls back to its *math* path, which builds the whole ``L x L`` matrix
    (measured: more memory than the explicit version, ``benchmarks/README.md``). So this function adds the
    heads dimension, makes the inputs contiguous and pads the narrower of ``D`` / ``Dv`` with zero channels:
    exact, since a zero channel adds nothing to ``q . k`` and the padded value channels are sliced off.

    Args:
        q: ``(B, L, D)`` queries; k: ``(B, Lk, D)`` keys; v: ``(B, Lk, Dv)`` values (any float dtype).

    Returns:
        ``(B, L, Dv)``. Scores are not scaled (``scale=1``), as in the official code.
    """
    d, dv = q.shape[-1], v.shape[-1]
    if d < dv:  # zero channels in q and k: q . k unchanged
        q, k = F.pad(q, (0, dv - d)), F.pad(k, (0, dv - d))
    elif dv < d:  # zero value channels, sliced off below
        v = F.pad(v, (0, d - dv))
    out = F.scaled_dot_product_attention(q.unsqueeze(1).contiguous(), k.unsqueeze(1).contiguous(),
                                         v.unsqueeze(1).contiguous(), scale=1.0)
    return out.squeeze(1)[..., :dv]


def non_local_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    normalizer: Callable[[torch.Tensor], torch.Tensor] | None = None,
    *,
    return_map: bool = False,
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """Dense attention ``normalizer(q k^T) v`` over all positions (NLSN Eq. 4).

    Args:
        q: ``(B, L, D)`` queries; k: ``(B, L, D)`` keys; v: ``(B, L, Dv)`` values.
        normalizer: maps scores ``(B, L, L)`` to weights along the last dim; ``None`` = softmax (then, when
            no map is requested, PyTorch's fused ``scaled_dot_product_attention`` is used and the ``L x L``
            matrix is never stored).
        return_map: also return the ``(B, L, L)`` attention weights (row ``i`` = query ``i``).

    Returns:
        ``(B, L, Dv)``, and the weights if ``return_map``. Scores are not scaled by ``1/sqrt(D)``, as in the
        official code.
    """
    if normalizer is None and not return_map:
        return fused_softmax_attention(q, k, v)
    scores = torch.bmm(q, k.transpose(1, 2))  # (B, L, L): s_ij = theta(x_i) . phi(x_j)
    weights = (normalizer or softmax_last)(scores)
    out = torch.bmm(weights, v)
    return (out, weights) if return_map else out


def _conv_prelu(cin: int, cout: int) -> nn.Sequential:
    # Official layout: Sequential(Conv2d 1x1, PReLU) -> keys "0.weight", "0.bias", "1.weight".
    return nn.Sequential(nn.Conv2d(cin, cout, 1), nn.PReLU())


class NonLocalAttention(nn.Module):
    """Dense non-local attention block with residual connection.

    Args:
        channel: input/output channels ``C``.
        reduction: embedding channels of query/key are ``C // reduction``.
        res_scale: residual scale: ``out = res_scale * y + x``.
        normalizer: scores -> weights along the last dim (default softmax; HSPA passes soft thresholding).

    Shapes: ``x: (B, C, H, W) -> (B, C, H, W)``. State-dict keys as the official code: ``conv_match1.*``
    (query), ``conv_match2.*`` (key), ``conv_assembly.*`` (value).

    Attribute ``keep_map``: when True, the last attention weights ``(B, L, L)`` are kept in ``last_map``
    for visualisation.

    Small inputs: any ``H, W >= 1`` (every position attends to all ``H*W`` positions; nothing to pad). The
    same rule holds for all six mechanisms of srlib: tiny or odd maps such as 3x3 or 5x7 run and keep
    their shape (the bucketed ones pad, see :class:`~srlib.attention.nlsa.NonLocalSparseAttention`).

    Raises:
        ValueError: ``channel`` / ``reduction`` not positive integers or not divisible, ``res_scale`` not a
            finite number >= 0; at call, an input that is not a floating point ``(B, C, H, W)`` map or holds
            NaN/Inf (the message counts them; see :func:`srlib.set_input_checks`).
    """

    def __init__(
        self,
        channel: int = 64, reduction: int = 2, res_scale: float = 1.0,  # C, C / C', out = res_scale * y + x
        normalizer: Callable[[torch.Tensor], torch.Tensor] | None = None,
    ) -> None:
        super().__init__()
        owner = type(self).__name__
        check_attention_args(owner, res_scale, channel=channel, reduction=reduction)
        self.res_scale = res_scale
        self.normalizer = normalizer
        self.conv_match1 = _conv_prelu(channel, channel // reduction)
        self.conv_match2 = _conv_prelu(channel, channel // reduction)
        self.conv_assembly = _conv_prelu(channel, channel)
        self.keep_map = False
        self.last_map: torch.Tensor | None = None

    def embed(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Query, key, value sequences ``(B, L, C/r)``, ``(B, L, C/r)``, ``(B, L, C)`` with ``p = h*W + w``."""
        q = self.conv_match1(x).flatten(2).transpose(1, 2)
        k = self.conv_match2(x).flatten(2).transpose(1, 2)
        v = self.conv_assembly(x).flatten(2).transpose(1, 2)
        return q, k, v

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_feature_map(x, f"{type(self).__name__} input x", self.conv_assembly[0].in_channels)
        B, C, H, W = x.shape
        q, k, v = self.embed(x)
        if self.keep_map:
            y, self.last_map = non_local_attention(q, k, v, self.normalizer, return_map=True)
        else:
            y = non_local_attention(q, k, v, self.normalizer)
        y = y.transpose(1, 2).reshape(B, C, H, W)
        return self.res_scale * y + x
