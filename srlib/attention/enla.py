"""Efficient non-local attention (ENLA) and the ENLCA module with its contrastive loss.

ENLCN paper (Xia et al., "Efficient Non-local Contrastive Attention for Image Super-resolution", AAAI 2022):

* Eq. (3): ``Q = sqrt(k) * theta(X)/||theta(X)||``, ``K = sqrt(k) * delta(X)/||delta(X)||``, ``V = psi(X)``,
  with the *amplification factor* ``k = 6``. Since both sides carry ``sqrt(k)``, ``Q_i . K_j = k cos(...)``.
* Eq. (4): ``exp(Q_i . K_j) = E_f[exp(f.(Q_i + K_j) - (|Q_i|^2 + |K_j|^2)/2)] ~= phi(Q_i) . phi(K_j)`` with
  positive random features ``phi(u) = exp(F u - |u|^2/2) / sqrt(m)`` and ``F`` an ``(m, c)`` Gaussian
  matrix whose rows are kept orthogonal (Choromanski et al.; ``m = 128``).
* Eqs. (5)-(6): ``Y = D^-1 (phi(Q)^T (phi(K) V^T))``, ``D = diag(phi(Q)^T (phi(K) 1_N))``: the associative
  law makes the cost linear in ``N = H*W``.
* Eqs. (8)-(10): a contrastive loss on the exact scores ``T = Q K^T`` pushes the mean of the top
  ``n1 N`` sorted scores away from the mean of the ``n1 N`` scores starting at rank ``n2 N``.

Where the official code (``Zj-BinXia/ENLCA``, commit ``5d8d5b23``, ``src/model/attention.py`` class ``ENLCA``
and ``src/model/ENLA.py`` class ``ENLA``, itself adapted from the Performer code) departs from the paper,
the default here is the official behaviour and the paper's variant is an option:

* feature map: the code adds ``1e-4`` inside, ``phi(u) = m^-1/2 (exp(F u - |u|^2/2) + 1e-4)``
  (``feature_eps``; ``0`` gives Eq. 4 exactly);
* contrastive loss: the code takes **fixed** sorted ranks ``0:15`` (relevant) and ``50:65`` (irrelevant)
  whatever ``N`` is, and applies a hinge ``ReLU(1 - log(pos / (neg + 1e-6)))`` per position;
  the paper uses ranks proportional to ``N`` (``n1 = 2%``, ``n2 = 8%``) and no hinge
  (:func:`contrastive_loss` ``variant="paper"``);
* the projection ``F`` is a buffer drawn once at construction (QR of Gaussian blocks, rows rescaled by the
  norms of Gaussian vectors, as in Performer); the authors' training wrapper redraws it every 640 forward
  calls in training mode, the paper says every epoch (:meth:`ENLA.redraw_projection`,
  :func:`redraw_projections`).

All sequences use the row-major flattening ``p = h*W + w``, ``L = H*W``.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
import torch.nn as nn
import torch.nn.functional as F

from srlib._checks import (check_attention_args, check_choice, check_feature_map, check_finite, check_ints,
                           check_number)
from srlib.attention.blocking import items_per_block

__all__ = [
    "ENLA",
    "ENLCA",
    "OFFICIAL_NEGATIVE_RANKS",
    "OFFICIAL_POSITIVE_RANKS",
    "contrastive_loss",
    "enla",
    "exp_kernel_attention",
    "gaussian_orthogonal_matrix",
    "linear_attention",
    "positive_random_features",
    "redraw_projections",
]

#: Sorted ranks ``[start, stop)`` of the "relevant" scores in the official loss (attention.py ``ENLCA``).
OFFICIAL_POSITIVE_RANKS = (0, 15)
#: Sorted ranks ``[start, stop)`` of the "irrelevant" scores in the official loss.
OFFICIAL_NEGATIVE_RANKS = (50, 65)


# --------------------------------------------------------------------------------------------------------
# Random projection F
# --------------------------------------------------------------------------------------------------------
def gaussian_orthogonal_matrix(
    m: int,
    d: int,
    *,
    orthogonal: bool = True,
    scaling: Literal["norms", "sqrt_d"] = "norms",
    generator: torch.Generator | None = None,
    dtype: torch.dtype | None = None,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """Draw the ``(m, d)`` random matrix ``F`` of the feature map (paper Eq. 4, "Gaussian random matrix").

    With ``orthogonal=True`` (official, ``ENLA.py`` ``gaussian_orthogonal_random_matrix`` with
    ``scaling=0``) the rows come in blocks of ``d`` mutually orthogonal unit vectors: for each of
    ``ceil(m / d)`` blocks a ``d x d`` standard-normal matrix ``G`` is drawn and the transposed ``Q`` of its
    reduced QR decomposition is kept (only the first ``m mod d`` rows of the last block). Each row ``i`` is
    then rescaled by the Euclidean norm of a fresh standard-normal ``d``-vector (``scaling="norms"``, so the
    rows have the chi-distributed lengths of Gaussian vectors) or by ``sqrt(d)`` (``scaling="sqrt_d"``).
    With ``orthogonal=False`` the rows are i.i.d. ``N(0, I_d)``, the plain statement of Eq. (4).

    The draws are taken in the official order (all blocks, then the ``(m, d)`` norm matrix) from
    ``generator`` (``None``: PyTorch's global generator) on the generator's device in ``dtype``, so that
    ``torch.manual_seed(s)`` reproduces the official matrix bit for bit (see ``tests/test_enla.py``).

    Args:
        m: number of random features (rows), ``>= 1``. The paper uses 128.
        d: embedding dimension (columns), ``>= 1``.
        orthogonal: block-orthogonal rows (official) or i.i.d. Gaussian rows.
        scaling: row lengths of the orthogonal matrix, ``"norms"`` (official default) or ``"sqrt_d"``.
        generator: source of randomness.
        dtype: floating dtype (default: ``torch.get_default_dtype()``).
        device: device of the returned matrix (default: the generator's device, i.e. CPU).

    Returns:
        ``F``: ``(m, d)``.

    Raises:
        ValueError: ``m < 1``, ``d < 1`` or an unknown ``scaling``.
    """
    if m < 1 or d < 1:
        raise ValueError(f"need m >= 1 random features and d >= 1 dimensions, got m={m}, d={d}")
    if scaling not in ("norms", "sqrt_d"):
        raise ValueError(f"scaling must be 'norms' or 'sqrt_d', got {scaling!r}")
    dtype = dtype or torch.get_default_dtype()
    gdev = generator.device if generator is not None else torch.device("cpu")
    if not orthogonal:
        mat = torch.randn(m, d, generator=generator, dtype=dtype, device=gdev)
        return mat.to(device) if device is not None else mat
    blocks = []
    for start in range(0, m, d):
        g = torch.randn(d, d, generator=generator, dtype=dtype, device=gdev)
        q, _ = torch.linalg.qr(g.cpu(), mode="reduced")  # columns of q orthonormal -> rows of q^T
        blocks.append(q.t()[: m - start].to(gdev))
    mat = torch.cat(blocks, dim=0)  # (m, d), orthonormal rows within each block of d
    if scaling == "norms":
        lengths = torch.randn(m, d, generator=generator, dtype=dtype, device=gdev).norm(dim=1)
    else:
        lengths = torch.full((m,), math.sqrt(d), dtype=dtype, device=gdev)
    mat = lengths[:, None] * mat
    return mat.to(device) if device is not None else mat


# --------------------------------------------------------------------------------------------------------
# Feature map and linear aggregation
# --------------------------------------------------------------------------------------------------------
def positive_random_features(u: torch.Tensor, projection: torch.Tensor, eps: float = 1e-4) -> torch.Tensor:
    """Positive random features ``phi(u) = m^-1/2 (exp(F u - |u|^2/2) + eps)`` (paper Eq. 4).

    ``phi(q) . phi(k)`` is an unbiased estimate of ``exp(q . k)`` when ``eps = 0`` and the rows of ``F`` are
    ``N(0, I)``. The official code (``ENLA.py`` ``softmax_kernel``) adds ``eps = 1e-4`` inside the bracket
    (a small bias that keeps every feature strictly positive) and uses the same map for queries and keys,
    with no max-subtraction stabiliser: with ``|u|^2 = k = 6`` the exponent stays moderate.

    Args:
        u: ``(..., L, d)`` queries or keys.
        projection: ``F``, ``(m, d)``.
        eps: additive constant inside the bracket (official ``1e-4``; paper ``0``).

    Returns:
        ``(..., L, m)``, all entries ``> 0`` (``>= eps / sqrt(m)``).

    Raises:
        ValueError: the last dimension of ``u`` is not ``projection.shape[1]``.
    """
    if projection.dim() != 2 or u.shape[-1] != projection.shape[1]:
        raise ValueError(
            f"feature dimension mismatch: u has shape {tuple(u.shape)}, projection {tuple(projection.shape)}"
        )
    m = projection.shape[0]
    proj = u @ projection.to(u.dtype).t()  # (..., L, m): f_r . u
    half_sq_norm = u.pow(2).sum(dim=-1, keepdim=True) / 2.0  # (..., L, 1)
    return m ** -0.5 * (torch.exp(proj - half_sq_norm) + eps)


def linear_attention(phi_q: torch.Tensor, phi_k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Linear-time aggregation ``D^-1 (phi(Q)^T (phi(K) V^T))`` (paper Eqs. 5-6).

    Computed right to left: ``context = phi_k^T v`` (``(m, c_out)``), then ``phi_q context`` and the
    normaliser ``D = phi_q (phi_k^T 1)``: ``O(L m (d + c_out))`` instead of ``O(L^2)``.

    Args:
        phi_q: ``(..., L, m)`` query features, positive.
        phi_k: ``(..., S, m)`` key features, positive.
        v: ``(..., S, c_out)`` values.

    Returns:
        ``(..., L, c_out)``: row ``i`` is ``sum_j w_ij v_j`` with ``w_ij = phi_q_i . phi_k_j / D_i``.
    """
    k_sum = phi_k.sum(dim=-2)  # (..., m): phi(K) 1_N
    denom = (phi_q * k_sum.unsqueeze(-2)).sum(dim=-1, keepdim=True)  # (..., L, 1): Eq. (6)
    context = phi_k.transpose(-1, -2) @ v  # (..., m, c_out): phi(K) V^T
    return (phi_q @ context) / denom  # Eq. (5)


def enla(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, projection: torch.Tensor, *, eps: float = 1e-4
) -> torch.Tensor:
    """Efficient non-local attention: :func:`linear_attention` of :func:`positive_random_features`.

    Approximates ``softmax(q k^T) v`` (paper Eqs. 4-6; official ``ENLA.forward``).

    Args:
        q: ``(..., L, d)``; k: ``(..., S, d)``; v: ``(..., S, c_out)``.
        projection: ``(m, d)`` random matrix ``F``.
        eps: feature-map constant (official ``1e-4``, paper ``0``).

    Returns:
        ``(..., L, c_out)``.

    Without autograd (no input requires a gradient, or ``torch.no_grad``) the features are computed in place
    (:func:`_enla_rows_blocked`): in one pass when the ``(..., L, m)`` matrix fits the block budget of the
    device (:mod:`srlib.attention.blocking`, CPU default 16 MiB), otherwise over blocks of rows as large as the
    budget allows, so that no larger feature matrix is stored. Equal up to float rounding, and time linear in
    ``L`` (full matrices of tens of MiB at ``L = 40,000`` made every elementwise pass of the feature map a
    trip to main memory: forward time slope 1.3; blocks of ``2**15`` entries, as before, paid ~80 small
    matrix products per call: 3x slower at ``L = 10,000``). For training (a gradient wanted for ``q``, ``k``
    or ``v``, not for ``projection``) the same blocks are used by :class:`_BlockedENLA`, whose backward
    recomputes the features block by block instead of saving the ``(L, m)`` and ``(S, m)`` matrices.
    """
    if torch.is_grad_enabled() and any(t.requires_grad for t in (q, k, v, projection)):
        if not projection.requires_grad and q.shape[:-2] == k.shape[:-2] == v.shape[:-2] \
                and q.shape[-1] == projection.shape[1] == k.shape[-1]:
            return _BlockedENLA.apply(q, k, v, projection.to(q.dtype).t(), eps)  # recomputes in the backward
        return linear_attention(
            positive_random_features(q, projection, eps), positive_random_features(k, projection, eps), v
        )
    with torch.no_grad():
        return _enla_rows_blocked(q, k, v, projection, eps)



def _features_(u: torch.Tensor, proj_t: torch.Tensor, eps: float) -> torch.Tensor:
    """:func:`positive_random_features` of a block of rows ``u`` ``(..., b, d)``, in place on one new tensor."""
    m = proj_t.shape[1]
    half_sq_norm = u.pow(2).sum(dim=-1, keepdim=True) / 2.0
    return (u @ proj_t).sub_(half_sq_norm).exp_().add_(eps).mul_(m ** -0.5)


def _enla_rows_blocked(q, k, v, projection, eps):
    """:func:`enla` as two passes over blocks of rows: keys accumulate ``phi(K)ᵀ 1`` and ``phi(K)ᵀ V``
    (Eq. 6 and the context of Eq. 5), then each block of queries is mapped and normalised. Rows per block:
    all of them when the features fit the block budget (one pass), else as many as fit. Extra memory
    ``O(m·c_out + block·m)``; the arithmetic is that of :func:`linear_attention`."""
    return _enla_parts(q, k, v, projection.to(q.dtype).t(), eps)[0]


def _enla_parts(q, k, v, proj_t, eps):
    """:func:`_enla_rows_blocked` with ``proj_t = Fᵀ`` ``(d, m)``; returns ``(out, k_sum (..., 1, m),
    context (..., m, c_out), rows per block)``."""
    m = proj_t.shape[1]
    q, k = q.contiguous(), k.contiguous()  # (..., L, d) with d small: row blocks become plain matrices
    batch, n_keys, n_queries = q.shape[:-2], k.shape[-2], q.shape[-2]
    per_row = max(1, batch.numel()) * m * q.element_size()  # bytes of one row of features, over the batch
    rows = items_per_block(max(n_keys, n_queries), per_row, q.device)
    k_sum = q.new_zeros(*batch, 1, m)
    context = q.new_zeros(*batch, m, v.shape[-1])
    for s0 in range(0, n_keys, rows):
        phi_k = _features_(k[..., s0:s0 + rows, :], proj_t, eps)  # (..., b, m)
        k_sum += phi_k.sum(dim=-2, keepdim=True)  # phi(K) 1_N
        context += phi_k.transpose(-1, -2) @ v[..., s0:s0 + rows, :]  # phi(K) V^T
    out = q.new_empty(*batch, n_queries, v.shape[-1])
    for l0 in range(0, n_queries, rows):
        phi_q = _features_(q[..., l0:l0 + rows, :], proj_t, eps)
        denom = (phi_q * k_sum).sum(dim=-1, keepdim=True)  # Eq. (6), as linear_attention
        out[..., l0:l0 + rows, :] = (phi_q @ context).div_(denom)  # Eq. (5)
    return out, k_sum, context, rows


def _exponent_(u: torch.Tensor, proj_t: torch.Tensor) -> torch.Tensor:
    """``exp(F u - |u|²/2)`` of a block of rows ``(..., b, d)`` (the feature map before ``+ eps``, scaling)."""
    return (u @ proj_t).sub_(u.pow(2).sum(dim=-1, keepdim=True) / 2.0).exp_()


def _features_grad(u: torch.Tensor, e: torch.Tensor, dphi: torch.Tensor, proj_t: torch.Tensor) -> torch.Tensor:
    """Gradient w.r.t. rows ``u`` given ``dphi`` w.r.t. ``phi(u) = m^-1/2 (e + eps)``, ``e = exp(F u - |u|²/2)``:
    ``g = m^-1/2 dphi * e``, ``du = g F - u sum(g)``."""
    g = dphi.mul_(e).mul_(proj_t.shape[1] ** -0.5)
    return (g @ proj_t.t()).sub_(u * g.sum(dim=-1, keepdim=True))


class _BlockedENLA(torch.autograd.Function):
    """Training path of :func:`enla` (gradients for ``q``, ``k``, ``v``; ``proj_t = Fᵀ`` ``(d, m)`` constant).

    Forward: :func:`_enla_rows_blocked`. Saved: ``q``, ``k``, ``v``, the key sums ``phi(K)ᵀ 1`` ``(..., 1, m)``,
    the context ``phi(K)ᵀ V`` ``(..., m, c)`` and the output: no ``(L, m)`` feature matrix. Backward, with
    ``num = phi(q) C``, ``den = phi(q) · s``, ``out = num / den`` (Eqs. 5-6): per block of queries
    ``dnum = dout / den``, ``dden = -<dnum, out>``, ``dphi(q) = dnum Cᵀ + dden sᵀ``, accumulating
    ``dC = phi(q)ᵀ dnum`` and ``ds = phi(q)ᵀ dden``; then per block of keys ``dv = phi(k) dC`` and
    ``dphi(k) = v dCᵀ + ds``. Features are recomputed in each block (:func:`_features_grad` maps ``dphi``
    back to the rows). First derivatives only; ``tests/test_enla.py`` compares with autograd and ``gradcheck``.
    """

    @staticmethod
    def forward(ctx, q, k, v, proj_t, eps):
        with torch.no_grad():
            out, k_sum, context, rows = _enla_parts(q, k, v, proj_t, eps)
        ctx.save_for_backward(q, k, v, proj_t, k_sum, context, out)
        ctx.eps, ctx.rows = eps, rows
        return out

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, dout):
        q, k, v, proj_t, k_sum, context, out = ctx.saved_tensors
        eps, rows = ctx.eps, ctx.rows
        scale = proj_t.shape[1] ** -0.5
        q, k, v, dout = q.contiguous(), k.contiguous(), v.contiguous(), dout.contiguous()
        dq, dk, dv = torch.empty_like(q), torch.empty_like(k), torch.empty_like(v)
        d_context, d_sum = torch.zeros_like(context), torch.zeros_like(k_sum)
        for l0 in range(0, q.shape[-2], rows):
            sl = (..., slice(l0, l0 + rows), slice(None))
            e = _exponent_(q[sl], proj_t)  # (..., b, m)
            phi = (e + eps).mul_(scale)
            dnum = dout[sl] / (phi * k_sum).sum(dim=-1, keepdim=True)  # dout / den
            dden = -(dnum * out[sl]).sum(dim=-1, keepdim=True)  # d den = -<dout, num> / den²
            d_context += phi.transpose(-1, -2) @ dnum
            d_sum += (phi * dden).sum(dim=-2, keepdim=True)
            dphi = (dnum @ context.transpose(-1, -2)).add_(dden * k_sum)
            dq[sl] = _features_grad(q[sl], e, dphi, proj_t)
        for s0 in range(0, k.shape[-2], rows):
            sl = (..., slice(s0, s0 + rows), slice(None))
            e = _exponent_(k[sl], proj_t)
            dv[sl] = (e + eps).mul_(scale) @ d_context
            dphi = (v[sl] @ d_context.transpose(-1, -2)).add_(d_sum)
            dk[sl] = _features_grad(k[sl], e, dphi, proj_t)
        return dq, dk, dv, None, None


def exp_kernel_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """The exact attention ENLA approximates, ``softmax(q k^T) v`` (paper Eq. 1), in ``O(L S)`` memory.

    Args:
        q: ``(..., L, d)``; k: ``(..., S, d)``; v: ``(..., S, c_out)``.

    Returns:
        ``(..., L, c_out)``.
    """
    return torch.softmax(q @ k.transpose(-1, -2), dim=-1) @ v


# --------------------------------------------------------------------------------------------------------
# Contrastive loss
# --------------------------------------------------------------------------------------------------------
def _paper_ranks(n: int, n1: float, n2: float) -> tuple[tuple[int, int], tuple[int, int]]:
    # floor, tolerant to float round-off (0.29 * 100 = 28.999...)
    count = max(1, math.floor(n1 * n + 1e-9))
    start = math.floor(n2 * n + 1e-9)
    return (0, count), (start, start + count)


def contrastive_loss(
    q: torch.Tensor,
    k: torch.Tensor,
    *,
    variant: Literal["official", "paper"] = "official",
    margin: float = 1.0,
    positive: tuple[int, int] = OFFICIAL_POSITIVE_RANKS,
    negative: tuple[int, int | None] = OFFICIAL_NEGATIVE_RANKS,
    n1: float = 0.02,
    n2: float = 0.08,
    eps: float = 1e-6,
) -> torch.Tensor:
    """Contrastive loss of ENLCA on the exact scores ``T = q k^T`` (paper Eqs. 8-10).

    ``q`` and ``k`` are the amplified, normalised embeddings of Eq. (3), so ``T_ij = k cos(theta_i, delta_j)``
    is Eq. (8). Each row of ``T`` is sorted in descending order (Eq. 9) and the loss contrasts the mean of
    ``exp`` over a "relevant" range of ranks with the mean over an "irrelevant" range. This needs the full
    ``(B, L, L)`` score matrix and a sort: ``O(L^2)`` memory and ``O(L^2 log L)`` time during training, even
    though the attention itself is linear.

    * ``variant="official"`` (``attention.py`` ``ENLCA.forward``): ranks ``positive = [0, 15)`` and
      ``negative = [50, 65)`` fixed whatever ``L`` is,
      ``loss = mean_{b,i} ReLU(margin - log(pos_i / (neg_i + eps)))``.
    * ``variant="paper"`` (Eq. 10): ``c = max(1, floor(n1 L))`` relevant ranks ``[0, c)`` and the ``c``
      irrelevant ranks ``[s, s + c)`` with ``s = floor(n2 L)`` (0-based; the paper's
      ``sum_{j=n2N}^{(n1+n2)N}`` is read as "``n1 N`` scores starting at rank ``n2 N``", as in its Fig. 4),
      ``loss = mean_{b,i} (-log(pos_i / neg_i) + margin)``, no hinge and no ``eps``; computed with
      ``logsumexp``. ``positive``/``negative``/``eps`` are ignored.

    Args:
        q: ``(B, L, d)`` amplified normalised queries; k: ``(B, L, d)`` keys.
        variant: ``"official"`` or ``"paper"``.
        margin: ``b`` (paper and code: 1).
        positive: official relevant ranks ``(start, stop)``.
        negative: official irrelevant ranks ``(start, stop)``; ``stop=None`` means up to ``L`` (the range
            ``[50:]`` of some revisions of the official code).
        n1, n2: paper fractions (2% and 8%).
        eps: official constant added to the irrelevant mean.

    Returns:
        0-dim tensor (differentiable w.r.t. ``q`` and ``k``).

    Raises:
        ValueError: unknown ``variant``, shapes not ``(B, L, d)``, or fewer than ``stop`` keys for the
        requested ranks (the official ranks need ``L >= 65``; the official code would silently average
        a shorter or empty slice).
    """
    if variant not in ("official", "paper"):
        raise ValueError(f"variant must be 'official' or 'paper', got {variant!r}")
    if q.dim() != 3 or k.dim() != 3 or q.shape[0] != k.shape[0] or q.shape[2] != k.shape[2]:
        raise ValueError(f"q and k must be (B, L, d) and (B, S, d), got {tuple(q.shape)} and {tuple(k.shape)}")
    n_keys = k.shape[1]
    scores = q @ k.transpose(1, 2)  # (B, L, S): Eq. (8), T_ij = k cos
    if variant == "paper":
        (p0, p1), (s0, s1) = _paper_ranks(n_keys, n1, n2)
        if s1 > n_keys:
            raise ValueError(
                f"paper contrastive loss with n1={n1}, n2={n2} needs ranks up to {s1}, but there are only "
                f"{n_keys} keys"
            )
        t_sorted = scores.sort(dim=-1, descending=True).values  # Eq. (9)
        # log of the mean of exp over each range; both means divide by n1 N, so this is log of the sum ratio
        log_pos = torch.logsumexp(t_sorted[..., p0:p1], dim=-1) - math.log(p1 - p0)
        log_neg = torch.logsumexp(t_sorted[..., s0:s1], dim=-1) - math.log(s1 - s0)
        return (-(log_pos - log_neg) + margin).mean()  # Eq. (10)
    p0, p1 = positive
    s0, s1 = negative
    need = max(p1, s1 if s1 is not None else s0 + 1)
    if need > n_keys or p1 <= p0 or (s1 is not None and s1 <= s0):
        raise ValueError(
            f"official contrastive loss ranks {positive} / {negative} need at least {need} keys "
            f"(L = H*W), got {n_keys}"
        )
    if s1 is None:  # ranks [s0:] up to L: a full sort (Eq. 9)
        s = torch.exp(scores).sort(dim=-1, descending=True).values  # (B, L, S)
    else:  # only the `need` largest are used: top-k, not a full sort (exp is monotone: same values)
        s = torch.exp(scores.topk(need, dim=-1, sorted=True).values)  # (B, L, need)
    pos = s[..., p0:p1].mean(dim=-1)  # (B, L)
    neg = s[..., s0:s1].mean(dim=-1)
    return F.relu(margin - torch.log(pos / (neg + eps))).mean()


# --------------------------------------------------------------------------------------------------------
# Modules
# --------------------------------------------------------------------------------------------------------
class ENLA(nn.Module):
    """Efficient non-local attention kernel with its random matrix ``F`` as a buffer ``projection_matrix``.

    Mirrors the official ``ENLA.py`` class ``ENLA`` (softmax-kernel path): the buffer is drawn at
    construction by :func:`gaussian_orthogonal_matrix` and can be redrawn (:meth:`redraw_projection`) or
    replaced (:meth:`set_projection`).

    Args:
        dim: embedding dimension ``d``.
        n_features: ``m`` (paper and code: 128).
        feature_eps: constant of :func:`positive_random_features` (official ``1e-4``, paper ``0``).
        orthogonal, scaling: see :func:`gaussian_orthogonal_matrix`.
        generator: randomness for the initial draw (``None``: global RNG).
        projection: an explicit ``(m, d)`` matrix to use instead of a draw.

    Shapes: ``forward(q (..., L, d), k (..., S, d), v (..., S, c_out)) -> (..., L, c_out)``.

    Raises:
        ValueError: ``dim`` / ``n_features`` not positive integers, ``feature_eps`` negative; at call,
            NaN/Inf in ``q``, ``k`` or ``v`` (named and counted).
    """

    projection_matrix: torch.Tensor

    def __init__(
        self,
        dim: int,
        n_features: int = 128,
        *,
        feature_eps: float = 1e-4,
        orthogonal: bool = True,
        scaling: Literal["norms", "sqrt_d"] = "norms",
        generator: torch.Generator | None = None,
        projection: torch.Tensor | None = None,
    ) -> None:
        super().__init__()
        check_ints("ENLA", dim=dim, n_features=n_features)
        check_number("ENLA", "feature_eps", feature_eps, low=0)
        self.dim = dim
        self.n_features = n_features
        self.feature_eps = feature_eps
        self.orthogonal = orthogonal
        self.scaling = scaling
        if projection is None:
            # drawn on the generator's device (CPU by default, as the official QR), then moved to the
            # default device so that ``with torch.device(...)`` builds work
            projection = self._draw(generator, torch.get_default_dtype(), torch.get_default_device())
        else:
            self._check(projection)
        self.register_buffer("projection_matrix", projection.clone())

    def _draw(self, generator, dtype, device) -> torch.Tensor:
        return gaussian_orthogonal_matrix(
            self.n_features, self.dim, orthogonal=self.orthogonal, scaling=self.scaling,
            generator=generator, dtype=dtype, device=device,
        )

    def _check(self, projection: torch.Tensor) -> None:
        if tuple(projection.shape) != (self.n_features, self.dim):
            raise ValueError(
                f"projection must have shape ({self.n_features}, {self.dim}), got {tuple(projection.shape)}"
            )

    @torch.no_grad()
    def redraw_projection(self, generator: torch.Generator | None = None) -> None:
        """Draw a new ``F`` in place (same dtype and device as the buffer).

        The paper redraws ``F`` every epoch; the official training wrapper (``model/__init__.py`` +
        ``ENLA.py`` ``ProjectionUpdater``) does it every 640 forward calls in training mode.
        """
        buf = self.projection_matrix
        self.projection_matrix.copy_(self._draw(generator, buf.dtype, buf.device))

    @torch.no_grad()
    def set_projection(self, projection: torch.Tensor) -> None:
        """Replace ``F`` by an explicit ``(m, d)`` matrix (copied into the buffer).

        Raises:
            ValueError: wrong shape.
        """
        self._check(projection)
        self.projection_matrix.copy_(projection)

    def forward(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        for t, name in ((q, "ENLA queries q"), (k, "ENLA keys k"), (v, "ENLA values v")):
            check_finite(t, name)
        # A private copy of F goes into the autograd graph, so that redrawing the buffer in place between
        # forward and backward (a training-loop hook) does not invalidate the saved tensor.
        proj = self.projection_matrix.clone()
        if torch.is_autocast_enabled(q.device.type):
            # exp(F u) reaches ~1e7 for |u|^2 = 6 and m = 128: the sums over L overflow float16, so the
            # kernel runs in float32 under mixed precision
            with torch.autocast(q.device.type, enabled=False):
                return enla(q.float(), k.float(), v.float(), proj.float(), eps=self.feature_eps)
        return enla(q, k, v, proj, eps=self.feature_eps)


class ENLCA(nn.Module):
    """Efficient non-local contrastive attention block (paper Fig. 2 / Eqs. 3-10; official ``ENLCA``).

    ``q = sqrt(k) normalize(conv_match1(x))``, ``k = sqrt(k) normalize(conv_match2(x))`` (L2 over channels,
    ``eps = 5e-5`` as ``F.normalize``), ``v = conv_assembly(x)``, all three 1x1 convolutions without
    activation (the paper says every conv is 3x3; the code uses 1x1 here). The output is
    ``res_scale * ENLA(q, k, v) + x``. In training mode (and with ``loss_variant`` not ``None``) the
    contrastive loss of :func:`contrastive_loss` is computed from the same ``q``, ``k`` and kept in
    :attr:`last_loss`; it does not change the output.

    State-dict keys as the official code: ``conv_match1.0.{weight,bias}``, ``conv_match2.0.*``,
    ``conv_assembly.0.*``, ``attn_fn.projection_matrix``. Construction consumes the global RNG (or
    ``generator`` for ``F``) in the official order, so after ``torch.manual_seed(s)`` the module equals the
    official one built after the same seed.

    Args:
        channel: input/output channels ``C``.
        reduction: embedding channels ``d = C // reduction`` (ENLCN: 4).
        res_scale: residual scale (ENLCN passes its ``res_scale``, 0.1).
        n_features: ``m`` random features (128).
        amplification: ``k`` of Eq. (3) (6).
        feature_eps: see :func:`positive_random_features` (official ``1e-4``).
        norm_eps: ``eps`` of the L2 normalisation (official ``5e-5``).
        loss_variant: ``"official"``, ``"paper"`` or ``None`` (never compute the loss).
        generator: randomness for ``F`` (``None``: global RNG).

    Shapes: ``x: (B, C, H, W) -> (B, C, H, W)``; ``forward(x, return_loss=True)`` returns
    ``(out, loss)`` with ``loss`` a 0-dim tensor in training mode and ``None`` otherwise.

    Small inputs: any ``H, W >= 1`` in eval mode, the rule of all six srlib attentions (ENLA is a sum over
    all positions, nothing to pad; 3x3 and 5x7 maps run and keep their shape). Only the training-mode
    contrastive loss needs more: ``H*W >= 65`` for the official ranks.

    Raises:
        ValueError: non-positive ``channel`` / ``reduction`` / ``n_features``, ``channel`` not divisible by
        ``reduction``, ``amplification`` or ``norm_eps`` not > 0, ``feature_eps`` < 0, unknown
        ``loss_variant``; at call, an input that is not a floating point ``(B, C, H, W)`` map with ``C``
        channels or holds NaN/Inf (counted in the message); in training mode, too few positions for the
        loss ranks (official: ``H*W >= 65``).
    """

    def __init__(
        self,
        channel: int = 256, reduction: int = 4, res_scale: float = 0.1,  # C, C / C', out = res_scale * y + x
        *,
        n_features: int = 128, amplification: float = 6.0, feature_eps: float = 1e-4,  # ENLA: m, k, phi's constant
        norm_eps: float = 5e-5, loss_variant: Literal["official", "paper"] | None = "official",
        generator: torch.Generator | None = None,
    ) -> None:
        super().__init__()
        check_attention_args("ENLCA", res_scale, channel=channel, reduction=reduction, n_features=n_features)
        check_number("ENLCA", "amplification", amplification, low=0, low_open=True)  # sqrt(k), Eq. (3)
        check_number("ENLCA", "norm_eps", norm_eps, low=0, low_open=True)
        check_choice("ENLCA", "loss_variant", loss_variant, ("official", "paper", None))
        self.channel = channel
        self.res_scale = res_scale
        self.amplification = amplification
        self.norm_eps = norm_eps
        self.loss_variant = loss_variant
        d = channel // reduction
        # Official common.BasicBlock(conv, C, C', 1, bn=False, act=None) -> Sequential(Conv2d 1x1): keys "0.*".
        self.conv_match1 = nn.Sequential(nn.Conv2d(channel, d, 1))
        self.conv_match2 = nn.Sequential(nn.Conv2d(channel, d, 1))
        self.conv_assembly = nn.Sequential(nn.Conv2d(channel, channel, 1))
        self.attn_fn = ENLA(d, n_features, feature_eps=feature_eps, generator=generator)
        self.last_loss: torch.Tensor | None = None

    def embed(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Eq. (3): amplified normalised queries/keys ``(B, L, d)`` and values ``(B, L, C)``, ``p = h*W + w``."""
        check_feature_map(x, "ENLCA input x", self.channel)
        scale = math.sqrt(self.amplification)
        q = F.normalize(self.conv_match1(x), p=2, dim=1, eps=self.norm_eps) * scale
        k = F.normalize(self.conv_match2(x), p=2, dim=1, eps=self.norm_eps) * scale
        v = self.conv_assembly(x)
        seq = lambda t: t.flatten(2).transpose(1, 2)  # (B, C', H, W) -> (B, L, C')
        return seq(q), seq(k), seq(v)

    def loss(self, q: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
        """:func:`contrastive_loss` of ``q``, ``k`` with this module's variant (``"official"`` if ``None``)."""
        return contrastive_loss(q, k, variant=self.loss_variant or "official")

    def forward(
        self, x: torch.Tensor, *, return_loss: bool = False
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor | None]:
        q, k, v = self.embed(x)
        B, C, H, W = x.shape
        loss = None
        if self.training and self.loss_variant is not None:
            loss = self.loss(q, k)
        self.last_loss = loss
        y = self.attn_fn(q, k, v)  # (B, L, C)
        out = self.res_scale * y.transpose(1, 2).reshape(B, C, H, W) + x
        return (out, loss) if return_loss else out

    def exact_forward(self, x: torch.Tensor) -> torch.Tensor:
        """The block with exact softmax attention ``softmax(q k^T) v`` in place of ENLA (``O(L^2)``).

        For comparisons: ENLA's output converges to this one as ``m`` grows.
        """
        q, k, v = self.embed(x)
        B, C, H, W = x.shape
        y = exp_kernel_attention(q, k, v)
        return self.res_scale * y.transpose(1, 2).reshape(B, C, H, W) + x


def redraw_projections(module: nn.Module, generator: torch.Generator | None = None) -> int:
    """Redraw ``F`` in every :class:`ENLA` inside ``module`` (in ``module.modules()`` order).

    Returns:
        the number of matrices redrawn.
    """
    n = 0
    for sub in module.modules():
        if isinstance(sub, ENLA):
            sub.redraw_projection(generator)
            n += 1
    return n
