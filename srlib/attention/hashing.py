"""Hash functions that assign bucket codes to positions (the step that differs between NLSA, GLA, LCoA).

All of them are *argmax hashes*: project the embedding ``x_p`` on a few directions and take the index of
the largest projection. They differ in the directions:

* spherical LSH (NLSN Eq. 7): i.i.d. Gaussian directions; the official code takes the argmax over
  ``[xR, -xR]`` (a cross-polytope hash with ``n_buckets/2`` directions),
* super-bit LSH (DLSN Eq. 12-13): orthonormal directions (see ``srlib.attention.gla``),
* k-means (LCoAN Eq. 6-10): learned centroids (see ``srlib.attention.lcoa``).

Shapes: embeddings ``x: (B, L, C)``; projections ``(C, R, M)`` for ``R`` hash rounds and ``M`` directions;
codes ``(B, R, L)`` int64 in ``[0, n_buckets)``, without round offsets.
"""

from __future__ import annotations

import torch

__all__ = ["argmax_hash", "gaussian_rotations", "spherical_lsh", "with_round_offsets"]


def argmax_hash(x: torch.Tensor, projections: torch.Tensor, *, signed: bool) -> torch.Tensor:
    """Bucket code = index of the largest projection.

    Args:
        x: ``(B, L, C)`` embeddings (need not be normalised: the argmax is scale invariant).
        projections: ``(C, R, M)`` directions for each of ``R`` rounds.
        signed: if True, the candidates are ``[x R, -x R]`` (``2M`` buckets, NLSA official); else ``x R``
            (``M`` buckets; super-bit LSH, k-means).
    Returns:
        ``(B, R, L)`` int64 codes.
    Raises:
        ValueError: channel mismatch between ``x`` and ``projections``.
    """
    if projections.dim() != 3 or projections.shape[0] != x.shape[-1]:
        raise ValueError(
            f"projections must be (C, R, M) with C = {x.shape[-1]} embedding channels, got {tuple(projections.shape)}"
        )
    B, L, C = x.shape
    _, R, M = projections.shape
    w = projections.to(x.dtype).reshape(C, R * M)
    codes = torch.empty(B, R, L, dtype=torch.long, device=x.device)
    rows = max(1, 2**17 // (R * M))  # positions per block: the (rows, R, M) projections stay in cache
    for l0 in range(0, L, rows):
        proj = (x[:, l0:l0 + rows] @ w).view(B, -1, R, M)  # (B, rows, R, M)
        if signed:  # argmax over [proj, -proj] without building it: the max, or M + the argmin (ties: the max)
            top, arg_top = proj.max(dim=-1)
            low, arg_low = proj.min(dim=-1)
            code = torch.where(top >= -low, arg_top, arg_low + M)
        else:
            code = proj.argmax(dim=-1)
        codes[:, :, l0:l0 + rows] = code.transpose(1, 2)
    return codes


def gaussian_rotations(
    channels: int,
    n_rounds: int,
    n_directions: int,
    *,
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
    dtype: torch.dtype | None = None,
) -> torch.Tensor:
    """I.i.d. standard-normal directions ``(C, R, M)`` for spherical LSH.

    Drawn as a ``(1, C, R, M)`` tensor, like the official NLSA, so that with ``generator=None`` and the same
    global seed the draw equals the official one.
    """
    shape = (1, channels, n_rounds, n_directions)
    return torch.randn(shape, generator=generator, device=device, dtype=dtype)[0]


def spherical_lsh(
    x: torch.Tensor,
    n_buckets: int,
    n_rounds: int,
    *,
    rotations: torch.Tensor | None = None,
    generator: torch.Generator | None = None,
    variant: str = "official",
) -> tuple[torch.Tensor, torch.Tensor]:
    """Spherical LSH codes (NLSN Eq. 7).

    Args:
        x: ``(B, L, C)`` embeddings.
        n_buckets: number of buckets ``m`` (even for the official variant).
        n_rounds: hash rounds ``R``.
        rotations: explicit directions; ``(C, R, m/2)`` (official) or ``(C, R, m)`` (paper). Drawn from
            ``generator`` (or the global RNG) when ``None``.
        variant: ``"official"``: argmax over ``[xR, -xR]`` with ``m/2`` Gaussian directions (the code);
            ``"paper"``: ``argmax(A x / |x|)`` with ``m`` Gaussian directions (Eq. 7 as written).
    Returns:
        ``(codes (B, R, L), rotations)``.
    Raises:
        ValueError: unknown variant, odd ``n_buckets`` for the official variant, or wrong rotation shape.
    """
    if variant not in ("official", "paper"):
        raise ValueError(f"variant must be 'official' or 'paper', got {variant!r}")
    signed = variant == "official"
    if signed and n_buckets % 2:
        raise ValueError(f"the official spherical LSH needs an even number of buckets, got {n_buckets}")
    n_dir = n_buckets // 2 if signed else n_buckets
    if rotations is None:
        rotations = gaussian_rotations(x.shape[-1], n_rounds, n_dir, generator=generator, device=x.device, dtype=x.dtype)
    elif tuple(rotations.shape) != (x.shape[-1], n_rounds, n_dir):
        raise ValueError(
            f"rotations must have shape (C, R, M) = {(x.shape[-1], n_rounds, n_dir)} for {variant} spherical LSH "
            f"with {n_buckets} buckets, got {tuple(rotations.shape)}"
        )
    return argmax_hash(x, rotations, signed=signed), rotations


def with_round_offsets(codes: torch.Tensor, n_buckets: int) -> torch.Tensor:
    """Official code layout: ``(B, R, L)`` -> ``(B, R*L)`` with ``r * n_buckets`` added to round ``r``."""
    B, R, L = codes.shape
    offsets = torch.arange(R, device=codes.device).view(1, R, 1) * n_buckets
    return (codes + offsets).reshape(B, R * L)
