"""The soft-thresholding (ST) operation of HSPAN: a sparse drop-in replacement for softmax.

For a score vector ``s ∈ R^N`` the ST operation (HSPAN paper, Su et al., Eqs. 9-12 and Algorithm 1) is

    ST_j(s) = max(s_j − κ(s), 0)                                   Eq. (9)

with the threshold κ(s) chosen so that the output sums to one (Eq. 10). Sorting ``s`` in descending order
``s_(1) ≥ s_(2) ≥ … ≥ s_(N)``, the support size and threshold are

    T    = max{k : k·s_(k) + 1 > Σ_{j≤k} s_(j)}                    Eq. (11)
    κ(s) = (Σ_{j≤T} s_(j) − 1) / T                                 Eq. (12)

The result is the Euclidean projection of ``s`` onto the probability simplex (Eq. 13),
``argmin_{p ≥ 0, Σp = 1} ‖p − s‖²``, i.e. *sparsemax* (Martins & Astudillo, 2016). Its Jacobian is
``J = Diag(c) − c cᵀ / T`` with ``c`` the indicator of the support (Eqs. 15-18), so a backward pass costs
``O(T)`` per row (Eq. 19): ``∇ = c ⊙ (r − (cᵀr / T)·1)``.

**Top-k.** Only the largest entries can be in the support, so ``T`` and ``κ`` can be found from a partial
sort (``torch.topk``) instead of a full sort. Two behaviours are provided (``mode``):

* ``"exact"`` (the official code, ``laoyangui/HSPAN`` ``src/model/attention.py`` ``tau_support``): κ is
  computed from the ``k`` largest entries; a row whose support fills all ``k`` entries (``T == k``) may have
  a larger true support, so it is recomputed with ``2k``, ``4k``, … and finally with a full sort. The output
  is exact sparsemax, **independent of k** (bit-identical on CPU); ``k`` only changes the cost.
* ``"truncated"`` (the paper's reading, Sec. III-C and the Fig. 6 ablation: "k determines the search space
  of the query feature, which consists of the top-k similar non-local features"): sparsemax over the ``k``
  largest entries only, the others set to zero. When the true support exceeds ``k`` the output differs
  from sparsemax; it is still a probability vector with at most ``k`` non-zeros.

``topk=None`` (or ``topk ≥ N``) means a full sort; both modes then coincide.

Public API: :func:`soft_threshold`, :func:`threshold_and_support`, :class:`SoftThresholdFunction`,
:class:`SoftThreshold`, :func:`make_normalizer`; :func:`st_rows_shifted` (the row core, for
blockwise callers such as :func:`srlib.attention.hspa.hspa_attention`).
"""

from __future__ import annotations

import operator
from typing import Callable

import torch
from torch import nn

from srlib._checks import as_integer

__all__ = [
    "MODES",
    "SoftThreshold",
    "SoftThresholdFunction",
    "make_normalizer",
    "soft_threshold",
    "st_rows_shifted",
    "threshold_and_support",
]

#: Accepted values of the ``mode`` argument.
MODES = ("exact", "truncated")


# --------------------------------------------------------------------------------------------------------------
# argument checks
# --------------------------------------------------------------------------------------------------------------
def _check_topk(topk) -> int | None:
    if topk is None:
        return None
    k = as_integer(topk)
    if k is None:
        raise ValueError(f"topk must be a positive integer or None, got {topk!r}")
    if k < 1:
        raise ValueError(f"topk must be >= 1 (or None for a full sort), got {k}")
    return k


def _check_mode(mode: str) -> str:
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    return mode


def _check_scores(scores: torch.Tensor, dim: int) -> int:
    if not isinstance(scores, torch.Tensor):
        raise TypeError(f"scores must be a torch.Tensor, got {type(scores).__name__}")
    if not scores.is_floating_point():
        raise ValueError(f"scores must be a floating-point tensor, got dtype {scores.dtype}")
    if scores.dim() == 0:
        raise ValueError("scores must have at least one dimension, got a 0-dim tensor")
    try:
        d = operator.index(dim)
    except TypeError:
        raise ValueError(f"dim must be an integer, got {dim!r}") from None
    if not -scores.dim() <= d < scores.dim():
        raise ValueError(f"dim {d} out of range for scores of shape {tuple(scores.shape)}")
    d %= scores.dim()
    if scores.shape[d] == 0:
        raise ValueError(f"cannot normalise over an empty dimension (scores shape {tuple(scores.shape)}, dim {d})")
    return d


# --------------------------------------------------------------------------------------------------------------
# rows: the core works on (R, N) matrices, one score vector per row, already shifted so that each row max is 0
# --------------------------------------------------------------------------------------------------------------
def _threshold_from_sorted(z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """κ and T (Eqs. 11-12) from descending-sorted rows ``z`` ``(R, m)``; returns ``(R, 1)`` float / int64."""
    cumsum_minus_one = z.cumsum(dim=-1) - 1  # Σ_{j≤k} s_(j) − 1
    k = torch.arange(1, z.shape[-1] + 1, device=z.device, dtype=z.dtype)
    # Eq. (11): the condition k·s_(k) + 1 > Σ_{j≤k} s_(j) holds exactly for k = 1..T (a prefix; k = 1 always
    # holds), so the max over k equals the number of k where it holds.
    support = (k * z > cumsum_minus_one).sum(dim=-1, keepdim=True)
    # Eq. (12): κ = (Σ_{j≤T} s_(j) − 1) / T
    tau = cumsum_minus_one.gather(-1, support - 1) / support.to(z.dtype)
    return tau, support


def _sorted_candidates(s: torch.Tensor, topk: int | None) -> tuple[torch.Tensor, torch.Tensor, bool]:
    """The ``topk`` largest entries of each row of ``s`` in descending order (all of them when ``topk`` is None
    or ≥ N): ``(values (R, m), indices (R, m), full_sort)``."""
    if topk is None or topk >= s.shape[-1]:
        z, idx = torch.sort(s, dim=-1, descending=True)
        return z, idx, True
    z, idx = torch.topk(s, k=topk, dim=-1, largest=True, sorted=True)
    return z, idx, False


def _exact_rows(s: torch.Tensor, topk: int | None, trace: list | None):
    """Exact κ, T of every row of ``s`` ``(R, N)`` by the official doubling fallback.

    Returns ``(tau (R, 1), support (R, 1), first_idx (R, m0))`` where ``first_idx`` are the candidate indices of
    the first pass (reused by the backward when every support fits in them).
    """
    z, idx, full = _sorted_candidates(s, topk)
    if trace is not None:
        trace.append({"rows": s.shape[0], "topk": topk, "full_sort": full})
    tau, support = _threshold_from_sorted(z)
    if not full:
        # a row whose support fills all k candidates may have a larger support: redo it with 2k (recursively,
        # ending in a full sort once 2^i·k ≥ N). Rows with T < k are exact already.
        unsolved = support[:, 0] == topk
        if bool(unsolved.any()):
            tau_u, support_u, _ = _exact_rows(s[unsolved], 2 * topk, trace)
            tau[unsolved] = tau_u
            support[unsolved] = support_u
    return tau, support, idx


def st_rows_shifted(s: torch.Tensor, topk: int | None, mode: str, *, keep_idx: bool = False,
                    trace: list | None = None):
    """ST of every row of ``s`` ``(R, N)``, with what a later recomputation needs (the core of this module).

    Returns ``(out (R, N), s_shifted (R, N), row_max (R, 1), tau (R, 1), support (R, 1), idx)``: the output,
    the rows shifted by their max (``s − row_max``), the row max, the threshold κ *in the shifted scale*, the
    support size and, only with ``keep_idx``, the first-pass candidate indices ``(R, m)`` (else ``None``: the
    int64 top-k indices are released before the output is allocated). In exact mode
    ``out == ((s − row_max) − tau).clamp(min=0)`` bit for bit, so a caller that keeps ``row_max`` and ``tau``
    (``O(R)`` floats) can rebuild the weights of any row later without sorting again
    (:func:`srlib.attention.hspa.hspa_attention` does this in its backward pass).

    Args: ``s`` floating ``(R, N)``; ``topk``, ``mode``, ``trace`` as in :func:`threshold_and_support`
    (already checked by the caller).
    """
    # Shifting by the row max changes neither κ − s nor the output (the official code does it too) and keeps
    # the cumulative sums small.
    row_max = s.max(dim=-1, keepdim=True).values
    s = s - row_max
    if mode == "exact":
        tau, support, idx = _exact_rows(s, topk, trace)
        if not keep_idx:
            idx = None  # release the int64 candidates before the clamp allocates the output
        out = (s - tau).clamp_(min=0)
    else:
        z, idx, full = _sorted_candidates(s, topk)
        if trace is not None:
            trace.append({"rows": s.shape[0], "topk": topk, "full_sort": full})
        tau, support = _threshold_from_sorted(z)
        if full:
            out = (s - tau).clamp_(min=0)
        else:  # sparsemax restricted to the top-k candidates, everything else exactly zero
            out = torch.zeros_like(s).scatter_(-1, idx, (z - tau).clamp_(min=0))
        del z
        if not keep_idx:
            idx = None
    return out, s, row_max, tau, support, idx


def _forward_rows(s: torch.Tensor, topk: int | None, mode: str, need_idx: bool, trace: list | None):
    """ST of every row of ``s`` ``(R, N)``.

    Returns ``(output (R, N), tau (R, 1) in the scale of s, support (R, 1), idx (R, Tmax) or None)``, where
    ``idx`` holds, per row, indices of the ``Tmax = max_rows T`` largest candidates (a superset of the row's
    support, in descending order of score) for the O(support) backward.
    """
    out, s, row_max, tau, support, idx = st_rows_shifted(s, topk, mode, keep_idx=need_idx, trace=trace)
    sel = None
    if need_idx:
        t_max = int(support.max())
        if t_max <= idx.shape[-1]:
            sel = idx[:, :t_max]
        else:  # some rows needed the fallback: their support is beyond the first candidates
            sel = _sorted_candidates(s, t_max)[1]
    del s
    return out, tau + row_max, support, sel


def _as_rows(x: torch.Tensor, dim: int) -> torch.Tensor:
    return x.movedim(dim, -1).reshape(-1, x.shape[dim])


def _from_rows(rows: torch.Tensor, like_shape: torch.Size, dim: int) -> torch.Tensor:
    moved = list(like_shape)
    moved.append(moved.pop(dim))
    return rows.reshape(moved).movedim(-1, dim)


# --------------------------------------------------------------------------------------------------------------
# public API
# --------------------------------------------------------------------------------------------------------------
def threshold_and_support(
    scores: torch.Tensor,
    dim: int = -1,
    topk: int | None = None,
    mode: str = "exact",
    trace: list | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Threshold κ(s) and support size T of the ST operation along ``dim`` (HSPAN Eqs. 11-12, Algorithm 1).

    Args:
        scores: ``(..., N, ...)`` floating tensor, any real values (``-inf`` allowed if a row has a finite entry).
        dim: the dimension to normalise over.
        topk: ``None`` for a full sort, else the number of top candidates searched first (``≥ 1``).
        mode: ``"exact"`` (official doubling fallback: κ, T are those of exact sparsemax) or ``"truncated"``
            (κ, T of sparsemax over the ``topk`` largest entries only, so ``T ≤ topk``).
        trace: optional list; every threshold pass appends ``{"rows", "topk", "full_sort"}`` (how many rows
            it solved and with which ``k``), the counterpart of ``tau_support_calls_*`` in the reference case.

    Returns:
        ``(tau, support)``, both shaped like ``scores`` with size 1 at ``dim``: ``tau`` in the dtype of
        ``scores`` such that ``ST(s) = max(s − tau, 0)`` (on the top-k entries in truncated mode), and
        ``support`` (int64, in ``[1, N]``) the number of non-zero outputs (ties at ``tau`` aside).

    Raises:
        ValueError: non-floating ``scores``, bad ``dim``, empty dimension, ``topk < 1``, unknown ``mode``.
    """
    d = _check_scores(scores, dim)
    k = _check_topk(topk)
    _check_mode(mode)
    with torch.no_grad():
        _, tau, support, _ = _forward_rows(_as_rows(scores.detach(), d), k, mode, False, trace)
    shape = list(scores.shape)
    shape[d] = 1
    return _from_rows(tau, torch.Size(shape), d), _from_rows(support, torch.Size(shape), d)


class SoftThresholdFunction(torch.autograd.Function):
    """``torch.autograd.Function`` for the ST operation with the closed-form backward of HSPAN Eqs. 17-19.

    ``SoftThresholdFunction.apply(scores, dim, topk, mode)``; prefer :func:`soft_threshold`, which checks its
    arguments. Forward: Eqs. (9)-(12). Backward: ``∇_s = c ⊙ (r − (cᵀr / T)·1)`` (Eq. 19) where
    ``r`` is the incoming gradient, ``c`` the support indicator and ``T = |support|``. Only the indices of the
    ``Tmax`` largest entries per row are saved (``Tmax`` = largest support in the batch), so the backward
    gathers ``r`` at ``Tmax`` positions per row and scatters the result into zeros: ``O(Tmax)`` arithmetic per
    row instead of ``O(N)``, and ``O(R·Tmax)`` saved memory instead of a dense copy of the output. The same
    formula is the exact Jacobian of the truncated mode (its output is constant zero outside the top-k).

    The backward is itself differentiable in the incoming gradient (it is linear in ``r``), and the second
    derivative with respect to the scores is zero almost everywhere, as for any piecewise-linear map.

    Source: HSPAN paper Eqs. (9)-(19); the official ``SoftThresholdingOperationFun`` (laoyangui/HSPAN
    ``src/model/attention.py``) computes the same backward densely over all ``N`` entries.
    """

    @staticmethod
    def forward(ctx, scores: torch.Tensor, dim: int, topk: int | None, mode: str) -> torch.Tensor:
        need_idx = bool(ctx.needs_input_grad[0])
        out, _, _, idx = _forward_rows(_as_rows(scores, dim), topk, mode, need_idx, None)
        if need_idx:
            # c restricted to the candidate columns: True where the output is non-zero
            c = out.gather(-1, idx) > 0
            ctx.save_for_backward(idx, c)
        ctx.dim = dim
        ctx.shape = scores.shape
        return _from_rows(out, scores.shape, dim)

    @staticmethod
    def backward(ctx, grad_output: torch.Tensor):
        idx, c = ctx.saved_tensors
        r = _as_rows(grad_output, ctx.dim).gather(-1, idx)  # (R, Tmax): r at the candidate positions
        c = c.to(r.dtype)
        n_support = c.sum(dim=-1, keepdim=True)  # T ≥ 1 for every row
        v_hat = (c * r).sum(dim=-1, keepdim=True) / n_support  # cᵀr / T
        g = c * (r - v_hat)  # Eq. (19) on the candidates; zero off the support
        rows = r.new_zeros(idx.shape[0], ctx.shape[ctx.dim]).scatter(-1, idx, g)
        return _from_rows(rows, ctx.shape, ctx.dim), None, None, None


def soft_threshold(
    scores: torch.Tensor,
    dim: int = -1,
    topk: int | None = None,
    mode: str = "exact",
) -> torch.Tensor:
    """The soft-thresholding (ST) operation = sparsemax along ``dim`` (HSPAN Eqs. 9-12, Algorithm 1).

    Solves the projection ``min_p ‖p − s‖²`` subject to ``p ≥ 0``, ``Σ p = 1`` (Eq. 13) for every vector
    ``s`` along ``dim``; differentiable with the closed-form ``O(support)`` backward of Eqs. (17)-(19)
    (:class:`SoftThresholdFunction`).

    Args:
        scores: ``(..., N, ...)`` floating tensor of similarity scores (any real values).
        dim: dimension to normalise over (``-1`` for attention maps ``(B, L_query, L_key)``; the official
            HSPA passes ``dim=2`` on ``(B, L, L)``, the same thing).
        topk: ``None`` = full sort; otherwise first search the ``topk`` largest entries (official default
            128). See ``mode``.
        mode: ``"exact"`` (default): official behaviour, rows whose support reaches ``topk`` are redone with
            ``2·topk``, ... up to a full sort, so the output is exact sparsemax whatever ``topk``.
            ``"truncated"``: sparsemax over the ``topk`` largest entries only (the paper's "search space"
            reading); the output has at most ``topk`` non-zeros and differs from sparsemax when the true
            support is larger.

    Returns:
        Tensor shaped like ``scores``, values in ``[0, 1]``, summing to 1 along ``dim``.

    Raises:
        ValueError: non-floating ``scores``, bad ``dim``, empty dimension, ``topk < 1``, unknown ``mode``.
        TypeError: ``scores`` is not a tensor.

    Source: HSPAN paper Eqs. (9)-(12), (17)-(19); official ``softThresholdingOperation`` /
    ``tau_support`` in laoyangui/HSPAN ``src/model/attention.py`` (mode ``"exact"``).
    """
    d = _check_scores(scores, dim)
    k = _check_topk(topk)
    _check_mode(mode)
    if torch.is_grad_enabled() and scores.requires_grad:
        return SoftThresholdFunction.apply(scores, d, k, mode)
    out, _, _, _ = _forward_rows(_as_rows(scores, d), k, mode, False, None)
    return _from_rows(out, scores.shape, d)


class SoftThreshold(nn.Module):
    """``nn.Module`` wrapper of :func:`soft_threshold`: a drop-in replacement for ``nn.Softmax(dim)``.

    Args:
        dim: dimension to normalise over (default ``-1``).
        topk: ``None`` (full sort) or a positive integer (see :func:`soft_threshold`).
        mode: ``"exact"`` or ``"truncated"``.

    Shape: input ``(*)`` floating, output the same shape, non-negative, summing to 1 along ``dim``.
    No parameters, no buffers (adds no ``state_dict`` keys).

    Raises:
        ValueError: ``topk < 1`` or unknown ``mode`` (at construction); bad input (at call).
    """

    def __init__(self, dim: int = -1, topk: int | None = None, mode: str = "exact") -> None:
        super().__init__()
        self.dim = operator.index(dim)
        self.topk = _check_topk(topk)
        self.mode = _check_mode(mode)

    def forward(self, scores: torch.Tensor) -> torch.Tensor:
        return soft_threshold(scores, self.dim, self.topk, self.mode)

    def extra_repr(self) -> str:
        return f"dim={self.dim}, topk={self.topk}, mode={self.mode!r}"


def make_normalizer(
    normalizer: str | Callable[[torch.Tensor], torch.Tensor] = "st",
    *,
    dim: int = -1,
    topk: int | None = None,
    mode: str = "exact",
) -> Callable[[torch.Tensor], torch.Tensor]:
    """Build the score normaliser of an attention from a name or pass a callable through.

    This is how ST replaces softmax in any srlib attention (the paper's "generic validation", Sec. IV-C3):
    an attention that computes ``weights = normalizer(scores)`` over its key dimension can take
    ``make_normalizer("st", topk=...)`` instead of ``make_normalizer("softmax")``.

    Args:
        normalizer: ``"softmax"``, ``"st"`` (alias ``"sparsemax"``) or a callable ``scores -> weights``
            (returned unchanged).
        dim: key dimension of the scores (default ``-1``).
        topk, mode: ST options (ignored for softmax and callables).

    Returns:
        ``nn.Softmax(dim)``, :class:`SoftThreshold` or the given callable.

    Raises:
        ValueError: unknown name, or bad ``topk`` / ``mode`` for ST.
    """
    if callable(normalizer):
        return normalizer
    if normalizer == "softmax":
        return nn.Softmax(dim=dim)
    if normalizer in ("st", "sparsemax"):
        return SoftThreshold(dim=dim, topk=topk, mode=mode)
    raise ValueError(f"unknown normalizer {normalizer!r}: use 'softmax', 'st' or a callable scores -> weights")
