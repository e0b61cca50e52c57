"""Pictures of attention maps: one query's map on the image, its most attended positions, rows of weights.

The numbers drawn here come from :mod:`srlib.analysis` (:func:`srlib.analysis.maps.query_attention_map`,
:func:`srlib.analysis.hashing.topk_attended_locations`, :mod:`srlib.analysis.sparsity`); this module only
draws them. Every function returns the matplotlib ``Figure`` and never calls ``plt.show()``.

Conventions: images are ``(3, H, W)`` or ``(1, 3, H, W)`` RGB in ``[0, 1]``; a position ``(y, x)`` of an
``H x W`` grid is the sequence index ``p = y * W + x``.
"""

from __future__ import annotations

from typing import Mapping, Sequence

import torch
from torch import Tensor

from srlib.analysis.maps import _as_batched_image

__all__ = ["plot_attention_maps", "plot_attended_locations", "plot_weight_rows", "plot_map_grid"]


def plot_attention_maps(
    image: Tensor,
    maps: Tensor | Sequence[Tensor],
    queries: Sequence[tuple[int, int]],
    *,
    titles: Sequence[str] | None = None,
    cmap: str = "inferno",
    alpha: float = 0.7,
    power: float = 0.5,
    panel_size: float = 3.2,
    ncols: int | None = None,
):
    """Overlay attention maps on the image, one panel per query, with the query pixel marked.

    The first panel shows the image with every query numbered; each next panel shows the image in gray with
    the map of one query on top. Maps are divided by their maximum and raised to ``power`` (``0.5`` by
    default, so weights 100x smaller than the peak still show) before colouring -- the colour bar reads
    "fraction of this query's largest weight". Only the display is rescaled; the maps are not changed.

    Args:
        image: ``(3, H, W)`` or ``(1, 3, H, W)`` RGB in ``[0, 1]``.
        maps: ``(Q, H, W)`` tensor or a sequence of ``Q`` ``(H, W)`` maps (e.g. from
            :func:`query_attention_map`), non-negative.
        queries: ``Q`` pixel positions ``(y, x)``.
        titles: optional ``Q`` panel titles (default ``"query k (y, x)"``).
        cmap, alpha: colour map and opacity of the overlay.
        power: display exponent in ``(0, 1]``.
        panel_size: inches per panel.
        ncols: panels per row (default: all ``Q + 1`` panels in one row); unused panels are hidden.

    Returns:
        The ``matplotlib.figure.Figure`` (call ``plt.show()`` in a notebook).

    Raises:
        ValueError: shapes of image / maps / queries / titles disagree, negative map values, bad ``power``.
    """
    import matplotlib.pyplot as plt

    x = _as_batched_image(image)[0].detach().float().cpu()
    h, w = x.shape[-2:]
    maps = torch.stack([torch.as_tensor(m) for m in maps]) if not isinstance(maps, Tensor) else maps
    maps = maps.detach().float().cpu()
    if maps.dim() != 3 or tuple(maps.shape[-2:]) != (h, w):
        raise ValueError(f"maps must be (Q, {h}, {w}) to match the image, got {tuple(maps.shape)}")
    if len(queries) != maps.shape[0]:
        raise ValueError(f"{len(queries)} queries for {maps.shape[0]} maps")
    if titles is not None and len(titles) != len(queries):
        raise ValueError(f"{len(titles)} titles for {len(queries)} queries")
    if (maps < 0).any():
        raise ValueError("attention maps must be non-negative")
    if not 0 < power <= 1:
        raise ValueError(f"power must be in (0, 1], got {power}")

    rgb = x.clamp(0, 1).permute(1, 2, 0).numpy()
    gray = (x.clamp(0, 1) * torch.tensor([0.299, 0.587, 0.114]).view(3, 1, 1)).sum(0).numpy()
    n = len(queries)
    ncols = n + 1 if ncols is None else int(ncols)
    if ncols < 1:
        raise ValueError(f"ncols must be >= 1, got {ncols}")
    nrows = -(-(n + 1) // ncols)
    fig, grid = plt.subplots(
        nrows, ncols, figsize=(panel_size * ncols + 0.8, (panel_size * h / w + 0.35) * nrows), squeeze=False
    )
    axes = list(grid.flat)
    for ax in axes[n + 1:]:
        ax.axis("off")
    axes[0].imshow(rgb, interpolation="nearest")
    axes[0].set_title("image and queries")
    for k, (qy, qx) in enumerate(queries):
        axes[0].plot(qx, qy, marker="o", ms=9, mfc="none", mec="cyan", mew=2)
        axes[0].annotate(str(k + 1), (qx, qy), xytext=(4, -4), textcoords="offset points", color="cyan",
                         fontsize=11, fontweight="bold")
    im = None
    for k, (qy, qx) in enumerate(queries):
        ax = axes[k + 1]
        m = maps[k]
        shown = (m / m.max().clamp_min(1e-30)) ** power
        ax.imshow(gray, cmap="gray", vmin=0, vmax=1, interpolation="nearest")
        im = ax.imshow(shown.numpy(), cmap=cmap, alpha=alpha, vmin=0, vmax=1, interpolation="nearest")
        ax.plot(qx, qy, marker="x", ms=10, color="cyan", mew=2.5)
        ax.set_title(titles[k] if titles is not None else f"query {k + 1} ({qy}, {qx})")
    for ax in axes[: n + 1]:
        ax.set_xticks([])
        ax.set_yticks([])
    if im is not None:
        cb = fig.colorbar(im, ax=axes, fraction=0.02, pad=0.02)
        cb.set_label(f"(weight / max weight)^{power:g}")
    return fig


def plot_attended_locations(
    image: Tensor,
    query_yx: tuple[int, int],
    panels: Mapping[str, Tensor],
    hw: tuple[int, int] | None = None,
    *,
    panel_size: float = 3.6,
    marker_size: float = 9.0,
):
    """DLSN Fig. 4: a query (green) and the positions it attends to most (red), one panel per setting.

    Args:
        image: ``(3, H_img, W_img)`` RGB in ``[0, 1]`` (may be larger than the feature map, e.g. the HR image).
        query_yx: ``(y, x)`` of the query on the feature map.
        panels: title -> ``(k, 2)`` ``[y, x]`` locations on the feature map (:func:`topk_attended_locations`).
        hw: feature-map size ``(H, W)``; default: the image size.
        panel_size: inches per panel; marker_size: dot area.
    Returns:
        The figure.
    Raises:
        ValueError: bad image shape, no panels, or locations not ``(k, 2)``.
    """
    import matplotlib.pyplot as plt

    img = torch.as_tensor(image).detach().float().cpu()
    if img.dim() != 3 or img.shape[0] != 3:
        raise ValueError(f"image must be (3, H, W) RGB in [0, 1], got {tuple(img.shape)}")
    if not panels:
        raise ValueError("need at least one panel")
    Hi, Wi = img.shape[-2:]
    h, w = (Hi, Wi) if hw is None else (int(hw[0]), int(hw[1]))
    sy, sx = Hi / h, Wi / w

    def to_image(yx: Tensor) -> tuple[Tensor, Tensor]:  # centre of the feature-map cell, in image pixels
        return (yx[..., 1].double() + 0.5) * sx - 0.5, (yx[..., 0].double() + 0.5) * sy - 0.5

    n = len(panels)
    fig, axes = plt.subplots(1, n, figsize=(panel_size * n, panel_size * Hi / Wi + 0.4), squeeze=False)
    qx, qy = to_image(torch.tensor(query_yx))
    rgb = img.clamp(0, 1).permute(1, 2, 0).numpy()
    for ax, (title, loc) in zip(axes[0], panels.items()):
        loc = torch.as_tensor(loc)
        if loc.dim() != 2 or loc.shape[1] != 2:
            raise ValueError(f"locations of panel {title!r} must be (k, 2), got {tuple(loc.shape)}")
        xs, ys = to_image(loc.cpu())
        ax.imshow(rgb)
        ax.scatter(xs.numpy(), ys.numpy(), s=marker_size, c="red", edgecolors="none")
        ax.scatter([float(qx)], [float(qy)], s=8 * marker_size, c="lime", edgecolors="k", linewidths=1, zorder=3)
        ax.set_title(title, fontsize=10)
        ax.set_xticks([])
        ax.set_yticks([])
    fig.tight_layout()
    return fig


def plot_weight_rows(
    rows: Sequence[Sequence[Tensor]],
    row_labels: Sequence[str],
    col_titles: Sequence[str] | None = None,
    *,
    panel_size: tuple[float, float] = (2.0, 1.5),
    color_cycle: Sequence[str] = ("tab:blue", "tab:red", "tab:green", "tab:purple"),
):
    """Bar plots of weight vectors in a grid: one row of panels per normaliser, one column per example.

    The layout of HSPAN Fig. 1 with extra rows (e.g. softmax on top, ST below, same scores in each column).
    Every row of panels shares its y axis, so heights can be compared along a row.

    Args:
        rows: ``R`` sequences of ``C`` 1-D weight vectors (lengths may differ between columns).
        row_labels: ``R`` labels (y-axis label of the first panel of each row).
        col_titles: optional ``C`` column titles.
        panel_size: (width, height) in inches per panel.
        color_cycle: bar colour per row.

    Returns:
        The ``matplotlib.figure.Figure``.

    Raises:
        ValueError: empty ``rows``, rows of different lengths, or label / title counts that do not match.
    """
    import matplotlib.pyplot as plt

    if not rows or not rows[0]:
        raise ValueError("rows must hold at least one non-empty row of weight vectors")
    n_cols = len(rows[0])
    if any(len(r) != n_cols for r in rows):
        raise ValueError(f"every row must hold {n_cols} vectors, got {[len(r) for r in rows]}")
    if len(row_labels) != len(rows):
        raise ValueError(f"{len(row_labels)} row labels for {len(rows)} rows")
    if col_titles is not None and len(col_titles) != n_cols:
        raise ValueError(f"{len(col_titles)} column titles for {n_cols} columns")
    fig, axes = plt.subplots(len(rows), n_cols, figsize=(panel_size[0] * n_cols, panel_size[1] * len(rows)),
                             squeeze=False, sharey="row")
    for r, vectors in enumerate(rows):
        color = color_cycle[r % len(color_cycle)]
        for c, v in enumerate(vectors):
            v = torch.as_tensor(v).detach().double().cpu().reshape(-1)
            ax = axes[r][c]
            ax.bar(range(v.numel()), v.numpy(), width=1.0, color=color)
            ax.set_xticks([])
            ax.tick_params(labelsize=7)
            if r == 0 and col_titles is not None:
                ax.set_title(col_titles[c], fontsize=9)
        axes[r][0].set_ylabel(row_labels[r])
    fig.tight_layout()
    return fig


def plot_map_grid(
    image: Tensor,
    maps: Tensor,
    queries: Sequence[tuple[int, int]],
    row_labels: Sequence[str],
    col_titles: Sequence[str] | None = None,
    *,
    cmap: str = "inferno",
    alpha: float = 0.75,
    power: float = 0.5,
    panel_size: float = 2.2,
):
    """Attention maps in a grid: one row per normaliser / layer / network, one column per query.

    The first column shows the image with the queries numbered (first row only); every other panel shows the
    image in grey with one map on top, scaled as in :func:`srlib.viz.maps.plot_attention_maps`:
    divided by its maximum and raised to ``power``, so that weights far below the peak still show and exact
    zeros stay dark. The query pixel is marked with a cross.

    Args:
        image: ``(3, H, W)`` or ``(1, 3, H, W)`` RGB in ``[0, 1]``.
        maps: ``(R, Q, H, W)`` non-negative maps (e.g. stacked
            :func:`srlib.analysis.maps.query_attention_map` outputs).
        queries: ``Q`` pixel positions ``(y, x)``.
        row_labels: ``R`` labels (written in the first column).
        col_titles: optional ``Q`` titles (default ``"query k"``).
        cmap, alpha, power, panel_size: display options (``0 < power <= 1``).

    Returns:
        The ``matplotlib.figure.Figure``.

    Raises:
        ValueError: shapes of image / maps / queries / labels disagree, negative maps, bad ``power``.
    """
    import matplotlib.pyplot as plt

    if not isinstance(image, Tensor) or image.dim() not in (3, 4) or image.shape[-3] != 3:
        raise ValueError(f"image must be (3, H, W) or (1, 3, H, W), got {getattr(image, 'shape', type(image))}")
    img = (image[0] if image.dim() == 4 else image).detach().float().cpu().clamp(0, 1)
    h, w = img.shape[-2:]
    if not isinstance(maps, Tensor) or maps.dim() != 4 or tuple(maps.shape[-2:]) != (h, w):
        raise ValueError(f"maps must be (R, Q, {h}, {w}), got {getattr(maps, 'shape', type(maps))}")
    n_rows, n_q = maps.shape[:2]
    if len(queries) != n_q:
        raise ValueError(f"{len(queries)} queries for {n_q} map columns")
    if len(row_labels) != n_rows:
        raise ValueError(f"{len(row_labels)} row labels for {n_rows} map rows")
    if col_titles is not None and len(col_titles) != n_q:
        raise ValueError(f"{len(col_titles)} column titles for {n_q} queries")
    if bool((maps < 0).any()):
        raise ValueError("attention maps must be non-negative")
    if not 0 < power <= 1:
        raise ValueError(f"power must be in (0, 1], got {power}")
    maps = maps.detach().float().cpu()
    gray = (img * torch.tensor([0.299, 0.587, 0.114]).view(3, 1, 1)).sum(0).numpy()
    fig, axes = plt.subplots(n_rows, n_q + 1, figsize=(panel_size * (n_q + 1), panel_size * n_rows * h / w + 0.3),
                             squeeze=False)
    im = None
    for r in range(n_rows):
        ax0 = axes[r][0]
        if r == 0:
            ax0.imshow(img.permute(1, 2, 0).numpy(), interpolation="nearest")
            for k, (qy, qx) in enumerate(queries):
                ax0.plot(qx, qy, marker="o", ms=8, mfc="none", mec="cyan", mew=2)
                ax0.annotate(str(k + 1), (qx, qy), xytext=(4, -4), textcoords="offset points", color="cyan",
                             fontsize=10, fontweight="bold")
            ax0.set_title("image, queries", fontsize=9)
        ax0.text(0.5, -0.08 if r == 0 else 0.5, row_labels[r], transform=ax0.transAxes, ha="center",
                 va="top" if r == 0 else "center", fontsize=10, fontweight="bold")
        if r > 0:
            ax0.axis("off")
        for q, (qy, qx) in enumerate(queries):
            ax = axes[r][q + 1]
            m = maps[r, q]
            shown = (m / m.max().clamp_min(1e-30)) ** power
            ax.imshow(gray, cmap="gray", vmin=0, vmax=1, interpolation="nearest")
            im = ax.imshow(shown.numpy(), cmap=cmap, alpha=alpha, vmin=0, vmax=1, interpolation="nearest")
            ax.plot(qx, qy, marker="x", ms=8, color="cyan", mew=2)
            if r == 0:
                ax.set_title(col_titles[q] if col_titles is not None else f"query {q + 1}", fontsize=9)
    for row in axes:
        for ax in row:
            ax.set_xticks([])
            ax.set_yticks([])
    if im is not None:
        cb = fig.colorbar(im, ax=[a for row in axes for a in row[1:]], fraction=0.02, pad=0.01)
        cb.set_label(f"(weight / max weight)^{power:g}")
    return fig
