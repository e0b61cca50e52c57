"""How sparse is an attention distribution? Support sizes, mass coverage, and the HSPAN top-k experiments.

Analysis helpers for the soft-thresholding (ST) operation of HSPAN (Su et al., "High-Similarity-Pass Attention
for Single Image Super-Resolution"), :mod:`srlib.attention.softthreshold`:

* :func:`support_sizes` -- ``T = |{j : p_j > 0}|`` per row (the support of Eq. 16);
* :func:`mass_coverage` -- how many of the largest weights of a row carry a given fraction (e.g. 90 %) of its
  mass: a sparsity measure that also works for softmax, whose support is always everything;
* :func:`support_statistics` -- both summarised over the rows of an attention map, plus the fraction of rows
  whose support exceeds given ``k`` (the rows a truly truncated top-k would change);
  :func:`chunked_support_statistics` and :func:`attention_rows` do the same a chunk of rows at a time, so the
  ``L x L`` map never has to exist;
* :func:`nla_twin` and :func:`same_scores_statistics` -- a (trained) HSPA's own scores normalised by softmax
  instead of ST (HSPAN Table I's NLA, on the same learned scores), and both normalisers' statistics;
* :func:`compare_normalizers` -- softmax vs ST on the same standard-normal scores for growing ``n`` (Fig. 1);
* :func:`support_vs_length` -- measured support size of ST versus sequence length ``N`` (Sec. III-C);
* :func:`eq14_probabilities` -- the two sides of the bound of Eq. (14), estimated by sampling;
* :func:`truncation_error` -- exact ST (official top-k with fallback) versus truly truncated top-k, per ``k``;
* :func:`topk_sweep` -- a whole network's output as the test-time top-k varies (the idea of Fig. 6).

The pictures (weight vectors side by side, maps of several normalisers) are drawn by :mod:`srlib.viz.maps`.

Conventions: weights and scores are ``(..., N)`` tensors normalised over the last dimension (one distribution
per row, e.g. an attention map ``(B, L_query, L_key)``). Randomness comes only from a ``torch.Generator``
argument (a fresh one seeded with 0 when ``None``), so every function is deterministic.
"""

from __future__ import annotations

from typing import Callable, Sequence

import torch
from torch import Tensor

from srlib.attention.softthreshold import soft_threshold, threshold_and_support
from srlib.analysis.rows import dense_rows

__all__ = [
    "support_sizes",
    "mass_coverage",
    "support_statistics",
    "chunked_support_statistics",
    "attention_rows",
    "nla_twin",
    "same_scores_statistics",
    "compare_normalizers",
    "support_vs_length",
    "eq14_probabilities",
    "truncation_error",
    "topk_sweep",
]


def _check_rows(x: Tensor, what: str) -> None:
    if not isinstance(x, Tensor):
        raise ValueError(f"{what} must be a torch.Tensor, got {type(x).__name__}")
    if x.dim() < 1 or x.shape[-1] < 1:
        raise ValueError(f"{what} must have shape (..., N) with N >= 1, got {tuple(x.shape)}")
    if not x.is_floating_point():
        raise ValueError(f"{what} must be floating point, got dtype {x.dtype}")


def _check_weights(weights: Tensor) -> None:
    _check_rows(weights, "weights")
    if bool((weights < 0).any()):
        raise ValueError("weights must be non-negative")


def _generator(generator: torch.Generator | None) -> torch.Generator:
    return generator if generator is not None else torch.Generator().manual_seed(0)


def _positive_ints(values: Sequence[int], what: str) -> list[int]:
    out = [int(v) for v in values]
    if not out:
        raise ValueError(f"{what} must not be empty")
    bad = [v for v in out if v < 1]
    if bad:
        raise ValueError(f"{what} must be >= 1, got {bad}")
    return out


def _row_chunks(x: Tensor, max_elements: int = 1 << 18) -> list[Tensor]:
    """Split ``(R, N)`` into row blocks of at most ``max_elements`` entries (at least one row each)."""
    rows = max(1, max_elements // max(1, x.shape[-1]))
    return list(torch.split(x, rows, dim=0))


def support_sizes(weights: Tensor) -> Tensor:
    """Number of strictly positive weights per row: the support size ``T`` of HSPAN Eq. (16).

    Args:
        weights: ``(..., N)`` non-negative weights (e.g. an ST attention map ``(B, L, L)``).

    Returns:
        ``(...)`` int64 in ``[0, N]``. For softmax rows this is ``N`` (up to underflow): softmax has full support.

    Raises:
        ValueError: not a floating tensor ``(..., N)``, or negative weights.
    """
    _check_weights(weights)
    return (weights > 0).sum(dim=-1)


def mass_coverage(weights: Tensor, fraction: float = 0.9) -> Tensor:
    """How many of the largest weights of each row are needed to reach ``fraction`` of the row's total.

    A support-free sparsity measure: for a one-hot row it is 1; for a uniform row over ``N`` keys it is
    ``ceil(fraction * N)``. For ST rows it is at most the support size; for softmax rows it shows how many keys
    really matter although all ``N`` get a positive weight.

    Args:
        weights: ``(..., N)`` non-negative weights; rows need not sum to one (the fraction is of the row sum).
        fraction: in ``(0, 1]``.

    Returns:
        ``(...)`` int64 in ``[1, N]`` (a row of zeros gives 1).

    Raises:
        ValueError: bad ``weights`` (see :func:`support_sizes`) or ``fraction`` outside ``(0, 1]``.
    """
    _check_weights(weights)
    if not 0 < fraction <= 1:
        raise ValueError(f"fraction must be in (0, 1], got {fraction}")
    slack = 4 * torch.finfo(weights.dtype).eps  # absorbs the rounding of the input weights and of the sums
    w = weights.detach().to(torch.float64)
    cum = torch.sort(w, dim=-1, descending=True).values.cumsum(dim=-1)
    target = fraction * cum[..., -1:]
    # first index where the cumulative mass reaches the target
    reached = cum >= target * (1 - slack)
    return reached.to(torch.int64).argmax(dim=-1) + 1


def _summarise(t: Tensor, cov: Tensor, n: int, ks: Sequence[int]) -> dict:
    return {
        "rows": int(t.numel()),
        "n": int(n),
        "support": t,
        "coverage": cov,
        "support_min": int(t.min()),
        "support_median": int(t.median()),
        "support_max": int(t.max()),
        "support_mean": float(t.double().mean()),
        "coverage_median": int(cov.median()),
        "frac_support_gt": {k: float((t > k).double().mean()) for k in ks},
    }


def _check_ks(ks: Sequence[int]) -> list[int]:
    ks = [int(k) for k in ks]
    if any(k < 1 for k in ks):
        raise ValueError(f"ks must be >= 1, got {ks}")
    return ks


def support_statistics(weights: Tensor, ks: Sequence[int] = (), fraction: float = 0.9) -> dict:
    """Support sizes and mass coverage of every row of an attention map, summarised.

    Args:
        weights: ``(..., N)`` non-negative weights, one distribution per row (e.g. ``HSPA.last_map``
            ``(B, L, L)``).
        ks: top-k values for which to report the fraction of rows whose support is larger than ``k`` (the rows
            a truncated top-k changes, see :func:`truncation_error`).
        fraction: mass fraction for :func:`mass_coverage`.

    Returns:
        dict with ``"rows"`` (number of rows), ``"n"`` (``N``), ``"support"`` and ``"coverage"`` (the per-row
        int64 tensors, flattened), ``"support_min"``, ``"support_median"``, ``"support_max"`` (ints),
        ``"support_mean"``, ``"coverage_median"`` (float / int), ``"frac_support_gt"``: ``{k: fraction of rows
        with T > k}``.

    Raises:
        ValueError: bad ``weights`` / ``fraction``, or a ``k < 1``.
    """
    ks = _check_ks(ks)
    t = support_sizes(weights).reshape(-1)
    cov = mass_coverage(weights, fraction).reshape(-1)
    return _summarise(t, cov, weights.shape[-1], ks)


def chunked_support_statistics(
    rows_fn: Callable[[int, int], Tensor],
    n_rows: int,
    ks: Sequence[int] = (),
    fraction: float = 0.9,
    *,
    chunk: int = 512,
) -> dict:
    """:func:`support_statistics` of an ``(.., n_rows, N)`` attention map computed ``chunk`` rows at a time.

    The rows of dense attention (NLA Eq. 6, HSPA Eq. 8) are independent, so the whole ``L x L`` map never has
    to exist: ``rows_fn(start, stop)`` returns the weights of query rows ``start..stop-1`` as
    ``(..., stop - start, N)`` (e.g. ``lambda i, j: attention_rows(attn, x, slice(i, j))``). Memory: one chunk.

    Args:
        rows_fn: ``(start, stop) -> weights (..., stop - start, N)``, non-negative.
        n_rows: number of query rows.
        ks, fraction: as in :func:`support_statistics`.
        chunk: rows per call (``>= 1``).

    Returns:
        The dict of :func:`support_statistics`; ``"support"`` / ``"coverage"`` are ordered by leading dims, then
        row (the same as for the full map when there are no leading dims).

    Raises:
        ValueError: ``n_rows < 1``, ``chunk < 1``, a chunk of the wrong row count, or what
            :func:`support_statistics` raises.
    """
    ks = _check_ks(ks)
    if n_rows < 1 or chunk < 1:
        raise ValueError(f"need n_rows >= 1 and chunk >= 1, got {n_rows}, {chunk}")
    ts, covs, n = [], [], None
    for start in range(0, n_rows, chunk):
        stop = min(start + chunk, n_rows)
        with torch.no_grad():
            w = rows_fn(start, stop)
        if not isinstance(w, Tensor) or w.dim() < 2 or w.shape[-2] != stop - start:
            raise ValueError(f"rows_fn({start}, {stop}) must return (..., {stop - start}, N), got "
                             f"{getattr(w, 'shape', type(w))}")
        n = w.shape[-1]
        ts.append(support_sizes(w))
        covs.append(mass_coverage(w, fraction))
    return _summarise(torch.cat(ts, dim=-1).reshape(-1), torch.cat(covs, dim=-1).reshape(-1), n, ks)


def attention_rows(attn: torch.nn.Module, x: Tensor, rows: slice | Sequence[int] | Tensor | None = None) -> Tensor:
    """Weights of chosen query rows of a dense attention module, without the full ``L x L`` map.

    For :class:`srlib.attention.nla.NonLocalAttention` and its subclass :class:`srlib.attention.hspa.HSPA`:
    ``normalizer(q[rows] kᵀ)`` with ``q, k`` from ``attn.embed(x)`` (NLSN Eq. 4 / HSPAN Eqs. 6-8). Equal to
    the same rows of the module's ``last_map``: each row is normalised on its own, also with top-k.

    Args:
        attn: a module with ``embed(x) -> (q, k, v)`` and a ``normalizer`` attribute (``None`` = softmax).
        x: ``(B, C, H, W)`` input of the module.
        rows: query rows (sequence index ``p = y W + x``): a slice, a list / 1-D tensor of indices, or ``None``
            for all ``L = H W``.

    Returns:
        ``(B, R, L)`` weights, ``R`` the number of selected rows.

    Raises:
        ValueError: a module without ``embed``, or a row index outside ``[0, L)``.
    """
    if not hasattr(attn, "embed"):
        raise ValueError(f"{type(attn).__name__} has no embed(x) -> (q, k, v)")
    with torch.no_grad():
        q, k, _ = attn.embed(x)
    n = q.shape[1]
    if rows is None:
        rows = slice(0, n)
    if isinstance(rows, slice):
        idx = torch.arange(n)[rows]
    else:
        idx = torch.as_tensor(rows, dtype=torch.int64).reshape(-1)
    if idx.numel() == 0 or int(idx.min()) < 0 or int(idx.max()) >= n:
        raise ValueError(f"rows must select at least one index in [0, {n}), got {rows!r}")
    with torch.no_grad():  # the one dense-row computation of srlib (also the explorer's)
        return dense_rows(q, k, idx, getattr(attn, "normalizer", None))


def nla_twin(attn: torch.nn.Module) -> torch.nn.Module:
    """The softmax twin of a dense attention module: the same embeddings (weights copied), softmax normaliser.

    HSPAN's Table I compares HSPA with NLA, which differ only in the normaliser (Eq. 6 softmax, Eq. 8 soft
    thresholding). Applied to a *trained* HSPA, the twin normalises exactly the learned scores
    ``s_ij = phi_q(x_i) . phi_k(x_j)`` (Eq. 7) with softmax, so that the two normalisers can be compared on the
    same scores (``attention_rows(twin, x, rows)`` next to ``attention_rows(hspa, x, rows)``). It is not a
    separately trained NLA network, which could learn larger scores.

    Args:
        attn: a :class:`srlib.attention.nla.NonLocalAttention` (e.g. :class:`srlib.attention.hspa.HSPA`), any
            ``reduction``; it is not modified.

    Returns:
        A new :class:`~srlib.attention.nla.NonLocalAttention` with ``normalizer=None`` (softmax), the same
        ``res_scale``, a copy of ``attn``'s parameters, on its device and dtype, in its train/eval mode.

    Raises:
        ValueError: ``attn`` is not a ``NonLocalAttention``.
    """
    from srlib.attention.nla import NonLocalAttention

    if not isinstance(attn, NonLocalAttention):
        raise ValueError(f"nla_twin needs a NonLocalAttention (e.g. HSPA), got {type(attn).__name__}")
    conv = attn.conv_match1[0]
    channel, embed = conv.in_channels, conv.out_channels
    twin = NonLocalAttention(channel=channel, reduction=channel // embed, res_scale=attn.res_scale, normalizer=None)
    ref = next(attn.parameters())
    twin = twin.to(device=ref.device, dtype=ref.dtype)
    twin.load_state_dict(attn.state_dict())
    return twin.train(attn.training)


def same_scores_statistics(
    attn: torch.nn.Module,
    x: Tensor,
    *,
    ks: Sequence[int] = (),
    fraction: float = 0.9,
    chunk: int = 512,
) -> dict[str, dict]:
    """Support and mass coverage of a dense attention's rows under its own normaliser and under softmax.

    Both normalisers see the same scores ``q_i . k_j`` of ``attn.embed(x)`` (HSPAN Eq. 7); the rows are computed
    ``chunk`` at a time (:func:`chunked_support_statistics` with :func:`attention_rows` of ``attn`` and of its
    :func:`nla_twin`), so the ``L x L`` map never exists. For a trained HSPA this is HSPAN Fig. 4 / Table I in
    numbers: how many keys ST keeps, and how many keys softmax needs for the same share of the mass.

    Args:
        attn: a ``NonLocalAttention`` / ``HSPA`` module; x: its input ``(B, C, H, W)``.
        ks, fraction, chunk: as in :func:`chunked_support_statistics`.

    Returns:
        ``{"module": stats, "softmax": stats}``, each the dict of :func:`support_statistics` over the
        ``B * H * W`` query rows (``"support"``, ``"coverage"`` per row, medians, ``"support_mean"``, ...).

    Raises:
        ValueError: ``attn`` is not a ``NonLocalAttention``, ``x`` is not ``(B, C, H, W)``, or what
            :func:`chunked_support_statistics` raises.
    """
    if not isinstance(x, Tensor) or x.dim() != 4:
        raise ValueError(f"x must be a (B, C, H, W) tensor, got {getattr(x, 'shape', type(x).__name__)}")
    twin = nla_twin(attn)
    n = x.shape[-2] * x.shape[-1]
    return {
        name: chunked_support_statistics(lambda a, b, m=m: attention_rows(m, x, slice(a, b)), n, ks, fraction,
                                         chunk=chunk)
        for name, m in (("module", attn), ("softmax", twin))
    }


def compare_normalizers(
    ns: Sequence[int],
    trials: int = 200,
    generator: torch.Generator | None = None,
    *,
    scale: float = 1.0,
    fraction: float = 0.9,
    normalizers: dict[str, Callable[[Tensor], Tensor]] | None = None,
) -> dict:
    """Softmax and ST applied to the *same* random scores ``scale * N(0, 1)`` for growing lengths ``n``.

    HSPAN Fig. 1 shows the softmax of standard-normal score vectors flattening as ``n`` grows; this repeats the
    draw ``trials`` times per ``n`` and puts ST next to it. Sampling order: for each ``n`` in ``ns``,
    ``scores = scale * torch.randn(trials, n, generator=generator, dtype=torch.float64)``.

    Args:
        ns: sequence lengths (each ``>= 1``).
        trials: score vectors per ``n``.
        generator: randomness (default: a fresh generator seeded with 0).
        scale: standard deviation of the scores (softmax and ST both depend on it: a temperature).
        fraction: mass fraction for :func:`mass_coverage`.
        normalizers: name -> ``scores (trials, n) -> weights``; default softmax and ST (full sort).

    Returns:
        dict with ``"n"`` (list) and, per normaliser name, a dict of lists over ``n``: ``"max_weight"`` (mean of
        the largest weight), ``"support"`` (mean support size), ``"coverage"`` (mean :func:`mass_coverage`)
        and ``"example"`` (the first trial's weight vector, in draw order).

    Raises:
        ValueError: empty ``ns``, an ``n < 1``, ``trials < 1``, ``scale <= 0``.
    """
    ns = _positive_ints(ns, "ns")
    if trials < 1:
        raise ValueError(f"trials must be >= 1, got {trials}")
    if not scale > 0:
        raise ValueError(f"scale must be > 0, got {scale}")
    gen = _generator(generator)
    if normalizers is None:
        normalizers = {"softmax": lambda s: torch.softmax(s, dim=-1), "ST": lambda s: soft_threshold(s, dim=-1)}
    out: dict = {"n": ns}
    for name in normalizers:
        out[name] = {"max_weight": [], "support": [], "coverage": [], "example": []}
    for n in ns:
        scores = scale * torch.randn(trials, n, generator=gen, dtype=torch.float64)
        for name, fn in normalizers.items():
            p = fn(scores)
            rec = out[name]
            rec["max_weight"].append(float(p.max(dim=-1).values.mean()))
            rec["support"].append(float(support_sizes(p).double().mean()))
            rec["coverage"].append(float(mass_coverage(p, fraction).double().mean()))
            rec["example"].append(p[0].clone())
    return out


def support_vs_length(
    ns: Sequence[int],
    trials: int = 100,
    generator: torch.Generator | None = None,
    *,
    scales: Sequence[float] = (1.0,),
) -> dict:
    """Measured ST support size ``T`` (Eq. 11) of ``scale * N(0, 1)`` score vectors for each length ``N``.

    Sec. III-C of the HSPAN paper argues that for long sequences the projection onto the simplex "tends to hit
    the boundary", i.e. ``T`` stays small compared with ``N``. This measures it. Sampling order: for each scale
    in ``scales``, for each ``N`` in ``ns``: ``torch.randn(trials, N, generator=generator, dtype=float64)``.

    Args:
        ns: sequence lengths (each ``>= 1``); trials: vectors per ``(scale, N)``; generator: randomness.
        scales: score standard deviations.

    Returns:
        dict with ``"n"`` (list), ``"scales"`` (list) and ``"mean"``, ``"q10"``, ``"q90"``, ``"max"``: each a
        ``(len(scales), len(ns))`` float64 tensor of the support size over trials (10 % / 90 % quantiles).

    Raises:
        ValueError: empty ``ns`` / ``scales``, ``N < 1``, ``trials < 1``, a non-positive scale.
    """
    ns = _positive_ints(ns, "ns")
    scales = [float(s) for s in scales]
    if not scales or any(not s > 0 for s in scales):
        raise ValueError(f"scales must be a non-empty list of positive numbers, got {scales}")
    if trials < 1:
        raise ValueError(f"trials must be >= 1, got {trials}")
    gen = _generator(generator)
    stats = {key: torch.zeros(len(scales), len(ns), dtype=torch.float64) for key in ("mean", "q10", "q90", "max")}
    for a, scale in enumerate(scales):
        for b, n in enumerate(ns):
            scores = scale * torch.randn(trials, n, generator=gen, dtype=torch.float64)
            t = torch.cat([threshold_and_support(part, dim=-1)[1][:, 0] for part in _row_chunks(scores)]).double()
            stats["mean"][a, b] = t.mean()
            stats["q10"][a, b] = t.quantile(0.1)
            stats["q90"][a, b] = t.quantile(0.9)
            stats["max"][a, b] = t.max()
    return {"n": ns, "scales": scales, **stats}


def eq14_probabilities(
    n: int,
    ks: Sequence[int],
    trials: int = 2000,
    generator: torch.Generator | None = None,
    *,
    scale: float = 1.0,
) -> dict:
    """Both sides of HSPAN Eq. (14), ``P(T > k) <= P(s_(k) - s_(k+1) < 1/k)``, estimated by sampling.

    Scores are ``scale * N(0, 1)`` vectors of length ``n`` (``torch.randn(trials, n, generator=..., dtype=
    float64)``, one draw for all ``k``); ``s_(1) >= s_(2) >= ...`` are their order statistics and ``T`` the ST
    support size. The event ``T > k`` is ``Σ_{j<=k} (s_(j) - s_(k+1)) < 1`` (Eq. 14, second line), which implies
    ``k (s_(k) - s_(k+1)) < 1`` because every term is at least ``s_(k) - s_(k+1)``.

    Args:
        n: sequence length; ks: values ``1 <= k < n``; trials: vectors; generator: randomness; scale: std.

    Returns:
        dict with ``"k"`` (list), ``"p_support_gt_k"``, ``"p_sum_of_gaps_lt_1"`` (the middle line of Eq. 14, must
        equal the first) and ``"p_gap_lt_1_over_k"`` (the bound), each a list of floats.

    Raises:
        ValueError: ``trials < 1``, ``scale <= 0``, or a ``k`` outside ``[1, n)``.
    """
    ks = _positive_ints(ks, "ks")
    if any(k >= n for k in ks):
        raise ValueError(f"every k must satisfy 1 <= k < n={n}, got {ks}")
    if trials < 1:
        raise ValueError(f"trials must be >= 1, got {trials}")
    if not scale > 0:
        raise ValueError(f"scale must be > 0, got {scale}")
    gen = _generator(generator)
    s = scale * torch.randn(trials, n, generator=gen, dtype=torch.float64)
    k_max = max(ks)
    tops, ts = [], []
    for part in _row_chunks(s):  # bounded memory: only the k_max + 1 largest scores of each row are kept
        tops.append(torch.topk(part, k_max + 1, dim=-1, sorted=True).values)  # s_(1) >= ... >= s_(k_max + 1)
        ts.append(threshold_and_support(part, dim=-1)[1][:, 0])
    srt, t = torch.cat(tops), torch.cat(ts)
    out: dict = {"k": ks, "p_support_gt_k": [], "p_sum_of_gaps_lt_1": [], "p_gap_lt_1_over_k": []}
    for k in ks:
        gaps = srt[:, :k] - srt[:, k : k + 1]  # s_(j) - s_(k+1), j = 1..k
        out["p_support_gt_k"].append(float((t > k).double().mean()))
        out["p_sum_of_gaps_lt_1"].append(float((gaps.sum(-1) < 1).double().mean()))
        out["p_gap_lt_1_over_k"].append(float((gaps[:, k - 1] < 1.0 / k).double().mean()))
    return out


def truncation_error(scores: Tensor, ks: Sequence[int]) -> dict:
    """Exact ST (official top-k with the 2k fallback) versus a truly truncated top-k, for each ``k``.

    For every ``k``: ``exact = soft_threshold(scores, -1, k, "exact")`` (equal to the full-sort ST whatever
    ``k``) and ``truncated = soft_threshold(scores, -1, k, "truncated")`` (ST over the ``k`` largest scores only).

    Args:
        scores: ``(..., N)`` floating scores (e.g. :meth:`srlib.attention.hspa.HSPA.similarity` ``(B, L, L)``).
        ks: top-k values (each ``>= 1``).

    Returns:
        dict with ``"k"`` (list) and lists over ``k``: ``"exact_equals_full"`` (bool, bit-identical to the
        full sort), ``"max_abs_diff"`` (truncated vs exact, float), ``"rows_changed"`` (rows that differ),
        ``"rows_support_gt_k"`` (rows whose exact support exceeds ``k``), and ``"rows"`` (total rows).

    Raises:
        ValueError: bad ``scores`` or a ``k < 1``.
    """
    _check_rows(scores, "scores")
    ks = _positive_ints(ks, "ks")
    with torch.no_grad():
        full = soft_threshold(scores, dim=-1, topk=None)
        t = support_sizes(full).reshape(-1)
        out: dict = {"k": ks, "exact_equals_full": [], "max_abs_diff": [], "rows_changed": [],
                     "rows_support_gt_k": [], "rows": int(t.numel())}
        for k in ks:
            exact = soft_threshold(scores, dim=-1, topk=k, mode="exact")
            trunc = soft_threshold(scores, dim=-1, topk=k, mode="truncated")
            diff = (trunc - exact).abs().reshape(-1, scores.shape[-1])
            out["exact_equals_full"].append(bool(torch.equal(exact, full)))
            out["max_abs_diff"].append(float(diff.max()))
            out["rows_changed"].append(int((diff.amax(-1) > 0).sum()))
            out["rows_support_gt_k"].append(int((t > k).sum()))
    return out


def topk_sweep(
    model: torch.nn.Module,
    lr: Tensor,
    ks: Sequence[int | None],
    modes: Sequence[str] = ("exact", "truncated"),
    *,
    hr: Tensor | None = None,
    scale: int | None = None,
) -> dict:
    """A network's output for each test-time top-k and ST mode (the experiment of HSPAN Fig. 6).

    The model must offer ``set_topk(k, mode)`` and ``attention_modules()`` (as
    :class:`srlib.models.hspan.HSPAN`); its settings are restored afterwards. The baseline is the full-sort ST
    (``topk=None``), i.e. exact sparsemax.

    Args:
        model: the network (evaluated in eval mode, without gradients; its mode is restored).
        lr: ``(B, 3, h, w)`` LR input in ``[0, 1]``.
        ks: top-k values (``None`` = full sort).
        modes: ST modes to sweep (``"exact"``, ``"truncated"``).
        hr: optional ``(B, 3, s*h, s*w)`` ground truth; then PSNR on Y (:func:`srlib.metrics.psnr`, outputs
            clamped to ``[0, 1]``) is reported, the first image of the batch.
        scale: upscaling factor for the PSNR border crop (default: output size / input size).

    Returns:
        dict with ``"k"`` (list) and per mode ``{"max_abs_diff": [...], "equal_to_full": [...],
        "psnr": [...] or None}``, plus ``"full_psnr"`` (PSNR of the full-sort output, or None).

    Raises:
        ValueError: the model has no ``set_topk`` / ``attention_modules``, or an unknown mode / bad ``k``.
    """
    if not (hasattr(model, "set_topk") and hasattr(model, "attention_modules")):
        raise ValueError("topk_sweep needs a model with set_topk(k, mode) and attention_modules() (e.g. HSPAN)")
    attn = [m for _, m in model.attention_modules()]
    saved = [(m.topk, m.mode) for m in attn]
    was_training = model.training
    ks = list(ks)

    def run() -> Tensor:
        with torch.no_grad():
            return model(lr)

    def score(y: Tensor) -> float | None:
        if hr is None:
            return None
        from srlib.metrics import psnr

        s = scale if scale is not None else y.shape[-1] // lr.shape[-1]
        return float(psnr(y[0].clamp(0, 1), hr[0], s))

    model.eval()
    try:
        model.set_topk(None, "exact")
        full = run()
        out: dict = {"k": ks, "full_psnr": score(full)}
        for mode in modes:
            rec: dict = {"max_abs_diff": [], "equal_to_full": [], "psnr": [] if hr is not None else None}
            for k in ks:
                model.set_topk(k, mode)
                y = run()
                rec["max_abs_diff"].append(float((y - full).abs().max()))
                rec["equal_to_full"].append(bool(torch.equal(y, full)))
                if hr is not None:
                    rec["psnr"].append(score(y))
            out[mode] = rec
    finally:
        for m, (k, mode) in zip(attn, saved):
            m.topk, m.mode = k, mode
        model.train(was_training)
    return out


