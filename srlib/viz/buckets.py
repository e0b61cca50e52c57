"""Pictures of hash buckets and chunks: how NLSA (and GLA, LCoA) group positions.

The numbers come from :mod:`srlib.analysis.buckets` (bucket maps, which keys a query reaches, bucket balance);
this module draws them:

* :func:`plot_hash_sectors`, :func:`plot_chunks`, :func:`plot_bucket_map` and :func:`plot_attended` draw the
  step-by-step figures of notebook ``01_nlsn``;
* :func:`plot_bucket_sizes` draws the sorted bucket sizes and :func:`plot_bucket_maps` several bucket maps of one
  image side by side (e.g. a trained and an untrained network, DLSN Fig. 4 style).

Conventions: positions are flattened row-major, ``p = i*W + j`` (as in :mod:`srlib.attention.buckets`);
codes are per-round bucket ids without round offsets, ``(R, L)`` or ``(B, R, L)``. Plotting functions return
the matplotlib ``Figure`` (or draw on the given ``Axes``) and never call ``plt.show()``.
"""

from __future__ import annotations

import math
from typing import Sequence

import matplotlib.pyplot as plt
import numpy as np
import torch
from matplotlib.colors import ListedColormap
from matplotlib.patches import Rectangle

from srlib.analysis.buckets import attended_mask, bucket_map
from srlib.attention.buckets import BucketLayout

__all__ = [
    "bucket_colormap",
    "plot_bucket_map",
    "plot_bucket_maps",
    "plot_bucket_sizes",
    "plot_attended",
    "plot_chunks",
    "plot_hash_sectors",
]


def bucket_colormap(n_buckets: int) -> ListedColormap:
    """A qualitative colour map with ``n_buckets`` entries (tab20, tab20b, tab20c, cycled).

    Bucket ids carry no order, so neighbouring ids get unrelated colours.
    """
    if n_buckets < 1:
        raise ValueError(f"n_buckets must be positive, got {n_buckets}")
    base = [plt.get_cmap(name)(i) for name in ("tab20", "tab20b", "tab20c") for i in range(20)]
    base = base[0::2] + base[1::2]  # strong colours first
    return ListedColormap([base[i % len(base)] for i in range(n_buckets)], name=f"buckets{n_buckets}")


def plot_hash_sectors(
    rotations: torch.Tensor,
    points: torch.Tensor | None = None,
    *,
    signed: bool = True,
    ax: plt.Axes | None = None,
    resolution: int = 720,
) -> plt.Axes:
    """Draw how spherical LSH cuts the 2-D plane into buckets (angle sectors).

    Every direction ``u`` on the unit circle gets the code ``argmax [u R, -u R]`` (``signed``, official) or
    ``argmax u R``; the disc is coloured by that code and the "vertices" ``±r_j`` are drawn, scaled by the
    longest one. The directions are Gaussian, not unit vectors, so a long ``r_j`` takes a wide sector and a
    short one may take none (an empty bucket).

    Args:
        rotations: ``(2, M)`` directions of one round (e.g. ``rotations[:, r, :]`` of
            :func:`spherical_lsh`).
        points: optional ``(N, 2)`` vectors to scatter, coloured by their own code.
        signed: use ``[xR, -xR]`` (``2M`` buckets) or ``xR`` (``M`` buckets).
        ax: axes to draw on (a new figure if ``None``); resolution: samples on the circle.
    Returns:
        The axes.
    Raises:
        ValueError: ``rotations`` not ``(2, M)``, or ``points`` not ``(N, 2)``.
    """
    R = torch.as_tensor(rotations, dtype=torch.float64)
    if R.dim() != 2 or R.shape[0] != 2:
        raise ValueError(f"rotations must be (2, M) for a 2-D picture, got {tuple(R.shape)}")
    n_b = 2 * R.shape[1] if signed else R.shape[1]
    cmap = bucket_colormap(n_b)

    def codes_of(x: torch.Tensor) -> torch.Tensor:
        proj = x @ R
        return (torch.cat([proj, -proj], -1) if signed else proj).argmax(-1)

    if ax is None:
        _, ax = plt.subplots(figsize=(4, 4))
    t = torch.linspace(0, 2 * math.pi, resolution + 1, dtype=torch.float64)
    circle = torch.stack([torch.cos(t), torch.sin(t)], -1)
    c = codes_of(circle)
    for i in range(resolution):
        ax.fill([0, circle[i, 0], circle[i + 1, 0]], [0, circle[i, 1], circle[i + 1, 1]],
                color=cmap(int(c[i])), alpha=0.35, lw=0)
    verts = R / R.norm(dim=0).max()  # (2, M); lengths show |r_j|: a long direction wins a wide sector
    verts = torch.cat([verts, -verts], 1) if signed else verts
    for j in range(verts.shape[1]):
        ax.plot([0, verts[0, j]], [0, verts[1, j]], color=cmap(j), lw=1.5)
        ax.annotate(str(j), (1.12 * verts[0, j], 1.12 * verts[1, j]), ha="center", va="center", fontsize=9)
    if points is not None:
        P = torch.as_tensor(points, dtype=torch.float64)
        if P.dim() != 2 or P.shape[1] != 2:
            raise ValueError(f"points must be (N, 2), got {tuple(P.shape)}")
        pc = codes_of(P)
        Pn = P / P.norm(dim=1, keepdim=True).clamp_min(1e-12)
        ax.scatter(Pn[:, 0], Pn[:, 1], c=[cmap(int(k)) for k in pc], edgecolors="k", s=50, zorder=3)
    ax.set_aspect("equal")
    ax.set_xlim(-1.3, 1.3)
    ax.set_ylim(-1.3, 1.3)
    ax.set_xticks([])
    ax.set_yticks([])
    return ax


def plot_chunks(
    codes: torch.Tensor,
    chunk_size: int,
    *,
    query: int | None = None,
    ax: plt.Axes | None = None,
) -> plt.Axes:
    """Draw one hash round as two strips: positions in image order, then sorted, padded and chunked.

    Top strip: position ``p`` coloured by its bucket. Bottom strip: the stable sort by bucket, the padded
    duplicates (hatched) and chunk boundaries; with ``query``, the query's slot is outlined and the three
    chunks it attends to (own, previous, next, cyclic) are marked above the strip.

    Args:
        codes: ``(L,)`` integer codes of one round.
        chunk_size: positions per chunk.
        query: optional position whose attended chunks are highlighted.
        ax: axes to draw on (a new wide figure if ``None``).
    Returns:
        The axes.
    Raises:
        ValueError: codes not 1-D integer, or ``query`` out of range (and :class:`BucketLayout` errors).
    """
    codes = torch.as_tensor(codes)
    if codes.dim() != 1 or codes.is_floating_point():
        raise ValueError(f"codes must be a 1-D integer tensor (one round), got {tuple(codes.shape)} {codes.dtype}")
    layout = BucketLayout.from_codes(codes.view(1, 1, -1), chunk_size)
    L, c, n, pad = layout.length, chunk_size, layout.n_chunks, layout.padding
    if query is not None and not 0 <= query < L:
        raise ValueError(f"query must be in [0, {L}), got {query}")
    order = layout.sort_idx[0, 0]
    padded = torch.cat([order, order[(torch.arange(pad) + L - pad) % L]])  # positions in padded slot order
    cmap = bucket_colormap(int(codes.max()) + 1)
    if ax is None:
        _, ax = plt.subplots(figsize=(max(6.0, 0.32 * (L + pad)), 2.6))
    for p in range(L):
        ax.add_patch(Rectangle((p, 1.6), 1, 0.8, fc=cmap(int(codes[p])), ec="w"))
        ax.text(p + 0.5, 2.0, str(p), ha="center", va="center", fontsize=7)
    for s in range(L + pad):
        p = int(padded[s])
        ax.add_patch(Rectangle((s, 0), 1, 0.8, fc=cmap(int(codes[p])), ec="w", hatch="//" if s >= L else None))
        ax.text(s + 0.5, 0.4, str(p), ha="center", va="center", fontsize=7)
    for j in range(n + 1):
        ax.plot([j * c, j * c], [-0.15, 0.95], color="k", lw=1.5)
    if query is not None:
        ax.add_patch(Rectangle((query, 1.6), 1, 0.8, fc="none", ec="k", lw=2.5))
        slot = int(layout.undo_idx[0, 0, query])
        ax.add_patch(Rectangle((slot, 0), 1, 0.8, fc="none", ec="k", lw=2.5))
        own = slot // c
        for j, name in ((own, "own"), ((own - 1) % n, "prev"), ((own + 1) % n, "next")):
            ax.annotate(name, (j * c + c / 2, 1.05), ha="center", fontsize=8)
            ax.plot([j * c + 0.1, (j + 1) * c - 0.1], [0.95, 0.95], color="k", lw=3)
    ax.text(0, 2.5, "positions p in image order (colour = bucket)", ha="left", va="bottom", fontsize=8)
    ax.text(0, -0.2, f"stable-sorted by bucket, padded (hatched copies), chunks of {c}", ha="left", va="top",
            fontsize=8)
    ax.set_xlim(-0.2, L + pad + 0.2)
    ax.set_ylim(-0.6, 2.9)
    ax.axis("off")
    return ax


def _to_hwc(image: torch.Tensor) -> np.ndarray:
    img = torch.as_tensor(image).detach().float().cpu()
    if img.dim() == 4 and img.shape[0] == 1:
        img = img[0]
    if img.dim() != 3 or img.shape[0] not in (1, 3):
        raise ValueError(f"image must be (3, H, W) or (1, 3, H, W) RGB in [0, 1], got {tuple(img.shape)}")
    return img.clamp(0, 1).permute(1, 2, 0).numpy()


def plot_bucket_map(
    image: torch.Tensor,
    codes: torch.Tensor,
    hw: tuple[int, int] | None = None,
    *,
    n_buckets: int | None = None,
    rounds: Sequence[int] | None = None,
    alpha: float = 0.6,
) -> plt.Figure:
    """The image next to its bucket map for each hash round (nearest-neighbour upsampled onto the image).

    Args:
        image: ``(3, H_img, W_img)`` RGB in ``[0, 1]`` (may be larger than the feature map, e.g. the HR image).
        codes: ``(R, L)`` or ``(1, R, L)`` integer codes (per round, without offsets).
        hw: feature-map size ``(H, W)``; default: the image size.
        n_buckets: colour-map size (default ``max code + 1``).
        rounds: which rounds to draw (default all).
        alpha: opacity of the bucket colours over the image.
    Returns:
        The figure (``1 + len(rounds)`` panels).
    Raises:
        ValueError: bad image or codes shapes (see :func:`bucket_map`).
    """
    img = _to_hwc(image)
    codes = _one_image(torch.as_tensor(codes))
    hw = tuple(hw) if hw is not None else img.shape[:2]
    maps = bucket_map(codes, hw).cpu().numpy()  # (R, H, W)
    rounds = list(range(maps.shape[0])) if rounds is None else list(rounds)
    n_b = int(n_buckets) if n_buckets is not None else int(maps.max()) + 1
    cmap = bucket_colormap(n_b)
    fig, axes = _panels(1 + len(rounds))
    axes[0].imshow(img)
    axes[0].set_title("image")
    for ax, r in zip(axes[1:], rounds):
        ax.imshow(img)
        ax.imshow(maps[r], cmap=cmap, vmin=-0.5, vmax=n_b - 0.5, alpha=alpha, interpolation="nearest",
                  extent=_extent(img))
        ax.set_title(f"round {r}: {len(np.unique(maps[r]))} buckets")
    fig.tight_layout()
    return fig


def plot_attended(
    image: torch.Tensor,
    layout: BucketLayout,
    position: tuple[int, int],
    hw: tuple[int, int] | None = None,
    *,
    rounds: Sequence[int] | None = None,
    dim: float = 0.25,
) -> plt.Figure:
    """Where one query looks: per round, the image dimmed everywhere except the query's ``3c`` keys.

    Args:
        image: ``(3, H_img, W_img)`` RGB in ``[0, 1]``.
        layout: :class:`BucketLayout` of one image's codes (batch size 1).
        position: ``(i, j)`` of the query on the feature map.
        hw: feature-map size ``(H, W)``; default: the image size.
        rounds: rounds to draw (default all); dim: brightness of the positions not attended.
    Returns:
        The figure (one panel per round, plus the union of all rounds).
    Raises:
        ValueError: batch size other than 1, ``position`` outside the map, or ``H*W != L``.
    """
    img = _to_hwc(image)
    hw = tuple(hw) if hw is not None else img.shape[:2]
    if layout.sort_idx.shape[0] != 1:
        raise ValueError(f"plot one image at a time: layout has batch size {layout.sort_idx.shape[0]}")
    if hw[0] * hw[1] != layout.length:
        raise ValueError(f"hw = {hw} has {hw[0] * hw[1]} positions but the layout has {layout.length}")
    i, j = position
    if not (0 <= i < hw[0] and 0 <= j < hw[1]):
        raise ValueError(f"position {position} outside the {hw} feature map")
    mask = attended_mask(layout, i * hw[1] + j)[0].reshape(-1, *hw).cpu().numpy()  # (R, H, W)
    rounds = list(range(mask.shape[0])) if rounds is None else list(rounds)
    panels = [(mask[r], f"round {r}") for r in rounds] + [(mask.any(0), "all rounds")]
    fig, axes = _panels(len(panels))
    Hi, Wi = img.shape[:2]
    ys = np.minimum((np.arange(Hi) * hw[0]) // Hi, hw[0] - 1)
    xs = np.minimum((np.arange(Wi) * hw[1]) // Wi, hw[1] - 1)
    sy, sx = (i + 0.5) * Hi / hw[0] - 0.5, (j + 0.5) * Wi / hw[1] - 0.5
    for ax, (m, title) in zip(axes, panels):
        up = m[np.ix_(ys, xs)][..., None]
        ax.imshow(img * np.where(up, 1.0, dim))
        ax.plot(sx, sy, marker="*", color="red", markeredgecolor="w", markersize=14)
        ax.set_title(f"{title}: {int(m.sum())} keys")
    fig.tight_layout()
    return fig


def plot_bucket_sizes(
    sizes: dict[str, torch.Tensor],
    *,
    ax: plt.Axes | None = None,
    log: bool = True,
) -> plt.Axes:
    """Sorted bucket shares (largest first), one line per setting, with the even share ``1/b`` dashed.

    Args:
        sizes: title -> ``(b,)`` or ``(R, b)`` bucket counts (e.g. ``bucket_balance(...)["sizes"]``); with
            several rounds each round is sorted and the sorted shares are averaged over the rounds.
        ax: axes to draw on (a new figure if ``None``); log: logarithmic y axis.
    Returns:
        The axes.
    Raises:
        ValueError: no settings, or counts that are not 1-D / 2-D with a positive total.
    """
    if not sizes:
        raise ValueError("need at least one setting")
    if ax is None:
        _, ax = plt.subplots(figsize=(5, 3.2))
    n_b = None
    for title, counts in sizes.items():
        c = torch.as_tensor(counts).double()
        c = c.unsqueeze(0) if c.dim() == 1 else c
        if c.dim() != 2 or not bool((c.sum(-1) > 0).all()):
            raise ValueError(
                f"sizes of {title!r} must be (b,) or (R, b) counts with a positive total, got {tuple(c.shape)}"
            )
        share = (c / c.sum(-1, keepdim=True)).sort(-1, descending=True).values.mean(0)  # (b,)
        ranks = torch.arange(1, share.numel() + 1)
        ax.plot(ranks.numpy(), share.numpy(), "o-", ms=2.5, lw=1, label=title)
        n_b = share.numel()
    ax.axhline(1 / n_b, color="gray", ls="--", lw=0.8, label=f"even buckets (1/{n_b})")
    if log:
        ax.set_yscale("log")
    ax.set_xlabel("bucket, largest first")
    ax.set_ylabel("share of the positions")
    ax.legend(fontsize=8)
    return ax


def plot_bucket_maps(
    image: torch.Tensor,
    maps: dict[str, torch.Tensor],
    hw: tuple[int, int] | None = None,
    *,
    n_buckets: int | None = None,
    alpha: float = 0.6,
) -> plt.Figure:
    """The image, then one bucket map per setting (one hash round each), coloured over the image.

    Unlike :func:`plot_bucket_map` (all rounds of one setting), this puts different settings side by side:
    e.g. the same layer of a trained and an untrained network. Bucket ids are arbitrary, so colours only
    say which positions share a bucket *within* a panel.

    Args:
        image: ``(3, H_img, W_img)`` RGB in ``[0, 1]`` (may be larger than the feature map).
        maps: title -> ``(L,)`` integer codes of one round (``L = H * W``).
        hw: feature-map size ``(H, W)``; default: the image size.
        n_buckets: colour-map size (default: the largest code + 1).
        alpha: opacity of the bucket colours.
    Returns:
        The figure (``1 + len(maps)`` panels); the titles give the number of occupied buckets.
    Raises:
        ValueError: no maps, codes that are not 1-D, or bad image / sizes (see :func:`bucket_map`).
    """
    if not maps:
        raise ValueError("need at least one bucket map")
    img = _to_hwc(image)
    hw = tuple(hw) if hw is not None else img.shape[:2]
    grids = {}
    for title, codes in maps.items():
        codes = torch.as_tensor(codes)
        if codes.dim() != 1:
            raise ValueError(f"codes of {title!r} must be (L,) (one round), got {tuple(codes.shape)}")
        grids[title] = bucket_map(codes, hw).cpu().numpy()
    n_b = int(n_buckets) if n_buckets is not None else max(int(g.max()) for g in grids.values()) + 1
    cmap = bucket_colormap(n_b)
    fig, axes = _panels(1 + len(grids))
    axes[0].imshow(img)
    axes[0].set_title("image")
    for ax, (title, grid) in zip(axes[1:], grids.items()):
        ax.imshow(img)
        ax.imshow(grid, cmap=cmap, vmin=-0.5, vmax=n_b - 0.5, alpha=alpha, interpolation="nearest",
                  extent=_extent(img))
        ax.set_title(f"{title}: {len(np.unique(grid))} buckets", fontsize=10)
    fig.tight_layout()
    return fig


def _one_image(codes: torch.Tensor) -> torch.Tensor:
    if codes.dim() == 3:
        if codes.shape[0] != 1:
            raise ValueError(f"plot one image at a time: codes have batch size {codes.shape[0]}")
        codes = codes[0]
    if codes.dim() != 2:
        raise ValueError(f"codes must be (R, L) or (1, R, L), got {tuple(codes.shape)}")
    return codes


def _extent(img: np.ndarray) -> tuple[float, float, float, float]:
    Hi, Wi = img.shape[:2]
    return (-0.5, Wi - 0.5, Hi - 0.5, -0.5)


def _panels(n: int) -> tuple[plt.Figure, np.ndarray]:
    fig, axes = plt.subplots(1, n, figsize=(3.0 * n, 3.2), squeeze=False)
    for ax in axes[0]:
        ax.set_xticks([])
        ax.set_yticks([])
    return fig, axes[0]
