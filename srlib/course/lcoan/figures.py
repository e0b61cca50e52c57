"""Figures of notebook 05 (LCoAN): k-means iterations, EMA runs, bucket recall, the training run and the
overlap of shallow and deep attention (Fig. 5). Each function draws and returns a ``Figure`` (nothing shown).

Source: Zhao et al., *Efficient Learnable Collaborative Attention for Single Image Super-Resolution*
(Eqs. 7-10, Figs. 3a and 5). The numbers drawn come from :mod:`srlib.course.lcoan.study` and
:mod:`srlib.analysis.overlap`.
"""

from __future__ import annotations

from typing import Mapping, Sequence

import torch
from torch import Tensor

__all__ = ["plot_kmeans_steps", "plot_ema_runs", "plot_bucket_recall", "plot_training_runs", "plot_depth_agreement",
           "plot_layer_overlaps"]


def _hide_ticks(ax) -> None:
    ax.set_xticks([])
    ax.set_yticks([])


def plot_kmeans_steps(image: Tensor, codes: Sequence[Tensor], shown: Sequence[int], n_clusters: int):
    """The image ``(3, H, W)`` RGB in [0, 1] and the cluster map after each iteration in ``shown``
    (``codes[t]``: ``(H*W,)`` cluster ids under the centroids of iteration ``t``; 0 = the seeds)."""
    import matplotlib.pyplot as plt

    from srlib.viz.buckets import bucket_colormap

    h, w = image.shape[-2:]
    cmap = bucket_colormap(n_clusters)
    fig, axes = plt.subplots(1, len(shown) + 1, figsize=(3 * (len(shown) + 1), 3.5))
    axes[0].imshow(image.permute(1, 2, 0).numpy())
    axes[0].set_title(f"LR crop ({h}x{w})")
    for ax, t in zip(axes[1:], shown):
        ax.imshow(codes[t].view(h, w).numpy(), cmap=cmap, vmin=-0.5, vmax=n_clusters - 0.5, interpolation="nearest")
        ax.set_title("seeds only" if t == 0 else f"after iteration {t}")
    for ax in axes:
        _hide_ticks(ax)
    fig.suptitle("k-means cluster of every position (colour = cluster id; ids carry no order)")
    fig.tight_layout(rect=(0, 0, 1, 0.93))  # room for the suptitle above the panel titles
    return fig


def plot_ema_runs(runs: Mapping[str, tuple[Sequence[float], Sequence[float]]]):
    """Centroid movement (log scale) and largest-cluster share per EMA step: ``{"label": (moved, largest)}``
    as returned by :func:`srlib.course.lcoan.study.ema_run`; labels containing "literal" are drawn dashed black."""
    import matplotlib.pyplot as plt

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 3.6))
    for label, (moved, largest) in runs.items():
        style = dict(color="k", ls="--") if "literal" in label else {}
        ax1.plot(moved, label=label, **style)
        ax2.plot(largest, label=label, **style)
    ax1.set(xlabel="EMA steps on the same batch", ylabel="mean ‖u_t − u_0‖", yscale="log", title="centroid movement")
    ax2.set(xlabel="EMA steps on the same batch", ylabel="share of positions", title="largest cluster")
    ax1.legend(fontsize=8)
    ax2.legend(fontsize=8)
    fig.tight_layout()
    return fig


def plot_bucket_recall(rows: Sequence[dict], window: int, length: int):
    """Bars of bucket recall and window recall with the chance levels, one panel per number of buckets
    (rows of :func:`srlib.course.lcoan.study.compare_bucketings`; ``length`` = L, for the window chance level)."""
    import matplotlib.pyplot as plt

    ks = sorted({r["K"] for r in rows})
    fig, axes = plt.subplots(1, len(ks), figsize=(5.5 * len(ks), 3.4), sharey=True, squeeze=False)
    for ax, k in zip(axes[0], ks):
        sel = [r for r in rows if r["K"] == k]
        pos = torch.arange(len(sel)).float()
        ax.bar(pos - 0.2, [r["recall"] for r in sel], 0.4, label="same bucket (Eq. 7)")
        ax.bar(pos + 0.2, [r["window"] for r in sel], 0.4, label="attended windows (code)")
        ax.scatter(pos - 0.2, [r["share"] for r in sel], color="k", marker="_", s=300, zorder=3,
                   label="bucket share (chance level)")
        ax.axhline(3 * window / length, color="gray", ls=":", lw=1, label=f"window chance (one round): 3·{window} / L")
        ax.set_xticks(pos.tolist(), [r["method"] for r in sel])
        ax.set_title(f"K = {k} buckets, windows of {window}")
    axes[0][0].set_ylabel("fraction of the true neighbours")
    handles, labels = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=4, fontsize=8)
    fig.tight_layout(rect=(0, 0.08, 1, 1))
    return fig


def plot_training_runs(runs: Mapping[str, tuple], init_means: Tensor, n_clusters: int):
    """Loss, centroid movement and cluster use of training runs: ``{"label": (net, log, history)}`` with
    ``log = {"means": [centroids per step], "sizes": [cluster sizes per step]}`` and ``history`` the logged
    ``{"iteration", "loss"}`` entries."""
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(14, 3.5))
    for (name, (_, log, hist)), col, ls in zip(runs.items(), ("C0", "C1", "C2"), ("-", "--", ":")):
        axes[0].plot([h["iteration"] for h in hist], [h["loss"] for h in hist], ls, color=col, label=name)
        axes[1].plot([(m - init_means).norm(dim=-1).mean().item() for m in log["means"]], ls, color=col, label=name)
        axes[2].plot([(s.max() / s.sum()).item() for s in log["sizes"]], ls, color=col,
                     label=f"{name}: largest cluster / batch")
        axes[2].plot([((s > 0).sum() / n_clusters).item() for s in log["sizes"]], ls, color=col, alpha=0.45, lw=2.5,
                     label=f"{name}: clusters in use / {n_clusters}")
    axes[0].set(xlabel="iteration", ylabel="L1 loss", title="training loss (logged mean)")
    axes[1].set(xlabel="iteration", ylabel="mean ‖u_t − u_0‖", title="centroid movement")
    axes[2].set(xlabel="iteration", ylabel="share", title="cluster use on each training batch")
    for a in axes:
        a.legend(fontsize=7)
    fig.tight_layout()
    return fig


def plot_depth_agreement(curves: Mapping[str, dict], agreement: Mapping[str, dict], labels: Sequence[str],
                         marks: Sequence[int], chance: float):
    """Fig. 5 across depth: left, overlap rate and top-k overlap of the maps at each depth with ``X_1``
    (``curves[name]`` from :func:`srlib.analysis.overlap.depth_overlap_curve`); right, cluster and attended-key
    agreement of the shallow pattern (``agreement[name]`` with ``code_agreement`` and ``pattern_overlap``).
    Names ``"trained"`` solid, others dashed; ``marks``: depths drawn as vertical lines."""
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(13, 3.8), sharey=True)
    x_pos = list(range(len(labels)))
    for name in curves:
        ls, mfc = ("-", None) if name == "trained" else ("--", "none")
        axes[0].plot(x_pos, curves[name]["overlap"].tolist(), "o" + ls, color="C0", mfc=mfc, label=f"{name}: overlap rate")
        axes[0].plot(x_pos, curves[name]["topk"].tolist(), "s" + ls, color="C3", mfc=mfc, label=f"{name}: top-k overlap")
        axes[1].plot(x_pos, agreement[name]["code_agreement"].tolist(), "o" + ls, color="C2", mfc=mfc,
                     label=f"{name}: same cluster")
        axes[1].plot(x_pos, agreement[name]["pattern_overlap"].tolist(), "s" + ls, color="C4", mfc=mfc,
                     label=f"{name}: attended keys (Jaccard)")
    axes[1].axhline(chance, color="gray", ls=":", lw=1, label="Jaccard of two random key sets")
    axes[0].set(ylabel="agreement with X_1", ylim=(0, 1.05), title="maps softmax(cos/0.1) of the features at each depth")
    axes[1].set(title="the shallow LCoA's pattern recomputed from the features at each depth")
    for ax in axes:
        for m in marks:
            ax.axvline(m, color="k", lw=0.8, alpha=0.4)
        ax.set_xticks(x_pos, labels, rotation=45, fontsize=8)
        ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


def plot_layer_overlaps(per_layer: Mapping[str, dict], uniform: float, top_k: int = 16):
    """Overlap rate and top-k overlap of each unit's map with the first unit's (``per_layer[name]`` from
    :func:`srlib.analysis.overlap.layer_overlaps`), with the overlap of a uniform map as a reference line."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.4))
    for (name, res), ls, mfc in zip(per_layer.items(), ("--", "-"), ("none", None)):
        units = range(1, len(res["overlap"]) + 1)
        ax.plot(units, res["overlap"].tolist(), "o" + ls, color="C0", mfc=mfc, label=f"{name}: overlap rate")
        ax.plot(units, res["topk"].tolist(), "s" + ls, color="C3", mfc=mfc, label=f"{name}: top-{top_k} overlap")
    ax.axhline(uniform, color="gray", ls=":", lw=1, label="overlap of A_1 with a uniform map")
    n = len(next(iter(per_layer.values()))["overlap"])
    ax.set(xlabel="feature aggregation unit m", ylabel="agreement with unit 1", ylim=(0, 1.05),
           title="overlap of A_m with the shallowest map A_1", xticks=range(1, n + 1))
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def plot_codes(image: Tensor, codes: Tensor, n_clusters: int):
    """An image ``(3, H, W)`` RGB in [0, 1] next to its k-means code map (``codes``: ``(H*W,)`` cluster ids);
    the title counts the clusters in use."""
    import matplotlib.pyplot as plt

    from srlib.viz.buckets import bucket_colormap

    h, w = image.shape[-2:]
    fig, ax = plt.subplots(1, 2, figsize=(7, 3.4))
    ax[0].imshow(image.permute(1, 2, 0).numpy())
    ax[0].set_title(f"input ({h}x{w})")
    ax[1].imshow(codes.view(h, w).numpy(), cmap=bucket_colormap(n_clusters), vmin=-0.5, vmax=n_clusters - 0.5)
    used = int((torch.bincount(codes.flatten(), minlength=n_clusters) > 0).sum())
    ax[1].set_title(f"k-means codes: {used} of {n_clusters} clusters used")
    for a in ax:
        _hide_ticks(a)
    fig.tight_layout()
    return fig
