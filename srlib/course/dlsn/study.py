"""Measurements of notebook 03 (DLSN / GLA) that are too long for a notebook cell. Nothing here draws.

* :func:`detail_fit_summary`: DLSN Fig. 1 measured: are the keys whose true HR detail fits a damaged query
  best also the keys that look most similar in the LR input?
* :func:`seed_hashing`: fix the super-bit projections of every GLA of a network (reproducible outputs).
* :func:`chunk_scores`: the two scores of GLA (Eq. 9-11) of the chunk that holds one query.
* :func:`top_attended_stats`: DLSN Fig. 4 in numbers: what the top-``k`` attended keys of a query are like.
* :func:`bucket_summary`: balance of a GLA's buckets and how well they group similar keys, over hash draws;
  :func:`format_bucket_summary` prints it as a table.
* :func:`lss_change`: how much switching the learnable score off moves the round weights and the weights
  inside a round.
* :func:`query_maps`: one query's attention map under several GLA settings, next to the dense softmax of
  ``s_f``, with the keys that carry 90% of each map.
* :func:`variance_table`: the sign-bit angle-estimate variances of Ji et al. (SRP vs super-bit) as a table.
* :func:`lss_dependence`: which entries of the learnable score change when one position's LSS feature changes
  (official ``MLP(f_j)[i]`` vs the paper's Eq. 11).
* :func:`centre_crop`, :func:`crops_psnr`: PSNR of a network on LR/HR centre crops with its GLA hash rounds or
  residual scale changed at test time (DLSN Table 2).

Source: Su et al., *Global Learnable Attention for Single Image Super-Resolution*, IEEE TPAMI 2023,
arXiv:2212.01057 (Fig. 1, Eq. 9-11, Fig. 4); GLA as in the official repository ``laoyangui/DLSN``
(``src/model/attention.py``).
"""

from __future__ import annotations

import math
from typing import Any, Callable, Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["detail_fit_summary", "seed_hashing", "chunk_scores", "top_attended_stats", "bucket_summary",
           "format_bucket_summary", "lss_change", "query_maps", "variance_table", "lss_dependence", "centre_crop", "crops_psnr"]


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


def format_bucket_summary(summary: Mapping[tuple[str, int], Mapping[str, Any]], layer_names: Sequence[str]) -> str:
    """The rows of :func:`bucket_summary` as a fixed-width text table, one line per (network, GLA layer).

    Args:
        summary: ``{(network name, layer index): bucket_summary(...)}``.
        layer_names: name of each layer index (e.g. ``body.0.body.4``).

    Returns:
        the table: a header line, then the columns occupied, largest share, effective, same bucket (chance),
        reachable (chance).

    Raises:
        IndexError: a layer index without a name in ``layer_names``.
    """
    lines = [f"{'GLA':>23} {'occupied':>9} {'largest':>8} {'effective':>10} {'same bucket':>12} {'(chance)':>9} "
             f"{'reachable':>10} {'(chance)':>9}"]
    for (net_name, li), row in summary.items():
        lines.append(f"{net_name + ' ' + layer_names[li]:>23} {row['occupied']:9.1f} {row['largest_share']:8.2f} "
                     f"{row['effective']:10.1f} {row['same_bucket']:12.2f} {row['chance_same']:9.2f} "
                     f"{row['reachable']:10.2f} {row['chance_reachable']:9.2f}")
    return "\n".join(lines)


def lss_change(details_on: Mapping[str, Any], details_off: Mapping[str, Any], batch: int = 0) -> dict[str, float]:
    """Mean total-variation distance between two GLA runs on the same buckets (learnable score on and off).

    Args:
        details_on, details_off: ``GlobalLearnableAttention.details`` of the two runs, same projections (keys
            ``round_weights`` ``(B, R, L)`` and ``score`` ``(B, R, n, c, 3c)``, the softmax of DLSN Eq. 14).
        batch: image of the batch for the round weights.

    Returns:
        ``{"rounds": mean over positions of 0.5 * sum_r |w_r - w'_r|`` (round weights, Eq. 17),
        ``"keys": mean over queries and rounds of 0.5 * sum_j |p_ij - p'_ij|`` (weights inside a round)}``;
        both in ``[0, 1]``.

    Raises:
        ValueError: the two runs have different shapes (different buckets or sizes).
    """
    rw_on, rw_off = details_on["round_weights"][batch], details_off["round_weights"][batch]  # (R, L)
    if rw_on.shape != rw_off.shape or details_on["score"].shape != details_off["score"].shape:
        raise ValueError(f"the two runs differ in shape: round weights {tuple(rw_on.shape)} vs "
                         f"{tuple(rw_off.shape)}, scores {tuple(details_on['score'].shape)} vs "
                         f"{tuple(details_off['score'].shape)}")
    return {"rounds": float(0.5 * (rw_on - rw_off).abs().sum(0).mean()),
            "keys": float(0.5 * (details_on["score"] - details_off["score"]).abs().sum(-1).mean())}


def centre_crop(item: Mapping[str, Any], size: int = 64, scale: int = 2) -> dict[str, Any]:
    """The ``size x size`` centre crop of an LR image and the matching ``(size * scale)²`` crop of its HR image.

    Args:
        item: a benchmark item ``{"lr": (3, h, w), "hr": (3, h * scale, w * scale), "name": str}``, RGB in [0, 1].
        size: LR crop size; scale: SR factor.

    Returns:
        ``{"lr": (3, size, size), "hr": (3, size * scale, size * scale), "name"}``.

    Raises:
        ValueError: the LR image is smaller than ``size``.
    """
    lr, hr = item["lr"], item["hr"]
    if lr.shape[1] < size or lr.shape[2] < size:
        raise ValueError(f"LR image {tuple(lr.shape)} is smaller than the crop size {size}")
    y0, x0 = (lr.shape[1] - size) // 2, (lr.shape[2] - size) // 2
    return {"lr": lr[:, y0:y0 + size, x0:x0 + size],
            "hr": hr[:, scale * y0:scale * (y0 + size), scale * x0:scale * (x0 + size)], "name": item["name"]}


def crops_psnr(net: nn.Module, crops: Sequence[Mapping[str, Any]], scale: int = 2, n_hashes: int | None = None,
               res_scale: float | None = None, seed: int = 0) -> float:
    """Mean PSNR (Y, dB) of ``net`` on ``crops`` with every GLA's hash rounds and/or residual scale changed for
    this call only (DLSN Table 2: train with ``h = 3``, test with other ``h``; ``res_scale = 0`` makes every
    GLA the identity). Hashing is seeded with :func:`seed_hashing` (``seed``); the attributes are restored.

    Args:
        net: an srlib DLSN (``attention_modules()`` yields GLA modules); crops: items as :func:`centre_crop`.
        scale: SR factor; n_hashes: test-time hash rounds (``None``: unchanged); res_scale: GLA residual scale.

    Returns:
        the mean PSNR of :func:`srlib.inference.evaluate` (no SSIM).

    Raises:
        ValueError: ``n_hashes < 1``; TypeError: ``net`` is not an srlib network.
    """
    from srlib.inference import evaluate

    if n_hashes is not None and n_hashes < 1:
        raise ValueError(f"n_hashes must be >= 1, got {n_hashes}")
    if not hasattr(net, "attention_modules"):
        raise TypeError(f"crops_psnr needs an srlib network with attention_modules(), got {type(net).__name__}")
    mods = [m for _, m in net.attention_modules()]
    saved = [(m.n_hashes, m.res_scale) for m in mods]
    try:
        for m in mods:
            m.n_hashes = m.n_hashes if n_hashes is None else n_hashes
            m.res_scale = m.res_scale if res_scale is None else res_scale
        seed_hashing(net, seed)
        return evaluate(net, crops, scale, ssim=False)["psnr"]
    finally:
        for m, (h, r) in zip(mods, saved):
            m.n_hashes, m.res_scale = h, r


def variance_table(angles: torch.Tensor, theory: torch.Tensor, estimates: Mapping[str, torch.Tensor]) -> str:
    """The variance of the sign-bit angle estimate per angle as a text table: SRP theory ``theta (pi - theta) / K``,
    measured with Gaussian directions (SRP) and with super-bit directions, and their ratio (Ji et al., NeurIPS
    2012, the DLSN paper's [12]).

    Args:
        angles: ``(A,)`` radians; theory: ``(A,)`` rad²; estimates: ``{"gaussian": (A, draws), "superbit":
            (A, draws)}`` angle estimates in radians (e.g. ``srlib.analysis.hashing.sign_bit_angle_estimates``).

    Returns:
        a header line and one line per angle (degrees, theory, SRP measured, super-bit measured, ratio).

    Raises:
        ValueError: the tensors disagree on the number of angles.
    """
    n = angles.shape[0]
    if theory.shape[0] != n or any(estimates[m].shape[0] != n for m in ("gaussian", "superbit")):
        raise ValueError(f"angles, theory and estimates must have {n} rows, got {theory.shape[0]}, "
                         f"{estimates['gaussian'].shape[0]}, {estimates['superbit'].shape[0]}")
    lines = [f"{'angle':>6s} {'SRP theory':>11s} {'SRP measured':>13s} {'super-bit':>10s} {'ratio':>6s}"]
    for i, t in enumerate(angles):
        vg, vs = estimates["gaussian"][i].var(), estimates["superbit"][i].var()
        lines.append(f"{math.degrees(t):5.0f}° {theory[i]:11.3f} {vg:13.3f} {vs:10.3f} {vs / vg:6.2f}")
    return "\n".join(lines)


def lss_dependence(module: nn.Module, features: torch.Tensor, layout: Any, position: int = 0,
                   round_index: int = 0, delta: float = 1.0, tol: float = 1e-12) -> dict[str, int]:
    """Change the LSS feature ``phi_l`` of one position by ``delta`` and count what changes in the learnable score
    of its chunk: the official GLA (``s_l(i, j) = MLP(f_j)[i]``) changes one key *column*; the paper's Eq. 11
    (``s_l^j(x_i)``, an MLP of the query) changes the query's *row*.

    Args:
        module: a ``GlobalLearnableAttention`` with a learnable score (``learnable_score(f, layout)`` returns
            ``(B, R, n, c, 3c)``).
        features: ``(B, L, C)`` LSS features ``phi_l``; layout: the ``BucketLayout`` of the hash codes.
        position: the position changed (batch 0); round_index: hash round looked at.
        delta, tol: the change added to every channel, and the threshold for "changed".

    Returns:
        ``{"rows_changed": query slots of the chunk with any changed entry, "own_row": changed entries in the
        position's own row, "chunk_size": c}``.

    Raises:
        ValueError: ``position`` out of range.
    """
    n_pos = features.shape[1]
    if not 0 <= position < n_pos:
        raise ValueError(f"position must be in [0, {n_pos}), got {position}")
    with torch.no_grad():
        before = module.learnable_score(features, layout)
        chunk_size = before.shape[-2]
        chunk, row = divmod(int(layout.undo_idx[0, round_index, position]), chunk_size)
        changed = features.clone()
        changed[0, position] += delta
        diff = (module.learnable_score(changed, layout) - before)[0, round_index, chunk].abs() > tol  # (c, 3c)
    return {"rows_changed": int(diff.any(-1).sum()), "own_row": int(diff[row].sum()), "chunk_size": chunk_size}


def query_maps(states: Mapping[str, Any], embedding: torch.Tensor, query: tuple[int, int], hw: tuple[int, int],
               mass: float = 0.9) -> dict[str, Any]:
    """One query's attention over all positions under several GLA runs, plus the dense softmax of the
    dot-product score ``s_f(i, j) = q_i . q_j / max(|q_j|, 5e-5)`` (DLSN Eq. 10 over *all* keys, no buckets):
    the attention the buckets restrict.

    Args:
        states: ``{label: state}``; ``state.query((y, x))`` returns a dict with ``"map"`` ``(H, W)`` and
            ``"keys_for_90"`` (e.g. ``srlib.viz.explorer.prepare_attention`` results). The first state's
            ``"bucket_sizes"`` are passed through.
        embedding: ``(L, C')`` the hashed embedding ``phi_q``, ``L = H * W``.
        query: ``(y, x)``; hw: ``(H, W)``; mass: share of the weight for the key counts.

    Returns:
        ``{"maps": {label: (H, W), "dense softmax of s_f": (H, W)}`` (each sums to 1), ``"keys": {label: int,
        "dense": int}`` (keys carrying ``mass`` of the weight; ``srlib.analysis.sparsity.mass_coverage``),
        ``"bucket_sizes"``}.

    Raises:
        ValueError: ``embedding`` is not ``(H * W, C')`` or the query lies outside the grid.
    """
    from srlib.analysis.sparsity import mass_coverage

    h, w = hw
    if embedding.dim() != 2 or embedding.shape[0] != h * w:
        raise ValueError(f"embedding must be ({h * w}, C') for hw {hw}, got {tuple(embedding.shape)}")
    if not (0 <= query[0] < h and 0 <= query[1] < w):
        raise ValueError(f"query {tuple(query)} lies outside the {h}x{w} grid")
    res = {label: st.query(tuple(query)) for label, st in states.items()}
    pos = query[0] * w + query[1]
    dense = torch.softmax(embedding[pos] @ F.normalize(embedding, dim=-1, eps=5e-5).T, dim=-1).view(h, w)
    maps = {label: r["map"] for label, r in res.items()}
    maps["dense softmax of s_f"] = dense
    keys = {label: int(r["keys_for_90"]) for label, r in res.items()}
    keys["dense"] = int(mass_coverage(dense.reshape(-1), mass))
    return {"maps": maps, "keys": keys, "bucket_sizes": next((r["bucket_sizes"] for r in res.values()), None)}
