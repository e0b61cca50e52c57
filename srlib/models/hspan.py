"""HSPAN: high-similarity-pass attention network (Su, Gan, Chen, Guo, Chen; HSPAN paper Sec. III-A/B).

Structure (paper Fig. 3, Eqs. 1-5; official ``laoyangui/HSPAN`` ``src/model/hspan.py``)::

    sub_mean -> head (3x3 conv, Eq. 1) -> body -> (+ head output: long skip) -> tail (upsampler, 3x3 conv, Eq. 3)
             -> add_mean
    body  = [HSPAM x n_resgroups, 3x3 conv]                                   Eqs. (2), (5)
    HSPAM = x + res_scale * [LEB (n_resblocks residual blocks), HSPA, 3x3 conv](x)

Paper configuration: 10 HSPAMs, LEBs of 4 residual blocks, 192 features, top-k 128, 1x1 convolutions inside
HSPA, ``res_scale`` 0.1 (README command line), about 33.6M parameters at x4.

Where the code differs from a plain reading of the paper (we follow the code, so official checkpoints load):

* The official class named ``LEB`` is *one* residual block ``x + conv(ReLU(conv(x)))``; the paper's LEB is the
  stack of ``n`` of them. Here :class:`LEB` is the paper's stack; inside :class:`HSPAM` its blocks sit
  directly in ``body`` (keys ``body.i.body.j.body.{0,2}.*``), as in the code.
* The residual blocks ignore their ``res_scale`` argument (scale 1).
* HSPAM scales its branch by ``res_scale`` and the HSPA inside also scales its attention output by the same
  ``res_scale``: the attention branch is scaled twice (0.1 · 0.1).
* The network carries an unused 1-element parameter ``a`` (counted in the 33.6M).

HSPAN_S (paper Sec. IV-D, "only one HSPA in the middle of the backbone"; no official code): here the same
backbone with an HSPA only in HSPAM number ``(n_resgroups - 1) // 2`` (0-based), i.e. after half of the
``n_resgroups · n_resblocks`` residual blocks when ``n_resgroups`` is even; the other HSPAMs are
``[LEB, 3x3 conv]``. Registered as ``"hspan_s"``.
"""

from __future__ import annotations

from dataclasses import dataclass

from srlib._checks import check_choice, check_sr_config
from srlib.attention.hspa import HSPA
from srlib.attention.softthreshold import MODES, _check_topk
from srlib.models.common import AttentionGroup, ResBlockStack, SRNetwork, official_config_reader
from srlib.models.registry import register_model

__all__ = ["HSPAM", "HSPAN", "HSPANConfig", "HSPANSConfig", "LEB", "attention_indices"]


@dataclass
class HSPANConfig:
    """HSPAN hyper-parameters; defaults are the paper / official README configuration.

    Attributes:
        scale: upscaling factor (2, 3 or 4).
        n_resgroups: number of HSPAMs ``m`` (10).
        n_resblocks: residual blocks per LEB ``n`` (4).
        n_feats: channels (192).
        reduction: HSPA query/key channels ``n_feats // reduction`` (2).
        topk: ST top-k (128; ``None`` = full sort).
        st_mode: ``"exact"`` (official, output independent of ``topk``) or ``"truncated"`` (paper's
            search-space reading of top-k).
        normalizer: ``"st"`` (HSPA) or ``"softmax"`` (dense NLA in the same place: the paper's Table I).
        attention_at: which HSPAMs contain an HSPA: ``"all"``, ``"middle"`` (HSPAN_S), ``"none"`` (the
            paper's "Backbone" of Table I) or a tuple of 0-based HSPAM indices.
        res_scale: HSPAM and HSPA residual scale (0.1).
        rgb_range: input/output range (1 = images in ``[0, 1]``); n_colors: 3.
    """

    scale: int = 2
    n_resgroups: int = 10
    n_resblocks: int = 4
    n_feats: int = 192
    reduction: int = 2
    topk: int | None = 128
    st_mode: str = "exact"
    normalizer: str = "st"
    attention_at: str | tuple[int, ...] = "all"
    res_scale: float = 0.1
    rgb_range: float = 1.0
    n_colors: int = 3

    def __post_init__(self) -> None:
        """Raises ValueError naming any field outside its range (:func:`srlib._checks.check_sr_config`)."""
        check_sr_config(self)
        check_choice(type(self).__name__, "st_mode", self.st_mode, MODES)
        check_choice(type(self).__name__, "normalizer", self.normalizer, ("st", "softmax"))
        _check_topk(self.topk)
        attention_indices(self)  # raises for an unknown attention_at or an index outside [0, n_resgroups)

    @classmethod
    def small(cls, **overrides) -> "HSPANConfig":
        """A CPU-sized HSPAN: 2 HSPAMs of 1 residual block, 32 channels, top-k 64 (the reference network case)."""
        base = dict(n_resgroups=2, n_resblocks=1, n_feats=32, topk=64)
        base.update(overrides)
        return cls(**base)


@dataclass
class HSPANSConfig(HSPANConfig):
    """HSPAN_S: :class:`HSPANConfig` with a single HSPA in the middle HSPAM (paper Sec. IV-D)."""

    attention_at: str | tuple[int, ...] = "middle"

    @classmethod
    def small(cls, **overrides) -> "HSPANSConfig":
        """A CPU-sized HSPAN_S: 3 HSPAMs of 1 residual block (HSPA in the 2nd), 32 channels, top-k 64."""
        base = dict(n_resgroups=3, n_resblocks=1, n_feats=32, topk=64)
        base.update(overrides)
        return cls(**base)


#: :class:`HSPANConfig` from the ``config`` dict of a reference case / state-dict listing (official ``args``).
config_from_official = official_config_reader(HSPANConfig, (
    "n_resgroups", "n_resblocks", "n_feats", "reduction", "topk", "res_scale", "rgb_range", "n_colors"))


def attention_indices(cfg: HSPANConfig) -> tuple[int, ...]:
    """0-based indices of the HSPAMs that contain an HSPA for ``cfg.attention_at``.

    Raises:
        ValueError: unknown string or an index outside ``[0, n_resgroups)``.
    """
    n = cfg.n_resgroups
    at = cfg.attention_at
    if isinstance(at, str):
        if at == "all":
            return tuple(range(n))
        if at == "middle":
            return ((n - 1) // 2,) if n > 0 else ()
        if at == "none":
            return ()
        raise ValueError(f"attention_at must be 'all', 'middle', 'none' or a tuple of indices, got {at!r}")
    idx = tuple(sorted(set(int(i) for i in at)))
    bad = [i for i in idx if not 0 <= i < n]
    if bad:
        raise ValueError(f"attention_at indices {bad} outside [0, {n}) (n_resgroups={n})")
    return idx


class LEB(ResBlockStack):
    """Locality exploration block (paper Sec. III-B1): ``n_resblocks`` simplified residual blocks.

    Each block is ``x + conv3x3(ReLU(conv3x3(x)))`` (no batch norm, no residual scaling; the official class
    named ``LEB`` is one such block). ``(B, F, H, W) -> (B, F, H, W)``; see
    :class:`~srlib.models.common.ResBlockStack`.
    """


class HSPAM(AttentionGroup):
    """High-similarity-pass attention-based module (paper Sec. III-B, Fig. 3; Eq. 5 for the chain).

    ``F_i = F_{i-1} + res_scale · conv3x3(HSPA(LEB(F_{i-1})))``; ``body = [LEB blocks..., HSPA, conv]`` flat, so
    keys are ``body.{0..n-1}.body.{0,2}.*`` (blocks), ``body.n.conv_match1.*`` ... (HSPA), ``body.{n+1}.*``
    (conv). Without attention (``with_attention=False``): ``body = [LEB blocks..., conv]``.

    Args:
        n_feats: channels ``F``; n_resblocks: blocks in the LEB; reduction, topk, mode, normalizer: passed to
        :class:`~srlib.attention.hspa.HSPA` (whose residual scale is also ``res_scale``, as in the code);
        res_scale: branch scale; with_attention: include the HSPA.

    Shapes: ``(B, F, H, W) -> (B, F, H, W)``.
    """

    def __init__(
        self,
        n_feats: int, n_resblocks: int,
        reduction: int = 2, res_scale: float = 0.1,  # HSPA: C / C'; branch and HSPA residual scale
        topk: int | None = 128, mode: str = "exact", normalizer: str = "st",  # HSPA's soft thresholding
        with_attention: bool = True,
    ) -> None:
        def hspa() -> HSPA:
            return HSPA(
                channel=n_feats, reduction=reduction, res_scale=res_scale, topk=topk, mode=mode, normalizer=normalizer
            )

        super().__init__(n_feats, n_resblocks, res_scale, hspa if with_attention else None)

    @property
    def attention(self) -> HSPA | None:
        """The HSPA of this module, or ``None``."""
        m = self.body[self.n_resblocks]
        return m if isinstance(m, HSPA) else None


class HSPAN(SRNetwork):
    """HSPAN network. ``x: (B, n_colors, h, w)`` LR in ``[0, rgb_range]`` -> SR ``(B, n_colors, s·h, s·w)``.

    State-dict keys and order equal the official ``HSPAN`` (``a``, ``sub_mean.*``, ``add_mean.*``, ``head.*``,
    ``body.*``, ``tail.*``; ``tests/reference/state_dicts/hspan_x*.json``), so official checkpoints load with
    ``load_state_dict(strict=True)`` (for ``attention_at="all"``).

    Raises:
        ValueError: bad config (scale not supported by the upsampler, bad top-k / mode / attention_at, ``n_feats``
            not divisible by ``reduction``, any field out of range); at call, ``x`` not a floating point
            ``(B, 3, h, w)`` image in ``[0, rgb_range]`` (or with NaN/Inf).
    """

    attention_class = HSPA

    def __init__(self, cfg: HSPANConfig | None = None) -> None:
        super().__init__()
        cfg = cfg or HSPANConfig()
        if cfg.st_mode not in MODES:
            raise ValueError(f"st_mode must be one of {MODES}, got {cfg.st_mode!r}")
        _check_topk(cfg.topk)
        self.cfg = cfg
        with_attn = set(attention_indices(cfg))
        # a, sub_mean, add_mean, head (Eq. 1), body = [HSPAMs, conv] (Eqs. 2, 5), tail (Eq. 3): official order
        def hspam(i: int) -> HSPAM:
            return HSPAM(cfg.n_feats, cfg.n_resblocks, reduction=cfg.reduction, res_scale=cfg.res_scale, topk=cfg.topk,
                         mode=cfg.st_mode, normalizer=cfg.normalizer, with_attention=i in with_attn)

        self.build_edsr_layout(lambda: [hspam(i) for i in range(cfg.n_resgroups)], unused_a=True)

    def set_topk(self, topk: int | None, mode: str | None = None) -> None:
        """Change the ST top-k (and optionally the mode) of every HSPA, e.g. at test time (paper Fig. 6)."""
        for _, m in self.attention_modules():
            m.topk = topk
            if mode is not None:
                m.mode = mode


@register_model("hspan", HSPANConfig)
def build_hspan(cfg: HSPANConfig) -> HSPAN:
    return HSPAN(cfg)


@register_model("hspan_s", HSPANSConfig)
def build_hspan_s(cfg: HSPANSConfig) -> HSPAN:
    return HSPAN(cfg)
