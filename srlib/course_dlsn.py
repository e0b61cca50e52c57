"""Measurements of notebook 03 (DLSN / GLA) that are too long for a notebook cell. Nothing here draws.

* :func:`detail_fit_summary`: DLSN Fig. 1 measured: are the keys whose true HR detail fits a damaged query
  best also the keys that look most similar in the LR input?
* :func:`seed_hashing`: fix the super-bit projections of every GLA of a network (reproducible outputs).
* :func:`chunk_scores`: the two scores of GLA (Eq. 9-11) of the chunk that holds one query.
* :func:`top_attended_stats`: DLSN Fig. 4 in numbers: what the top-``k`` attended keys of a query are like.
* :func:`bucket_summary`: balance of a GLA's buckets and how well they group similar keys, over hash draws.

Source: Su et al., *Global Learnable Attention for Single Image Super-Resolution*, IEEE TPAMI 2023,
arXiv:2212.01057 (Fig. 1, Eq. 9-11, Fig. 4); GLA as in the official repository ``laoyangui/DLSN``
(``src/model/attention.py``).
"""

from __future__ import annotations

from typing import Any, Callable, Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["detail_fit_summary", "seed_hashing", "chunk_scores", "top_attended_stats", "bucket_summary"]


def detail_fit_summary(similarity: torch.Tensor, fit: torch.Tensor, k: int = 16) -> dict[str, float]:
    """Compare, per query, the ``k`` most similar-looking keys with the ``k`` keys whose detail fits best.

    Args:
        similarity: ``(Q, L)`` LR similarity of every key to each query (e.g. cosine of LR patches); ``NaN``
            marks keys to ignore (overlapping the query).
        fit: ``(Q, L)`` how well each key's true HR detail fits the query's missing detail (same ``NaN``s).
        k: keys per set.

    Returns:
        means over the queries of ``"overlap"`` (share of the best-fitting keys that are also among the most
        similar, in ``[0, 1]``), ``"below_median"`` (share of the best-fitting keys whose similarity is below
        the query's median), ``"fit_of_similar"`` and ``"fit_of_best"`` (mean fit of each set).

    Raises:
        ValueError: shapes differ, are not 2-D, or a query has fewer than ``k`` valid keys.
    """
    if similarity.dim() != 2 or similarity.shape != fit.shape:
        raise ValueError(f"similarity and fit must be (Q, L) of the same shape, got {tuple(similarity.shape)} "
                         f"and {tuple(fit.shape)}")
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    rows: list[tuple[float, float, float, float]] = []
    for q, (s_q, m_q) in enumerate(zip(similarity, fit)):
        ok = ~(s_q.isnan() | m_q.isnan())
        if int(ok.sum()) < k:
            raise ValueError(f"query {q} has {int(ok.sum())} valid keys, fewer than k = {k}")
        top_sim = torch.where(ok, s_q, -torch.inf).topk(k).indices
        top_fit = torch.where(ok, m_q, -torch.inf).topk(k).indices
        overlap = len(set(top_sim.tolist()) & set(top_fit.tolist())) / k
        below = float((s_q[top_fit] < s_q[ok].median()).float().mean())
        rows.append((overlap, below, float(m_q[top_sim].mean()), float(m_q[top_fit].mean())))
    names = ("overlap", "below_median", "fit_of_similar", "fit_of_best")
    return {name: sum(r[i] for r in rows) / len(rows) for i, name in enumerate(names)}


def seed_hashing(net: nn.Module, seed: int = 0) -> int:
    """Give every GLA of ``net`` its own seeded generator (``seed``, ``seed + 1``, ...), so that the super-bit
    projections, redrawn in every forward call (as in the official code), are the same on every run.

    Returns:
        the number of attention modules seeded.

    Raises:
        TypeError: ``net`` has no ``attention_modules()`` (not an srlib network).
    """
    if not hasattr(net, "attention_modules"):
        raise TypeError(f"seed_hashing needs an srlib network with attention_modules(), got {type(net).__name__}")
    mods = [m for _, m in net.attention_modules()]
    for i, m in enumerate(mods):
        m.generator = torch.Generator().manual_seed(seed + i)
    return len(mods)


def chunk_scores(details: Mapping[str, Any], position: int, round_index: int = 0, batch: int = 0
                 ) -> dict[str, Any]:
    """The scores of the chunk that holds query ``position`` in one hash round of a GLA run with
    ``keep_details = True``.

    ``s_f(i, j) = q_i . q_j / max(|q_j|, 5e-5)`` (DLSN Eq. 10, keys normalised as in the official code) is
    rebuilt from the kept embedding; ``s_l`` (Eq. 11, official form ``MLP(f_j)[i]``) and the softmax weights
    of Eq. 14 are read from the details.

    Args:
        details: ``GlobalLearnableAttention.details`` (keys ``layout``, ``embedding`` ``(B, L, C')``, ``lss``
            ``(B, R, n, c, 3c)`` or ``None``, ``score`` ``(B, R, n, c, 3c)``).
        position: query position ``h * W + w``; round_index: hash round; batch: image in the batch.

    Returns:
        ``{"s_f", "s_l", "s_l_centred", "weights"}``: ``(c, 3c)`` each (rows: the chunk's query slots; columns:
        its keys ``[own, previous, next chunk]``; ``s_l`` is zeros without a learnable score), ``"slot"``: the
        query's row in the chunk, ``"chunk"``: the chunk index.

    Raises:
        ValueError: ``position`` or ``round_index`` out of range.
    """
    from srlib.attention.buckets import look_around

    layout = details["layout"]
    emb = details["embedding"]
    n_pos, n_rounds = emb.shape[1], layout.undo_idx.shape[1]
    if not 0 <= position < n_pos:
        raise ValueError(f"position must be in [0, {n_pos}), got {position}")
    if not 0 <= round_index < n_rounds:
        raise ValueError(f"round_index must be in [0, {n_rounds}), got {round_index}")
    chunk_size = details["score"].shape[-2]
    chunk, slot = divmod(int(layout.undo_idx[batch, round_index, position]), chunk_size)
    emb_c = layout.to_chunks(emb)  # (B, R, n, c, C')
    s_f = emb_c[batch, round_index, chunk] @ look_around(F.normalize(emb_c, dim=-1, eps=5e-5))[
        batch, round_index, chunk].transpose(-1, -2)
    lss = details["lss"]
    s_l = torch.zeros_like(s_f) if lss is None else lss[batch, round_index, chunk]
    return {"s_f": s_f, "s_l": s_l, "s_l_centred": s_l - s_l.mean(-1, keepdim=True),
            "weights": details["score"][batch, round_index, chunk], "slot": slot, "chunk": chunk}


def top_attended_stats(weights_of: Callable[[int], torch.Tensor], embedding: torch.Tensor,
                       positions: Sequence[int], hw: tuple[int, int], k: int = 128,
                       other: Callable[[int], torch.Tensor] | None = None, radius: int = 2) -> dict[str, float]:
    """What the ``k`` most attended keys of each query are like (DLSN Fig. 4 in numbers), averaged over queries.

    Args:
        weights_of: ``position -> (L,)`` attention weights of that query on every position (all hash rounds
            combined, e.g. ``srlib.analysis.hashing.attention_on_positions``).
        embedding: ``(L, C')`` the hashed GLA embedding ``phi_q`` (for the dot-product score ``s_f``).
        positions: query positions ``h * W + w``; hw: ``(H, W)`` of the map; k: keys per query.
        other: a second setting's ``weights_of``; then ``"shared"`` counts the top-``k`` keys both share.
        radius: the query's own neighbourhood is the ``(2 radius + 1)²`` square around it.

    Returns:
        ``{"mean_s_f", "mean_distance" (LR pixels), "shared" (of k; k without ``other``), "near_weight"}``.

    Raises:
        ValueError: ``k`` larger than the number of positions, or an empty ``positions``.
    """
    h, w = hw
    n_pos = h * w
    if not 1 <= k <= n_pos:
        raise ValueError(f"k must be in [1, {n_pos}], got {k}")
    if len(positions) == 0:
        raise ValueError("positions is empty")
    keys = F.normalize(embedding, dim=-1, eps=5e-5)
    yy, xx = torch.arange(n_pos) // w, torch.arange(n_pos) % w
    rows = []
    def top(wts: torch.Tensor) -> torch.Tensor:  # ties broken by position, as topk_attended_locations does
        return torch.sort(wts, descending=True, stable=True).indices[:k]

    for qp in positions:
        wts = weights_of(qp)
        idx = top(wts)
        near = ((yy - qp // w).abs() <= radius) & ((xx - qp % w).abs() <= radius)
        shared = k if other is None else len(set(idx.tolist()) & set(top(other(qp)).tolist()))
        dist = torch.stack([yy[idx] - qp // w, xx[idx] - qp % w], 1).double().norm(dim=1).mean()
        rows.append((float((keys[idx] @ embedding[qp]).mean()), float(dist), float(shared), float(wts[near].sum())))
    names = ("mean_s_f", "mean_distance", "shared", "near_weight")
    return {name: sum(r[i] for r in rows) / len(rows) for i, name in enumerate(names)}


def bucket_summary(runs: Sequence[Mapping[str, Any]], n_buckets: int, queries: torch.Tensor, k: int = 16
                   ) -> dict[str, Any]:
    """Bucket balance and grouping of one GLA, averaged over several hash draws and all their rounds.

    Args:
        runs: ``details`` of the same GLA on the same features, one per hash draw (``keep_details = True``).
        n_buckets: ``b`` of those runs.
        queries: ``(Q,)`` positions for the grouping statistics.
        k: best keys per query under the exact score ``s_f``.

    Returns:
        ``"occupied"``, ``"largest_share"``, ``"effective"`` (``srlib.analysis.buckets.bucket_balance``, mean over
        rounds and draws), ``"same_bucket"``, ``"chance_same"``, ``"reachable"``, ``"chance_reachable"``
        (``srlib.analysis.hashing.bucket_neighbour_recall``, mean over draws) and ``"sizes"``: ``(draws * R, b)``
        bucket sizes.

    Raises:
        ValueError: no runs (and what the two functions raise).
    """
    from srlib.analysis.buckets import bucket_balance
    from srlib.analysis.hashing import bucket_neighbour_recall

    if len(runs) == 0:
        raise ValueError("bucket_summary needs at least one run")
    bals = [bucket_balance(det["codes"][0], n_buckets) for det in runs]
    recs = [bucket_neighbour_recall(det, k, queries) for det in runs]
    out: dict[str, Any] = {name: float(torch.cat([b[name].double() for b in bals]).mean())
                           for name in ("occupied", "largest_share", "effective")}
    for name in ("same_bucket", "chance_same", "reachable", "chance_reachable"):
        out[name] = sum(float(r[name]) for r in recs) / len(recs)
    out["sizes"] = torch.cat([b["sizes"] for b in bals])
    return out
