"""Measurements for DLSN's global learnable attention (GLA) and its super-bit hashing.

Hashing (DLSN paper Sec. 3.3, Ji et al. "Super-bit locality-sensitive hashing", NeurIPS 2012 = DLSN [12]):

* :func:`hash_codes` runs one of the three argmax hashes of srlib on the same input (super-bit, the
  official NLSA cross-polytope hash, NLSN Eq. 7 as written);
* :func:`collision_probability` measures how often two unit vectors at a given angle share a bucket;
* :func:`sign_bit_angle_estimates` is the estimator of Ji et al.: the fraction of differing sign bits
  ``sign(w . x)``, times ``pi``, estimates the angle. Super-bit (orthonormalised) directions give it a smaller
  variance than i.i.d. Gaussian ones (sign random projections, SRP), whose variance is
  :func:`srp_angle_variance`. This is the "small hashing variance" the DLSN paper cites as its reason;
* :func:`bucket_sizes` counts positions per bucket (how even the buckets are);
* :func:`bucket_neighbour_recall` asks how well the buckets of a (trained) module group similar positions:
  the share of each query's top-k neighbours under the exact dot-product score that share its bucket, or
  that it can reach at all (its chunk and the two neighbouring chunks), against the chance level.

Attention (DLSN Eq. 14, 17 and Fig. 4):

* :func:`attention_on_positions` collects the weights one query gives to every position, summed over the
  ``3c`` keys of each hash round and weighted by the round weights: one row of the (sparse) attention
  matrix that GLA/NLSA apply (it lives in :mod:`srlib.analysis.rows`, the one home of attention rows, and is
  re-exported here);
* :func:`topk_attended_locations` finds the positions of the paper's Fig. 4 (the top-128 attended positions
  of a query; :func:`srlib.viz.maps.plot_attended_locations` draws them);
* :func:`learnable_score_disabled` switches the learnable similarity score off inside a trained network.

Low similarity, rich detail (DLSN Fig. 1):

* :func:`missing_detail` and :func:`similarity_and_detail_match` compare, for a query in a degraded image,
  how similar every other position *looks* in the LR image with how well its true HR detail matches the
  detail the query lost.

Conventions: positions are flattened row-major, ``p = y * W + x``; codes are ``(B, R, L)`` per-round bucket ids
without round offsets; images are ``(3, H, W)`` RGB in ``[0, 1]``.
"""

from __future__ import annotations

import contextlib
import math
from typing import Iterator, Mapping, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

from srlib.attention.gla import GlobalLearnableAttention, superbit_lsh, superbit_projections
from srlib.attention.hashing import spherical_lsh
from srlib.analysis.buckets import attended_keys
from srlib.analysis.rows import attention_on_positions  # one home for attention rows (re-exported here)

__all__ = [
    "HASH_METHODS",
    "attention_on_positions",
    "bucket_neighbour_recall",
    "bucket_sizes",
    "collision_probability",
    "hash_codes",
    "learnable_score_disabled",
    "missing_detail",
    "sign_bit_angle_estimates",
    "similarity_and_detail_match",
    "srp_angle_variance",
    "topk_attended_locations",
]

#: Argmax hashes available to :func:`hash_codes`: super-bit (DLSN Eq. 12-13, official ``GLA``), the official
#: NLSA cross-polytope hash (argmax over ``[xR, -xR]`` with ``b/2`` Gaussian directions), and NLSN Eq. 7 as
#: written (argmax over ``b`` Gaussian directions).
HASH_METHODS = ("superbit", "spherical", "spherical_paper")


# ----------------------------------------------------------------------------------------------- hashing


def hash_codes(
    x: Tensor,
    n_buckets: int,
    n_rounds: int,
    method: str = "superbit",
    *,
    generator: torch.Generator | None = None,
) -> Tensor:
    """Bucket codes of ``x`` with one of the argmax hashes of :data:`HASH_METHODS`.

    Args:
        x: ``(B, L, C)`` embeddings (scale does not matter).
        n_buckets: number of buckets ``b`` (even for ``"spherical"``).
        n_rounds: independent hash rounds ``R`` (fresh random directions each).
        method: ``"superbit"`` (:func:`srlib.attention.gla.superbit_lsh`), ``"spherical"`` or
            ``"spherical_paper"`` (:func:`srlib.attention.hashing.spherical_lsh`, official / paper variant).
        generator: source of the random directions.
    Returns:
        ``(B, R, L)`` int64 codes in ``[0, b)``.
    Raises:
        ValueError: unknown method (and the errors of the hash functions).
    """
    if method == "superbit":
        codes, _ = superbit_lsh(x, n_buckets, n_rounds, generator=generator)
    elif method == "spherical":
        codes, _ = spherical_lsh(x, n_buckets, n_rounds, generator=generator, variant="official")
    elif method == "spherical_paper":
        codes, _ = spherical_lsh(x, n_buckets, n_rounds, generator=generator, variant="paper")
    else:
        raise ValueError(f"method must be one of {HASH_METHODS}, got {method!r}")
    return codes


def _pairs(angles: Tensor | Sequence[float], dim: int) -> Tensor:
    """``(A, 2, dim)`` float64: unit vectors ``e_1`` and ``cos(t) e_1 + sin(t) e_2`` for every angle ``t``."""
    if dim < 2:
        raise ValueError(f"dim must be at least 2, got {dim}")
    theta = torch.as_tensor(angles, dtype=torch.float64).reshape(-1)
    if theta.numel() == 0 or bool(((theta < -1e-6) | (theta > math.pi + 1e-6)).any()):
        raise ValueError(f"angles must be a non-empty list of values in [0, pi], got {theta.tolist()}")
    theta = theta.clamp(0.0, math.pi)  # float32 pi is slightly larger than math.pi
    u = torch.zeros(theta.numel(), 2, dim, dtype=torch.float64)
    u[:, 0, 0] = 1.0
    u[:, 1, 0] = torch.cos(theta)
    u[:, 1, 1] = torch.sin(theta)
    return u


def collision_probability(
    angles: Tensor | Sequence[float],
    dim: int,
    n_buckets: int,
    n_trials: int = 2000,
    *,
    method: str = "superbit",
    generator: torch.Generator | None = None,
) -> Tensor:
    """Measured probability that two unit vectors at angle ``theta`` fall into the same bucket.

    For each angle the pair ``e_1``, ``cos(theta) e_1 + sin(theta) e_2`` is hashed with ``n_trials``
    independent draws of the random directions (``n_trials`` hash rounds of :func:`hash_codes`). Gaussian
    and Haar-orthonormal directions are rotation invariant, so every pair at that angle has the same
    probability. For ``method="spherical"`` this equals :func:`srlib.analysis.buckets.lsh_collision_rate`.

    Args:
        angles: angles in radians, in ``[0, pi]``.
        dim: embedding dimension ``C >= 2``.
        n_buckets: buckets ``b``; n_trials: independent draws per angle.
        method: one of :data:`HASH_METHODS`.
        generator: source of the directions (reproducible when given).
    Returns:
        ``(A,)`` float64 collision rates in ``[0, 1]``.
    Raises:
        ValueError: ``dim < 2``, angles outside ``[0, pi]``, ``n_trials < 1``, unknown method.
    """
    if n_trials < 1:
        raise ValueError(f"n_trials must be positive, got {n_trials}")
    codes = hash_codes(_pairs(angles, dim), n_buckets, n_trials, method, generator=generator)  # (A, T, 2)
    return (codes[..., 0] == codes[..., 1]).double().mean(dim=1)


def sign_bit_angle_estimates(
    angles: Tensor | Sequence[float],
    dim: int,
    n_bits: int,
    n_trials: int = 2000,
    *,
    method: str = "superbit",
    generator: torch.Generator | None = None,
) -> Tensor:
    """Angle estimates ``pi * (differing sign bits) / K`` from ``K`` random hyperplanes (Ji et al. 2012).

    Each of the ``K`` bits is ``sign(w_k . x)``. Two vectors at angle ``theta`` disagree on a bit with
    probability ``theta / pi`` (for Gaussian ``w_k``, and for each column of a Haar-orthonormal matrix), so
    the estimate is unbiased either way. ``"gaussian"``: i.i.d. ``w_k`` (sign random projections; variance
    :func:`srp_angle_variance`). ``"superbit"``: the ``K`` directions come in groups of ``N = min(K, dim)``
    orthonormalised directions (super-bit depth ``N``; :func:`srlib.attention.gla.superbit_projections`), which
    lowers the variance for ``0 < theta <= pi / 2`` (Ji et al., Lemma 2 and Theorem 3).

    Args:
        angles: angles in radians, in ``[0, pi]``.
        dim: embedding dimension ``C >= 2``.
        n_bits: ``K``; with ``"superbit"`` a multiple of ``min(K, dim)``.
        n_trials: independent estimates per angle.
        method: ``"superbit"`` or ``"gaussian"``.
        generator: source of the directions.
    Returns:
        ``(A, n_trials)`` float64 estimates in radians.
    Raises:
        ValueError: bad sizes, angles outside ``[0, pi]``, ``n_bits`` not a multiple of the depth, unknown
            method.
    """
    if n_bits < 1 or n_trials < 1:
        raise ValueError(f"n_bits and n_trials must be positive, got {n_bits}, {n_trials}")
    pair = _pairs(angles, dim)  # (A, 2, dim)
    if method == "gaussian":
        w = torch.randn(dim, n_trials, n_bits, generator=generator, dtype=torch.float64)
    elif method == "superbit":
        depth = min(n_bits, dim)
        if n_bits % depth:
            raise ValueError(f"n_bits = {n_bits} must be a multiple of the super-bit depth min(n_bits, dim) = {depth}")
        groups = superbit_projections(dim, n_trials * (n_bits // depth), depth, generator=generator,
                                      dtype=torch.float64)  # (dim, T * K / N, N): orthonormal columns
        w = groups.reshape(dim, n_trials, n_bits)
    else:
        raise ValueError(f"method must be 'superbit' or 'gaussian', got {method!r}")
    bits = torch.einsum("apd,dtk->aptk", pair, w) > 0  # (A, 2, T, K)
    return math.pi * (bits[:, 0] != bits[:, 1]).double().mean(-1)


def srp_angle_variance(angles: Tensor | Sequence[float], n_bits: int) -> Tensor:
    """Variance of the sign-random-projection angle estimate with ``K`` i.i.d. Gaussian bits.

    The number of differing bits is ``Binomial(K, theta / pi)``, so ``Var[pi * X / K] = theta (pi - theta) / K``.

    Args:
        angles: radians in ``[0, pi]``; n_bits: ``K >= 1``.
    Returns:
        ``(A,)`` float64 variances (radians²).
    """
    if n_bits < 1:
        raise ValueError(f"n_bits must be positive, got {n_bits}")
    theta = torch.as_tensor(angles, dtype=torch.float64).reshape(-1)
    return theta * (math.pi - theta) / n_bits


def bucket_sizes(codes: Tensor, n_buckets: int) -> Tensor:
    """Positions per bucket, per image and round.

    Args:
        codes: ``(B, R, L)`` integer codes in ``[0, n_buckets)`` (or ``(R, L)``).
        n_buckets: ``b``.
    Returns:
        ``(B, R, b)`` (or ``(R, b)``) int64 counts; each row sums to ``L``.
    Raises:
        ValueError: float codes or codes outside ``[0, n_buckets)``.
    """
    if codes.is_floating_point() or codes.dim() not in (2, 3):
        raise ValueError(f"codes must be integer (B, R, L) or (R, L), got {codes.dtype} {tuple(codes.shape)}")
    if codes.numel() and (int(codes.min()) < 0 or int(codes.max()) >= n_buckets):
        raise ValueError(f"codes must lie in [0, {n_buckets}), got [{int(codes.min())}, {int(codes.max())}]")
    counts = torch.zeros(*codes.shape[:-1], n_buckets, dtype=torch.int64, device=codes.device)
    return counts.scatter_add_(-1, codes.long(), torch.ones_like(codes, dtype=torch.int64))


@torch.no_grad()
def bucket_neighbour_recall(
    details: Mapping,
    k: int = 16,
    queries: Tensor | Sequence[int] | None = None,
    *,
    batch: int = 0,
    key_eps: float = 5e-5,
) -> dict[str, float]:
    """How well the hash buckets of one call group each query with its most similar keys.

    The reference is the *dense* score the bucketed attention restricts: ``s_f(i, j) = e_i . e_j / max(|e_j|,
    eps)`` (DLSN Eq. 10; NLSA's score has the same form), whose ranking over ``j`` for a fixed query is the
    cosine ranking. For every query ``i`` its ``k`` best keys ``j != i`` are taken (the largest weights of the
    exact softmax over all positions; ties, e.g. for an all-zero ReLU embedding, go to the lower position),
    and we measure

    * ``same_bucket``: the share of them in the query's bucket, averaged over the hash rounds, and
      ``same_bucket_any``: the share in its bucket in at least one round;
    * ``reachable``: the share among the keys the query actually attends to in at least one round (its chunk
      and the two neighbouring chunks of the sorted order, :func:`srlib.analysis.buckets.attended_mask`): a giant
      bucket holds the neighbours but cuts them into chunks, of which the query sees three;
    * the chance levels ``chance_same`` and ``chance_reachable``: the same shares for keys drawn uniformly
      from the other ``L - 1`` positions (``(bucket size - 1) / (L - 1)`` and ``(reachable - 1) / (L - 1)``).

    Args:
        details: ``module.details`` of a GLA / NLSA run with ``keep_details = True`` (needs ``"embedding"``
            ``(B, L, C')``, ``"codes"`` ``(B, R, L)`` and ``"layout"``), e.g.
            ``srlib.viz.explorer.prepare_attention(...).details``.
        k: neighbours per query, ``1 <= k < L``.
        queries: 1-D query positions (default: all ``L``; memory ``O(n_queries * L)``).
        batch: which image of the batch.
        key_eps: the key normalisation's ``eps`` (official ``5e-5``).
    Returns:
        dict of floats: ``same_bucket``, ``same_bucket_any``, ``reachable``, ``chance_same``,
        ``chance_reachable`` (all in ``[0, 1]``), and ``n_queries``.
    Raises:
        ValueError: missing details, ``k`` or positions out of range.
    """
    emb, codes, layout = details.get("embedding"), details.get("codes"), details.get("layout")
    if emb is None or codes is None or layout is None:
        raise ValueError("details need 'embedding', 'codes' and 'layout': set module.keep_details = True")
    B, R, L = codes.shape
    if not 0 <= batch < B:
        raise ValueError(f"batch must be in [0, {B}), got {batch}")
    if not 1 <= k < L:
        raise ValueError(f"k must be in [1, {L}), got {k}")
    if queries is None:
        idx = torch.arange(L, device=codes.device)
    else:
        idx = torch.as_tensor(queries, device=codes.device).reshape(-1).long()
        if idx.numel() == 0 or int(idx.min()) < 0 or int(idx.max()) >= L:
            raise ValueError(f"queries must be non-empty positions in [0, {L}), got {queries!r}")
    n = idx.numel()
    e = emb[batch].double()  # (L, C')
    scores = e[idx] @ F.normalize(e, dim=-1, eps=key_eps).T  # (n, L): s_f, dense
    scores[torch.arange(n), idx] = -math.inf  # not the query itself
    top = torch.sort(scores, dim=-1, descending=True, stable=True).indices[:, :k]  # (n, k), ties: lower position
    cb = codes[batch]  # (R, L)
    same = cb[:, top] == cb[:, idx].unsqueeze(-1)  # (R, n, k)
    sizes = torch.zeros(R, int(cb.max()) + 1, dtype=torch.int64, device=cb.device)
    sizes.scatter_add_(1, cb, torch.ones_like(cb))
    own_size = sizes.gather(1, cb[:, idx])  # (R, n)
    # keys reachable in any round: chunks [own, prev, next] of the sorted order
    keys = attended_keys(layout, idx)[batch]  # (R, n, 3c)
    reach = torch.zeros(n, L, dtype=torch.bool, device=cb.device)
    reach.scatter_(1, keys.permute(1, 0, 2).reshape(n, -1), True)
    reach[torch.arange(n), idx] = False
    return {
        "same_bucket": float(same.double().mean()),
        "same_bucket_any": float(same.any(0).double().mean()),
        "reachable": float(reach.gather(1, top).double().mean()),
        "chance_same": float(((own_size - 1).double() / (L - 1)).mean()),
        "chance_reachable": float(reach.sum(1).double().mean() / (L - 1)),
        "n_queries": int(n),
    }


# ----------------------------------------------------------------------------------------------- attention


def topk_attended_locations(weights: Tensor, hw: tuple[int, int], k: int = 128) -> tuple[Tensor, Tensor]:
    """The ``k`` positions with the largest weights, as ``(y, x)`` coordinates (DLSN Fig. 4 uses ``k = 128``).

    Ties are broken by position (stable), so the result is reproducible.

    Args:
        weights: ``(L,)`` weights, e.g. from :func:`attention_on_positions`.
        hw: ``(H, W)`` with ``H * W = L``.
        k: how many (at most ``L``).
    Returns:
        ``(locations (k, 2) int64 [y, x], values (k,))``, largest weight first.
    Raises:
        ValueError: ``weights`` not 1-D, ``H * W != L``, or ``k`` not in ``[1, L]``.
    """
    if weights.dim() != 1:
        raise ValueError(f"weights must be (L,), got {tuple(weights.shape)}")
    H, W = (int(s) for s in hw)
    L = weights.numel()
    if H * W != L:
        raise ValueError(f"hw = {(H, W)} has {H * W} positions but weights have {L}")
    if not 1 <= k <= L:
        raise ValueError(f"k must be in [1, {L}], got {k}")
    order = torch.sort(weights, descending=True, stable=True).indices[:k]
    return torch.stack([order // W, order % W], dim=-1), weights[order]


@contextlib.contextmanager
def learnable_score_disabled(model: nn.Module) -> Iterator[list[str]]:
    """Within the ``with`` block, every GLA in ``model`` scores with the dot product only (``s = s_f``).

    Sets ``lss_variant = "none"`` on each :class:`~srlib.attention.gla.GlobalLearnableAttention` (the LSS
    branch is then skipped; its weights stay untouched) and restores the previous value afterwards, also on
    error. Use it to look at a network *trained with* the learnable score with that term removed at test
    time (the paper's Fig. 4 compares two separately trained networks instead).

    Yields:
        The names of the modules switched off.
    """
    switched: list[tuple[str, GlobalLearnableAttention, str]] = []
    for name, m in model.named_modules():
        if isinstance(m, GlobalLearnableAttention) and m.lss_variant != "none":
            switched.append((name, m, m.lss_variant))
    try:
        for _, m, _ in switched:
            m.lss_variant = "none"
        yield [name for name, _, _ in switched]
    finally:
        for _, m, old in switched:
            m.lss_variant = old


# ----------------------------------------------------------------------------------------------- DLSN Fig. 1


def missing_detail(hr: Tensor, lr: Tensor, scale: int) -> Tensor:
    """What the degradation destroyed: ``hr - bicubic_upsample(lr)``, ``(3, H, W)``.

    Args:
        hr: ``(3, H, W)`` RGB in ``[0, 1]``; lr: ``(3, H / scale, W / scale)``; scale: integer factor.
    Raises:
        ValueError: sizes that do not match the scale.
    """
    from srlib.data import imresize

    if hr.dim() != 3 or lr.dim() != 3 or tuple(hr.shape[-2:]) != (lr.shape[-2] * scale, lr.shape[-1] * scale):
        raise ValueError(f"hr {tuple(hr.shape)} must be scale={scale} times lr {tuple(lr.shape)} (both (3, H, W))")
    return hr - imresize(lr, scale)


def similarity_and_detail_match(
    hr: Tensor,
    lr: Tensor,
    scale: int,
    queries: Tensor | Sequence[int],
    *,
    patch_size: int = 5,
    exclude_radius: int = 2,
) -> tuple[Tensor, Tensor]:
    """For each query: how similar every position looks in the LR image, and how well its true detail fits.

    * **Similarity** (what dot-product attention sees, DLSN Eq. 10): cosine between the unit-norm
      ``patch_size x patch_size`` LR colour patches around query and key
      (:func:`srlib.analysis.maps.patch_descriptors`).
    * **Detail match** (what the query would need, unknown to the network): cosine between the missing HR
      detail (:func:`missing_detail`) in the ``scale * patch_size`` HR windows of query and key. A key whose
      missing detail points the same way as the query's could "provide accurate details" (DLSN Fig. 1).

    Keys within ``exclude_radius`` LR pixels of the query (overlapping patches, trivially similar) get NaN in
    both outputs, so only non-local keys are compared.

    Args:
        hr: ``(3, H, W)`` RGB in ``[0, 1]``; lr: its degraded ``(3, H / scale, W / scale)`` version.
        scale: integer factor; queries: flattened LR positions ``p = y * w + x``.
        patch_size: odd LR patch side; exclude_radius: Chebyshev radius of the excluded neighbourhood.
    Returns:
        ``(similarity (Q, L), detail_match (Q, L))`` float32 in ``[-1, 1]`` (NaN where excluded).
    Raises:
        ValueError: size mismatch, even patch size, or a query out of range.
    """
    from srlib.analysis.maps import patch_descriptors

    if patch_size < 1 or patch_size % 2 == 0:
        raise ValueError(f"patch_size must be a positive odd number, got {patch_size}")
    detail = missing_detail(hr, lr, scale).float()
    h, w = lr.shape[-2:]
    L = h * w
    q = torch.as_tensor(queries, dtype=torch.int64).reshape(-1)
    if q.numel() == 0 or int(q.min()) < 0 or int(q.max()) >= L:
        raise ValueError(f"queries must be positions in [0, {L}), got {q.tolist()}")
    lr_desc = patch_descriptors(lr.float(), patch_size)[0].reshape(-1, L).T  # (L, 3 p²), unit norm
    r = (patch_size // 2) * scale
    padded = F.pad(detail.unsqueeze(0), (r, r, r, r), mode="reflect")
    hr_desc = F.unfold(padded, patch_size * scale, stride=scale)[0].T  # (L, 3 (s p)²): window of LR pixel p
    hr_desc = F.normalize(hr_desc, dim=1, eps=1e-12)
    sim = lr_desc[q] @ lr_desc.T  # (Q, L)
    match = hr_desc[q] @ hr_desc.T
    ys, xs = torch.arange(L) // w, torch.arange(L) % w
    near = ((ys[None] - ys[q, None]).abs() <= exclude_radius) & ((xs[None] - xs[q, None]).abs() <= exclude_radius)
    nan = torch.tensor(float("nan"))
    return torch.where(near, nan, sim), torch.where(near, nan, match)
