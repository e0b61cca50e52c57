"""Interactive attention explorer: where does one query pixel look, under each of the six mechanisms?

Two layers:

* **Functions** (no widgets, unit-tested): :func:`prepare_attention` runs the shared part of one srlib
  attention module on a feature map once per *knob setting* and keeps only what every query needs, all of it
  ``O(L)`` (embeddings, hash codes and bucket layout, random features); :meth:`AttentionState.query` then
  computes the weights of one query over all ``L = H*W`` positions in ``O(L D)`` (dense, ENLA) or
  ``O(R * 3c * D)`` (bucketed) work, never an ``L x L`` map. :func:`query_attention` does both in one call;
  :class:`AttentionCache` keeps recent states so that moving the query never recomputes the expensive part.
* **Widget** :class:`AttentionExplorer` (ipywidgets + a PNG drawn with numpy and PIL, redrawn in place): pick
  the query with x/y sliders (or a click on the picture, when ``ipyevents`` is installed), the mechanism, the
  layer and the knob that matters. ``benchmarks/explorer.py`` measures how fast it answers.

What the map of one query ``p`` is, per mechanism (``y_p = sum_j map_j v_j`` for the mechanism's values ``v``):

========  =================================================================================================
``NLA``   softmax row ``softmax_j(theta(x_p) . phi(x_j))``, NLSN Eq. (4)
``NLSA``  sum over hash rounds of ``w_r(p)`` times the chunk-restricted softmax of round ``r`` scattered back
          to positions (NLSN Eqs. 9-11; the row of :func:`srlib.analysis.hashing.attention_on_positions`, computed
          from the query's own keys, :meth:`AttentionState._bucketed_row`)
``ENLA``  ``phi(q_p) . phi(k_j) / sum_j' phi(q_p) . phi(k_j')`` with positive random features (ENLCN Eqs. 4-6);
          the exact ``softmax_j(q_p . k_j)`` it approximates is returned too (``exact=True`` shows it)
``GLA``   as NLSA with super-bit LSH and GLA's own round weights (DLSN Eqs. 14, 17-18)
``HSPA``  soft-thresholding (sparsemax) row of ``phi_q(x_p) . phi_k(x_j)`` (HSPAN Eqs. 7-12), optional top-k
``LCoA``  as NLSA with nearest-k-means-centroid codes, one round (LCoAN Eqs. 6-11)
========  =================================================================================================

Modules. Pass trained srlib modules (``module=`` / ``layer_modules=``, e.g. from :func:`collect_attention_layers`
on a network), or let :func:`demo_module` build one: a seeded srlib module whose query/key embedding is the
identity scaled by the temperature, so that the score of two *unit* feature vectors is ``cos / temperature``
(for ENLA the amplification ``k`` plays that role: ``k cos``). With :func:`~srlib.analysis.maps.patch_descriptors`
as features this is the non-local-means similarity of notebook ``00b``: the maps are meaningful without training.

Images: :class:`AttentionExplorer` takes a tensor, an image file (yours, or a benchmark image), or the name
of a bundled sample photograph; :func:`demo_scene` is the scene of notebook ``00b``.

Conventions: features ``(1, C, H, W)``; position ``(y, x)`` is index ``p = y * W + x``; maps ``(H, W)``.
"""

from __future__ import annotations

import contextlib
import io
import math
import os
from collections import OrderedDict
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Iterator, Mapping, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

from srlib.attention.buckets import BucketLayout
from srlib.attention.enla import ENLCA, gaussian_orthogonal_matrix, positive_random_features
from srlib.attention.gla import GlobalLearnableAttention, paper_round_weights
from srlib.attention.hspa import HSPA
from srlib.attention.lcoa import LearnableCollaborativeAttention
from srlib.attention.nla import NonLocalAttention, softmax_last
from srlib.attention.nlsa import NonLocalSparseAttention
from srlib.attention.softthreshold import SoftThreshold
from srlib.analysis.buckets import attended_keys
from srlib.analysis.maps import patch_descriptors
from srlib.analysis.measure import return_freed_memory as _return_freed_memory
from srlib.analysis.sparsity import mass_coverage

__all__ = [
    "MECHANISMS",
    "KNOBS",
    "TEMPERATURES",
    "Knob",
    "AttentionState",
    "AttentionCache",
    "AttentionExplorer",
    "collect_attention_layers",
    "default_knobs",
    "demo_module",
    "demo_scene",
    "keys_carrying",
    "module_knobs",
    "prepare_attention",
    "query_attention",
    "settable_knobs",
]

#: The six mechanisms, in the order of the papers.
MECHANISMS: tuple[str, ...] = ("NLA", "NLSA", "ENLA", "GLA", "HSPA", "LCoA")

_NONE = -1  # widget stand-in for a knob value of None (HSPA top-k "all")
_ROW_BLOCK = 2048  # positions per block where an L x m product is built (ENLA key features)
_CHUNKS = (16, 32, 48, 64, 96, 128, 144, 192, 256, 384, 512)


@dataclass(frozen=True)
class Knob:
    """One control of a mechanism.

    Attributes:
        name: keyword argument of :func:`prepare_attention` / :func:`demo_module`.
        label: what the widget shows.
        default: the paper's (or official code's) value.
        options: the allowed values (a selection slider / dropdown / checkbox), or ``None`` for a range.
        bounds: ``(min, max, step)`` of a slider when ``options`` is ``None``.
        help: one line on what it changes.
    """

    name: str
    label: str
    default: Any
    options: tuple | None = None
    bounds: tuple[float, float, float] | None = None
    help: str = ""


#: Temperatures the explorer's slider offers for the demo modules (``cos / tau`` scores; 0.05 as notebook 00b).
TEMPERATURES = (0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0)

#: The knobs that matter, per mechanism (NLA has none: dense softmax over every position).
KNOBS: dict[str, tuple[Knob, ...]] = {
    "NLA": (),
    "NLSA": (
        Knob("n_hashes", "hash rounds R", 4, bounds=(1, 8, 1), help="NLSN Eq. 11: rounds combined per query"),
        Knob("chunk_size", "chunk size c", 144, options=_CHUNKS, help="NLSN Eq. 8: keys = 3 chunks of c"),
    ),
    "ENLA": (
        Knob("amplification", "amplification k", 6.0, bounds=(1.0, 20.0, 0.5), help="ENLCN Eq. 3: scores k cos"),
        Knob("n_features", "random features m", 128, options=(4, 8, 16, 32, 64, 128, 256, 512, 1024),
             help="ENLCN Eq. 4: more features, closer to the exact softmax"),
        Knob("exact", "exact softmax", False, options=(False, True), help="show softmax(q k^T) instead"),
    ),
    "GLA": (
        Knob("n_hashes", "hash rounds R", 3, bounds=(1, 8, 1), help="DLSN Eq. 17: rounds combined per query"),
        Knob("chunk_size", "chunk size c", 128, options=_CHUNKS, help="DLSN Eq. 15-16: bucket size l"),
    ),
    "HSPA": (
        Knob("topk", "top-k", 128, options=(1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, None),
             help="HSPAN Sec. III-C: ST searches the k largest scores (None: full sort)"),
        Knob("mode", "ST mode", "exact", options=("exact", "truncated"),
             help="exact: official (k only changes the cost); truncated: sparsemax of the top-k only"),
    ),
    "LCoA": (
        Knob("n_clusters", "clusters K", 128, options=(2, 4, 8, 16, 32, 64, 128, 256), help="LCoAN Eq. 7"),
        Knob("window_size", "window c", 144, options=_CHUNKS, help="LCoAN Fig. 1b: keys = 3 windows of c"),
    ),
}

_CLASSES: dict[str, type] = {
    "NLA": NonLocalAttention,
    "NLSA": NonLocalSparseAttention,
    "ENLA": ENLCA,
    "GLA": GlobalLearnableAttention,
    "HSPA": HSPA,
    "LCoA": LearnableCollaborativeAttention,
}


def _check_mechanism(mechanism: str) -> str:
    if mechanism not in KNOBS:
        raise ValueError(f"unknown mechanism {mechanism!r}; choose one of {MECHANISMS}")
    return mechanism


def default_knobs(mechanism: str) -> dict[str, Any]:
    """The default knob values of ``mechanism`` (paper / official values), e.g. ``{"n_hashes": 4, ...}``."""
    return {k.name: k.default for k in KNOBS[_check_mechanism(mechanism)]}


def _check_knobs(mechanism: str, knobs: Mapping[str, Any]) -> dict[str, Any]:
    allowed = {k.name for k in KNOBS[mechanism]}
    unknown = sorted(set(knobs) - allowed)
    if unknown:
        raise ValueError(f"{mechanism} has no knob {unknown[0]!r}; its knobs are {sorted(allowed) or 'none'}")
    return {**default_knobs(mechanism), **knobs}


# --------------------------------------------------------------------------------------------------------
# Numbers shown by the widget
# --------------------------------------------------------------------------------------------------------
def keys_carrying(weights: Tensor, mass: float = 0.9) -> int:
    """How many keys carry ``mass`` of a query's attention: the fewest largest weights whose sum reaches it.

    One row of :func:`srlib.analysis.sparsity.mass_coverage` (the single implementation): for a one-hot row 1, for
    a uniform row over ``N`` keys ``ceil(mass * N)``. Softmax gives every key a positive weight; this counts
    the keys that matter.

    Args:
        weights: non-negative weights of one query, any shape (``(H, W)`` map or ``(L,)`` row), not all zero.
        mass: fraction of the total weight, in ``(0, 1]``.
    Returns:
        an ``int`` in ``[1, weights.numel()]``.
    Raises:
        ValueError: empty or negative weights, an all-zero row, ``mass`` outside ``(0, 1]``.
    """
    if not isinstance(weights, Tensor) or weights.numel() == 0:
        raise ValueError("weights must be a non-empty tensor")
    row = weights.detach().reshape(-1)
    if bool((row < 0).any()):
        raise ValueError(f"weights must be non-negative, got a minimum of {float(row.min()):.4g}")
    if not float(row.sum()) > 0:
        raise ValueError("weights are all zero: no key carries any weight")
    if not 0 < mass <= 1:
        raise ValueError(f"mass must be in (0, 1], got {mass}")
    return int(mass_coverage(row, mass))


# --------------------------------------------------------------------------------------------------------
# Demo modules
# --------------------------------------------------------------------------------------------------------
@torch.no_grad()
def _identity_(conv: nn.Conv2d, gain: float) -> None:
    """Make a ``C -> C`` convolution the scaled identity (centre tap ``gain``, bias 0)."""
    if conv.in_channels != conv.out_channels:
        raise ValueError(f"identity embedding needs C -> C, got {conv.in_channels} -> {conv.out_channels}")
    conv.weight.zero_()
    kh, kw = conv.kernel_size
    conv.weight[:, :, kh // 2, kw // 2] = gain * torch.eye(conv.in_channels, dtype=conv.weight.dtype)
    if conv.bias is not None:
        conv.bias.zero_()


def demo_module(
    mechanism: str, channels: int, *, temperature: float = 0.05, seed: int = 0, **knobs: Any
) -> nn.Module:
    """A seeded srlib module of ``mechanism`` whose similarity needs no training.

    The module is the real srlib class (``reduction=1``, 1x1 matching convolutions), built with the global RNG
    forked and seeded with ``seed`` (the caller's RNG state is untouched). Its query/key embedding is then set
    to the identity scaled so that two unit feature vectors score ``cos / temperature``: NLA/HSPA
    ``theta = phi = x / sqrt(temperature)`` (PReLU slopes set to 1), NLSA/GLA/LCoA ``x / temperature`` (their
    keys are L2-normalised inside, NLSN Eq. 9), GLA without the (untrained, hence random) learnable score
    (``lss_variant="none"``). ENLA normalises and amplifies by ``sqrt(k)`` itself (ENLCN Eq. 3), so its
    embedding is the plain identity and the temperature is unused. Values (``conv_assembly``) keep their seeded
    random initialisation: they do not enter the map.

    Args:
        mechanism: one of :data:`MECHANISMS`.
        channels: feature channels ``C``.
        temperature: ``> 0``; scores of unit features are ``cos / temperature``.
        seed: seed of the construction (weights, ENLA's projection, LSH / k-means generators).
        **knobs: the mechanism's :data:`KNOBS` (defaults: the paper's values).
    Returns:
        the module, in eval mode.
    Raises:
        ValueError: unknown mechanism or knob, ``temperature <= 0``, ``channels < 1``.
    """
    knobs = _check_knobs(_check_mechanism(mechanism), knobs)
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    if channels < 1:
        raise ValueError(f"channels must be >= 1, got {channels}")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        gen = torch.Generator().manual_seed(seed)
        if mechanism in ("NLA", "HSPA"):
            if mechanism == "NLA":
                m = NonLocalAttention(channel=channels, reduction=1)
            else:
                m = HSPA(channel=channels, reduction=1, topk=knobs["topk"], mode=knobs["mode"])
            for seq in (m.conv_match1, m.conv_match2):
                _identity_(seq[0], 1.0 / math.sqrt(temperature))
                seq[1].weight.data.fill_(1.0)  # PReLU slope 1: the identity
        elif mechanism == "NLSA":
            m = NonLocalSparseAttention(n_hashes=knobs["n_hashes"], channels=channels, k_size=1, reduction=1,
                                        chunk_size=knobs["chunk_size"])
            _identity_(m.conv_match[0], 1.0 / temperature)
        elif mechanism == "GLA":
            m = GlobalLearnableAttention(n_hashes=knobs["n_hashes"], channels=channels, k_size=1, reduction=1,
                                         chunk_size=knobs["chunk_size"], lss_variant="none")
            _identity_(m.conv_match[0], 1.0 / temperature)
        elif mechanism == "LCoA":
            m = LearnableCollaborativeAttention(channels=channels, k_size=1, reduction=1,
                                                n_clusters=knobs["n_clusters"], window_size=knobs["window_size"])
            _identity_(m.conv_match[0], 1.0 / temperature)
            m.kmeans.generator = gen
        else:  # ENLA
            m = ENLCA(channel=channels, reduction=1, res_scale=1.0, n_features=knobs["n_features"],
                      amplification=knobs["amplification"], loss_variant=None, generator=gen)
            _identity_(m.conv_match1[0], 1.0)
            _identity_(m.conv_match2[0], 1.0)
    if hasattr(m, "generator"):
        m.generator = gen  # LSH draws (NLSA, GLA) come from this seeded generator
    return m.eval()


def settable_knobs(mechanism: str, module: nn.Module) -> tuple[str, ...]:
    """Knobs of ``mechanism`` that can be changed on an existing (e.g. trained) ``module`` at test time.

    Fixed by the weights: LCoA's number of clusters (the centroids), GLA's chunk size when it has a learnable
    score (its MLP outputs one score per slot of the chunk), hash rounds when fixed projections are set.
    """
    _check_mechanism(mechanism)
    names = [k.name for k in KNOBS[mechanism]]
    if mechanism in ("NLSA", "GLA") and getattr(module, "projections", None) is not None:
        names.remove("n_hashes")
    if mechanism == "GLA" and getattr(module, "lss_variant", "none") != "none":
        names.remove("chunk_size")
    if mechanism == "LCoA":
        names.remove("n_clusters")
    if mechanism == "HSPA" and not isinstance(getattr(module, "normalizer", None), SoftThreshold):
        names = []
    return tuple(names)


def module_knobs(mechanism: str, module: nn.Module) -> dict[str, Any]:
    """The knob values an existing ``module`` runs with (``{"n_hashes": 4, "chunk_size": 144}`` ...)."""
    _check_mechanism(mechanism)
    _check_module(mechanism, module)
    if mechanism == "NLA":
        return {}
    if mechanism in ("NLSA", "GLA"):
        return {"n_hashes": module.n_hashes, "chunk_size": module.chunk_size}
    if mechanism == "ENLA":
        return {"amplification": float(module.amplification), "n_features": module.attn_fn.n_features,
                "exact": False}
    if mechanism == "HSPA":
        if isinstance(module.normalizer, SoftThreshold):
            return {"topk": module.topk, "mode": module.mode}
        return {}
    return {"n_clusters": module.n_clusters, "window_size": module.window_size}


def _check_module(mechanism: str, module: nn.Module) -> None:
    cls = _CLASSES[mechanism]
    if not isinstance(module, cls) or (mechanism == "NLA" and isinstance(module, HSPA)):
        raise ValueError(f"{mechanism} needs a {cls.__name__} module, got {type(module).__name__}")


@contextlib.contextmanager
def _temporarily(obj: Any, **attrs: Any) -> Iterator[None]:
    """Set attributes for the duration of a block, restoring the old values afterwards (even on error)."""
    old = {k: getattr(obj, k) for k in attrs}
    try:
        for k, v in attrs.items():
            setattr(obj, k, v)
        yield
    finally:
        for k, v in old.items():
            setattr(obj, k, v)


# --------------------------------------------------------------------------------------------------------
# Per-knob state and per-query rows
# --------------------------------------------------------------------------------------------------------
#: ``details`` entries of the bucketed mechanisms that need the module's whole forward pass (chunk weights of
#: every query, ``O(R L 3c)`` floats): computed only when read (:class:`_Details`), never by the explorer.
_FORWARD_DETAILS: dict[str, tuple[str, ...]] = {
    "NLSA": ("score", "bucket_score"),
    "GLA": ("score", "bucket_score", "lss", "round_weights"),
    "LCoA": ("score", "bucket_score", "collaborative"),
}


class _Details(Mapping):
    """``module.details`` of a bucketed mechanism, the cheap part kept, the expensive part on demand.

    Holds what every query needs (``codes (1, R, L)``, ``layout``, ``embedding (1, L, D)``, the random draws
    ``rotations`` / ``projections``, ``n_buckets``, LCoA's ``means``). Reading one of the forward-pass entries
    (:data:`_FORWARD_DETAILS`: ``score (1, R, n, c, 3c)``, ``bucket_score (1, R, L)``, GLA's ``lss`` and
    ``round_weights``) runs the module's own ``keep_details`` forward once, replayed with the same draws
    (``replay()`` returns that call's ``details``), and keeps its result.
    """

    def __init__(self, cheap: dict[str, Any], lazy: Sequence[str], replay: Any) -> None:
        self._data = dict(cheap)
        self._lazy = tuple(k for k in lazy if k not in cheap)
        self._replay = replay

    def __getitem__(self, key: str) -> Any:
        if key not in self._data and key in self._lazy:
            full = self._replay()
            for name in self._lazy:
                self._data.setdefault(name, full.get(name))
            self._lazy = ()
        return self._data[key]

    def __contains__(self, key: object) -> bool:
        return key in self._data or key in self._lazy

    def __iter__(self) -> Iterator[str]:
        yield from self._data
        yield from (k for k in self._lazy if k not in self._data)

    def __len__(self) -> int:
        return len(self._data) + sum(1 for k in self._lazy if k not in self._data)

    @property
    def computed(self) -> bool:
        """Whether the forward-pass entries have been computed (read at least once)."""
        return not self._lazy


@dataclass
class AttentionState:
    """Everything one knob setting needs to answer any query; built by :func:`prepare_attention`.

    Compact by design: what is kept grows like ``L`` (embeddings, codes, sort order), never like ``L^2`` or
    ``R L 3c``; :meth:`query` recomputes the one row it is asked for.

    Attributes:
        mechanism: one of :data:`MECHANISMS`.
        hw: ``(H, W)`` of the feature map.
        knobs: the knob values in effect.
        module: the srlib module that was run.
        features: ``(1, C, H, W)`` input features.
        q, k: ``(L, D)`` queries / keys (dense mechanisms and ENLA); bucketed mechanisms: ``q`` is the shared
            query/key embedding (``k`` is ``None``: keys are ``q / max(|q|, key_eps)``, NLSN Eq. 9).
        normalizer: NLA / HSPA score normaliser applied to a query's scores ``(1, 1, L)``.
        projection: ``(m, D)`` ENLA random matrix ``F``; ``phi_k``: ``(L, m)`` key features (ENLA).
        details: bucketed mechanisms: the module's ``details`` (``codes (1, R, L)``, ``layout``,
            ``embedding``, random draws; the chunk weights ``score (1, R, n, c, 3c)`` and ``bucket_score
            (1, R, L)`` are computed by the module's own forward pass only when read); else ``None``.
        key_eps: ``eps`` of the key normalisation (bucketed mechanisms, official 5e-5).
        extra: GLA's learnable-score inputs (``lss_features (L, C)``, ``lss_variant``) and round weighting.
    """

    mechanism: str
    hw: tuple[int, int]
    knobs: dict[str, Any]
    module: nn.Module
    features: Tensor
    q: Tensor | None = None
    k: Tensor | None = None
    projection: Tensor | None = None
    phi_k: Tensor | None = None
    feature_eps: float = 0.0
    normalizer: Any = None
    details: Mapping | None = None
    key_eps: float = 5e-5
    extra: dict = field(default_factory=dict)

    @property
    def length(self) -> int:
        return self.hw[0] * self.hw[1]

    def _position(self, query_yx: Sequence[int]) -> int:
        H, W = self.hw
        try:
            y, x = (int(v) for v in query_yx)
        except (TypeError, ValueError):
            raise ValueError(f"query_yx must be a pair (y, x), got {query_yx!r}") from None
        if not (0 <= y < H and 0 <= x < W):
            raise ValueError(f"query {(y, x)} lies outside the {H}x{W} feature map")
        return y * W + x

    def _bucketed_row(self, p: int) -> tuple[Tensor, Tensor, Tensor]:
        """Row ``p`` of a bucketed mechanism from the layout alone, ``O(R * 3c * D)``.

        In round ``r`` query ``p`` scores its ``3c`` keys ``j`` (its chunk and the two neighbouring chunks of
        the sorted order, :func:`~srlib.analysis.hashing.attended_keys`) with ``raw_rj = q_p . k_j`` (+ GLA's
        learned term), takes the softmax ``a_rj`` and the log-normaliser ``b_r = logsumexp_j raw_rj``
        (NLSN Eqs. 9-10, DLSN Eq. 14); rounds are mixed with ``w_r = softmax_r(b_r)`` (NLSN Eq. 11; GLA's
        ``round_weights="paper"``: DLSN Eq. 18, ``sum_j raw_rj`` normalised over rounds). The weight on
        position ``j`` is ``sum_r w_r * sum_{slots holding j} a_rj`` (a padded duplicate adds to the row it
        copies): exactly what the module's forward pass applies to the values of query ``p``.

        Returns:
            ``(row (L,), keys (R, 3c) positions, w (R,) round weights)``.
        """
        d = self.details
        layout = d["layout"]
        keys = attended_keys(layout, [p])[0, :, 0]  # (R, 3c) key positions, [own, prev, next] chunks
        emb = self.q
        k = F.normalize(emb[keys], p=2, dim=-1, eps=self.key_eps)  # (R, 3c, D): k_j = q_j / max(|q_j|, eps)
        raw = k @ emb[p]  # (R, 3c): q_p . k_j, NLSN Eq. 9 / DLSN Eq. 10
        variant = self.extra.get("lss_variant", "none")
        if variant == "official":  # s_l(i, j) = MLP(f_j)[i], i = the query's slot in its chunk (DLSN code)
            slot = layout.undo_idx[0, :, p] % layout.chunk_size  # (R,)
            per_key = self.module.fc(self.extra["lss_features"][keys])  # (R, 3c, c)
            raw = raw + per_key.gather(2, slot.view(-1, 1, 1).expand(-1, keys.shape[1], 1))[..., 0]
        elif variant == "paper":  # s_l(i, j) = MLP(f_i)[j], DLSN Eq. 9 and 11
            raw = raw + self.module.fc(self.extra["lss_features"][p]).unsqueeze(0)
        log_norm = torch.logsumexp(raw, dim=-1)  # (R,) bucket scores b_r(p)
        weights = torch.exp(raw - log_norm.unsqueeze(-1))  # (R, 3c), Eq. 10
        if self.extra.get("round_weights") == "paper":  # DLSN Eq. 18 as written
            w = paper_round_weights(raw.sum(-1).view(1, -1, 1)).view(-1)
        else:  # NLSN Eq. 11 (official NLSA, GLA and LCoA)
            w = torch.softmax(log_norm, dim=0)
        row = torch.zeros(self.length, dtype=weights.dtype, device=weights.device)
        row.index_add_(0, keys.reshape(-1), (weights * w.unsqueeze(-1)).reshape(-1))
        return row, keys, w

    @torch.no_grad()
    def query(self, query_yx: Sequence[int], mass: float = 0.9) -> dict[str, Any]:
        """The attention of one query over all positions, and the numbers the explorer shows.

        Work: ``O(L D)`` (NLA, HSPA: one row of scores), ``O(L m)`` (ENLA), ``O(R 3c D + R L)`` (NLSA, GLA,
        LCoA: the query's chunk scores, plus its bucket mask).

        Args:
            query_yx: ``(y, x)`` of the query on the feature grid.
            mass: fraction for ``keys_for_90`` (default 0.9).
        Returns:
            dict with ``map`` ``(H, W)`` float weights summing to 1; ``bucket`` ``(H, W)`` bool (positions that
            share the query's bucket / cluster in at least one round) or ``None``; ``candidates`` ``(H, W)``
            bool (keys the query can reach: its chunk and the two neighbouring chunks, any round) or ``None``;
            ``keys_for_90`` (:func:`keys_carrying`), ``support`` (positions with weight > 0), ``max_weight``,
            ``bucket_size`` (``bucket.sum()``), ``bucket_sizes`` (per round), ``n_candidates``,
            ``round_weights`` (per round, the query's ``w_r(p)``), ENLA: ``exact_map`` and ``tv_to_exact``
            (total-variation distance ``0.5 * sum |map - exact_map|``); plus ``mechanism``, ``query_yx``,
            ``knobs``.
        Raises:
            ValueError: a query outside the grid.
        """
        p = self._position(query_yx)
        H, W = self.hw
        out: dict[str, Any] = {
            "mechanism": self.mechanism, "query_yx": (p // W, p % W), "knobs": dict(self.knobs),
            "bucket": None, "candidates": None, "bucket_size": None, "bucket_sizes": None,
            "n_candidates": None, "round_weights": None, "exact_map": None, "tv_to_exact": None,
        }
        if self.mechanism in ("NLA", "HSPA"):
            scores = (self.q[p] @ self.k.T).view(1, 1, -1)  # (1, 1, L): s_pj, NLSN Eq. 4 / HSPAN Eq. 7
            row = self.normalizer(scores).view(-1)
        elif self.mechanism == "ENLA":
            phi_q = positive_random_features(self.q[p : p + 1], self.projection, self.feature_eps)  # (1, m)
            approx = (phi_q @ self.phi_k.T).view(-1)  # phi(q_p) . phi(k_j), ENLCN Eq. 4
            approx = approx / (phi_q * self.phi_k.sum(0)).sum()  # D^-1, Eq. 6
            exact = torch.softmax(self.q[p] @ self.k.T, dim=-1)  # what Eq. 4 approximates
            out["exact_map"] = exact.view(H, W).cpu()
            out["tv_to_exact"] = 0.5 * float((approx.double() - exact.double()).abs().sum())
            row = exact if self.knobs.get("exact") else approx
        else:  # bucketed: NLSA, GLA, LCoA
            row, keys, w = self._bucketed_row(p)
            codes = self.details["codes"][0]  # (R, L)
            same = codes == codes[:, p : p + 1]  # (R, L): same bucket / cluster as the query, per round
            cand = torch.zeros(self.length, dtype=torch.bool, device=keys.device)
            cand[keys.reshape(-1)] = True
            bucket = same.any(0)
            out["bucket"] = bucket.view(H, W).cpu()
            out["bucket_size"] = int(bucket.sum())
            out["bucket_sizes"] = [int(s) for s in same.sum(1)]
            out["candidates"] = cand.view(H, W).cpu()
            out["n_candidates"] = int(cand.sum())
            out["round_weights"] = [float(v) for v in w]
        row = row.detach().cpu()
        out["map"] = row.view(H, W)
        out["keys_for_90"] = keys_carrying(row, mass)
        out["support"] = int((row > 0).sum())
        out["max_weight"] = float(row.max())
        return out


def _sequence(x: Tensor) -> Tensor:
    return x.flatten(2).transpose(1, 2)[0]  # (1, C, H, W) -> (L, C)


def _bucket_layout(mechanism: str, module: nn.Module, features: Tensor, gen: torch.Generator) -> dict[str, Any]:
    """Hash and sort only (no chunk attention): the cheap part of a bucketed module's forward pass.

    The same steps, in the same order and with the module's own methods, as the first lines of
    ``NonLocalSparseAttention.forward`` (embedding, spherical LSH, layout), ``GlobalLearnableAttention.forward``
    (embedding, super-bit LSH, layout, learnable-score features) and ``LearnableCollaborativeAttention._lsp``
    (embedding, nearest k-means centroid: initialises an uninitialised module's centroids, official first
    call, drawing from ``gen``; layout). Returns the cheap ``details`` entries.
    """
    emb = module.conv_match(features).flatten(2).transpose(1, 2)  # (1, L, D): queries = keys
    if mechanism == "LCoA":
        with _temporarily(module.kmeans, generator=gen):
            codes = module.kmeans(emb)  # (1, R, L), Eq. 7-8
        layout = BucketLayout.from_codes(codes, module.window_size)
        return {"codes": codes, "layout": layout, "embedding": emb, "means": module.kmeans.means.detach().clone()}
    draws = module.projections
    if draws is None:
        with _temporarily(module, generator=gen):
            codes, draws, n_buckets = module.hash(emb)  # NLSN Eq. 7 / DLSN Eq. 12-13
    else:
        codes, draws, n_buckets = module.hash(emb)
    layout = BucketLayout.from_codes(codes, module.chunk_size)
    out = {"codes": codes, "layout": layout, "embedding": emb, "n_buckets": n_buckets}
    out["rotations" if mechanism == "NLSA" else "projections"] = draws
    if mechanism == "GLA" and module.lss_variant == "none":
        out["lss"] = None
    return out


def _replay_forward(mechanism: str, module: nn.Module, features: Tensor, attrs: dict, draws: Any):
    """A function running ``module``'s own ``keep_details`` forward pass with the state's knobs, scoring
    attributes and random draws (eval mode; the module's attributes and ``details`` restored afterwards);
    returns that call's details. The module's weights are those it has when the function runs."""

    @torch.no_grad()
    def replay() -> dict:
        was_training = module.training
        with _temporarily(module, **attrs, keep_details=True, details=None):
            try:
                module.eval()
                if mechanism == "NLSA":
                    module(features, rotations=draws)
                elif mechanism == "GLA":
                    module(features, projections=draws)
                else:
                    module(features)
            finally:
                module.train(was_training)
            return module.details

    return replay


@torch.no_grad()
def prepare_attention(
    mechanism: str,
    features: Tensor,
    module: nn.Module | None = None,
    *,
    temperature: float = 0.05,
    seed: int = 0,
    **knobs: Any,
) -> AttentionState:
    """Run the part of ``mechanism`` every query shares, once, on ``features`` (the expensive part).

    Without ``module`` a :func:`demo_module` is built from ``temperature``, ``seed`` and ``knobs``. With a
    ``module`` (e.g. a trained layer), the settable knobs (:func:`settable_knobs`) are applied for this call
    only and restored afterwards; random draws (LSH directions, k-means initialisation of an uninitialised
    LCoA, ENLA features when ``n_features`` differs from the module's) come from a generator seeded with
    ``seed``, so the result is deterministic. Modules run in eval mode (their training flag is restored).

    Work and memory per mechanism, all linear in ``L``: NLA/HSPA embed queries and keys (``O(L C)``); ENLA also
    the key features ``phi(K)`` (``O(L m C)``, ``L x m`` kept); NLSA/GLA/LCoA embed, hash and sort (``O(L C b
    R)``: the module's own hashing, :func:`_bucket_layout`), without the chunk attention of all queries
    (``R L 3c`` weights), which :meth:`AttentionState.query` recomputes for one query at a time.

    Args:
        mechanism: one of :data:`MECHANISMS`.
        features: ``(1, C, H, W)`` feature map the module takes (batch size 1).
        module: an srlib module of the mechanism's class, or ``None`` for the demo module.
        temperature, seed: see :func:`demo_module`.
        **knobs: :data:`KNOBS` of the mechanism (missing ones: defaults, or the module's values).
    Returns:
        :class:`AttentionState`.
    Raises:
        ValueError: unknown mechanism/knob, features not ``(1, C, H, W)``, a module of the wrong class, a knob
            that the given module cannot change, or a knob the mechanism rejects (e.g. ``chunk_size=0``).
    """
    _check_mechanism(mechanism)
    if not isinstance(features, Tensor) or features.dim() != 4 or features.shape[0] != 1:
        shape = tuple(features.shape) if isinstance(features, Tensor) else type(features).__name__
        raise ValueError(f"features must be a (1, C, H, W) tensor, got {shape}")
    if not features.is_floating_point():
        raise ValueError(f"features must be floating point, got {features.dtype}")
    H, W = features.shape[-2:]
    gen = torch.Generator(device=features.device).manual_seed(seed)
    if module is None:
        full = _check_knobs(mechanism, knobs)
        module = demo_module(mechanism, features.shape[1], temperature=temperature, seed=seed, **full)
        module = module.to(device=features.device, dtype=features.dtype)
        overrides: dict[str, Any] = {}
    else:
        _check_module(mechanism, module)
        current = module_knobs(mechanism, module)
        _check_knobs(mechanism, knobs)
        settable = settable_knobs(mechanism, module)
        for name, value in knobs.items():
            if name not in settable and value != current.get(name, value):
                raise ValueError(
                    f"{mechanism}: knob {name!r} is fixed by this module's weights ({current.get(name)!r}); "
                    f"cannot use {value!r}"
                )
        overrides = {n: v for n, v in knobs.items() if n in settable and n != "exact"}
        full = {**current, **knobs}
    state = AttentionState(mechanism, (H, W), full, module, features)

    if mechanism in ("NLA", "HSPA"):
        q, k, _ = module.embed(features)  # (1, L, D) each; the normaliser does not change the embedding
        if overrides:  # HSPA knobs on a given module: a private ST normaliser, the module is left as it is
            state.normalizer = SoftThreshold(-1, full["topk"], full["mode"])
        else:
            state.normalizer = module.normalizer or softmax_last
        state.q, state.k = q[0], k[0]
    elif mechanism == "ENLA":
        with _temporarily(module, amplification=overrides.get("amplification", module.amplification)):
            q, k, _ = module.embed(features)
        m = int(full["n_features"])
        fn = module.attn_fn
        if m == fn.n_features:
            proj = fn.projection_matrix
        else:
            proj = gaussian_orthogonal_matrix(m, fn.dim, orthogonal=fn.orthogonal, scaling=fn.scaling,
                                              generator=torch.Generator().manual_seed(seed),
                                              dtype=q.dtype).to(q.device)
        state.q, state.k, state.projection, state.feature_eps = q[0], k[0], proj, fn.feature_eps
        # (L, m) key features, once per setting; filled in blocks of rows (each row is independent) so that
        # the transient products stay a fraction of the kept result
        state.phi_k = state.k.new_empty(state.k.shape[0], m)
        for start in range(0, state.k.shape[0], _ROW_BLOCK):
            rows = slice(start, start + _ROW_BLOCK)
            state.phi_k[rows] = positive_random_features(state.k[rows], proj, fn.feature_eps)
    else:
        attrs = dict(overrides)
        if "n_hashes" in attrs:
            attrs["n_hashes"] = int(attrs["n_hashes"])
        was_training = module.training
        with _temporarily(module, **attrs):
            try:
                module.eval()  # e.g. no k-means EMA step on a module that is being trained
                cheap = _bucket_layout(mechanism, module, features, gen)
            except RuntimeError as err:  # e.g. padding larger than the sequence inside torch ops
                raise ValueError(f"{mechanism} with {full}: {err}") from err
            finally:
                module.train(was_training)
            if mechanism == "GLA" and module.lss_variant != "none":
                state.extra["lss_features"] = module.conv_assembly_fc(features).flatten(2).transpose(1, 2)[0]
        draws = cheap.get("rotations", cheap.get("projections"))
        if mechanism == "GLA":  # replay with the scoring of now, e.g. inside learnable_score_disabled
            attrs.update(lss_variant=module.lss_variant, round_weights=module.round_weights)
        replay = _replay_forward(mechanism, module, features, attrs, draws)
        state.details = _Details(cheap, _FORWARD_DETAILS[mechanism], replay)
        state.q = cheap["embedding"][0]  # (L, D)
        state.key_eps = float(getattr(module, "key_eps", 5e-5))
        if mechanism == "GLA":
            state.extra["lss_variant"] = module.lss_variant
            state.extra["round_weights"] = module.round_weights
    return state


def query_attention(
    mechanism: str,
    features: Tensor,
    query_yx: Sequence[int],
    module: nn.Module | None = None,
    *,
    temperature: float = 0.05,
    seed: int = 0,
    mass: float = 0.9,
    **knobs: Any,
) -> dict[str, Any]:
    """Attention map of one query under one mechanism: :func:`prepare_attention` then
    :meth:`AttentionState.query` (see there for the returned dict: ``map``, ``bucket``, ``keys_for_90``, ...).

    Example::

        feats = patch_descriptors(image)                      # (1, 75, H, W)
        r = query_attention("NLSA", feats, (20, 31), chunk_size=64, n_hashes=2)
        r["map"].shape, r["keys_for_90"], r["bucket_size"]
    """
    state = prepare_attention(mechanism, features, module, temperature=temperature, seed=seed, **knobs)
    return state.query(query_yx, mass=mass)


def _state_tensors(state: AttentionState) -> Iterator[Tensor]:
    """The tensors a state keeps of its own (not the input features, which the explorer holds anyway)."""
    for t in (state.q, state.k, state.projection, state.phi_k, *state.extra.values()):
        if isinstance(t, Tensor):
            yield t
    if isinstance(state.details, _Details):
        for v in state.details._data.values():
            if isinstance(v, Tensor):
                yield v
            elif isinstance(v, BucketLayout):
                yield from (v.sort_idx, v.undo_idx)




class AttentionCache:
    """Least-recently-used store of :class:`AttentionState`: one per (mechanism, layer, knob setting).

    Moving the query reuses the cached state (``O(L)`` per query); changing a knob computes one new state,
    except where the knob does not change what the state holds: ENLA's ``exact`` (which row is shown) shares
    the state of the other value, and a demo LCoA module (its k-means centroids, initialised from the
    features) is reused when only the window changes. ``hits`` and ``misses`` count lookups.

    Args:
        maxsize: states kept (each holds ``O(L)`` numbers: embeddings, codes and sort order, ENLA's ``L x m``
            key features).
        max_bytes: also evict (least recently used first, before a new state is computed) while the cached
            states hold more than this many bytes (:meth:`nbytes`); ``None``: no limit.
    Raises:
        ValueError: ``maxsize < 1`` or ``max_bytes < 0``.
    """

    def __init__(self, maxsize: int = 8, max_bytes: int | None = None) -> None:
        if maxsize < 1:
            raise ValueError(f"maxsize must be >= 1, got {maxsize}")
        if max_bytes is not None and max_bytes < 0:
            raise ValueError(f"max_bytes must be >= 0 or None, got {max_bytes}")
        self.maxsize = maxsize
        self.max_bytes = max_bytes
        self._store: OrderedDict = OrderedDict()
        self._demo_lcoa: OrderedDict = OrderedDict()  # (features id, temperature, seed, K) -> (features, module)
        self.hits = 0
        self.misses = 0

    def get(
        self,
        mechanism: str,
        features: Tensor,
        module: nn.Module | None = None,
        *,
        layer: Any = None,
        temperature: float = 0.05,
        seed: int = 0,
        **knobs: Any,
    ) -> AttentionState:
        """The state for these arguments (computed by :func:`prepare_attention` on a miss)."""
        if mechanism == "ENLA" and "exact" in knobs:  # one state for both: it only picks the row shown
            base = self.get(mechanism, features, module, layer=layer, temperature=temperature, seed=seed,
                            **{k: v for k, v in knobs.items() if k != "exact"})
            return replace(base, knobs={**base.knobs, "exact": True}) if knobs["exact"] else base
        key = (mechanism, layer, id(features), id(module), float(temperature), int(seed),
               tuple(sorted(knobs.items(), key=lambda kv: kv[0])))
        if key in self._store:
            self.hits += 1
            self._store.move_to_end(key)
            return self._store[key]
        self.misses += 1
        # room first: the new state's temporaries should not come on top of states that will be evicted anyway
        while self._store and (len(self._store) >= self.maxsize or (
                self.max_bytes is not None and self.nbytes() > self.max_bytes)):
            self._store.popitem(last=False)
        given, full = module, knobs
        lcoa_key = None
        if mechanism == "LCoA" and module is None:
            full = _check_knobs(mechanism, knobs)
            lcoa_key = (id(features), float(temperature), int(seed), full["n_clusters"])
            if lcoa_key in self._demo_lcoa:
                given = self._demo_lcoa[lcoa_key][1]  # same construction and centroids as a fresh demo module
        state = prepare_attention(mechanism, features, given, temperature=temperature, seed=seed, **full)
        if lcoa_key is not None:
            self._demo_lcoa[lcoa_key] = (features, state.module)
            self._demo_lcoa.move_to_end(lcoa_key)
            while len(self._demo_lcoa) > self.maxsize:
                self._demo_lcoa.popitem(last=False)
        self._store[key] = state  # the state holds features and module, so their ids stay unique
        while len(self._store) > self.maxsize:
            self._store.popitem(last=False)
        _return_freed_memory()
        return state

    def __len__(self) -> int:
        return len(self._store)

    def nbytes(self) -> int:
        """Bytes of the tensors the cached states hold (each storage counted once; shared features excluded)."""
        seen: dict[int, int] = {}
        for state in self._store.values():
            for t in _state_tensors(state):
                st = t.untyped_storage()
                seen[st.data_ptr()] = st.nbytes()
        return sum(seen.values())

    def clear(self) -> None:
        self._store.clear()
        self._demo_lcoa.clear()


# --------------------------------------------------------------------------------------------------------
# Attention layers of a network
# --------------------------------------------------------------------------------------------------------
def _mechanism_of(module: nn.Module) -> str | None:
    if isinstance(module, HSPA):
        return "HSPA"
    for name in ("NLA", "NLSA", "ENLA", "GLA", "LCoA"):
        if isinstance(module, _CLASSES[name]):
            return name
    return None


@torch.no_grad()
def collect_attention_layers(model: nn.Module, lr: Tensor) -> dict[str, list[tuple[nn.Module, Tensor]]]:
    """Run ``model`` on ``lr`` once and return every attention module with the features it received.

    Use the result as ``layer_modules`` of :class:`AttentionExplorer` to look at a trained network's maps
    layer by layer. LCoA modules that reuse an earlier module's attention (collaborative attention, LCoAN
    Eq. 12: called with ``shared``) have no map of their own and are left out.

    Args:
        model: an srlib network (any ``nn.Module`` containing srlib attention modules).
        lr: ``(1, 3, h, w)`` input it takes (LR RGB in ``[0, rgb_range]``).
    Returns:
        ``{mechanism: [(module, features (1, C, h', w')), ...]}`` in call order.
    Raises:
        ValueError: ``lr`` not a single image, or no attention module was called.
    """
    if not isinstance(lr, Tensor) or lr.dim() != 4 or lr.shape[0] != 1:
        raise ValueError(f"lr must be a (1, 3, h, w) tensor, got {getattr(lr, 'shape', type(lr).__name__)}")
    found: dict[str, list[tuple[nn.Module, Tensor]]] = {}
    handles = []

    def hook(mod, args, kwargs):
        mech = _mechanism_of(mod)
        shared = (args[1] if len(args) > 1 else None) or kwargs.get("shared")
        if mech == "LCoA" and shared is not None:
            return
        found.setdefault(mech, []).append((mod, args[0].detach()))

    for sub in model.modules():
        if _mechanism_of(sub) is not None:
            handles.append(sub.register_forward_pre_hook(hook, with_kwargs=True))
    was_training = model.training
    try:
        model.eval()
        model(lr)
    finally:
        model.train(was_training)
        for h in handles:
            h.remove()
    if not found:
        raise ValueError(f"{type(model).__name__} called no srlib attention module")
    return found


# --------------------------------------------------------------------------------------------------------
# The widget
# --------------------------------------------------------------------------------------------------------
def demo_scene(size: int = 64) -> tuple[Tensor, str]:
    """The scene of notebook ``00b``: repeated structure, flat regions and edges, ``size x size`` RGB in [0, 1].

    With the benchmark data present (``srlib.config.data_dir()``): Urban100 ``img_014``, x4 LR, crop
    ``[16:144, 64:192]`` (a facade with rows of windows); otherwise scikit-image's bundled ``brick.png``, crop
    ``[0:256, 0:256]`` (a brick wall; grey, replicated to RGB). Shrunk to ``size`` with MATLAB-compatible
    bicubic (:func:`srlib.data.imresize`).

    Returns:
        ``(image (3, size, size), description)``.
    Raises:
        ValueError: ``size < 8``.
    """
    from srlib.data import BenchmarkDataset, available_benchmarks, imresize, load_image

    if size < 8:
        raise ValueError(f"size must be >= 8, got {size}")
    if "Urban100" in available_benchmarks(scale=4):
        urban = BenchmarkDataset("Urban100", 4)
        crop = urban[urban.names.index("img_014")]["lr"][:, 16:144, 64:192]
        what = "Urban100 img_014, x4 LR, crop [16:144, 64:192]"
    else:
        import skimage.data

        crop = load_image(Path(skimage.data.__file__).parent / "brick.png", allow_gray=True)[:, :256, :256]
        what = "scikit-image brick (offline fallback), crop [0:256, 0:256]"
    return imresize(crop, output_size=(size, size)).clamp(0, 1), f"{what}, shrunk to {size} x {size}"


def _load_image(image: Any) -> Tensor:
    """Tensor ``(3, H, W)`` / ``(1, 3, H, W)`` in [0, 1], an image file path, or a sample name."""
    if isinstance(image, Tensor):
        x = image.detach()
        if x.dim() == 4 and x.shape[0] == 1:
            x = x[0]
        if x.dim() != 3 or x.shape[0] != 3 or not x.is_floating_point():
            raise ValueError(f"image must be a (3, H, W) float RGB tensor in [0, 1], got {tuple(image.shape)}")
        from srlib._checks import check_image_tensor

        # NaN / Inf, a 0-255 picture or a shifted one would draw as plausible nonsense (issue 22)
        check_image_tensor(x, "AttentionExplorer image", dims=(3,), bulk=True)
        return x.float().cpu()
    if isinstance(image, (str, os.PathLike)):
        from srlib.data import load_image
        from srlib.data.samples import SAMPLE_IMAGES, load_sample

        path = Path(image)
        if path.is_file():
            return load_image(path, allow_gray=True)
        if str(image) in SAMPLE_IMAGES:
            return load_sample(str(image))
        raise FileNotFoundError(f"no image file {str(image)!r} (and not a sample name: {sorted(SAMPLE_IMAGES)})")
    raise ValueError(f"image must be a tensor, a path or a sample name, got {type(image).__name__}")


class _Picture:
    """The explorer's picture: two panels drawn straight into one RGB array and encoded as PNG (numpy + PIL).

    Left panel: the image, the query (red cross) and, for bucketed mechanisms, the positions sharing its
    bucket / cluster tinted cyan (alpha 0.45). Right panel: the attention map of the query over the grey image,
    as ``(weight / max weight)^0.5`` in matplotlib's ``inferno`` colours (alpha 0.75), the fewest keys carrying
    90% of the weight outlined in white, the query as a cyan cross.

    The image is shown on the feature grid (area-averaged to ``(h, w)``) and every grid cell is drawn as an
    ``s x s`` block, ``s`` the integer scale that brings the longer side closest to ``panel_px`` pixels, so
    that a picture pixel maps back to exactly one cell (:meth:`position_at`) and the PNG's repeated rows
    compress fast. What does not depend on the query (the image and its grey version on the grid, the canvas
    array, the font) is made once per grid; a query only recolours ``h * w`` cells and rewrites the panels of
    that array in place (a few milliseconds at 128 x 128, independent of the mechanism).

    Args:
        image: ``(3, H, W)`` RGB in ``[0, 1]`` (stretched onto the feature grid).
        panel_px: target side of a panel in pixels (``>= 8``).
    Raises:
        ValueError: ``panel_px < 8``.
    """

    TITLE = 18  # pixels above the panels for their titles
    MARGIN = 4
    GAP = 8
    BUCKET_TINT = (0.0, 255.0, 255.0)

    def __init__(self, image: Tensor, panel_px: int) -> None:
        if panel_px < 8:
            raise ValueError(f"panel_px must be >= 8, got {panel_px}")
        self.image = image
        self.panel_px = int(panel_px)
        self._grids: dict[tuple[int, int], dict[str, Any]] = {}
        self.grid: dict[str, Any] | None = None  # geometry of the last picture

    def _geometry(self, hw: tuple[int, int]) -> dict[str, Any]:
        import numpy as np
        from matplotlib import colormaps
        from PIL import Image, ImageFont

        if hw in self._grids:
            return self._grids[hw]
        h, w = hw
        s = max(1, round(self.panel_px / max(h, w)))
        ph, pw = h * s, w * s
        x0, x1, y0 = self.MARGIN, self.MARGIN + pw + self.GAP, self.TITLE
        rgb8 = (self.image.clamp(0, 1).permute(1, 2, 0).numpy() * 255.0 + 0.5).astype(np.uint8)
        rgb = np.asarray(Image.fromarray(rgb8).resize((w, h), Image.Resampling.BOX), dtype=np.float32)
        grey = rgb @ np.array([0.299, 0.587, 0.114], dtype=np.float32)  # BT.601 luma, (h, w)
        try:
            font = ImageFont.load_default(size=11)
        except (TypeError, OSError):  # Pillow without FreeType: the bitmap font
            font = ImageFont.load_default()
        g = {
            "hw": hw, "scale": s, "size": (ph, pw), "origins": ((x0, y0), (x1, y0)), "font": font,
            "canvas": np.full((y0 + ph + self.MARGIN, x1 + pw + self.MARGIN, 3), 255, dtype=np.uint8),
            "rgb": rgb, "rgb8": rgb.round().astype(np.uint8), "grey_part": (0.25 * grey)[..., None],
            "lut": (colormaps["inferno"](np.linspace(0.0, 1.0, 256))[:, :3] * (0.75 * 255.0)).astype(np.float32),
        }
        self._grids[hw] = g
        return g

    def position_at(self, px: float, py: float) -> tuple[int, int] | None:
        """The grid cell ``(y, x)`` under picture pixel ``(px, py)`` (from the top left), either panel, or ``None``."""
        if self.grid is None:
            return None
        g = self.grid
        s, (ph, pw) = g["scale"], g["size"]
        for x0, y0 in g["origins"]:
            if x0 <= px < x0 + pw and y0 <= py < y0 + ph:
                return int((py - y0) // s), int((px - x0) // s)
        return None

    def pixel_of(self, query_yx: tuple[int, int], panel: int = 1) -> tuple[float, float]:
        """Picture pixel ``(px, py)`` of the centre of grid cell ``query_yx`` in ``panel`` (0 left, 1 right).

        Raises:
            ValueError: nothing drawn yet.
        """
        if self.grid is None:
            raise ValueError("nothing drawn yet")
        x0, y0 = self.grid["origins"][panel]
        s = self.grid["scale"]
        return x0 + (query_yx[1] + 0.5) * s, y0 + (query_yx[0] + 0.5) * s

    def render(self, r: Mapping[str, Any]) -> bytes:
        """PNG bytes of the two panels for one :meth:`AttentionState.query` result ``r``."""
        import numpy as np
        from PIL import Image, ImageDraw

        amap = r["map"].double()
        h, w = amap.shape
        g = self._geometry((h, w))
        self.grid = g
        s, (ph, pw), canvas = g["scale"], g["size"], g["canvas"]
        (x0, y0), (x1, _) = g["origins"]

        def up(a):  # (h, w, ...) -> (ph, pw, ...): every cell an s x s block
            return a.repeat(s, axis=0).repeat(s, axis=1) if s > 1 else a

        if r["bucket"] is None:
            left = g["rgb8"]
        else:  # the query's bucket / cluster tinted
            a = r["bucket"].numpy()[..., None] * np.float32(0.45)
            left = (g["rgb"] * (1 - a) + np.array(self.BUCKET_TINT, dtype=np.float32) * a).astype(np.uint8)
        canvas[y0 : y0 + ph, x0 : x0 + pw] = up(left)
        flat = amap.reshape(-1)
        shown = (flat / flat.max().clamp_min(1e-30)).sqrt().numpy()
        colour = g["lut"][(shown * 255.0 + 0.5).astype(np.intp)].reshape(h, w, 3) + g["grey_part"]
        right = canvas[y0 : y0 + ph, x1 : x1 + pw]
        right[...] = up(colour.astype(np.uint8))
        k90 = int(r["keys_for_90"])
        if 0 < k90 < h * w:  # white outline of the fewest keys that carry 90% of the weight
            top = np.zeros(h * w, dtype=bool)
            top[torch.topk(flat, k90, sorted=False).indices.numpy()] = True
            m = np.pad(up(top.reshape(h, w)), 1)
            inner = m[1:-1, 1:-1] & m[:-2, 1:-1] & m[2:, 1:-1] & m[1:-1, :-2] & m[1:-1, 2:]
            right[m[1:-1, 1:-1] & ~inner] = 255
        canvas[:y0] = 255

        img = Image.fromarray(canvas)  # a copy: titles and crosses never reach the canvas
        draw = ImageDraw.Draw(img)
        if r["bucket"] is not None:
            what = "cluster" if r["mechanism"] == "LCoA" else "bucket"
            title0 = f"query and its {what} ({r['bucket_size']} px)"
        else:
            title0 = "query"
        title1 = f"{r['mechanism']}: 90% of the weight on {k90} keys (outlined)"
        if draw.textlength(title1, font=g["font"]) > pw:
            title1 = f"{r['mechanism']}: 90% on {k90} keys (outlined)"
        for x, title in ((x0, title0), (x1, title1)):  # centred above the panel
            left, top, right_, bottom = draw.textbbox((0, 0), title, font=g["font"])
            at = (x + (pw - (right_ - left)) / 2 - left, (y0 - (bottom - top)) / 2 - top)
            draw.text(at, title, fill=(0, 0, 0), font=g["font"])
        arm = max(4.0, 0.6 * s)
        for panel, rgb in ((0, (255, 0, 0)), (1, (0, 255, 255))):
            px, py = self.pixel_of(r["query_yx"], panel)
            draw.line([(px - arm, py - arm), (px + arm, py + arm)], fill=rgb, width=3)
            draw.line([(px - arm, py + arm), (px + arm, py - arm)], fill=rgb, width=3)
        buf = io.BytesIO()
        img.save(buf, format="PNG", compress_level=1)
        return buf.getvalue()


class AttentionExplorer:
    """Widget: pick a query pixel and a mechanism and see where that query attends.

    The picture has two panels: the image with the query (cross) and, for bucketed mechanisms, the positions
    sharing its bucket / cluster tinted; and the attention map of that query over the (grey) image, shown as
    ``(weight / max weight)^0.5`` in the ``inferno`` colours. Below it, the numbers of
    :meth:`AttentionState.query`: keys carrying 90% of the weight, largest weight, support, bucket size, keys
    reachable, round weights, ENLA's distance to the exact softmax.

    Controls: mechanism, layer (when several modules are given), query ``x`` / ``y`` sliders (click on the
    picture also sets the query when ``ipyevents`` is installed), and the mechanism's :data:`KNOBS`. A knob
    change computes one :class:`AttentionState` (cached); a query change only computes one row and redraws
    the picture's pixels (:class:`_Picture`: the same ``ipywidgets.Image``, new PNG bytes). On a 512 x 512
    photograph (grid 128 x 128) a query move takes about 10 ms of CPU and a mechanism or knob change at most
    a few tenths of a second (``benchmarks/results/explorer.md``).

    Args:
        image: ``(3, H, W)`` RGB in ``[0, 1]``, a path to an image file, or a sample name (``"astronaut"``).
        features: ``(1, C, h, w)`` features to attend over; default :func:`patch_descriptors` of the image
            (5x5 colour patches, unit norm), after shrinking the image (MATLAB bicubic) so that ``h * w <=
            max_positions``. The map grid is ``(h, w)``; the image is stretched onto it.
        mechanisms: which of :data:`MECHANISMS` to offer.
        layer_modules: ``{mechanism: module | [module, ...] | [(module, features), ...]}`` (trained modules,
            e.g. :func:`collect_attention_layers`); mechanisms not in it use :func:`demo_module`.
        temperature: demo modules' ``cos / temperature`` scores (default 0.05 as notebook 00b).
        seed: seed of every random draw.
        query: initial ``(y, x)`` (default: the centre).
        max_positions: cap on ``h * w`` for the default features (128 * 128).
        normalize_features: L2-normalise ``features`` per position for the demo modules (so that
            ``temperature`` means the same for any input; given modules get them unchanged); default True.
        knobs: initial knob values, ``{mechanism: {knob: value}}`` (e.g. ``{"LCoA": {"n_clusters": 16}}``);
            values outside a slider's options are added to them.
        dpi: size of the picture: each panel about ``3.6 * dpi`` pixels on its longer side (80: 288), at an
            integer number of pixels per grid cell (a 128 x 128 grid: 2, two 256 x 256 panels).

    Attributes:
        widget: the ipywidgets container; ``result``: the last :meth:`AttentionState.query` dict (``None`` before
        the first success); ``error``: the message of the last failed computation or ``None``; ``cache``: the
        :class:`AttentionCache`; ``controls``: ``{name: widget}`` (``mechanism``, ``layer``, ``x``, ``y``);
        ``features`` / ``module_features``: what demo / given modules attend over; ``clickable``: whether
        clicks on the picture set the query (``ipyevents`` installed).

    Raises:
        ValueError: bad image / features / mechanism names / layer modules.
    """

    def __init__(
        self,
        image: Any,
        features: Tensor | None = None,
        mechanisms: Sequence[str] = MECHANISMS,
        layer_modules: Mapping[str, Any] | None = None,
        *,
        temperature: float = 0.05,
        seed: int = 0,
        query: tuple[int, int] | None = None,
        max_positions: int = 128 * 128,
        normalize_features: bool = True,
        knobs: Mapping[str, Mapping[str, Any]] | None = None,
        dpi: int = 80,
    ) -> None:
        import ipywidgets as widgets

        self.image = _load_image(image)
        mechanisms = tuple(mechanisms)
        if not mechanisms:
            raise ValueError("mechanisms must name at least one mechanism")
        for m in mechanisms:
            _check_mechanism(m)
        if features is None:
            img = self.image
            h, w = img.shape[-2:]
            if h * w > max_positions:
                from srlib.data import imresize

                f = math.sqrt(max_positions / (h * w))
                size = (max(8, int(h * f)), max(8, int(w * f)))
                img = imresize(img, output_size=size).clamp(0, 1)
            features = patch_descriptors(img, patch_size=5)
        elif not isinstance(features, Tensor) or features.dim() != 4 or features.shape[0] != 1:
            raise ValueError(f"features must be (1, C, h, w), got {getattr(features, 'shape', type(features))}")
        self.module_features = features.detach()  # what given modules receive, unchanged
        if normalize_features:
            features = F.normalize(features.detach().float(), dim=1)
        self.features = features.detach()  # what the demo modules receive
        self.temperature = float(temperature)
        self.seed = int(seed)
        self.dpi = int(dpi)
        self.layers: dict[str, list[tuple[nn.Module | None, Tensor]]] = {}
        layer_modules = dict(layer_modules or {})
        for m in layer_modules:
            if m not in mechanisms:
                raise ValueError(f"layer_modules has {m!r}, which is not among the mechanisms {mechanisms}")
        for m in mechanisms:
            self.layers[m] = self._layers_of(m, layer_modules.get(m))
        self.cache = AttentionCache(maxsize=4, max_bytes=64 * 2**20)  # e.g. ENLA's L x m features
        self.result: dict[str, Any] | None = None
        self.error: str | None = None
        self._busy = False
        self._seen: set = set()
        self._picture = _Picture(self.image, panel_px=round(3.6 * self.dpi))

        h, w = self.features.shape[-2:]
        qy, qx = query if query is not None else (h // 2, w // 2)
        W = widgets
        style = {"description_width": "initial"}
        self.controls: dict[str, Any] = {}
        self.controls["mechanism"] = W.Dropdown(options=list(mechanisms), value=mechanisms[0],
                                                description="mechanism", style=style)
        self.controls["layer"] = W.IntSlider(value=0, min=0, max=0, description="layer", style=style,
                                             continuous_update=False)
        # the softmax temperature of the demo modules: scores of unit features are cos / tau (notebook 00b Eq. 4)
        taus = sorted(set(TEMPERATURES) | {self.temperature})
        self.controls["temperature"] = W.SelectionSlider(
            options=[(f"{t:g}", t) for t in taus], value=self.temperature, description="temperature τ",
            style=style, continuous_update=False)
        self.controls["temperature"].tooltip = "demo modules score two unit features cos / τ: small τ, sharp maps"
        self.controls["temperature"].add_class("srlib-explorer-temperature")
        self.controls["x"] = W.IntSlider(value=int(qx), min=0, max=w - 1, description="query x", style=style,
                                         continuous_update=False)
        self.controls["y"] = W.IntSlider(value=int(qy), min=0, max=h - 1, description="query y", style=style,
                                         continuous_update=False)
        self.controls["x"].add_class("srlib-explorer-x")
        self.controls["y"].add_class("srlib-explorer-y")
        self.controls["mechanism"].add_class("srlib-explorer-mechanism")
        self._knob_widgets: dict[str, dict[str, Any]] = {}
        for m in mechanisms:
            self._knob_widgets[m] = {k.name: self._knob_widget(m, k) for k in KNOBS[m]}
        for m, values in (knobs or {}).items():
            if m not in mechanisms:
                raise ValueError(f"knobs given for {m!r}, which is not among the mechanisms {mechanisms}")
            _check_knobs(m, values)
            for name, value in values.items():
                _set_widget_value(self._knob_widgets[m][name], _NONE if value is None else value)
        self.picture = W.Image(format="png")
        self.picture.add_class("srlib-explorer-image")
        self.stats = W.HTML()
        self.stats.add_class("srlib-explorer-stats")
        self.knob_box = W.HBox()
        self.widget = W.VBox([
            W.HBox([self.controls["mechanism"], self.controls["layer"], self.controls["temperature"]]),
            W.HBox([self.controls["x"], self.controls["y"]]),
            self.knob_box,
            self.picture,
            self.stats,
        ])
        self.widget.add_class("srlib-explorer")
        self.clickable = self._attach_click()

        self.controls["mechanism"].observe(self._on_mechanism, names="value")
        self.controls["layer"].observe(self._on_knob, names="value")
        self.controls["temperature"].observe(self._on_temperature, names="value")
        self.controls["x"].observe(self._on_query, names="value")
        self.controls["y"].observe(self._on_query, names="value")
        for m in mechanisms:
            for wdg in self._knob_widgets[m].values():
                wdg.observe(self._on_knob, names="value")
        self._on_mechanism(None)

    # -- construction helpers ------------------------------------------------------------------------------
    def _layers_of(self, mechanism: str, given: Any) -> list[tuple[nn.Module | None, Tensor]]:
        if given is None:
            return [(None, self.features)]
        items = given if isinstance(given, (list, tuple)) else [given]
        layers = []
        for item in items:
            mod, feats = item if isinstance(item, tuple) else (item, self.module_features)
            _check_module(mechanism, mod)
            if not isinstance(feats, Tensor) or feats.dim() != 4 or feats.shape[0] != 1:
                raise ValueError(f"{mechanism} layer features must be (1, C, h, w), got {tuple(feats.shape)}")
            layers.append((mod, feats.detach()))
        if not layers:
            raise ValueError(f"layer_modules[{mechanism!r}] is empty")
        return layers

    def _knob_widget(self, mechanism: str, knob: Knob):
        import ipywidgets as W

        style = {"description_width": "initial"}
        if knob.options is None:
            lo, hi, step = knob.bounds
            cls = W.IntSlider if isinstance(knob.default, int) else W.FloatSlider
            wdg = cls(value=knob.default, min=lo, max=hi, step=step, description=knob.label, style=style,
                      continuous_update=False)
        elif set(knob.options) == {False, True}:
            wdg = W.Checkbox(value=knob.default, description=knob.label, indent=False)
        elif all(isinstance(o, str) for o in knob.options):
            wdg = W.Dropdown(options=list(knob.options), value=knob.default, description=knob.label, style=style)
        else:  # ordered numbers; None ("all": full sort) travels as -1 because a selection cannot hold None
            opts = [("all", _NONE) if o is None else (str(o), o) for o in knob.options]
            wdg = W.SelectionSlider(options=opts, value=_NONE if knob.default is None else knob.default,
                                    description=knob.label, style=style, continuous_update=False)
        wdg.tooltip = knob.help
        wdg.add_class(f"srlib-explorer-knob-{knob.name}")
        return wdg

    def _attach_click(self) -> bool:
        try:
            from ipyevents import Event
        except ImportError:
            return False
        self._events = Event(source=self.picture, watched_events=["click"])
        self._events.on_dom_event(self._on_click)
        return True

    # -- current selection ---------------------------------------------------------------------------------
    @property
    def mechanism(self) -> str:
        return self.controls["mechanism"].value

    @property
    def query_yx(self) -> tuple[int, int]:
        return int(self.controls["y"].value), int(self.controls["x"].value)

    def knobs(self) -> dict[str, Any]:
        """Knob values the current mechanism and layer are computed with (only settable ones for modules)."""
        m = self.mechanism
        module = self.layers[m][self.controls["layer"].value][0]
        names = [k.name for k in KNOBS[m]] if module is None else settable_knobs(m, module)
        values = {n: self._knob_widgets[m][n].value for n in names}
        return {n: (None if v is _NONE or v == _NONE else v) for n, v in values.items()}

    def state(self) -> dict[str, Any]:
        """The numbers on display: mechanism, layer, query, knobs and the scalar results (no tensors)."""
        out = {"mechanism": self.mechanism, "layer": int(self.controls["layer"].value), "query_yx": self.query_yx,
               "knobs": self.knobs(), "temperature": self.temperature, "error": self.error}
        if self.result is not None:
            for key in ("keys_for_90", "support", "max_weight", "bucket_size", "bucket_sizes", "n_candidates",
                        "round_weights", "tv_to_exact"):
                out[key] = self.result[key]
            out["map_sum"] = float(self.result["map"].double().sum())
        return out

    # -- events --------------------------------------------------------------------------------------------
    def _on_mechanism(self, _change) -> None:
        m = self.mechanism
        layers = self.layers[m]
        lay = self.controls["layer"]
        with self._quiet():
            lay.max = len(layers) - 1
            lay.value = min(lay.value, lay.max)
            lay.layout.display = "none" if len(layers) == 1 else None
            self._sync_knob_widgets()
            self._sync_query_range()
        self.knob_box.children = tuple(self._knob_widgets[m].values())
        self._refresh()

    def _sync_knob_widgets(self) -> None:
        """Show a given module's own knob values (all of them on first use, the fixed ones always) and disable
        the knobs its weights fix (and the temperature, which only the demo modules have)."""
        m = self.mechanism
        layer = int(self.controls["layer"].value)
        module = self.layers[m][layer][0]
        self.controls["temperature"].disabled = module is not None
        if module is None:
            return
        settable = settable_knobs(m, module)
        values = module_knobs(m, module)
        first = (m, layer) not in self._seen
        self._seen.add((m, layer))
        for name, wdg in self._knob_widgets[m].items():
            if name in values and (first or name not in settable):
                _set_widget_value(wdg, _NONE if values[name] is None else values[name])
            wdg.disabled = name not in settable

    def _sync_query_range(self) -> None:
        feats = self.layers[self.mechanism][self.controls["layer"].value][1]
        h, w = feats.shape[-2:]
        self.controls["x"].max, self.controls["y"].max = w - 1, h - 1

    def _on_knob(self, _change) -> None:
        if self._busy:
            return
        with self._quiet():
            self._sync_knob_widgets()
            self._sync_query_range()
        self._refresh()

    def _on_temperature(self, change) -> None:
        self.temperature = float(self.controls["temperature"].value)
        if not self._busy:
            self._refresh()

    def _on_query(self, _change) -> None:
        if not self._busy:
            self._refresh()

    def _on_click(self, event: dict) -> None:
        """ipyevents click on the picture: ``dataX`` / ``dataY`` are pixels of the PNG from its top left."""
        if "dataX" not in event or "dataY" not in event:
            return
        yx = self._picture.position_at(float(event["dataX"]), float(event["dataY"]))
        if yx is None:
            return
        h, w = self.layers[self.mechanism][self.controls["layer"].value][1].shape[-2:]
        if (h, w) != self._picture.grid["hw"]:
            return  # a picture of another grid is on display
        with self._quiet():
            self.controls["y"].value, self.controls["x"].value = yx
        self._refresh()

    @contextlib.contextmanager
    def _quiet(self):
        busy, self._busy = self._busy, True
        try:
            yield
        finally:
            self._busy = busy

    # -- computation and drawing ---------------------------------------------------------------------------
    def compute(self) -> dict[str, Any]:
        """Query result for the current controls (state from the cache; raises what :func:`prepare_attention`
        raises)."""
        m = self.mechanism
        layer = int(self.controls["layer"].value)
        module, feats = self.layers[m][layer]
        state = self.cache.get(m, feats, module, layer=layer, temperature=self.temperature, seed=self.seed,
                               **self.knobs())
        return state.query(self.query_yx)

    def _refresh(self) -> None:
        try:
            self.result = self.compute()
            self.error = None
        except ValueError as err:  # e.g. a knob value the mechanism rejects: say so, keep the old picture
            self.result, self.error = None, str(err)
            self.stats.value = f"<span style='color:#b00'>cannot compute: {_html_escape(self.error)}</span>"
            return
        self.picture.value = self.render_png()
        self.stats.value = self._stats_html()

    def _stats_html(self) -> str:
        r = self.result
        L = r["map"].numel()
        y, x = r["query_yx"]
        parts = [
            f"<b>{r['mechanism']}</b> query (y={y}, x={x})",
            f"keys carrying 90% of the weight: <b class='srlib-k90'>{r['keys_for_90']}</b> of {L}",
            f"largest weight: {r['max_weight']:.4f}",
            f"support (weight &gt; 0): {r['support']}",
        ]
        if r["bucket_size"] is not None:
            what = "cluster" if r["mechanism"] == "LCoA" else "bucket"
            per = ", ".join(str(s) for s in r["bucket_sizes"])
            parts.append(f"{what} size: {r['bucket_size']} (per round: {per})")
            parts.append(f"reachable keys: {r['n_candidates']}")
            parts.append("round weights: " + ", ".join(f"{w:.2f}" for w in r["round_weights"]))
        if r["tv_to_exact"] is not None:
            parts.append(f"distance to exact softmax (TV): {r['tv_to_exact']:.3f}")
        return "<div style='font-family:monospace;font-size:12px'>" + "<br>".join(parts) + "</div>"

    def render_png(self) -> bytes:
        """The two panels for :attr:`result` as PNG bytes (numpy + PIL, see :class:`_Picture`; no matplotlib
        figure, no pyplot state)."""
        if self.result is None:
            raise ValueError("no result to draw (the last computation failed or none ran yet)")
        return self._picture.render(self.result)

    # -- display -------------------------------------------------------------------------------------------
    #: The ``text/plain`` of the displayed explorer: the same on every machine (nbval compares it), shown by
    #: viewers that have neither a kernel nor an image renderer.
    STATIC_TEXT = "AttentionExplorer: run the notebook to make it live"
    #: The line under the stored picture, for viewers without a kernel (GitHub, nbviewer, the course site).
    STATIC_CAPTION = "Static picture of the explorer's first view: run the notebook to make it live."

    def static_png(self) -> bytes:
        """The picture on display (:meth:`render_png`) with :data:`STATIC_CAPTION` under it, as PNG bytes.

        This is what a saved notebook shows where no kernel runs (the live widget needs one).

        Raises:
            ValueError: nothing to draw (the last computation failed).
        """
        from PIL import Image, ImageDraw, ImageFont

        picture = Image.open(io.BytesIO(self.render_png())).convert("RGB")
        try:
            font = ImageFont.load_default(size=11)
        except (TypeError, OSError):  # Pillow without FreeType: the bitmap font
            font = ImageFont.load_default()
        measure = ImageDraw.Draw(picture)
        width = picture.width - 2 * _Picture.MARGIN
        lines: list[str] = []
        for word in self.STATIC_CAPTION.split():  # wrap to the picture's width
            if lines and measure.textlength(f"{lines[-1]} {word}", font=font) <= width:
                lines[-1] = f"{lines[-1]} {word}"
            else:
                lines.append(word)
        line_h = _Picture.TITLE - 2
        out = Image.new("RGB", (picture.width, picture.height + line_h * len(lines) + _Picture.MARGIN), "white")
        out.paste(picture, (0, 0))
        draw = ImageDraw.Draw(out)
        for i, line in enumerate(lines):
            draw.text((_Picture.MARGIN, picture.height + i * line_h), line, fill=(70, 70, 70), font=font)
        buf = io.BytesIO()
        out.save(buf, format="PNG", optimize=True)
        return buf.getvalue()

    def _repr_mimebundle_(self, include=None, exclude=None) -> dict[str, Any]:
        """The live widget's view, a static picture of the current view (``image/png``) and a fixed
        ``text/plain``: a front end with a kernel shows the widget, one without it (GitHub, nbviewer, the
        course site) shows the picture instead of the widget's ``VBox(children=...)`` text."""
        import base64

        bundle = dict(self.widget._repr_mimebundle_() or {})  # the widget view (none once the widget is closed)
        bundle["text/plain"] = self.STATIC_TEXT
        if self.result is not None:
            bundle["image/png"] = base64.b64encode(self.static_png()).decode("ascii")
        return bundle

    def show(self):
        """Display the explorer (widget, with its static picture for viewers without a kernel) and return the
        widget."""
        from IPython.display import display

        display(self)
        return self.widget


def _set_widget_value(wdg: Any, value: Any) -> None:
    """Set a knob widget to a module's value, widening its options / range when the value lies outside."""
    options = getattr(wdg, "options", None)
    if options is not None and not isinstance(value, bool):
        pairs = [o if isinstance(o, tuple) else (str(o), o) for o in options]
        values = [v for _, v in pairs]
        if value not in values:
            if all(isinstance(v, str) for v in values):
                wdg.options = [*values, value]
            else:
                merged = sorted({v for v in values if v != _NONE} | {value})
                wdg.options = [(str(v), v) for v in merged] + ([("all", _NONE)] if _NONE in values else [])
    elif hasattr(wdg, "max") and not isinstance(value, bool):
        wdg.max, wdg.min = max(wdg.max, value), min(wdg.min, value)
    wdg.value = value


def _html_escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
