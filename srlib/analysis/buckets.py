"""Numbers about hash buckets and chunks: how NLSA (and GLA, LCoA) group positions.

* :func:`bucket_map` turns per-position codes back into an image-shaped map;
* :func:`attended_keys` / :func:`attended_mask` say which positions queries can see in each round (their
  chunk and the two neighbouring chunks of the sorted sequence);
* :func:`lsh_collision_rate` measures how often two vectors at a given angle share a spherical-LSH bucket;
* :func:`bucket_balance` summarises how evenly positions spread over the buckets (occupied buckets, largest
  bucket, effective number of buckets).

The pictures of these numbers are in :mod:`srlib.viz.buckets`.

Conventions: positions are flattened row-major, ``p = i*W + j`` (as in :mod:`srlib.attention.buckets`);
codes are per-round bucket ids without round offsets, ``(R, L)`` or ``(B, R, L)``.
"""

from __future__ import annotations

from typing import Sequence

import torch

from srlib.attention.buckets import BucketLayout, look_around
from srlib.attention.hashing import spherical_lsh

__all__ = ["attended_keys", "attended_mask", "bucket_balance", "bucket_map", "lsh_collision_rate"]


def bucket_map(codes: torch.Tensor, hw: tuple[int, int]) -> torch.Tensor:
    """Reshape per-position bucket codes ``(..., L)`` into maps ``(..., H, W)`` (row-major positions).

    Args:
        codes: integer codes, last dimension ``L = H*W`` (e.g. ``(R, L)`` or ``(B, R, L)``).
        hw: ``(H, W)`` of the feature map the codes were computed on.
    Returns:
        ``(..., H, W)`` int64 tensor (a view when possible).
    Raises:
        ValueError: codes not integer, or ``L != H*W``.
    """
    if codes.is_floating_point() or codes.is_complex() or codes.dim() < 1:
        raise ValueError(f"codes must be an integer tensor (..., L), got dtype {codes.dtype}, shape {tuple(codes.shape)}")
    H, W = (int(s) for s in hw)
    if codes.shape[-1] != H * W:
        raise ValueError(f"codes have L = {codes.shape[-1]} positions but hw = {(H, W)} has {H * W}")
    return codes.long().reshape(*codes.shape[:-1], H, W)


def attended_keys(layout: BucketLayout, positions: torch.Tensor | Sequence[int]) -> torch.Tensor:
    """The keys each query attends to in each round (official NLSA/GLA/LCoA pattern), as positions.

    In round ``r`` query ``p`` sits at sorted slot ``s = undo_idx[r, p]`` in chunk ``s // c``; its keys are the
    ``3c`` rows of chunks ``[own, own - 1, own + 1]`` (cyclic over chunks), where padded rows are copies of the
    last sorted rows. Computed with the attention's own :meth:`BucketLayout.to_chunks` and
    :func:`srlib.attention.buckets.look_around` applied to the position indices.

    Args:
        layout: from :meth:`BucketLayout.from_codes`.
        positions: ``(n,)`` flattened query positions, each in ``[0, L)``.
    Returns:
        ``(B, R, n, 3c)`` int64 key positions (a key can appear twice where padding repeats rows).
    Raises:
        ValueError: no positions, or a position out of range.
    """
    L, c = layout.length, layout.chunk_size
    idx = torch.as_tensor(positions, device=layout.sort_idx.device).reshape(-1).long()
    if idx.numel() == 0 or int(idx.min()) < 0 or int(idx.max()) >= L:
        raise ValueError(f"positions must be non-empty and in [0, {L}), got {positions!r}")
    B, R, _ = layout.sort_idx.shape
    # carry each position's index through the same sort / pad / chunk / look-around as the keys themselves
    pos = torch.arange(L, device=idx.device).view(1, L, 1).expand(B, L, 1)
    keys = look_around(layout.to_chunks(pos))[..., 0]  # (B, R, n, 3c) key positions of every chunk
    own = layout.undo_idx[:, :, idx] // c  # (B, R, n_q) chunk of each query
    return torch.gather(keys, 2, own.unsqueeze(-1).expand(-1, -1, -1, keys.shape[-1]))  # (B, R, n_q, 3c)


def attended_mask(layout: BucketLayout, position: int) -> torch.Tensor:
    """Which positions query ``position`` attends to in each round (:func:`attended_keys` as a mask).

    Args:
        layout: from :meth:`BucketLayout.from_codes`.
        position: flattened position ``0 <= p < L``.
    Returns:
        ``(B, R, L)`` bool; ``True`` where position ``j`` is among the query's keys in that round.
    Raises:
        ValueError: ``position`` out of range.
    """
    L = layout.length
    if not 0 <= position < L:
        raise ValueError(f"position must be in [0, {L}), got {position}")
    keys = attended_keys(layout, [position])[:, :, 0]  # (B, R, 3c)
    B, R, _ = keys.shape
    mask = torch.zeros(B, R, L, dtype=torch.bool, device=keys.device)
    mask.scatter_(2, keys, True)
    return mask


def lsh_collision_rate(
    angles: torch.Tensor | Sequence[float],
    dim: int,
    n_buckets: int,
    n_trials: int = 2000,
    *,
    generator: torch.Generator | None = None,
    variant: str = "official",
) -> torch.Tensor:
    """Measured probability that two unit vectors at angle ``theta`` get the same spherical-LSH code.

    For each angle, the pair ``u = e_1``, ``v = cos(theta) e_1 + sin(theta) e_2`` is hashed with ``n_trials``
    independent Gaussian rotations (used as ``n_trials`` hash rounds of
    :func:`srlib.attention.hashing.spherical_lsh`); the rate is the fraction of rounds with equal codes.
    Gaussian directions are rotation invariant, so any pair at that angle has the same probability. For
    ``n_buckets = 2`` with the official ``[xR, -xR]`` hash this is the sign of one projection (a random
    hyperplane): the probability is ``1 - theta / pi``.

    Args:
        angles: angles in radians, in ``[0, pi]``.
        dim: embedding dimension (``>= 2``).
        n_buckets: number of buckets ``m``; n_trials: rotations per angle.
        generator: source of the rotations (reproducible when given).
        variant: ``"official"`` or ``"paper"``, as in :func:`spherical_lsh`.
    Returns:
        ``(len(angles),)`` float64 tensor of rates in ``[0, 1]``.
    Raises:
        ValueError: ``dim < 2`` or ``n_trials < 1`` (and the errors of :func:`spherical_lsh`).
    """
    if dim < 2:
        raise ValueError(f"dim must be at least 2, got {dim}")
    if n_trials < 1:
        raise ValueError(f"n_trials must be positive, got {n_trials}")
    theta = torch.as_tensor(angles, dtype=torch.float64).reshape(-1)
    u = torch.zeros(theta.numel(), 2, dim, dtype=torch.float64)
    u[:, 0, 0] = 1.0
    u[:, 1, 0] = torch.cos(theta)
    u[:, 1, 1] = torch.sin(theta)
    codes, _ = spherical_lsh(u, n_buckets, n_trials, generator=generator, variant=variant)  # (A, T, 2)
    return (codes[..., 0] == codes[..., 1]).double().mean(dim=1)


def bucket_balance(codes: torch.Tensor, n_buckets: int) -> dict[str, torch.Tensor]:
    """How evenly one hash round spreads the positions over its buckets.

    With ``n_j`` positions in bucket ``j`` and shares ``p_j = n_j / L``: the number of occupied buckets, the
    largest share ``max_j p_j``, and the *effective number of buckets* ``exp(-sum_j p_j log p_j)`` (the
    exponential of the entropy: ``b`` for perfectly even buckets, 1 when every position lands in one bucket).
    For the bucketed attentions (NLSA, GLA, LCoA) a bucket larger than a chunk is cut into chunks of the
    sorted (raster) order, so a giant bucket means that queries see runs of consecutive pixels rather than
    similar ones.

    Args:
        codes: ``(R, L)`` or ``(B, R, L)`` integer codes in ``[0, n_buckets)`` (per round, no offsets).
        n_buckets: ``b``.
    Returns:
        dict with ``"sizes"`` ``(..., R, b)`` int64 counts and, per round ``(..., R)``: ``"occupied"`` (int64),
        ``"largest_share"`` and ``"effective"`` (float64).
    Raises:
        ValueError: float codes, a bad shape or codes outside ``[0, n_buckets)``.
    """
    codes = torch.as_tensor(codes)
    if codes.is_floating_point() or codes.is_complex() or codes.dim() not in (2, 3) or codes.shape[-1] == 0:
        raise ValueError(f"codes must be integer (R, L) or (B, R, L), got {codes.dtype} {tuple(codes.shape)}")
    if n_buckets < 1:
        raise ValueError(f"n_buckets must be positive, got {n_buckets}")
    if int(codes.min()) < 0 or int(codes.max()) >= n_buckets:
        raise ValueError(f"codes must lie in [0, {n_buckets}), got [{int(codes.min())}, {int(codes.max())}]")
    sizes = torch.zeros(*codes.shape[:-1], n_buckets, dtype=torch.int64, device=codes.device)
    sizes.scatter_add_(-1, codes.long(), torch.ones_like(codes, dtype=torch.int64))
    share = sizes.double() / codes.shape[-1]
    entropy = -(share * share.clamp_min(1e-300).log()).sum(-1)  # 0 log 0 = 0
    return {"sizes": sizes, "occupied": (sizes > 0).sum(-1), "largest_share": share.amax(-1),
            "effective": entropy.exp()}
