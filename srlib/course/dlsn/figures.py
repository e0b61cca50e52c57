"""Figures of notebook 03 (DLSN / GLA): Fig. 1 measured, super-bit vs spherical hashing, one chunk's scores,
the degradations of DLSN Eq. 2.

The numbers come from :mod:`srlib.course.dlsn.study` and :mod:`srlib.analysis.hashing`; these functions only draw.
Paper: Su et al., *Global Learnable Attention for Single Image Super-Resolution*, IEEE TPAMI 2023,
arXiv:2212.01057.
"""

from __future__ import annotations

from typing import Any, Mapping

import torch

__all__ = ["plot_detail_fit", "plot_hashing_comparison", "plot_chunk_scores", "plot_degradations", "largest_buckets_grid",
           "plot_largest_buckets"]

_HASH_LABELS = {"superbit": "super-bit argmax (GLA)", "spherical": "[xR, -xR] argmax (NLSA code)",
                "spherical_paper": "Gaussian argmax (NLSN Eq. 7)"}


def plot_detail_fit(hr: torch.Tensor, damage: torch.Tensor, similarity: torch.Tensor, fit: torch.Tensor,
                    query: int, scale: int, k: int = 16):
    """DLSN Fig. 1 measured for one query: the HR image with the query, its ``k`` most similar-looking keys
    (red rings) and its ``k`` best-fitting keys (blue dots); the missing detail per LR position; and the scatter
    of LR similarity against detail fit over all keys.

    Args:
        hr: ``(3, H, W)`` RGB in ``[0, 1]``; damage: ``(h, w)`` missing-detail energy per LR position,
            ``h = H / scale``.
        similarity, fit: ``(L,)`` for this query, ``L = h * w`` (``NaN`` for ignored keys).
        query: LR position ``y * w + x``; scale: SR factor; k: keys per set.

    Returns:
        The ``Figure`` (nothing is shown).

    Raises:
        ValueError: sizes that do not match (named).
    """
    import matplotlib.pyplot as plt

    h, w = damage.shape
    if hr.dim() != 3 or tuple(hr.shape[-2:]) != (h * scale, w * scale):
        raise ValueError(f"hr must be (3, {h * scale}, {w * scale}) for damage {tuple(damage.shape)} at x{scale}, "
                         f"got {tuple(hr.shape)}")
    if similarity.shape != (h * w,) or fit.shape != (h * w,):
        raise ValueError(f"similarity and fit must be ({h * w},), got {tuple(similarity.shape)}, {tuple(fit.shape)}")
    ok = ~(similarity.isnan() | fit.isnan())
    top_sim = torch.where(ok, similarity, -torch.inf).topk(k).indices
    top_fit = torch.where(ok, fit, -torch.inf).topk(k).indices
    centre = (scale - 1) / 2

    def hr_xy(idx):
        return (idx % w * scale + centre).numpy(), (idx // w * scale + centre).numpy()

    fig, axes = plt.subplots(1, 3, figsize=(13, 4.2))
    axes[0].imshow(hr.permute(1, 2, 0).clamp(0, 1).numpy())
    axes[0].scatter(*hr_xy(top_fit), s=26, c="deepskyblue", edgecolors="w", linewidths=0.5, label="best detail fit")
    axes[0].scatter(*hr_xy(top_sim), s=60, facecolors="none", edgecolors="red", linewidths=1.5, label="most similar")
    axes[0].scatter(*hr_xy(torch.tensor([query])), s=110, c="lime", edgecolors="k", label="query")
    axes[0].legend(loc="lower left", fontsize=8)
    axes[0].set_title("HR image")
    axes[1].imshow(damage.sqrt().numpy(), cmap="magma")
    axes[1].set_title("missing detail per LR position")
    axes[2].scatter(similarity[ok].numpy(), fit[ok].numpy(), s=3, c="gray", alpha=0.4)
    axes[2].scatter(similarity[top_fit].numpy(), fit[top_fit].numpy(), s=24, c="deepskyblue", label=f"{k} best fit")
    axes[2].scatter(similarity[top_sim].numpy(), fit[top_sim].numpy(), s=60, facecolors="none", edgecolors="red",
                    linewidths=1.5, label=f"{k} most similar")
    axes[2].set_xlabel("LR similarity to the query (cosine)")
    axes[2].set_ylabel("fit of the true HR detail (cosine)")
    axes[2].legend(fontsize=8)
    for ax in axes[:2]:
        ax.set_xticks([])
        ax.set_yticks([])
    fig.tight_layout()
    return fig


def plot_hashing_comparison(angles: torch.Tensor, theory: torch.Tensor, estimates: Mapping[str, torch.Tensor],
                            angles_collision: torch.Tensor, collision: Mapping[str, torch.Tensor], *,
                            n_bits: int, dim: int, n_buckets: int):
    """Left: variance of the sign-bit angle estimate (theory for Gaussian directions, measured for Gaussian and
    super-bit directions); right: probability of sharing a bucket for the argmax hashes.

    Args:
        angles: ``(A,)`` radians; theory: ``(A,)`` SRP variance ``theta (pi - theta) / K``.
        estimates: ``{"gaussian": (A, draws), "superbit": (A, draws)}`` angle estimates.
        angles_collision: ``(A2,)`` radians; collision: ``{method: (A2,)}`` (methods of ``HASH_METHODS``).
        n_bits, dim, n_buckets: for the titles.

    Returns:
        The ``Figure``.

    Raises:
        KeyError: ``estimates`` without ``"gaussian"`` or ``"superbit"``.
    """
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 3.6))
    deg = torch.rad2deg(angles)
    axes[0].plot(deg, theory, "k--", label="SRP theory θ(π-θ)/K")
    axes[0].plot(deg, estimates["gaussian"].var(1), "o-", ms=4, label="Gaussian (SRP), measured")
    axes[0].plot(deg, estimates["superbit"].var(1), "s-", ms=4, label="super-bit, measured")
    axes[0].set_xlabel("angle between the two vectors (degrees)")
    axes[0].set_ylabel("variance of the angle estimate (rad²)")
    axes[0].set_title(f"sign bits, K = {n_bits}, C = {dim}")
    axes[0].legend(fontsize=8)
    for (method, prob), style in zip(collision.items(), ("s-", "o-", "^-", "v-")):
        axes[1].plot(torch.rad2deg(angles_collision), prob, style, ms=3, label=_HASH_LABELS.get(method, method))
    axes[1].set_xlabel("angle between the two vectors (degrees)")
    axes[1].set_ylabel("P(same bucket)")
    axes[1].set_title(f"argmax hashes, b = {n_buckets}, C = {dim}")
    axes[1].legend(fontsize=8)
    fig.tight_layout()
    return fig


def plot_chunk_scores(scores: Mapping[str, Any]):
    """The scores of one GLA chunk side by side: ``s_f``, ``s_l``, ``s_l`` minus its row mean and the softmax
    weights (rows: query slots; columns: keys ``[own | previous | next chunk]``), the query's row dotted.

    Args:
        scores: what :func:`srlib.course.dlsn.study.chunk_scores` returns (``(c, 3c)`` matrices and ``"slot"``).

    Returns:
        The ``Figure``.

    Raises:
        ValueError: matrices that are not ``(c, 3c)``.
    """
    import matplotlib.pyplot as plt

    c, three_c = scores["s_f"].shape
    if three_c != 3 * c:
        raise ValueError(f"chunk scores must be (c, 3c), got {tuple(scores['s_f'].shape)}")
    panels = [("s_f (dot product)", scores["s_f"], "viridis"), ("s_l (learned)", scores["s_l"], "coolwarm"),
              ("s_l minus its row mean", scores["s_l_centred"], "coolwarm"),
              ("softmax(s_f + s_l)", scores["weights"], "magma")]
    fig, axes = plt.subplots(1, 4, figsize=(16, 3.0), layout="constrained")
    for ax, (title, mat, cmap) in zip(axes, panels):
        lim = float(mat.abs().max()) if cmap == "coolwarm" else None
        lim = lim if lim else None
        im = ax.imshow(mat.detach().numpy(), cmap=cmap, aspect="auto", vmin=-lim if lim else None, vmax=lim)
        ax.axhline(scores["slot"], color="w", lw=0.6, ls=":")
        for xb in (c, 2 * c):
            ax.axvline(xb - 0.5, color="w", lw=0.8)
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("key: own | prev | next chunk")
        fig.colorbar(im, ax=ax, fraction=0.05)
    axes[0].set_ylabel("query slot")
    return fig


def plot_degradations(hr: torch.Tensor, lrs: Mapping[str, torch.Tensor], psnrs: Mapping[str, float], *,
                      hr_box: tuple[int, int, int] = (60, 60, 96), lr_box: tuple[int, int, int] = (20, 20, 32)):
    """An HR crop next to the same region of each degraded LR image (DLSN Eq. 2: ``I = D(k * H) + n``), each
    titled with the PSNR of its bicubic upscaling.

    Args:
        hr: ``(3, H, W)`` RGB in ``[0, 1]``.
        lrs: ``{name: (3, h, w)}`` degraded LR images, RGB in ``[0, 1]`` (nearest-neighbour display).
        psnrs: ``{name: dB}`` for the titles (same keys as ``lrs``).
        hr_box, lr_box: ``(top, left, size)`` of the HR crop and of the LR crops.

    Returns:
        The ``Figure`` (``1 + len(lrs)`` panels).

    Raises:
        ValueError: a crop box outside its image, or ``psnrs`` without a name of ``lrs``.
    """
    import matplotlib.pyplot as plt

    missing = [name for name in lrs if name not in psnrs]
    if missing:
        raise ValueError(f"psnrs has no value for {missing}")
    for label, img, (top, left, size) in [("hr", hr, hr_box)] + [(name, im, lr_box) for name, im in lrs.items()]:
        if top + size > img.shape[-2] or left + size > img.shape[-1]:
            raise ValueError(f"crop {(top, left, size)} lies outside {label} of shape {tuple(img.shape)}")
    fig, axes = plt.subplots(1, 1 + len(lrs), figsize=(3.25 * (1 + len(lrs)), 3.6))
    top, left, size = hr_box
    axes[0].imshow(hr[:, top:top + size, left:left + size].permute(1, 2, 0).numpy())
    axes[0].set_title("HR (crop)")
    top, left, size = lr_box
    for ax, (name, lr) in zip(axes[1:], lrs.items()):
        ax.imshow(lr[:, top:top + size, left:left + size].permute(1, 2, 0).numpy(), interpolation="nearest")
        ax.set_title(f"{name}\nbicubic-up PSNR {psnrs[name]:.2f} dB", fontsize=9)
    for ax in axes:
        ax.set_xticks([])
        ax.set_yticks([])
    fig.tight_layout()
    return fig


def largest_buckets_grid(codes: torch.Tensor, hw: tuple[int, int], n_show: int = 8) -> tuple[torch.Tensor, list[int]]:
    """Rank the buckets of one hash round by size: ``grid[y, x]`` is the size rank (0 = largest) of the bucket of
    position ``(y, x)`` when that bucket is among the ``n_show`` largest, else ``-1``.

    Args:
        codes: ``(L,)`` integer bucket codes of one round, ``L = H * W`` positions in raster order.
        hw: the feature-map size ``(H, W)``; n_show: how many buckets keep their own colour (>= 1).

    Returns:
        ``(grid (H, W) int64, sizes)``: ``sizes`` the sizes of the ranked buckets, largest first (ties: lower
        code first).

    Raises:
        ValueError: codes that are not 1-D, ``H * W != L``, or ``n_show < 1``.
    """
    codes = torch.as_tensor(codes)
    h, w = (int(v) for v in hw)
    if codes.dim() != 1 or codes.numel() != h * w:
        raise ValueError(f"codes must be (L,) with L = H * W = {h * w}, got shape {tuple(codes.shape)}")
    if n_show < 1:
        raise ValueError(f"n_show must be >= 1, got {n_show}")
    ids, counts = torch.unique(codes.long(), return_counts=True)
    order = sorted(range(len(ids)), key=lambda i: (-int(counts[i]), int(ids[i])))[:n_show]
    grid = torch.full((h * w,), -1, dtype=torch.long)
    for rank, i in enumerate(order):
        grid[codes.long() == ids[i]] = rank
    return grid.reshape(h, w), [int(counts[i]) for i in order]


def plot_largest_buckets(image: torch.Tensor, maps: Mapping[str, torch.Tensor], hw: tuple[int, int],
                         n_show: int = 8):
    """Bucket maps that stay readable when a few buckets hold most of the image: the ``n_show`` largest buckets of
    each panel in saturated colours (by size rank, the same colour for the same rank in every panel), every
    other bucket left grey, over the image in grey levels.

    Args:
        image: ``(3, H_img, W_img)`` RGB in ``[0, 1]`` (resampled to the map size for display).
        maps: title -> ``(L,)`` codes of one hash round, ``L = H * W``; hw: ``(H, W)``.
        n_show: coloured buckets per panel (at most 10: the colours of ``tab10``).

    Returns:
        The ``Figure`` (nothing is shown); each title gives the occupied buckets and the largest one's share.

    Raises:
        ValueError: no maps, ``n_show`` outside ``[1, 10]``, or codes that do not match ``hw``.
    """
    import matplotlib.pyplot as plt
    import numpy as np
    from matplotlib.colors import ListedColormap

    if not maps:
        raise ValueError("need at least one bucket map")
    if not 1 <= n_show <= 10:
        raise ValueError(f"n_show must be in [1, 10], got {n_show}")
    gray = (0.299 * image[0] + 0.587 * image[1] + 0.114 * image[2]).detach().cpu().numpy()
    h, w = hw
    extent = (-0.5, w - 0.5, h - 0.5, -0.5)
    cmap = ListedColormap([plt.get_cmap("tab10")(i) for i in range(n_show)])
    fig, axes = plt.subplots(1, 1 + len(maps), figsize=(3.4 * (1 + len(maps)), 3.4 * h / w + 0.6), squeeze=False)
    axes = axes[0]
    axes[0].imshow(image.permute(1, 2, 0).clamp(0, 1).cpu().numpy(), extent=extent)
    axes[0].set_title("image")
    for ax, (title, codes) in zip(axes[1:], maps.items()):
        grid, sizes = largest_buckets_grid(codes, hw, n_show)
        n_occupied = len(torch.unique(torch.as_tensor(codes)))
        ax.imshow(gray, cmap="gray", vmin=0, vmax=1, extent=extent)
        shown = np.ma.masked_less(grid.numpy(), 0)
        ax.imshow(shown, cmap=cmap, vmin=-0.5, vmax=n_show - 0.5, interpolation="nearest", extent=extent)
        ax.set_title(f"{title}: {n_occupied} buckets,\nlargest {sizes[0] / (h * w):.0%} of the positions", fontsize=9)
    for ax in axes:
        ax.set_xticks([])
        ax.set_yticks([])
    fig.text(0.5, 0.01, f"colours: the {n_show} largest buckets of each panel, largest = blue; grey: all other "
             "buckets", ha="center", fontsize=8)
    fig.tight_layout(rect=(0, 0.05, 1, 1))
    return fig
