"""Measurements of notebook 05 (LCoAN) that are too long for a notebook cell: the attention stacks of the
paper's Table I, the k-means vs LSH bucket comparison (the idea of Fig. 3a) and repeated EMA updates.

Source: Zhao et al., *Efficient Learnable Collaborative Attention for Single Image Super-Resolution*
(Table I cases 2-5, Fig. 3a, Eq. 10); official code ``YigangZhao/LCoAN`` (``src/model/kmeans_attention.py``).
No plotting here (see :mod:`srlib.course.lcoan.figures`). The ``format_*`` functions turn these measurements into
the notebook's text tables; :func:`centroid_log` records the k-means centroids during a training run.
"""

from __future__ import annotations

import contextlib
from typing import Iterator, Mapping, Sequence

import torch
from torch import Tensor, nn

from srlib.attention.buckets import BucketLayout
from srlib.attention.hashing import spherical_lsh
from srlib.attention.lcoa import LCoA, assign_clusters, cluster_sizes, ema_centroids, init_centroids
from srlib.attention.nla import NonLocalAttention, non_local_attention, softmax_last

__all__ = ["NLAStack", "LCoAStack", "DenseCoAStack", "table1_stacks", "compare_bucketings", "ema_run",
           "format_kmeans_trace", "format_bucketings", "format_cost_table", "format_depth_table", "centroid_log"]


class NLAStack(nn.Module):
    """Table I case 2: ``modules`` dense non-local attentions (softmax, the ``L x L`` map is materialised).

    ``(B, C, H, W) -> (B, C, H, W)``, ``C = channels``.
    """

    def __init__(self, channels: int = 128, modules: int = 10) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(NonLocalAttention(channels, 1, 0.1, normalizer=softmax_last)
                                    for _ in range(modules))

    def forward(self, x: Tensor) -> Tensor:
        for block in self.blocks:
            x = block(x)
        return x


class LCoAStack(nn.Module):
    """Table I case 3 (``collaborative=False``: every module an LSP) or case 5 (``True``: one LSP, the rest
    CoA modules reusing its pattern and weights, Eq. 12). ``(B, C, H, W) -> (B, C, H, W)``."""

    def __init__(self, collaborative: bool, channels: int = 128, modules: int = 10, n_clusters: int = 128,
                 window_size: int = 384) -> None:
        super().__init__()
        self.collaborative = collaborative
        self.blocks = nn.ModuleList(LCoA(channels, 3, 1, n_clusters=n_clusters, window_size=window_size,
                                         res_scale=0.1) for _ in range(modules))

    def forward(self, x: Tensor) -> Tensor:
        shared = None
        for block in self.blocks:
            x, shared = block(x, shared if self.collaborative else None)
        return x


class DenseCoAStack(nn.Module):
    """Table I case 4: dense softmax weights ``A_s`` computed by the first module and applied to the values
    ``W_m(X_m)`` (1x1 convs) of the others: ``X_{m+1} = X_m + 0.1 A_s W_m(X_m)``. ``(B, C, H, W)`` in and out."""

    def __init__(self, channels: int = 128, modules: int = 10) -> None:
        super().__init__()
        self.first = NonLocalAttention(channels, 1, 0.1, normalizer=softmax_last)
        self.values = nn.ModuleList(nn.Conv2d(channels, channels, 1) for _ in range(modules - 1))

    def forward(self, x: Tensor) -> Tensor:
        b, c, h, w = x.shape
        q, k, v = self.first.embed(x)
        y, weights = non_local_attention(q, k, v, softmax_last, return_map=True)  # (B, L, L) kept
        x = x + 0.1 * y.transpose(1, 2).reshape(b, c, h, w)
        for conv in self.values:
            y = torch.bmm(weights, conv(x).flatten(2).transpose(1, 2))  # A_s W_m(X_m)
            x = x + 0.1 * y.transpose(1, 2).reshape(b, c, h, w)
        return x


def table1_stacks(channels: int = 128, modules: int = 10, seed: int = 0) -> dict[str, nn.Module]:
    """The four attention stacks of LCoAN Table I at the paper's width, in eval mode:
    ``{"NLA", "LSP", "CoA", "LCoA"}`` (128 clusters, windows of 384), initialised after ``manual_seed(seed)``."""
    torch.manual_seed(seed)
    stacks = {"NLA": NLAStack(channels, modules), "LSP": LCoAStack(False, channels, modules),
              "CoA": DenseCoAStack(channels, modules), "LCoA": LCoAStack(True, channels, modules)}
    return {k: s.eval() for k, s in stacks.items()}


def compare_bucketings(x: Tensor, neighbours: Tensor, n_buckets: Sequence[int] = (16, 128), window: int = 384,
                       methods: Sequence[tuple[str, int]] = (("k-means", 1), ("LSH", 1), ("LSH", 2), ("LSH", 4)),
                       seeds: Sequence[int] = (0, 1)) -> list[dict]:
    """How often the true neighbours of a query share its bucket, for k-means and spherical-LSH buckets.

    Args:
        x: embeddings ``(B, L, C)``; neighbours: ``(B, L, k)`` indices of each query's true neighbours
            (:func:`srlib.analysis.overlap.true_neighbours`).
        n_buckets: numbers of buckets ``K`` (clusters for k-means); window: chunk size of the sorted order.
        methods: ``(name, rounds)`` with name ``"k-means"`` (official initialisation, one round) or ``"LSH"``.
        seeds: the generator seeds averaged over.

    Returns:
        one row per (K, method): ``{"K", "method", "rounds", "recall", "share", "window"}``: bucket recall
        (Eq. 7 taken literally), bucket share (the chance level) and window recall (what the code attends),
        each a mean over queries and seeds.
    """
    from srlib.analysis.overlap import bucket_recall, bucket_share, window_recall

    rows = []
    for k in n_buckets:
        for method, rounds in methods:
            stats = []
            for seed in seeds:
                gen = torch.Generator().manual_seed(seed)
                if method == "k-means":
                    codes = assign_clusters(x, init_centroids(x, k, 1, generator=gen))
                elif method == "LSH":
                    codes, _ = spherical_lsh(x, k, rounds, generator=gen)
                else:
                    raise ValueError(f"compare_bucketings: method must be 'k-means' or 'LSH', got {method!r}")
                layout = BucketLayout.from_codes(codes, window)
                stats.append([bucket_recall(neighbours, codes).mean().item(), bucket_share(codes).mean().item(),
                              window_recall(neighbours, layout).mean().item()])
            recall, share, win = torch.tensor(stats).mean(0).tolist()
            rows.append(dict(K=k, method=f"{method} x{rounds}", rounds=rounds, recall=recall, share=share, window=win))
    return rows


def ema_run(means: Tensor, x: Tensor, decay: float, target: str, steps: int = 150) -> tuple[list[float], list[float]]:
    """Apply the EMA of LCoAN Eq. (10) ``steps`` times on the same batch ``x`` (B, L, C), from centroids
    ``means`` (R, K, C); ``target`` as :func:`srlib.attention.lcoa.ema_centroids` (``"centroid"`` or ``"sum"``).

    Returns:
        ``(moved, largest)``: after each step, the mean distance of the centroids from ``means``, and (before
        the step) the share of positions in the largest cluster.
    """
    k = means.shape[-2]
    m, moved, largest = means.clone(), [], []
    for _ in range(steps):
        c = assign_clusters(x, m)
        largest.append(cluster_sizes(c, k).max().item() / x.shape[1])
        m = ema_centroids(m, x, c, decay, target)
        moved.append((m - means).norm(dim=-1).mean().item())
    return moved, largest


def centre_crops(dataset, size: int = 48) -> list[Tensor]:
    """The central ``size x size`` LR crop of every item of ``dataset`` (items with ``"lr"`` (3, h, w)), each
    ``(1, 3, size, size)`` RGB in [0, 1]."""
    crops = []
    for i in range(len(dataset)):
        lr = dataset[i]["lr"]
        top, left = (lr.shape[1] - size) // 2, (lr.shape[2] - size) // 2
        crops.append(lr[None, :, top: top + size, left: left + size].contiguous())
    return crops


def depth_study(net: nn.Module, probes: Sequence[Tensor], depth_names: Sequence[str], reference: int,
                top_k: int = 16) -> tuple[dict, dict]:
    """Fig. 5 of LCoAN across the depth of one network: how the features at each depth (inputs of the modules
    ``depth_names``) agree with those at ``depth_names[reference]`` (the input ``X_1`` of the shallow LCoA).

    Returns:
        ``(curve, agreement)``: ``curve`` from :func:`srlib.analysis.overlap.depth_overlap_curve` (overlap rate and
        top-k overlap of the parameter-free maps, mean and ``per_input``); ``agreement`` with
        ``code_agreement`` and ``pattern_overlap`` (:func:`srlib.analysis.overlap.pattern_agreement` of the shallow
        LCoA ``net.body[0].attention[0]`` run on each depth's features), each a ``(depths,)`` mean over probes.
    """
    from srlib.analysis.capture import module_inputs
    from srlib.analysis.overlap import depth_overlap_curve, pattern_agreement

    curve = depth_overlap_curve(net, list(probes), list(depth_names), reference=reference, top_k=top_k)
    shallow = net.body[0].attention[0]  # the shallow LCoA: computes the shared pattern
    per_probe = [pattern_agreement(shallow, module_inputs(net, x, list(depth_names)), reference=reference)
                 for x in probes]
    agreement = {k: torch.stack([r[k] for r in per_probe]).mean(0) for k in ("code_agreement", "pattern_overlap")}
    return curve, agreement


def first_pattern(net: nn.Module, probe: Tensor, name: str = "body.0.attention.0") -> dict:
    """The sparse pattern the first LCoA of ``net`` computes on ``probe`` (1, 3, h, w), in eval mode.

    Returns:
        ``{"codes" (B, R, L), "emb" (B, L, C) its conv_match embedding, "layout", "mask" (B, L, L) bool: the keys
        each query attends to}``.
    """
    from srlib.analysis.capture import module_inputs
    from srlib.analysis.overlap import bucketed_to_dense

    lcoa = net.body[0].lcoa
    emb_in = module_inputs(net, probe, [name])[name]
    lcoa.keep_details = True
    try:
        with torch.no_grad():
            lcoa(emb_in)
        d = lcoa.details
    finally:
        lcoa.keep_details = False
    emb = lcoa.conv_match(emb_in).flatten(2).transpose(1, 2).detach()
    return dict(codes=d["codes"], emb=emb, layout=d["layout"], mask=bucketed_to_dense(d["score"], d["layout"]) > 0)


def layer_study(net: nn.Module, probe: Tensor, layer_names: Sequence[str], query: tuple[int, int],
                temperature: float = 0.1, top_k: int = 16) -> tuple[dict, list[Tensor], float]:
    """Compare the parameter-free map ``softmax(cos / temperature)`` of every LCoA input ``X_m`` with the first.

    Returns:
        ``(overlaps, query_maps, uniform)``: :func:`srlib.analysis.overlap.layer_overlaps` of the maps (reference
        the first), one query's ``(h, w)`` map per layer, and the overlap of the first map with a uniform one.
    """
    from srlib.analysis.maps import query_attention_map
    from srlib.analysis.capture import module_inputs
    from srlib.analysis.overlap import feature_attention_map, layer_overlaps, overlap_rate

    inputs = module_inputs(net, probe, list(layer_names))  # X_m entering each LCoA
    maps = {f"unit {i + 1}": feature_attention_map(t, temperature=temperature) for i, t in enumerate(inputs.values())}
    overlaps = layer_overlaps(maps, reference=0, top_k=top_k)  # (B, L, L) maps -> mean overlap per unit
    hw = tuple(probe.shape[-2:])
    query_maps = [query_attention_map(m[0], query, hw) for m in maps.values()]
    a1 = maps["unit 1"]
    uniform = overlap_rate(a1, torch.full_like(a1, 1 / a1.shape[-1])).mean().item()
    return overlaps, query_maps, uniform


def kmeans_trace(x: Tensor, history: Sequence[Tensor]) -> list[dict]:
    """What each Lloyd iteration of the k-means initialisation did to the embeddings ``x`` (1, L, C).

    Args:
        history: the centroids ``(1, K, C)`` after each iteration, the seeds first.

    Returns:
        one row per iteration ``t``: ``{"t", "codes" (L,), "cos" (mean cosine of each position with its
        centroid), "changed" (share of positions that changed cluster, None at t = 0), "shift" (mean centroid
        move, None at t = 0), "empty" (clusters without a position), "largest" (size of the largest cluster)}``.
    """
    from torch.nn import functional as F

    k = history[0].shape[-2]
    rows = []
    for t, m in enumerate(history):
        c = assign_clusters(x, m)[0, 0]
        sizes = torch.bincount(c, minlength=k)
        rows.append(dict(t=t, codes=c,
                         cos=(x[0] @ F.normalize(m[0], dim=-1).T).gather(1, c[:, None]).mean().item(),
                         changed=None if t == 0 else (c != rows[-1]["codes"]).float().mean().item(),
                         shift=None if t == 0 else (m - history[t - 1]).norm(dim=-1).mean().item(),
                         empty=int((sizes == 0).sum()), largest=int(sizes.max())))
    return rows


def format_kmeans_trace(trace: Sequence[Mapping], n_positions: int) -> str:
    """The rows of :func:`kmeans_trace` as a text table (iteration, mean cosine to the centroid, share of positions
    that changed cluster, mean centroid shift, empty clusters, largest cluster out of ``n_positions``).

    Raises:
        KeyError: a row without one of the keys of :func:`kmeans_trace`.
    """
    lines = [" iter | mean cos to centroid | changed | centroid shift | empty clusters | largest cluster"]
    for r in trace:
        changed, shift = ("", "") if r["t"] == 0 else (f"{r['changed']:7.1%}", f"{r['shift']:.4f}")
        lines.append(f" {r['t']:4d} | {r['cos']:20.3f} | {changed:>7} | {shift:>14} | {r['empty']:14d} | "
                     f"{r['largest']:6d} / {n_positions}")
    return "\n".join(lines)


def format_bucketings(rows: Sequence[Mapping], window: int, n_positions: int) -> str:
    """The rows of :func:`compare_bucketings` as a text table, with the lift ``recall / share`` (how much better
    than chance a bucket groups the true neighbours) and the keys a query attends to (``3 window`` per round).

    Raises:
        ZeroDivisionError: a row with ``share == 0``.
    """
    lines = ["   K | buckets    | bucket recall | bucket share | lift | window recall "
             "| keys attended per query (with repeats)"]
    for r in rows:
        lines.append(f" {r['K']:3d} | {r['method']:10s} | {r['recall']:13.3f} | {r['share']:12.3f} | "
                     f"{r['recall'] / r['share']:4.1f} | {r['window']:13.3f} | {3 * window * r['rounds']:5d} of "
                     f"{n_positions}")
    return "\n".join(lines)


def format_cost_table(cost: Mapping[str, Mapping], sides: Sequence[int], paper_seconds: Mapping[str, float],
                      paper_mb: Mapping[str, float], reference: str = "NLA") -> str:
    """The time and peak memory of the Table I stacks as a text table, each also as a ratio to ``reference``, next
    to the paper's ratio (LCoAN Table I, attention only).

    Args:
        cost: ``{stack: srlib.analysis.measure.measure_attention_cost(...)}`` (``seconds_min``, ``peak_bytes`` per
            side); sides: the feature-map sides measured (``L = side²``).
        paper_seconds, paper_mb: the paper's time (s) and memory (MB) per stack.

    Raises:
        KeyError: a stack of ``cost`` missing from the paper's values, or no ``reference`` stack.
    """
    lines = ["    L | stack | CPU s | time / NLA | paper | peak MiB | memory / NLA | paper"]
    for i, side in enumerate(sides):
        t_ref, m_ref = cost[reference]["seconds_min"][i], cost[reference]["peak_bytes"][i]
        for k, r in cost.items():
            t, m = r["seconds_min"][i], r["peak_bytes"][i]
            lines.append(f" {side * side:4d} | {k:5s} | {t:5.2f} | {t / t_ref:10.2f} | "
                         f"{paper_seconds[k] / paper_seconds[reference]:5.2f} | {m / 2**20:8.1f} | "
                         f"{m / m_ref:12.2f} | {paper_mb[k] / paper_mb[reference]:5.2f}")
    return "\n".join(lines)


def format_depth_table(curves: Mapping[str, Mapping], agreement: Mapping[str, Mapping], labels: Sequence[str]) -> str:
    """The four agreement curves of :func:`depth_study` per network as a text table (one column per depth):
    overlap rate, top-16 overlap, same cluster, Jaccard overlap of the attended key sets.

    Raises:
        KeyError: ``curves`` and ``agreement`` name different networks.
    """
    lines = [f"{'':26s}" + " ".join(f"{lab:>7s}" for lab in labels)]
    for name in curves:
        for what, values in (("overlap rate", curves[name]["overlap"]), ("top-16 overlap", curves[name]["topk"]),
                             ("same cluster", agreement[name]["code_agreement"]),
                             ("attended keys (Jaccard)", agreement[name]["pattern_overlap"])):
            lines.append(f"{name:9s} {what:23s}" + " ".join(f"{v:7.3f}" for v in values.tolist()))
    return "\n".join(lines)


@contextlib.contextmanager
def centroid_log(kmeans: nn.Module) -> Iterator[dict]:
    """Record, at every training-mode forward call of an LCoA ``Kmeans`` module, its centroids after the call
    ``(R, K, C)`` and the cluster sizes ``(K,)`` of the batch's codes (round 0; the codes come from the centroids
    before that call's update, LCoAN Eq. 7 and 10). Eval-mode calls are not recorded.

    Yields:
        ``{"means": [...], "sizes": [...]}``, filled while the context is open; the hook is removed on exit.

    Raises:
        TypeError: ``kmeans`` has no ``means`` / ``n_clusters`` (not an srlib ``Kmeans``).
    """
    if not (hasattr(kmeans, "means") and hasattr(kmeans, "n_clusters")):
        raise TypeError(f"centroid_log needs an srlib Kmeans module, got {type(kmeans).__name__}")
    log: dict = {"means": [], "sizes": []}

    def record(module, inputs, codes):
        if module.training:
            log["means"].append(module.means.detach().clone())
            log["sizes"].append(cluster_sizes(codes, module.n_clusters)[0])

    handle = kmeans.register_forward_hook(record)
    try:
        yield log
    finally:
        handle.remove()
