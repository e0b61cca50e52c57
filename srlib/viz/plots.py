"""Matplotlib figures used by the notebooks and benchmarks: softmax flattening (HSPAN Fig. 1), cost-vs-size
plots (live measurements and the benchmark harness's results) and training-loss curves.

The numbers come from :mod:`srlib.analysis` (:mod:`srlib.analysis.measure`, :mod:`srlib.analysis.bench`).
Every function returns the ``Figure`` (or ``Axes``); nothing is shown or saved here (call ``plt.show()`` in a
notebook; :func:`srlib.analysis.bench.write_results` saves a :func:`plot_benchmark` figure).
"""

from __future__ import annotations

import math
from statistics import NormalDist
from typing import Any, Mapping, Sequence

from srlib.analysis.bench import MODES, fit_slopes
from srlib.analysis.measure import loglog_slope

__all__ = [
    "plot_softmax_examples", "plot_flattening_curves", "plot_loglog_cost", "plot_loss_history", "plot_scaling",
    "plot_benchmark",
]


def plot_softmax_examples(stats: Mapping, *, ncols: int = 3, panel_size: float = 2.6):
    """Bar plots of one softmax distribution per sequence length, on a shared y-axis (HSPAN Fig. 1).

    Args:
        stats: output of :func:`srlib.analysis.maps.softmax_flattening` (uses ``"n"`` and ``"example"``).
        ncols: panels per row.
        panel_size: inches per panel.

    Returns:
        The ``Figure``.

    Raises:
        ValueError: ``stats`` lacks ``"n"``/``"example"`` or their lengths differ; ``ncols < 1``.
    """
    import matplotlib.pyplot as plt

    if "n" not in stats or "example" not in stats or len(stats["n"]) != len(stats["example"]):
        raise ValueError("stats must come from softmax_flattening (keys 'n' and 'example' of equal length)")
    if ncols < 1:
        raise ValueError(f"ncols must be >= 1, got {ncols}")
    ns = [int(n) for n in stats["n"]]
    k = len(ns)
    nrows = -(-k // ncols)
    fig, grid = plt.subplots(nrows, ncols, figsize=(panel_size * ncols, panel_size * 0.8 * nrows),
                             sharey=True, squeeze=False)
    axes = list(grid.flat)
    top = max(float(p.max()) for p in stats["example"])
    for ax, n, p in zip(axes, ns, stats["example"]):
        ax.bar(range(n), p.detach().cpu().numpy(), width=1.0, color="tab:blue")
        ax.axhline(1.0 / n, color="tab:red", lw=1, ls="--")
        side = math.isqrt(n)
        label = f"n = {side}²" if side * side == n else f"n = {n}"
        ax.set_title(f"{label}, max {float(p.max()):.3f}", fontsize=10)
        ax.set_xlim(-0.5, n - 0.5)
        ax.set_ylim(0, top * 1.05)
        ax.set_xticks([])
    for ax in axes[k:]:
        ax.axis("off")
    for row in grid:
        row[0].set_ylabel("softmax weight")
    fig.suptitle("softmax of n scores drawn from N(0, 1)   (dashed: uniform 1/n)")
    fig.tight_layout()
    return fig


def plot_flattening_curves(stats: Mapping):
    """Three panels against ``n``: mean max weight, mean entropy (with ``ln n`` and ``ln n - 1/2``), top-k mass.

    The dashed reference curves are the large-``n`` approximations of
    :func:`srlib.analysis.maps.softmax_flattening`: largest weight ``exp(m_n - 1/2) / n`` with ``m_n`` the
    expected maximum of ``n`` standard normals (Blom's approximation), entropy ``ln n - 1/2``.

    Args:
        stats: output of :func:`srlib.analysis.maps.softmax_flattening`.

    Returns:
        The ``Figure``.
    """
    import matplotlib.pyplot as plt
    import numpy as np

    n = stats["n"].double().numpy()
    fig, ax = plt.subplots(1, 3, figsize=(13, 3.6))
    ax[0].errorbar(n, stats["max_weight"].numpy(), yerr=stats["max_weight_std"].numpy(), fmt="o-", capsize=3,
                   label="measured (mean ± std)")
    # Expected maximum of n standard normals, Blom's approximation Phi^-1((n - 3/8) / (n + 1/4)).
    m_n = np.array([NormalDist().inv_cdf((v - 0.375) / (v + 0.25)) for v in n])
    ax[0].plot(n, np.exp(m_n - 0.5) / n, "k--", label=r"$e^{m_n-1/2}/n$ ($m_n$: expected max)")
    ax[0].plot(n, 1 / n, ":", color="tab:red", label="uniform 1/n")
    ax[0].set_title("largest weight")
    ax[1].plot(n, stats["entropy"].numpy(), "o-", label="measured")
    ax[1].plot(n, np.log(n), ":", color="tab:red", label=r"uniform: $\ln n$")
    ax[1].plot(n, np.log(n) - 0.5, "k--", label=r"$\ln n - 1/2$")
    ax[1].set_title("entropy (nats)")
    ax[2].plot(n, stats["top_mass"].numpy(), "o-", label=f"top {stats['top_k']} weights")
    ax[2].plot(n, stats["top_k"] / n, ":", color="tab:red", label="uniform")
    ax[2].set_title(f"mass of the {stats['top_k']} largest weights")
    for a in ax:
        a.set_xlabel("sequence length n")
        a.legend(fontsize=8)
        a.grid(alpha=0.3)
    fig.tight_layout()
    return fig


def plot_loglog_cost(
    lengths: Sequence[float],
    series: Mapping[str, Sequence[float]],
    *,
    ylabel: str,
    fit_from: int = 0,
    title: str | None = None,
):
    """Log-log plot of cost against sequence length, each series labelled with its fitted exponent.

    Args:
        lengths: ``L`` values (x axis), positive.
        series: label -> costs (same length as ``lengths``, positive).
        ylabel: y-axis label (e.g. ``"seconds"``).
        fit_from: index of the first point used in the slope fit (small sizes are often overhead-bound).
        title: optional title.

    Returns:
        ``(figure, slopes)`` with ``slopes`` a dict label -> fitted exponent (:func:`loglog_slope`).

    Raises:
        ValueError: from :func:`loglog_slope` (too few points, non-positive values).
    """
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.5, 4))
    slopes = {}
    for label, ys in series.items():
        slope = loglog_slope(lengths[fit_from:], ys[fit_from:])
        slopes[label] = slope
        ax.loglog(lengths, ys, "o-", label=f"{label}: slope {slope:.2f}")
    x0, y0 = float(lengths[fit_from]), min(float(ys[fit_from]) for ys in series.values())
    xs = [float(v) for v in lengths[fit_from:]]
    ax.loglog(xs, [y0 * (v / x0) ** 2 for v in xs], "k:", label="reference slope 2")
    from matplotlib.ticker import NullFormatter

    ax.set_xticks([float(v) for v in lengths])
    ax.set_xticklabels([f"{float(v):g}" for v in lengths], rotation=45, fontsize=8)
    ax.xaxis.set_minor_formatter(NullFormatter())
    ax.set_xlabel("sequence length L = H·W")
    ax.set_ylabel(ylabel)
    if title:
        ax.set_title(title)
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig, slopes


def plot_loss_history(histories: Mapping | Sequence, title: str = "", *, ax=None):
    """Training loss against iteration, one line per run (the ``"train"`` log of :func:`srlib.train.train`).

    Args:
        histories: one run's log (``result["history"]`` or its ``"train"`` list of ``{"iteration", "loss"}``
            dicts) or ``{label: log}`` for several runs (drawn with a legend).
        title: axes title; ax: axes to draw on (a new ``5 x 3`` inch figure if ``None``).

    Returns:
        The ``Figure``.

    Raises:
        ValueError: a log with no ``"iteration"`` / ``"loss"`` entries.
    """
    import matplotlib.pyplot as plt

    def entries(log):
        log = log.get("train", log) if isinstance(log, Mapping) else log
        if not log or not all(isinstance(h, Mapping) and "iteration" in h and "loss" in h for h in log):
            raise ValueError("a training log must be a non-empty list of {'iteration', 'loss'} entries")
        return [h["iteration"] for h in log], [h["loss"] for h in log]

    single = not isinstance(histories, Mapping) or "train" in histories
    runs = {"": histories} if single else dict(histories)
    if ax is None:
        _, ax = plt.subplots(figsize=(5, 3))
    for label, log in runs.items():
        its, losses = entries(log)
        ax.plot(its, losses, "o-", ms=3, label=label or None)
    ax.set_xlabel("iteration")
    ax.set_ylabel("L1 loss (RGB in [0, 1])")
    ax.set_title(title)
    if not single:
        ax.legend()
    return ax.figure


def plot_scaling(rows: Sequence[dict[str, Any]], metric: str = "time_median_s", mode: str = "forward", *,
                 cases: Sequence[str] | None = None, ax=None, title: str | None = None):
    """Log-log plot of ``metric`` against ``L`` for each case (``"ok"`` rows of ``mode``), the fitted slope in
    the legend, with dashed reference lines of slope 1 and 2.

    Returns:
        the matplotlib ``Axes``.
    """
    import matplotlib.pyplot as plt

    if ax is None:
        _, ax = plt.subplots(figsize=(6, 4.5))
    slopes = fit_slopes(rows, metric)
    names = list(dict.fromkeys(r["case"] for r in rows)) if cases is None else list(cases)
    styles = ["o-", "s-", "^-", "D-", "v-", "P-", "X-", "*-"]
    lo = hi = None
    for i, name in enumerate(names):
        pts = sorted((r["L"], r[metric]) for r in rows if r["case"] == name and r["mode"] == mode
                     and r["status"] == "ok" and r.get(metric) not in (None, "") and float(r[metric]) > 0)
        if not pts:
            continue
        xs, ys = zip(*pts)
        s = slopes.get((name, mode))
        label = f"{name} ({s:.2f})" if s is not None else name
        ax.loglog(xs, ys, styles[i % len(styles)], label=label, ms=4, color=plt.cm.tab20(i % 20))
        lo = min(xs[0], lo or xs[0])
        hi = max(xs[-1], hi or xs[-1])
        if i == 0:
            y_ref = ys[0]
    if lo is not None and hi > lo:
        for p, st in ((1, "--"), (2, ":")):
            ax.loglog([lo, hi], [y_ref, y_ref * (hi / lo) ** p], "k" + st, lw=0.8, label=f"slope {p}")
    ax.set_xlabel("L = H·W")
    ax.set_ylabel({"time_median_s": "median time (s)", "time_min_s": "fastest call (s)",
                   "peak_mib": "peak memory (MiB)", "gflops": "GFLOPs"}.get(metric, metric))
    ax.set_title(title or f"{mode}")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=7, ncol=2, title="case (fitted slope)", title_fontsize=7)
    return ax


def plot_benchmark(rows: Sequence[dict[str, Any]], info: Mapping[str, str], label: str):
    """The harness's summary figure: fastest-call time and peak memory against ``L``, one row of panels per mode.

    Args:
        rows: result rows of :func:`srlib.analysis.bench.run_isolated` / ``read_csv``; info: the machine
            (:func:`srlib.analysis.bench.machine_info`), written in the title; label: the file stem.
    Returns:
        a ``matplotlib.figure.Figure`` not registered with pyplot (nothing to close), for
        :func:`srlib.analysis.bench.write_results`.
    """
    from matplotlib.figure import Figure

    modes = [m for m in MODES if any(r["mode"] == m for r in rows)]
    fig = Figure(figsize=(13, 5 * max(len(modes), 1)))
    axes = fig.subplots(max(len(modes), 1), 2, squeeze=False)
    for i, m in enumerate(modes):
        plot_scaling(rows, "time_min_s", m, ax=axes[i][0], title=f"{m}: time (fastest timed call)")
        plot_scaling(rows, "peak_mib", m, ax=axes[i][1], title=f"{m}: peak memory")
    fig.suptitle(f"{label}: {info.get('cpu', '')} {info.get('gpu', '')}, torch {info.get('torch')}, "
                 f"{info.get('threads')} threads", fontsize=9)
    fig.tight_layout()
    return fig
