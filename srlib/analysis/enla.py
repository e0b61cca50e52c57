"""Statistics of ENLA's random-feature approximation: bias, variance (ENLCN Eq. 7) and attention error.

ENLA (ENLCN paper, Xia et al. AAAI 2022, Eq. 4) replaces the exponential kernel ``K(q, k) = exp(q . k)`` by
the random-feature estimate ``phi(q) . phi(k) = (1/m) sum_r exp(f_r . (q + k) - (|q|^2 + |k|^2)/2)``
(:func:`srlib.attention.enla.positive_random_features`). With i.i.d. rows ``f_r ~ N(0, I_d)`` the
estimate is unbiased and its variance is Eq. (7)::

    Var(phi(q) . phi(k)) = (1/m) K(q, k)^2 (exp(|q + k|^2) - 1)

(each term ``exp(f . z)``, ``z = q + k``, is log-normal with ``E = exp(|z|^2/2)``, ``E[.^2] = exp(2|z|^2)``).
Because Eq. (3) scales ``q`` and ``k`` to norm ``sqrt(a)`` (the amplification factor, ``k = 6`` in the
paper; called ``amplification`` here to keep ``k`` for keys), ``|z|^2 = 2a(1 + cos)`` and the relative
standard deviation ``sqrt((exp(|z|^2) - 1)/m)`` grows like ``exp(a (1 + cos))``: the trade-off of Fig. 6.

This module measures those statistics empirically, so that notebooks and tests can set them next to the
closed form:

* :func:`draw_projections` draws ``T`` random matrices ``F`` of one of three kinds
  (:data:`FEATURE_KINDS`): ``"iid"`` (the paper's statement), ``"orthogonal"`` (the official
  block-orthogonal matrix, :func:`srlib.attention.enla.gaussian_orthogonal_matrix`) and
  ``"orthogonal_haar"`` (the same with every row multiplied by an independent random sign);
* :func:`kernel_estimates` evaluates ``phi(q) . phi(k)`` for every matrix;
* :func:`kernel_estimate_variance` returns mean, variance and their standard errors over the trials,
  with :func:`kernel_variance_closed_form` (Eq. 7) for comparison;
* :func:`enla_attention_row` / :func:`exact_attention_row` give one query's attention weights (for
  attention maps); :func:`enla_relative_error` (error of the output) and :func:`enla_weight_error`
  (misplaced attention mass) compare ENLA with exact softmax attention as ``m`` grows.
* On a (trained) ENLCA module: :func:`enlca_unit_embeddings` returns its queries and keys before the
  amplification of Eq. (3), :func:`attention_rows` the exact or ENLA weights of many queries at once, and
  :func:`amplification_sweep` how the amplification factor changes the concentration of the exact weights
  and ENLA's error (the sparsity of Fig. 7 against the variance of Eq. 7).

Why ``"orthogonal_haar"``: the official matrix keeps the ``Q`` factor of a Householder QR of a Gaussian
block without the sign correction ``Q diag(sign(diag R))`` (Mezzadri 2007). LAPACK's QR fixes the signs of
``R``'s diagonal, so row ``i`` of each block has a coordinate ``i`` of deterministic sign (``F[0, 0] < 0``
always): the rows are not isotropic, and ``phi(q) . phi(k)`` is a *biased* estimate of ``exp(q . k)`` for
some directions of ``q + k``, however large ``m`` is (known for the Performer code this was taken from:
google-research/google-research issue 436, lucidrains/performer-pytorch issue 8). Multiplying each row by
an independent random sign makes the orthogonal block exactly Haar-distributed, so each row is again
``N(0, I)`` marginally and the estimate is unbiased, with less variance than i.i.d. rows.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal, Sequence

import torch

from srlib.attention.enla import (
    exp_kernel_attention,
    linear_attention,
    positive_random_features,
)
from srlib.analysis.rows import feature_rows, softmax_rows

__all__ = [
    "FEATURE_KINDS",
    "AmplificationSweep",
    "KernelEstimateStats",
    "amplification_sweep",
    "amplified_pair",
    "attention_rows",
    "draw_projections",
    "enla_attention_row",
    "enlca_unit_embeddings",
    "enla_relative_error",
    "enla_weight_error",
    "exact_attention_row",
    "kernel_estimate_variance",
    "kernel_estimates",
    "kernel_variance_closed_form",
]

FeatureKind = Literal["iid", "orthogonal", "orthogonal_haar"]
#: Kinds of random matrix ``F`` understood by :func:`draw_projections`.
FEATURE_KINDS: tuple[str, ...] = ("iid", "orthogonal", "orthogonal_haar")


def _check_kind(features: str) -> None:
    if features not in FEATURE_KINDS:
        raise ValueError(f"features must be one of {FEATURE_KINDS}, got {features!r}")


def _as_pairs(q: torch.Tensor, k: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(d,)`` or ``(P, d)`` queries/keys -> ``(P, d)`` each; ValueError on a mismatch."""
    if not isinstance(q, torch.Tensor) or not isinstance(k, torch.Tensor):
        raise ValueError("q and k must be tensors")
    q2 = q.unsqueeze(0) if q.dim() == 1 else q
    k2 = k.unsqueeze(0) if k.dim() == 1 else k
    if q2.dim() != 2 or q2.shape != k2.shape:
        raise ValueError(
            f"q and k must both be (d,) or (P, d) with equal shapes, got {tuple(q.shape)} and {tuple(k.shape)}"
        )
    if not q2.is_floating_point():
        raise ValueError(f"q and k must be floating point, got {q2.dtype}")
    return q2, k2


def draw_projections(
    n_trials: int,
    m: int,
    d: int,
    *,
    features: FeatureKind = "iid",
    generator: torch.Generator | None = None,
    dtype: torch.dtype = torch.float64,
) -> torch.Tensor:
    """Draw ``n_trials`` independent random matrices ``F`` of ENLA (paper Eq. 4), stacked.

    * ``"iid"``: every entry ``N(0, 1)`` (the paper's "Gaussian random matrix").
    * ``"orthogonal"``: the official block-orthogonal matrix of
      :func:`srlib.attention.enla.gaussian_orthogonal_matrix` (QR of Gaussian blocks without sign
      correction, rows rescaled by the norms of Gaussian vectors), drawn for all trials with one batched QR.
    * ``"orthogonal_haar"``: the official matrix with each row multiplied by an independent random sign
      (``+1``/``-1`` with probability 1/2). This turns each block's ``Q`` into a Haar-distributed orthogonal
      matrix (right-multiplying ``Q`` by a random sign diagonal independent of ``Q`` absorbs the QR sign
      convention), so every row is marginally ``N(0, I_d)``.

    Args:
        n_trials: number of matrices ``T >= 1``.
        m: random features per matrix (rows), ``>= 1``; d: dimension (columns), ``>= 1``.
        features: one of :data:`FEATURE_KINDS`.
        generator: source of randomness (``None``: PyTorch's global generator).
        dtype: floating dtype (float64 by default: the statistics involve large exponentials).

    Returns:
        ``(T, m, d)``.

    Raises:
        ValueError: non-positive sizes or an unknown ``features``.
    """
    _check_kind(features)
    if n_trials < 1 or m < 1 or d < 1:
        raise ValueError(f"n_trials, m and d must be >= 1, got {n_trials}, {m}, {d}")
    if features == "iid":
        return torch.randn(n_trials, m, d, generator=generator, dtype=dtype)
    # gaussian_orthogonal_matrix's construction (scaling="norms"), batched over the trials: one batched QR
    # instead of n_trials * ceil(m/d) small ones. For n_trials = 1 and d divisible by 4 the draws come in
    # the same order as the library function's, so the matrix is bit-identical (tests/test_analysis_enla.py).
    n_blocks = -(-m // d)
    blocks = torch.randn(n_trials, n_blocks, d, d, generator=generator, dtype=dtype)
    q, _ = torch.linalg.qr(blocks, mode="reduced")  # no sign correction, as the official code
    rows = q.transpose(-1, -2).reshape(n_trials, n_blocks * d, d)[:, :m]  # (T, m, d)
    lengths = torch.randn(n_trials, m, d, generator=generator, dtype=dtype).norm(dim=-1, keepdim=True)
    mats = lengths * rows
    if features == "orthogonal_haar":
        signs = torch.randint(0, 2, (n_trials, m, 1), generator=generator).to(dtype) * 2 - 1
        mats = mats * signs
    return mats


def kernel_estimates(
    q: torch.Tensor, k: torch.Tensor, projections: torch.Tensor, *, eps: float = 0.0
) -> torch.Tensor:
    """The ENLA estimate ``phi(q) . phi(k)`` of ``exp(q . k)`` for every random matrix (paper Eq. 4).

    Uses :func:`srlib.attention.enla.positive_random_features` on all ``T`` matrices at once (stacked into
    one ``(T m, d)`` matrix, then rescaled by ``sqrt(T)`` so that each block has the ``m^-1/2`` of its own
    ``m`` features).

    Args:
        q: ``(d,)`` or ``(P, d)`` queries; k: keys of the same shape (pair ``p`` is ``(q[p], k[p])``).
        projections: ``(T, m, d)`` or ``(m, d)`` random matrices.
        eps: constant of the feature map (``0``: the paper's unbiased estimate; official ``1e-4``).

    Returns:
        ``(T, P)`` estimates (``(1, P)`` for a single ``(m, d)`` matrix).

    Raises:
        ValueError: shape mismatch.
    """
    q2, k2 = _as_pairs(q, k)
    proj = projections.unsqueeze(0) if projections.dim() == 2 else projections
    if proj.dim() != 3 or proj.shape[-1] != q2.shape[-1]:
        d = q2.shape[-1]
        raise ValueError(f"projections must be (T, m, {d}) or (m, {d}), got {tuple(projections.shape)}")
    T, m, d = proj.shape
    stacked = proj.reshape(T * m, d).to(q2.dtype)
    scale = math.sqrt(T)  # (T m)^-1/2 * sqrt(T) = m^-1/2 for each block
    phi_q = positive_random_features(q2, stacked, eps).reshape(-1, T, m) * scale  # (P, T, m)
    phi_k = positive_random_features(k2, stacked, eps).reshape(-1, T, m) * scale
    return (phi_q * phi_k).sum(dim=-1).transpose(0, 1)  # (T, P)


def kernel_variance_closed_form(q: torch.Tensor, k: torch.Tensor, m: int) -> torch.Tensor:
    """Eq. (7): ``Var(phi(q) . phi(k)) = (1/m) exp(q . k)^2 (exp(|q + k|^2) - 1)`` for i.i.d. Gaussian ``F``.

    Exact for ``"iid"`` features and ``eps = 0``. (Orthogonal features have a smaller variance, Choromanski
    et al. 2020; no closed form is given here.)

    Args:
        q: ``(d,)`` or ``(P, d)``; k: same shape; m: number of random features ``>= 1``.

    Returns:
        ``(P,)`` variances (in ``q``'s dtype; ``inf`` where the exponentials overflow).

    Raises:
        ValueError: shape mismatch or ``m < 1``.
    """
    q2, k2 = _as_pairs(q, k)
    if m < 1:
        raise ValueError(f"m must be >= 1, got {m}")
    kernel = torch.exp((q2 * k2).sum(-1))
    return kernel.pow(2) * torch.expm1((q2 + k2).pow(2).sum(-1)) / m


@dataclass(frozen=True)
class KernelEstimateStats:
    """Empirical statistics of ``phi(q) . phi(k)`` over ``n_trials`` draws of ``F`` (one entry per pair).

    Attributes (all ``(P,)`` float64 tensors except the last three):
        exact: ``exp(q . k)``.
        mean, mean_se: sample mean and its standard error ``s / sqrt(T)``.
        variance, variance_se: unbiased sample variance ``s^2`` and its standard error
            ``sqrt((mu4 - s^4 (T - 3)/(T - 1)) / T)`` (``mu4``: sample fourth central moment).
        closed_form: Eq. (7) (:func:`kernel_variance_closed_form`); the reference for ``"iid"``.
        n_trials, m: sizes; features: the kind of ``F``.
    """

    exact: torch.Tensor
    mean: torch.Tensor
    mean_se: torch.Tensor
    variance: torch.Tensor
    variance_se: torch.Tensor
    closed_form: torch.Tensor
    n_trials: int
    m: int
    features: str

    @property
    def variance_z(self) -> torch.Tensor:
        """``(variance - closed_form) / variance_se``: how many standard errors from Eq. (7)."""
        return (self.variance - self.closed_form) / self.variance_se

    @property
    def mean_z(self) -> torch.Tensor:
        """``(mean - exact) / mean_se``: how many standard errors from unbiasedness."""
        return (self.mean - self.exact) / self.mean_se


def kernel_estimate_variance(
    q: torch.Tensor,
    k: torch.Tensor,
    m: int,
    n_trials: int,
    *,
    features: FeatureKind = "iid",
    generator: torch.Generator | None = None,
    eps: float = 0.0,
    chunk: int | None = None,
) -> KernelEstimateStats:
    """Estimate mean and variance of ``phi(q) . phi(k)`` by drawing ``F`` ``n_trials`` times (Eq. 4, Eq. 7).

    Computed in float64, ``chunk`` matrices at a time (memory ``O(chunk * m * (d + P))``).

    Args:
        q: ``(d,)`` or ``(P, d)``; k: same shape.
        m: random features per draw; n_trials: number of draws ``T >= 4``.
        features: kind of ``F`` (:data:`FEATURE_KINDS`).
        generator: source of randomness (``None``: global RNG).
        eps: feature-map constant (``0``: paper).
        chunk: matrices drawn per batch (default: as many as keep one batch of ``F`` near 2**19 numbers,
            4 MiB).

    Returns:
        :class:`KernelEstimateStats`.

    Raises:
        ValueError: ``n_trials < 4``, ``chunk < 1``, bad shapes or kind.
    """
    q2, k2 = _as_pairs(q, k)
    _check_kind(features)
    if chunk is None:
        chunk = max(1, 2**19 // (m * q2.shape[-1]))
    if n_trials < 4 or chunk < 1:
        raise ValueError(f"need n_trials >= 4 and chunk >= 1, got {n_trials}, {chunk}")
    q2, k2 = q2.double(), k2.double()
    d = q2.shape[-1]
    parts = []
    for start in range(0, n_trials, chunk):
        n = min(chunk, n_trials - start)
        projs = draw_projections(n, m, d, features=features, generator=generator)
        parts.append(kernel_estimates(q2, k2, projs, eps=eps))
    est = torch.cat(parts)  # (T, P)
    T = est.shape[0]
    mean = est.mean(0)
    centred = est - mean
    var = centred.pow(2).sum(0) / (T - 1)
    mu4 = centred.pow(4).mean(0)
    var_se = ((mu4 - var.pow(2) * (T - 3) / (T - 1)) / T).clamp_min(0).sqrt()
    return KernelEstimateStats(
        exact=torch.exp((q2 * k2).sum(-1)),
        mean=mean,
        mean_se=var.sqrt() / math.sqrt(T),
        variance=var,
        variance_se=var_se,
        closed_form=kernel_variance_closed_form(q2, k2, m),
        n_trials=T,
        m=m,
        features=features,
    )


def amplified_pair(
    cos: float | Sequence[float], amplification: float, d: int, *, generator: torch.Generator | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Query/key pairs as Eq. (3) makes them: ``|q|^2 = |k|^2 = amplification`` and ``q . k = amplification * cos``.

    ``q`` is a random unit direction, ``k = cos q + sqrt(1 - cos^2) u`` with ``u`` a random unit vector
    orthogonal to ``q``, both scaled by ``sqrt(amplification)``.

    Args:
        cos: cosine(s) in ``[-1, 1]``; a sequence gives one pair per value.
        amplification: ``a > 0`` (the paper's ``k``, 6).
        d: dimension ``>= 2``.
        generator: randomness for the directions.

    Returns:
        ``q, k``: ``(P, d)`` float64 each (``P = len(cos)``, or 1).

    Raises:
        ValueError: a cosine outside ``[-1, 1]``, ``amplification <= 0`` or ``d < 2``.
    """
    cs = torch.as_tensor([cos] if isinstance(cos, (int, float)) else list(cos), dtype=torch.float64)
    if cs.dim() != 1 or cs.numel() == 0 or (cs.abs() > 1).any():
        raise ValueError(f"cos must be number(s) in [-1, 1], got {cos!r}")
    if amplification <= 0 or d < 2:
        raise ValueError(f"need amplification > 0 and d >= 2, got {amplification}, {d}")
    P = cs.numel()
    g = torch.randn(P, 2, d, generator=generator, dtype=torch.float64)
    a = g[:, 0] / g[:, 0].norm(dim=-1, keepdim=True)
    u = g[:, 1] - (g[:, 1] * a).sum(-1, keepdim=True) * a  # Gram-Schmidt
    u = u / u.norm(dim=-1, keepdim=True)
    b = cs[:, None] * a + (1 - cs[:, None] ** 2).clamp_min(0).sqrt() * u
    s = math.sqrt(amplification)
    return s * a, s * b


def exact_attention_row(q: torch.Tensor, k: torch.Tensor, index: int) -> torch.Tensor:
    """Row ``index`` of ``softmax(q k^T)`` (paper Eq. 1): the weights query ``index`` gives every key.

    Args:
        q: ``(..., L, d)``; k: ``(..., S, d)``; index: query position in ``[0, L)``.

    Returns:
        ``(..., S)``, non-negative, summing to 1.

    Raises:
        ValueError: ``index`` out of range or mismatched dimensions.
    """
    _check_row_args(q, k, index)
    return attention_rows(q, k, [int(index)]).squeeze(-2)


def enla_attention_row(
    q: torch.Tensor, k: torch.Tensor, index: int, projection: torch.Tensor, *, eps: float = 1e-4
) -> torch.Tensor:
    """Row ``index`` of ENLA's implicit weight matrix ``D^-1 phi(Q)^T phi(K)`` (paper Eqs. 4-6).

    ENLA never forms this ``L x S`` matrix; for one query it costs ``O(S m)``: ``w_j = phi(q_i) . phi(k_j) /
    sum_j' phi(q_i) . phi(k_j')``. Equals row ``index`` of ``linear_attention(phi(q), phi(k), I_S)``.

    Args:
        q: ``(..., L, d)``; k: ``(..., S, d)``; index: query position; projection: ``F``, ``(m, d)``;
        eps: feature-map constant (official ``1e-4``).

    Returns:
        ``(..., S)``, positive, summing to 1.

    Raises:
        ValueError: ``index`` out of range or mismatched dimensions.
    """
    _check_row_args(q, k, index)
    return attention_rows(q, k, [int(index)], projection, eps=eps).squeeze(-2)


def _check_row_args(q: torch.Tensor, k: torch.Tensor, index: int) -> None:
    if q.dim() < 2 or k.dim() < 2 or q.shape[-1] != k.shape[-1]:
        raise ValueError(f"q and k must be (..., L, d) and (..., S, d), got {tuple(q.shape)} and {tuple(k.shape)}")
    if not 0 <= int(index) < q.shape[-2]:
        raise ValueError(f"query index {index} out of range for L = {q.shape[-2]}")


def enla_relative_error(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    ms: Sequence[int],
    n_trials: int = 8,
    *,
    features: FeatureKind = "orthogonal",
    generator: torch.Generator | None = None,
    eps: float = 0.0,
) -> torch.Tensor:
    """Relative error ``|ENLA(q, k, v) - softmax(q k^T) v| / |softmax(q k^T) v|`` (Frobenius) as ``m`` grows.

    For each ``m`` in ``ms`` and each of ``n_trials`` draws of ``F``, ENLA (Eqs. 5-6,
    :func:`srlib.attention.enla.linear_attention`) is compared with exact attention (Eq. 1,
    :func:`srlib.attention.enla.exp_kernel_attention`). Computed in float64.

    Args:
        q: ``(..., L, d)``; k: ``(..., S, d)``; v: ``(..., S, c)``.
        ms: numbers of random features, each ``>= 1``.
        n_trials: draws per ``m``.
        features: kind of ``F`` (:data:`FEATURE_KINDS`).
        generator: randomness.
        eps: feature-map constant (``0``: paper; official ``1e-4``).

    Returns:
        ``(len(ms), n_trials)`` float64 relative errors.

    Raises:
        ValueError: empty ``ms``, ``n_trials < 1`` or bad kind.
    """
    _check_kind(features)
    if len(ms) == 0 or n_trials < 1:
        raise ValueError(f"need at least one m and n_trials >= 1, got ms={list(ms)}, n_trials={n_trials}")
    q, k, v = q.double(), k.double(), v.double()
    exact = exp_kernel_attention(q, k, v)
    norm = exact.norm()
    out = torch.empty(len(ms), n_trials, dtype=torch.float64)
    for i, m in enumerate(ms):
        for t in range(n_trials):
            proj = draw_projections(1, int(m), q.shape[-1], features=features, generator=generator)[0]
            phi_q, phi_k = positive_random_features(q, proj, eps), positive_random_features(k, proj, eps)
            approx = linear_attention(phi_q, phi_k, v)
            out[i, t] = (approx - exact).norm() / norm
    return out


def enla_weight_error(
    q: torch.Tensor,
    k: torch.Tensor,
    ms: Sequence[int],
    n_trials: int = 4,
    *,
    queries: torch.Tensor | None = None,
    features: FeatureKind = "orthogonal",
    generator: torch.Generator | None = None,
    eps: float = 0.0,
) -> torch.Tensor:
    """Attention mass ENLA puts in the wrong place: mean total-variation distance between weight rows.

    For query ``i`` the exact weights are ``w_i = softmax(q_i k^T)`` (Eq. 1) and ENLA's are
    ``w'_i = phi(q_i) phi(K)^T / D_i`` (Eqs. 4-6); ``TV_i = (1/2) sum_j |w_ij - w'_ij|`` lies in ``[0, 1]``
    (0: identical, 1: disjoint). Returns the mean over the chosen queries (and the batch), for each ``m``
    and each of ``n_trials`` draws of ``F``. Computed in float64; memory ``O(n_queries * S)``.

    Args:
        q: ``(..., L, d)``; k: ``(..., S, d)``.
        ms: numbers of random features, each ``>= 1``; n_trials: draws per ``m``.
        queries: 1-D index tensor of query positions (default: all ``L``).
        features: kind of ``F`` (:data:`FEATURE_KINDS`); generator: randomness; eps: feature-map constant.

    Returns:
        ``(len(ms), n_trials)`` float64 values in ``[0, 1]``.

    Raises:
        ValueError: empty ``ms``, ``n_trials < 1``, bad kind or mismatched dimensions.
    """
    _check_kind(features)
    if len(ms) == 0 or n_trials < 1:
        raise ValueError(f"need at least one m and n_trials >= 1, got ms={list(ms)}, n_trials={n_trials}")
    if q.dim() < 2 or k.dim() < 2 or q.shape[-1] != k.shape[-1]:
        raise ValueError(f"q and k must be (..., L, d) and (..., S, d), got {tuple(q.shape)} and {tuple(k.shape)}")
    q, k = q.double(), k.double()
    if queries is not None:
        q = q.index_select(-2, queries.to(q.device))
    exact = torch.softmax(q @ k.transpose(-1, -2), dim=-1)  # (..., n_queries, S)
    out = torch.empty(len(ms), n_trials, dtype=torch.float64)
    for i, m in enumerate(ms):
        for t in range(n_trials):
            proj = draw_projections(1, int(m), q.shape[-1], features=features, generator=generator)[0]
            scores = positive_random_features(q, proj, eps) @ positive_random_features(k, proj, eps).transpose(-1, -2)
            approx = scores / scores.sum(dim=-1, keepdim=True)
            out[i, t] = 0.5 * (approx - exact).abs().sum(-1).mean()
    return out


# --------------------------------------------------------------------------------------------------------
# Trained ENLCA modules: many rows at once, and the amplification factor
# --------------------------------------------------------------------------------------------------------
@torch.no_grad()
def enlca_unit_embeddings(module: torch.nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Queries and keys of an ENLCA *before* the amplification: ``normalize(theta(x))``, ``normalize(delta(x))``.

    ENLCN Eq. (3) computes ``Q = sqrt(k) normalize(theta(X))`` (and ``K`` likewise) with the module's
    ``amplification`` ``k``; this returns ``Q / sqrt(k)`` and ``K / sqrt(k)``, so that ``sqrt(a)`` times them
    is the embedding the same trained module would give with amplification ``a`` (scores ``a cos``).

    Args:
        module: a :class:`srlib.attention.enla.ENLCA` (e.g. from
            :func:`srlib.viz.explorer.collect_attention_layers` on a trained ENLCN).
        x: ``(B, C, H, W)`` the features the module receives.

    Returns:
        ``(q, k)``: ``(B, L, d)`` each, ``L = H*W`` row-major; rows of norm 1 (norm below 1 only where the
        projected feature is shorter than the normalisation's ``eps``, ``5e-5``).

    Raises:
        ValueError: ``module`` is not an ENLCA, or ``x`` is not ``(B, C, H, W)`` with its channels.
    """
    from srlib.attention.enla import ENLCA

    if not isinstance(module, ENLCA):
        raise ValueError(f"module must be an ENLCA, got {type(module).__name__}")
    q, k, _ = module.embed(x)  # raises ValueError on a bad x
    scale = math.sqrt(module.amplification)
    return q / scale, k / scale


def _query_index(queries: torch.Tensor | Sequence[int] | None, length: int, device: torch.device) -> torch.Tensor:
    if queries is None:
        return torch.arange(length, device=device)
    idx = torch.as_tensor(queries, device=device).reshape(-1).long()
    if idx.numel() == 0 or int(idx.min()) < 0 or int(idx.max()) >= length:
        raise ValueError(f"queries must be non-empty positions in [0, {length}), got {queries!r}")
    return idx


def attention_rows(
    q: torch.Tensor,
    k: torch.Tensor,
    queries: torch.Tensor | Sequence[int] | None = None,
    projection: torch.Tensor | None = None,
    *,
    eps: float = 1e-4,
) -> torch.Tensor:
    """Rows of the attention matrix for several queries: exact softmax (Eq. 1) or ENLA's (Eqs. 4-6).

    Without ``projection``: ``softmax_j(q_i . k_j)``, the weights ENLA approximates (rows of
    :func:`exact_attention_row`). With ``projection`` ``F``: ``w_ij = phi(q_i) . phi(k_j) / sum_j'
    phi(q_i) . phi(k_j')``, the implicit weights of :func:`srlib.attention.enla.linear_attention` (rows of
    :func:`enla_attention_row`). Memory ``O(n_queries * S)``.

    Args:
        q: ``(..., L, d)`` queries; k: ``(..., S, d)`` keys.
        queries: 1-D positions in ``[0, L)`` (default: all ``L``).
        projection: ``F``, ``(m, d)``, or ``None`` for the exact softmax.
        eps: feature-map constant of ENLA (official ``1e-4``; paper ``0``).

    Returns:
        ``(..., n_queries, S)`` non-negative rows summing to 1, in ``q``'s dtype.

    Raises:
        ValueError: mismatched dimensions, query positions out of range or a projection of the wrong width.
    """
    if q.dim() < 2 or k.dim() < 2 or q.shape[-1] != k.shape[-1]:
        raise ValueError(f"q and k must be (..., L, d) and (..., S, d), got {tuple(q.shape)} and {tuple(k.shape)}")
    idx = _query_index(queries, q.shape[-2], q.device)
    if projection is None:
        return softmax_rows(q, k, idx)
    phi_q = positive_random_features(q.index_select(-2, idx), projection, eps)  # (..., n, m)
    phi_k = positive_random_features(k, projection, eps)  # (..., S, m)
    return feature_rows(phi_q, phi_k)


@dataclass(frozen=True)
class AmplificationSweep:
    """How the amplification factor ``a`` (the paper's ``k``, Eq. 3) shapes the attention of given embeddings.

    Attributes (tensors ``(A,)`` float64, one entry per amplification, means over the queries):
        amplifications: the factors ``a``.
        keys_exact: keys carrying ``mass`` of the exact softmax weights ``softmax(a cos)`` (fewer: sparser).
        keys_enla: the same for ENLA's weights with the given ``F`` (``None`` without ``projection``).
        tv: total-variation distance ``0.5 sum_j |w_ij - w'_ij|`` between ENLA's and the exact weights, in
            ``[0, 1]`` (``None`` without ``projection``).
        mass: the fraction used for the key counts; n_keys: ``S``; n_queries: queries averaged over.
    """

    amplifications: torch.Tensor
    keys_exact: torch.Tensor
    keys_enla: torch.Tensor | None
    tv: torch.Tensor | None
    mass: float
    n_keys: int
    n_queries: int


@torch.no_grad()
def amplification_sweep(
    q_unit: torch.Tensor,
    k_unit: torch.Tensor,
    amplifications: Sequence[float],
    queries: torch.Tensor | Sequence[int] | None = None,
    projection: torch.Tensor | None = None,
    *,
    mass: float = 0.9,
    eps: float = 1e-4,
) -> AmplificationSweep:
    """Scale unit queries/keys by ``sqrt(a)`` for each ``a`` and measure concentration and ENLA's error.

    With ``Q = sqrt(a) q_unit``, ``K = sqrt(a) k_unit`` (Eq. 3) the exact scores are ``a cos(q_i, k_j)``: a
    larger ``a`` concentrates each row (the number of keys carrying ``mass`` of a softmax row never grows
    with ``a``), while the variance of ENLA's estimate grows like ``exp(2a(1 + cos))`` (Eq. 7). Key counts
    use :func:`srlib.analysis.sparsity.mass_coverage`.

    Args:
        q_unit: ``(L, d)`` or ``(1, L, d)`` unit queries (e.g. :func:`enlca_unit_embeddings`); k_unit:
            ``(S, d)`` or ``(1, S, d)``.
        amplifications: factors ``a > 0``.
        queries: positions of the queries averaged over (default all ``L``; memory ``O(n_queries * S)``).
        projection: ENLA's ``F`` ``(m, d)`` (e.g. the module's ``attn_fn.projection_matrix``), or ``None``
            to measure the exact weights only.
        mass: fraction in ``(0, 1]`` for the key counts.
        eps: ENLA's feature-map constant (official ``1e-4``).

    Returns:
        :class:`AmplificationSweep`.

    Raises:
        ValueError: empty or non-positive ``amplifications``, bad shapes, or ``mass`` outside ``(0, 1]``.
    """
    from srlib.analysis.sparsity import mass_coverage  # the one implementation of "keys carrying a mass"

    amps = [float(a) for a in amplifications]
    if not amps or min(amps) <= 0:
        raise ValueError(f"amplifications must be positive numbers, got {list(amplifications)!r}")
    if not 0 < mass <= 1:
        raise ValueError(f"mass must be in (0, 1], got {mass}")
    qu = q_unit[0] if q_unit.dim() == 3 and q_unit.shape[0] == 1 else q_unit
    ku = k_unit[0] if k_unit.dim() == 3 and k_unit.shape[0] == 1 else k_unit
    if qu.dim() != 2 or ku.dim() != 2 or qu.shape[-1] != ku.shape[-1]:
        raise ValueError(
            f"q_unit and k_unit must be (L, d) and (S, d), got {tuple(q_unit.shape)} and {tuple(k_unit.shape)}"
        )
    idx = _query_index(queries, qu.shape[0], qu.device)
    keys_exact, keys_enla, tv = [], [], []
    for a in amps:
        s = math.sqrt(a)
        exact = attention_rows(qu * s, ku * s, idx)  # (n, S)
        keys_exact.append(mass_coverage(exact, mass).double().mean())
        if projection is not None:
            approx = attention_rows(qu * s, ku * s, idx, projection, eps=eps)
            keys_enla.append(mass_coverage(approx, mass).double().mean())
            tv.append(0.5 * (approx.double() - exact.double()).abs().sum(-1).mean())
    stack = lambda xs: torch.stack(xs) if xs else None  # noqa: E731
    return AmplificationSweep(
        amplifications=torch.tensor(amps, dtype=torch.float64),
        keys_exact=torch.stack(keys_exact),
        keys_enla=stack(keys_enla),
        tv=stack(tv),
        mass=float(mass),
        n_keys=int(ku.shape[0]),
        n_queries=int(idx.numel()),
    )
