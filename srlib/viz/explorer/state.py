"""The explorer's maths: per-knob state of one mechanism and the attention row of one query (no widgets).

:func:`prepare_attention` runs the shared part of one srlib attention module on a feature map once per knob
setting and keeps only what every query needs, all of it ``O(L)`` (embeddings, hash codes and bucket layout,
random features); :meth:`AttentionState.query` then computes the weights of one query over all ``L = H*W``
positions in ``O(L D)`` (dense, ENLA) or ``O(R * 3c * D)`` (bucketed) work, never an ``L x L`` map, with the
row functions of :mod:`srlib.analysis.rows` (the ones the analysis code uses too). :class:`AttentionCache`
keeps recent states. What a mechanism is (class, knobs, demo module, how its row is computed) comes from
:mod:`srlib.attention.registry`.

Conventions: features ``(1, C, H, W)``; position ``(y, x)`` is index ``p = y * W + x``; maps ``(H, W)``.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field, replace
from typing import Any, Callable, Iterator, Mapping, Sequence

import torch
import torch.nn as nn
from torch import Tensor

from srlib.attention import registry
from srlib.attention.buckets import BucketLayout
from srlib.attention.enla import gaussian_orthogonal_matrix, positive_random_features
from srlib.attention.nla import softmax_last
from srlib.attention.registry import Knob, temporarily as _temporarily
from srlib.analysis.capture import record_calls
from srlib.analysis.measure import return_freed_memory as _return_freed_memory
from srlib.analysis.rows import bucketed_row, dense_rows, feature_rows, softmax_rows
from srlib.analysis.sparsity import mass_coverage

__all__ = [
    "MECHANISMS",
    "KNOBS",
    "TEMPERATURES",
    "Knob",
    "AttentionState",
    "AttentionCache",
    "collect_attention_layers",
    "default_knobs",
    "demo_module",
    "keys_carrying",
    "mechanisms",
    "module_knobs",
    "prepare_attention",
    "query_attention",
    "settable_knobs",
]

#: The six mechanisms of the papers, in the papers' order (the registry may hold more: :func:`mechanisms`).
MECHANISMS: tuple[str, ...] = ("NLA", "NLSA", "ENLA", "GLA", "HSPA", "LCoA")

_NONE = -1  # widget stand-in for a knob value of None (HSPA top-k "all")
_ROW_BLOCK = 2048  # positions per block where an L x m product is built (ENLA key features)

#: Temperatures the explorer's slider offers for the demo modules (``cos / tau`` scores; 0.05 as notebook 00b).
TEMPERATURES = (0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0)


def mechanisms() -> tuple[str, ...]:
    """Every registered mechanism (:func:`srlib.attention.registry.mechanisms`): the six, then any added."""
    return registry.mechanisms()


class _RegistryView(Mapping):
    """A read-only ``{mechanism: value}`` mapping computed from the registry entries on every access."""

    def __init__(self, value: Callable[[registry.Mechanism], Any], kind: str | None = None) -> None:
        self._value, self._kind = value, kind

    def _names(self) -> list[str]:
        return [n for n in registry.mechanisms() if self._kind in (None, registry.get(n).kind)]

    def __getitem__(self, name: str) -> Any:
        if name not in self._names():
            raise KeyError(name)
        return self._value(registry.get(name))

    def __iter__(self) -> Iterator[str]:
        return iter(self._names())

    def __len__(self) -> int:
        return len(self._names())

    def __repr__(self) -> str:
        return repr(dict(self))


#: The knobs that matter, per mechanism (NLA has none: dense softmax over every position); read from the
#: registry, so that a registered mechanism appears here.
KNOBS: Mapping[str, tuple[Knob, ...]] = _RegistryView(lambda e: e.knobs)
_CLASSES: Mapping[str, type] = _RegistryView(lambda e: e.cls)
#: ``details`` entries of the bucketed mechanisms that need the module's whole forward pass (chunk weights of
#: every query, ``O(R L 3c)`` floats): computed only when read (:class:`_Details`), never by the explorer.
_FORWARD_DETAILS: Mapping[str, tuple[str, ...]] = _RegistryView(lambda e: e.forward_details, kind="bucketed")


def _check_mechanism(mechanism: str) -> str:
    registry.get(mechanism)  # ValueError naming the registered mechanisms
    return mechanism


def default_knobs(mechanism: str) -> dict[str, Any]:
    """The default knob values of ``mechanism`` (paper / official values), e.g. ``{"n_hashes": 4, ...}``."""
    return registry.get(mechanism).defaults()


def _check_knobs(mechanism: str, knobs: Mapping[str, Any]) -> dict[str, Any]:
    allowed = {k.name for k in KNOBS[mechanism]}
    unknown = sorted(set(knobs) - allowed)
    if unknown:
        raise ValueError(f"{mechanism} has no knob {unknown[0]!r}; its knobs are {sorted(allowed) or 'none'}")
    return {**default_knobs(mechanism), **knobs}


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
# Modules: demo modules, and the knobs of given ones
# --------------------------------------------------------------------------------------------------------
def demo_module(
    mechanism: str, channels: int, *, temperature: float = 0.05, seed: int = 0, **knobs: Any
) -> nn.Module:
    """A seeded srlib module of ``mechanism`` whose similarity needs no training.

    The module is the real srlib class (``reduction=1``, 1x1 matching convolutions), built by the registry
    entry's ``build_demo`` with the global RNG forked and seeded with ``seed`` (the caller's RNG state is
    untouched). Its query/key embedding is the identity scaled so that two unit feature vectors score
    ``cos / temperature``: NLA/HSPA ``theta = phi = x / sqrt(temperature)`` (PReLU slopes set to 1),
    NLSA/GLA/LCoA ``x / temperature`` (their keys are L2-normalised inside, NLSN Eq. 9), GLA without the
    (untrained, hence random) learnable score (``lss_variant="none"``). ENLA normalises and amplifies by
    ``sqrt(k)`` itself (ENLCN Eq. 3), so its embedding is the plain identity and the temperature is unused.
    Values (``conv_assembly``) keep their seeded random initialisation: they do not enter the map.

    Args:
        mechanism: a registered mechanism (:func:`mechanisms`).
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
    entry = registry.get(mechanism)
    if entry.build_demo is None:
        raise ValueError(f"{mechanism} has no demo module: pass a module")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        gen = torch.Generator().manual_seed(seed)
        m = entry.build_demo(channels, temperature, gen, knobs)
    if hasattr(m, "generator"):
        m.generator = gen  # LSH draws (NLSA, GLA) come from this seeded generator
    return m.eval()


def settable_knobs(mechanism: str, module: nn.Module) -> tuple[str, ...]:
    """Knobs of ``mechanism`` that can be changed on an existing (e.g. trained) ``module`` at test time.

    Fixed by the weights: LCoA's number of clusters (the centroids), GLA's chunk size when it has a learnable
    score (its MLP outputs one score per slot of the chunk), hash rounds when fixed projections are set.
    """
    return registry.get(mechanism).settable_knobs(module)


def module_knobs(mechanism: str, module: nn.Module) -> dict[str, Any]:
    """The knob values an existing ``module`` runs with (``{"n_hashes": 4, "chunk_size": 144}`` ...)."""
    _check_mechanism(mechanism)
    _check_module(mechanism, module)
    return registry.get(mechanism).knobs_of(module)


def _check_module(mechanism: str, module: nn.Module) -> None:
    cls = _CLASSES[mechanism]
    if registry.mechanism_of(module) != mechanism:  # e.g. an HSPA is no NLA module here
        raise ValueError(f"{mechanism} needs a {cls.__name__} module, got {type(module).__name__}")


# --------------------------------------------------------------------------------------------------------
# Per-knob state and per-query rows
# --------------------------------------------------------------------------------------------------------
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
        mechanism: a registered mechanism.
        hw: ``(H, W)`` of the feature map.
        knobs: the knob values in effect.
        module: the srlib module that was run.
        features: ``(1, C, H, W)`` input features.
        q, k: ``(L, D)`` queries / keys (dense mechanisms and ENLA); bucketed mechanisms: ``q`` is the shared
            query/key embedding (``k`` is ``None``: keys are ``q / max(|q|, key_eps)``, NLSN Eq. 9).
        normalizer: dense mechanisms' score normaliser applied to a query's scores ``(1, 1, L)``.
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

    def _learned_score(self, p: int) -> Callable[[Tensor], Tensor] | None:
        """GLA's learnable score of query ``p`` on its keys ``(R, 3c)``, or ``None`` (DLSN Eqs. 9-11)."""
        variant = self.extra.get("lss_variant", "none")
        if variant == "official":  # s_l(i, j) = MLP(f_j)[i], i = the query's slot in its chunk (DLSN code)
            layout = self.details["layout"]

            def official(keys: Tensor) -> Tensor:
                slot = layout.undo_idx[0, :, p] % layout.chunk_size  # (R,)
                per_key = self.module.fc(self.extra["lss_features"][keys])  # (R, 3c, c)
                return per_key.gather(2, slot.view(-1, 1, 1).expand(-1, keys.shape[1], 1))[..., 0]

            return official
        if variant == "paper":  # s_l(i, j) = MLP(f_i)[j], DLSN Eq. 9 and 11
            return lambda keys: self.module.fc(self.extra["lss_features"][p]).unsqueeze(0)
        return None

    def _bucketed_row(self, p: int) -> tuple[Tensor, Tensor, Tensor]:
        """Row ``p`` of a bucketed mechanism from the layout alone, ``O(R * 3c * D)``
        (:func:`srlib.analysis.rows.bucketed_row`: exactly what the module's forward pass applies to the values
        of query ``p``).

        Returns:
            ``(row (L,), keys (R, 3c) positions, w (R,) round weights)``.
        """
        return bucketed_row(self.q, self.details["layout"], p, key_eps=self.key_eps,
                            learned=self._learned_score(p),
                            round_weights="paper" if self.extra.get("round_weights") == "paper" else "official")

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
        kind = registry.get(self.mechanism).kind
        if kind == "dense":  # s_pj, NLSN Eq. 4 / HSPAN Eq. 7, normalised
            row = dense_rows(self.q.unsqueeze(0), self.k.unsqueeze(0), [p], self.normalizer).view(-1)
        elif kind == "features":
            phi_q = positive_random_features(self.q[p : p + 1], self.projection, self.feature_eps)  # (1, m)
            approx = feature_rows(phi_q, self.phi_k, self.phi_k.sum(0)).view(-1)  # ENLCN Eqs. 4-6
            exact = softmax_rows(self.q, self.k, torch.tensor([p], device=self.q.device)).view(-1)  # Eq. 1
            out["exact_map"] = exact.view(H, W).cpu()
            out["tv_to_exact"] = 0.5 * float((approx.double() - exact.double()).abs().sum())
            row = exact if self.knobs.get(registry.get(self.mechanism).view_knob) else approx
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


def _replay_forward(mechanism: str, module: nn.Module, features: Tensor, attrs: dict, draws: Any):
    """A function running ``module``'s own ``keep_details`` forward pass with the state's knobs, scoring
    attributes and random draws (passed as the registry entry's ``draws`` keyword; eval mode; the module's
    attributes and ``details`` restored afterwards); returns that call's details. The module's weights are
    those it has when the function runs."""
    keyword = registry.get(mechanism).draws

    @torch.no_grad()
    def replay() -> dict:
        was_training = module.training
        with _temporarily(module, **attrs, keep_details=True, details=None):
            try:
                module.eval()
                module(features, **({keyword: draws} if keyword else {}))
            finally:
                module.train(was_training)
            return module.details

    return replay


def _prepare_dense(state: AttentionState, entry: registry.Mechanism, overrides: dict) -> None:
    """NLA / HSPA: embed queries and keys (``O(L C)``); the normaliser does not change the embedding."""
    q, k, _ = state.module.embed(state.features)  # (1, L, D) each
    if overrides and entry.override_normalizer is not None:  # a private normaliser, the module left as it is
        state.normalizer = entry.override_normalizer(state.knobs)
    else:
        state.normalizer = state.module.normalizer or softmax_last
    state.q, state.k = q[0], k[0]


def _prepare_features(state: AttentionState, overrides: dict, seed: int) -> None:
    """ENLA: embed, and the ``(L, m)`` key features ``phi(K)`` (``O(L m C)``), once per setting."""
    module, full = state.module, state.knobs
    with _temporarily(module, amplification=overrides.get("amplification", module.amplification)):
        q, k, _ = module.embed(state.features)
    m = int(full["n_features"])
    fn = module.attn_fn
    if m == fn.n_features:
        proj = fn.projection_matrix
    else:
        proj = gaussian_orthogonal_matrix(m, fn.dim, orthogonal=fn.orthogonal, scaling=fn.scaling,
                                          generator=torch.Generator().manual_seed(seed),
                                          dtype=q.dtype).to(q.device)
    state.q, state.k, state.projection, state.feature_eps = q[0], k[0], proj, fn.feature_eps
    # filled in blocks of rows (each row is independent) so that the transient products stay a fraction of
    # the kept result
    state.phi_k = state.k.new_empty(state.k.shape[0], m)
    for start in range(0, state.k.shape[0], _ROW_BLOCK):
        rows = slice(start, start + _ROW_BLOCK)
        state.phi_k[rows] = positive_random_features(state.k[rows], proj, fn.feature_eps)


def _prepare_bucketed(state: AttentionState, entry: registry.Mechanism, overrides: dict,
                      gen: torch.Generator) -> None:
    """NLSA / GLA / LCoA: embed, hash or assign, sort (the entry's ``layout``: ``O(L C b R)``), without the
    chunk attention of all queries (``R L 3c`` weights), which :meth:`AttentionState.query` recomputes for
    one query at a time."""
    module, features = state.module, state.features
    attrs = dict(overrides)
    if "n_hashes" in attrs:
        attrs["n_hashes"] = int(attrs["n_hashes"])
    was_training = module.training
    with _temporarily(module, **attrs):
        try:
            module.eval()  # e.g. no k-means EMA step on a module that is being trained
            cheap = entry.layout(module, features, gen)
        except RuntimeError as err:  # e.g. padding larger than the sequence inside torch ops
            raise ValueError(f"{state.mechanism} with {state.knobs}: {err}") from err
        finally:
            module.train(was_training)
        extra, replay_attrs = entry.scoring(module, features) if entry.scoring is not None else ({}, {})
    attrs.update(replay_attrs)
    replay = _replay_forward(state.mechanism, module, features, attrs, cheap.get(entry.draws) if entry.draws else None)
    state.details = _Details(cheap, entry.forward_details, replay)
    state.q = cheap["embedding"][0]  # (L, D)
    state.key_eps = float(getattr(module, "key_eps", 5e-5))
    state.extra.update(extra)


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

    Work and memory per kind of mechanism (registry), all linear in ``L``: dense (NLA/HSPA) embed queries and
    keys (``O(L C)``); ENLA also the key features ``phi(K)`` (``O(L m C)``, ``L x m`` kept); bucketed
    (NLSA/GLA/LCoA) embed, hash and sort (``O(L C b R)``: the module's own hashing).

    Args:
        mechanism: a registered mechanism (:func:`mechanisms`).
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
    entry = registry.get(mechanism)
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
        overrides = {n: v for n, v in knobs.items() if n in settable and n != entry.view_knob}
        full = {**current, **knobs}
    state = AttentionState(mechanism, (H, W), full, module, features)
    if entry.kind == "dense":
        _prepare_dense(state, entry, overrides)
    elif entry.kind == "features":
        _prepare_features(state, overrides, seed)
    else:
        _prepare_bucketed(state, entry, overrides, gen)
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
        # (mechanism, features id, temperature, seed, knob values) -> (features, demo module)
        self._demo_modules: OrderedDict = OrderedDict()
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
        entry = registry.get(mechanism)
        view = entry.view_knob
        if view is not None and view in knobs:  # one state for both values: it only picks the row shown
            base = self.get(mechanism, features, module, layer=layer, temperature=temperature, seed=seed,
                            **{k: v for k, v in knobs.items() if k != view})
            return replace(base, knobs={**base.knobs, view: knobs[view]}) if knobs[view] else base
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
        demo_key = None
        if entry.demo_state_knobs is not None and module is None:  # e.g. LCoA's centroids: from the features
            full = _check_knobs(mechanism, knobs)
            demo_key = (mechanism, id(features), float(temperature), int(seed),
                        tuple(full[k] for k in entry.demo_state_knobs))
            if demo_key in self._demo_modules:
                given = self._demo_modules[demo_key][1]  # same construction and centroids as a fresh demo module
        state = prepare_attention(mechanism, features, given, temperature=temperature, seed=seed, **full)
        if demo_key is not None:
            self._demo_modules[demo_key] = (features, state.module)
            self._demo_modules.move_to_end(demo_key)
            while len(self._demo_modules) > self.maxsize:
                self._demo_modules.popitem(last=False)
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
        self._demo_modules.clear()


# --------------------------------------------------------------------------------------------------------
# Attention layers of a network
# --------------------------------------------------------------------------------------------------------
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
    calls = record_calls(model, lr, lambda _name, sub: registry.mechanism_of(sub) is not None, eval_mode=True,
                         grad=True)  # as the notebooks' forward: autograd on, eval mode
    for call in calls:
        mech = registry.mechanism_of(call.module)
        shared = (call.args[1] if len(call.args) > 1 else None) or call.kwargs.get("shared")
        if registry.get(mech).shared_call and shared is not None:
            continue  # a collaborative call reuses an earlier module's attention: no map of its own
        found.setdefault(mech, []).append((call.module, call.args[0]))
    if not found:
        raise ValueError(f"{type(model).__name__} called no srlib attention module")
    return found
