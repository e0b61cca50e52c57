"""One list of the attention mechanisms: what the explorer, the FLOP table and the benchmark read.

Each :class:`Mechanism` entry says, for one mechanism, in one place:

* its srlib class (``cls``) and its *kind*, which tells generic code how a row of its attention is computed
  (``"dense"``: ``normalizer(q_p . k_j)`` over all keys, NLA / HSPA; ``"features"``: positive random
  features, ENLA; ``"bucketed"``: chunks of a sorted hash / cluster order, NLSA / GLA / LCoA);
* its knobs (:class:`Knob`: default, options or range, one line of help), which of them an existing module
  can change at test time (``settable``) and the values a module runs with (``module_knobs``);
* a demo builder (``build_demo``): a seeded module whose similarity needs no training;
* the bucketed mechanisms' cheap forward part (``layout``: embed, hash / assign, sort), the keyword its
  ``forward`` takes for replaying the same random draws (``draws``), the ``details`` only the full forward
  pass gives (``forward_details``) and extra scoring inputs (``scoring``: GLA's learnable score);
* its FLOP function (``flops``), its rows of the FLOP table (``flop_rows``) and its benchmark cases
  (``bench_cases``).

Layering. This module belongs to :mod:`srlib.attention`, which must not import :mod:`srlib.analysis` or
:mod:`srlib.viz` (``tests/test_layers.py``). The FLOP functions and benchmark cases are analysis code, so an
entry holds them as *references*: either a callable (what a test or a notebook registering its own
mechanism passes) or a ``"module:attribute"`` string such as ``"srlib.analysis.flops:nla_flops"``, which
:func:`resolve` imports when the higher layer (``srlib.analysis.flops``, ``srlib.analysis.bench``) asks for
it. Nothing here imports those modules; the strings are only names. Moving the arithmetic into the
attention layer instead would have put the papers' accounting (and the paper tables it reproduces) next to
the modules, away from the rest of :mod:`srlib.analysis.flops`.

Adding a mechanism: build a :class:`Mechanism` and pass it to :func:`register` (``unregister`` removes it);
:func:`mechanisms` lists every registered name in registration order (the six built-ins first, in the
papers' order).

Sources: NLSN (Mei et al., CVPR 2021), ENLCN (Xia et al., AAAI 2022), DLSN (Su et al., TPAMI 2023), HSPAN
(Su et al.), LCoAN (Zhao et al.), as cited in each mechanism's module; knob defaults from the papers /
official code as cited per knob.
"""

from __future__ import annotations

import contextlib
import importlib
import math
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator

import torch
import torch.nn as nn

from srlib.attention.buckets import BucketLayout
from srlib.attention.enla import ENLCA
from srlib.attention.gla import GlobalLearnableAttention
from srlib.attention.hspa import HSPA
from srlib.attention.lcoa import LearnableCollaborativeAttention
from srlib.attention.nla import NonLocalAttention
from srlib.attention.nlsa import NonLocalSparseAttention
from srlib.attention.softthreshold import SoftThreshold

__all__ = [
    "KINDS",
    "Knob",
    "Mechanism",
    "get",
    "mechanism_of",
    "mechanisms",
    "register",
    "resolve",
    "temporarily",
    "unregister",
]

#: How a mechanism computes one row of attention (module docstring).
KINDS = ("dense", "features", "bucketed")

#: A callable, or the ``"module:attribute"`` name of one (resolved by :func:`resolve`).
Ref = Callable[..., Any] | str | None

_CHUNKS = (16, 32, 48, 64, 96, 128, 144, 192, 256, 384, 512)


@dataclass(frozen=True)
class Knob:
    """One control of a mechanism.

    Attributes:
        name: keyword argument of ``prepare_attention`` / ``demo_module`` (:mod:`srlib.viz.explorer`).
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


@dataclass(frozen=True)
class Mechanism:
    """One registered mechanism (module docstring).

    Attributes:
        name: short name, e.g. ``"NLSA"``.
        cls: its srlib module class; a module belongs to the registered class nearest in its MRO
            (:func:`mechanism_of`: an HSPA is an ``HSPA``, not an ``NLA``, although it subclasses it).
        kind: one of :data:`KINDS`.
        knobs: its :class:`Knob` s (``()``: nothing to set, e.g. NLA).
        build_demo: ``(channels, temperature, generator, knobs) -> nn.Module``, called with the global RNG
            seeded; the module scores two unit features ``cos / temperature``.
        module_knobs: ``module -> {knob: value}`` the module runs with (default: ``{}``).
        settable: ``module -> knob names`` it can change at test time (default: all knobs).
        override_normalizer: dense kind: ``knobs -> normaliser`` used when knobs are changed on a given
            module (HSPA: a private soft-thresholding).
        layout: bucketed kind: ``(module, features (1, C, H, W), generator) -> details`` with at least
            ``codes (1, R, L)``, ``layout`` (:class:`BucketLayout`) and ``embedding (1, L, D)``.
        draws: bucketed kind: keyword of ``module.forward`` taking the random draws kept by ``layout``
            (``details[draws]``), or ``None``.
        forward_details: bucketed kind: ``details`` entries that need the module's whole forward pass.
        scoring: bucketed kind: ``(module, features) -> (extra, replay_attrs)``: extra query inputs and the
            attributes the replayed forward pass runs with (GLA's learned score), or ``None``.
        view_knob: a boolean knob that only chooses which row is shown, not what is computed (ENLA's
            ``exact``: the exact softmax instead of the approximation); states are shared across its values.
        demo_state_knobs: knobs that fix the data-dependent state of a demo module (LCoA's number of
            clusters: k-means centroids initialised from the features); a cached demo module is reused when
            only the other knobs change. ``None``: never reused.
        group: what a bucketed mechanism calls the positions sharing a code (``"bucket"``, LCoA ``"cluster"``).
        shared_call: a call with a second argument reuses another module's attention and has no map of its
            own (LCoA's collaborative modules, LCoAN Eq. 12).
        flops: FLOP function of one module (``srlib.analysis.flops`` convention), a :data:`Ref`.
        flop_rows: ``(h, w, c, settings) -> {row name: FlopCount}``: its rows of
            ``srlib.analysis.flops.attention_flops_table`` (``settings``: that function's keyword arguments).
        bench_cases: ``() -> [BenchCase, ...]``: its cases of ``srlib.analysis.bench.bench_cases``.
        paper: where it comes from.
    """

    name: str
    cls: type
    kind: str
    knobs: tuple[Knob, ...] = ()
    build_demo: Callable[[int, float, torch.Generator, dict], nn.Module] | None = field(default=None, repr=False)
    module_knobs: Callable[[nn.Module], dict] | None = field(default=None, repr=False)
    settable: Callable[[nn.Module], tuple[str, ...]] | None = field(default=None, repr=False)
    override_normalizer: Callable[[dict], Callable] | None = field(default=None, repr=False)
    layout: Callable[[nn.Module, torch.Tensor, torch.Generator], dict] | None = field(default=None, repr=False)
    draws: str | None = None
    forward_details: tuple[str, ...] = ()
    scoring: Callable[[nn.Module, torch.Tensor], tuple[dict, dict]] | None = field(default=None, repr=False)
    view_knob: str | None = None
    demo_state_knobs: tuple[str, ...] | None = None
    group: str = "bucket"
    shared_call: bool = False
    flops: Ref = field(default=None, repr=False)
    flop_rows: Ref = field(default=None, repr=False)
    bench_cases: Ref = field(default=None, repr=False)
    paper: str = ""

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"kind must be one of {KINDS}, got {self.kind!r}")
        if self.kind == "bucketed" and self.layout is None:
            raise ValueError(f"{self.name}: a bucketed mechanism needs a layout function")

    def defaults(self) -> dict[str, Any]:
        """``{knob: default}``."""
        return {k.name: k.default for k in self.knobs}

    def knobs_of(self, module: nn.Module) -> dict[str, Any]:
        """The knob values ``module`` runs with."""
        return dict(self.module_knobs(module)) if self.module_knobs is not None else {}

    def settable_knobs(self, module: nn.Module) -> tuple[str, ...]:
        """The knobs ``module`` can change at test time."""
        if self.settable is not None:
            return tuple(self.settable(module))
        return tuple(k.name for k in self.knobs)


_REGISTRY: dict[str, Mechanism] = {}


def register(mechanism: Mechanism, *, replace: bool = False) -> Mechanism:
    """Add ``mechanism`` to the list (at the end); returns it.

    Raises:
        ValueError: a mechanism of that name is registered already (unless ``replace``).
    """
    if not isinstance(mechanism, Mechanism):
        raise ValueError(f"register takes a Mechanism, got {type(mechanism).__name__}")
    if mechanism.name in _REGISTRY and not replace:
        raise ValueError(f"a mechanism named {mechanism.name!r} is registered already")
    _REGISTRY[mechanism.name] = mechanism
    return mechanism


def unregister(name: str) -> Mechanism:
    """Remove and return the mechanism ``name``.

    Raises:
        ValueError: no such mechanism.
    """
    if name not in _REGISTRY:
        raise ValueError(f"no mechanism named {name!r}; registered: {mechanisms()}")
    return _REGISTRY.pop(name)


def mechanisms() -> tuple[str, ...]:
    """Names of the registered mechanisms, in registration order."""
    return tuple(_REGISTRY)


def get(name: str) -> Mechanism:
    """The entry of ``name``.

    Raises:
        ValueError: unknown mechanism.
    """
    try:
        return _REGISTRY[name]
    except (KeyError, TypeError):
        raise ValueError(f"unknown mechanism {name!r}; choose one of {mechanisms()}") from None


def mechanism_of(module: nn.Module) -> str | None:
    """Name of the registered mechanism ``module`` belongs to: of the classes it is an instance of, the one
    deepest in its class hierarchy (``None`` if it is none)."""
    best, depth = None, -1
    for entry in _REGISTRY.values():
        if isinstance(module, entry.cls) and len(entry.cls.__mro__) > depth:
            best, depth = entry.name, len(entry.cls.__mro__)
    return best


def resolve(ref: Ref) -> Callable[..., Any] | None:
    """The callable behind a :data:`Ref`: itself, or the attribute named by ``"module:attribute"`` (imported
    now, by the caller's layer), or ``None``.

    Raises:
        ValueError: a string without ``":"``; ImportError / AttributeError: a name that does not exist.
    """
    if ref is None or callable(ref):
        return ref
    module, _, attr = str(ref).partition(":")
    if not attr:
        raise ValueError(f"a reference must be a callable or 'module:attribute', got {ref!r}")
    return getattr(importlib.import_module(module), attr)


@contextlib.contextmanager
def temporarily(obj: Any, **attrs: Any) -> Iterator[None]:
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
# Demo modules: seeded, with the query/key embedding set to a scaled identity
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


def _dense_identity(m: nn.Module, temperature: float) -> nn.Module:
    """NLA / HSPA: ``theta = phi = x / sqrt(temperature)`` (PReLU slopes 1), so ``theta . phi = cos / tau``."""
    for seq in (m.conv_match1, m.conv_match2):
        _identity_(seq[0], 1.0 / math.sqrt(temperature))
        seq[1].weight.data.fill_(1.0)  # PReLU slope 1: the identity
    return m


def _demo_nla(channels: int, temperature: float, gen: torch.Generator, knobs: dict) -> nn.Module:
    return _dense_identity(NonLocalAttention(channel=channels, reduction=1), temperature)


def _demo_hspa(channels: int, temperature: float, gen: torch.Generator, knobs: dict) -> nn.Module:
    m = HSPA(channel=channels, reduction=1, topk=knobs["topk"], mode=knobs["mode"])
    return _dense_identity(m, temperature)


def _demo_nlsa(channels: int, temperature: float, gen: torch.Generator, knobs: dict) -> nn.Module:
    m = NonLocalSparseAttention(n_hashes=knobs["n_hashes"], channels=channels, k_size=1, reduction=1,
                                chunk_size=knobs["chunk_size"])
    _identity_(m.conv_match[0], 1.0 / temperature)  # keys are L2-normalised inside, NLSN Eq. 9
    return m


def _demo_gla(channels: int, temperature: float, gen: torch.Generator, knobs: dict) -> nn.Module:
    m = GlobalLearnableAttention(n_hashes=knobs["n_hashes"], channels=channels, k_size=1, reduction=1,
                                 chunk_size=knobs["chunk_size"], lss_variant="none")  # no untrained score
    _identity_(m.conv_match[0], 1.0 / temperature)
    return m


def _demo_lcoa(channels: int, temperature: float, gen: torch.Generator, knobs: dict) -> nn.Module:
    m = LearnableCollaborativeAttention(channels=channels, k_size=1, reduction=1,
                                        n_clusters=knobs["n_clusters"], window_size=knobs["window_size"])
    _identity_(m.conv_match[0], 1.0 / temperature)
    m.kmeans.generator = gen
    return m


def _demo_enla(channels: int, temperature: float, gen: torch.Generator, knobs: dict) -> nn.Module:
    # ENLA normalises and amplifies by sqrt(k) itself (ENLCN Eq. 3): the plain identity, temperature unused
    m = ENLCA(channel=channels, reduction=1, res_scale=1.0, n_features=knobs["n_features"],
              amplification=knobs["amplification"], loss_variant=None, generator=gen)
    _identity_(m.conv_match1[0], 1.0)
    _identity_(m.conv_match2[0], 1.0)
    return m


# --------------------------------------------------------------------------------------------------------
# Knobs of existing modules
# --------------------------------------------------------------------------------------------------------
def _hash_settable(gla: bool) -> Callable[[nn.Module], tuple[str, ...]]:
    """Fixed by the weights: hash rounds when fixed projections are set; GLA's chunk size with a learnable
    score (its MLP outputs one score per slot of the chunk)."""

    def settable(module: nn.Module) -> tuple[str, ...]:
        names = ["n_hashes", "chunk_size"]
        if getattr(module, "projections", None) is not None:
            names.remove("n_hashes")
        if gla and getattr(module, "lss_variant", "none") != "none":
            names.remove("chunk_size")
        return tuple(names)

    return settable


def _hash_knobs(module: nn.Module) -> dict:
    return {"n_hashes": module.n_hashes, "chunk_size": module.chunk_size}


def _enla_knobs(module: nn.Module) -> dict:
    return {"amplification": float(module.amplification), "n_features": module.attn_fn.n_features, "exact": False}


def _hspa_st(module: nn.Module) -> bool:
    return isinstance(getattr(module, "normalizer", None), SoftThreshold)


def _hspa_knobs(module: nn.Module) -> dict:
    return {"topk": module.topk, "mode": module.mode} if _hspa_st(module) else {}


def _hspa_settable(module: nn.Module) -> tuple[str, ...]:
    return ("topk", "mode") if _hspa_st(module) else ()


# --------------------------------------------------------------------------------------------------------
# Bucketed mechanisms: the cheap part of the forward pass
# --------------------------------------------------------------------------------------------------------
def _hash_layout(draws: str) -> Callable[[nn.Module, torch.Tensor, torch.Generator], dict]:
    """Embedding, LSH and layout: the first lines of ``NonLocalSparseAttention.forward`` (spherical LSH, NLSN
    Eq. 7) and ``GlobalLearnableAttention.forward`` (super-bit LSH, DLSN Eqs. 12-13), with the module's own
    methods, in the same order; LSH directions from ``gen`` unless the module has fixed ones."""

    def layout(module: nn.Module, features: torch.Tensor, gen: torch.Generator) -> dict:
        emb = module.conv_match(features).flatten(2).transpose(1, 2)  # (1, L, D): queries = keys
        drawn = module.projections
        if drawn is None:
            with temporarily(module, generator=gen):
                codes, drawn, n_buckets = module.hash(emb)
        else:
            codes, drawn, n_buckets = module.hash(emb)
        out = {"codes": codes, "layout": BucketLayout.from_codes(codes, module.chunk_size), "embedding": emb,
               "n_buckets": n_buckets, draws: drawn}
        if getattr(module, "lss_variant", None) == "none":
            out["lss"] = None
        return out

    return layout


def _kmeans_layout(module: nn.Module, features: torch.Tensor, gen: torch.Generator) -> dict:
    """Embedding, nearest k-means centroid and layout: ``LearnableCollaborativeAttention._lsp`` (LCoAN Eqs.
    7-8); an uninitialised module's centroids are initialised here (official first call), drawing from
    ``gen``."""
    emb = module.conv_match(features).flatten(2).transpose(1, 2)  # (1, L, D)
    with temporarily(module.kmeans, generator=gen):
        codes = module.kmeans(emb)  # (1, R, L)
    layout = BucketLayout.from_codes(codes, module.window_size)
    return {"codes": codes, "layout": layout, "embedding": emb, "means": module.kmeans.means.detach().clone()}


def _gla_scoring(module: nn.Module, features: torch.Tensor) -> tuple[dict, dict]:
    """GLA's learnable-score inputs ``lss_features (L, C)`` (when it has one) and round weighting; the replay
    runs with the scoring of now (e.g. inside ``learnable_score_disabled``)."""
    extra: dict[str, Any] = {}
    if module.lss_variant != "none":
        extra["lss_features"] = module.conv_assembly_fc(features).flatten(2).transpose(1, 2)[0]
    extra["lss_variant"] = module.lss_variant
    extra["round_weights"] = module.round_weights
    return extra, {"lss_variant": module.lss_variant, "round_weights": module.round_weights}


# --------------------------------------------------------------------------------------------------------
# The six mechanisms, in the papers' order
# --------------------------------------------------------------------------------------------------------
_FLOPS = "srlib.analysis.flops"
_BENCH = "srlib.analysis.bench"

register(Mechanism(
    "NLA", NonLocalAttention, "dense", (), build_demo=_demo_nla,
    flops=f"{_FLOPS}:nla_flops", flop_rows=f"{_FLOPS}:_nla_rows", bench_cases=f"{_BENCH}:_nla_cases",
    paper="NLSN Eq. 4 (dense softmax)",
))
register(Mechanism(
    "NLSA", NonLocalSparseAttention, "bucketed", (
        Knob("n_hashes", "hash rounds R", 4, bounds=(1, 8, 1), help="NLSN Eq. 11: rounds combined per query"),
        Knob("chunk_size", "chunk size c", 144, options=_CHUNKS, help="NLSN Eq. 8: keys = 3 chunks of c"),
    ), build_demo=_demo_nlsa, module_knobs=_hash_knobs, settable=_hash_settable(False),
    layout=_hash_layout("rotations"), draws="rotations", forward_details=("score", "bucket_score"),
    flops=f"{_FLOPS}:nlsa_flops", flop_rows=f"{_FLOPS}:_nlsa_rows", bench_cases=f"{_BENCH}:_nlsa_cases",
    paper="NLSN Eqs. 7-11 (spherical LSH, chunks)",
))
register(Mechanism(
    "ENLA", ENLCA, "features", (
        Knob("amplification", "amplification k", 6.0, bounds=(1.0, 20.0, 0.5), help="ENLCN Eq. 3: scores k cos"),
        Knob("n_features", "random features m", 128, options=(4, 8, 16, 32, 64, 128, 256, 512, 1024),
             help="ENLCN Eq. 4: more features, closer to the exact softmax"),
        Knob("exact", "exact softmax", False, options=(False, True), help="show softmax(q k^T) instead"),
    ), build_demo=_demo_enla, module_knobs=_enla_knobs, view_knob="exact",
    flops=f"{_FLOPS}:enla_flops", flop_rows=f"{_FLOPS}:_enla_rows", bench_cases=f"{_BENCH}:_enla_cases",
    paper="ENLCN Eqs. 3-6 (positive random features)",
))
register(Mechanism(
    "GLA", GlobalLearnableAttention, "bucketed", (
        Knob("n_hashes", "hash rounds R", 3, bounds=(1, 8, 1), help="DLSN Eq. 17: rounds combined per query"),
        Knob("chunk_size", "chunk size c", 128, options=_CHUNKS, help="DLSN Eq. 15-16: bucket size l"),
    ), build_demo=_demo_gla, module_knobs=_hash_knobs, settable=_hash_settable(True),
    layout=_hash_layout("projections"), draws="projections",
    forward_details=("score", "bucket_score", "lss", "round_weights"), scoring=_gla_scoring,
    flops=f"{_FLOPS}:gla_flops", flop_rows=f"{_FLOPS}:_gla_rows", bench_cases=f"{_BENCH}:_gla_cases",
    paper="DLSN Eqs. 9-18 (super-bit LSH, learnable score)",
))
register(Mechanism(
    "HSPA", HSPA, "dense", (
        Knob("topk", "top-k", 128, options=(1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, None),
             help="HSPAN Sec. III-C: ST searches the k largest scores (None: full sort)"),
        Knob("mode", "ST mode", "exact", options=("exact", "truncated"),
             help="exact: official (k only changes the cost); truncated: sparsemax of the top-k only"),
    ), build_demo=_demo_hspa, module_knobs=_hspa_knobs, settable=_hspa_settable,
    override_normalizer=lambda knobs: SoftThreshold(-1, knobs["topk"], knobs["mode"]),
    flops=f"{_FLOPS}:hspa_flops", flop_rows=f"{_FLOPS}:_hspa_rows", bench_cases=f"{_BENCH}:_hspa_cases",
    paper="HSPAN Eqs. 7-12 (soft thresholding)",
))
register(Mechanism(
    "LCoA", LearnableCollaborativeAttention, "bucketed", (
        Knob("n_clusters", "clusters K", 128, options=(2, 4, 8, 16, 32, 64, 128, 256), help="LCoAN Eq. 7"),
        Knob("window_size", "window c", 144, options=_CHUNKS, help="LCoAN Fig. 1b: keys = 3 windows of c"),
    ), build_demo=_demo_lcoa,
    module_knobs=lambda m: {"n_clusters": m.n_clusters, "window_size": m.window_size},
    settable=lambda m: ("window_size",),  # the centroids fix the number of clusters
    layout=_kmeans_layout, forward_details=("score", "bucket_score", "collaborative"),
    demo_state_knobs=("n_clusters",), group="cluster", shared_call=True,
    flops=f"{_FLOPS}:lcoa_flops", flop_rows=f"{_FLOPS}:_lcoa_rows", bench_cases=f"{_BENCH}:_lcoa_cases",
    paper="LCoAN Eqs. 6-12 (k-means pattern; CoA modules share it: rows LCoA-CoA, LCoA-4xCoA)",
))
