"""DLSN: deep learnable similarity network (Su et al., DLSN paper Sec. 3.1-3.2, Fig. 2, Eqs. 3-7).

Structure (official ``laoyangui/DLSN`` ``src/model/dlsn.py``)::

    sub_mean -> head (3x3 conv, Eq. 3) -> body -> (+ head output: long skip) -> tail (upsampler, 3x3 conv,
             Eq. 5) -> add_mean
    body   = [GLAFFM x n_resgroups, 3x3 conv]                                       Eqs. (4), (7)
    GLAFFM = x + res_scale * [LFFB (n_resblocks residual blocks), GLA, 3x3 conv](x)

Paper configuration ("DLN (C=256)", the README command line): 10 GLAFFMs, LFFBs of 4 residual blocks, 256
features, 64-channel GLA embeddings (``reduction`` 4), bucket size 128, 3 hash rounds, ``res_scale`` 0.1:
69.8M (x2) - 72.8M (x3) parameters. The paper's "about 18.27M" is the ``n_feats=128`` variant (18,268,740 at
x4): ``build_model("dlsn", scale=4, n_feats=128)``.

Where the code differs from a plain reading of the paper (we follow the code, so official checkpoints load):

* The official class named ``LFFB`` is *one* residual block ``x + conv(ReLU(conv(x)))``; the paper's LFFB is
  the stack of ``n`` of them. Here :class:`LFFB` is the paper's stack; inside :class:`GLAFFM` its blocks sit
  directly in ``body`` (keys ``body.i.body.j.body.{0,2}.*``), as in the code.
* The residual blocks ignore their ``res_scale`` argument (scale 1).
* The GLA inside a GLAFFM has a hard-coded residual scale of 1 (``gla_res_scale``); only the GLAFFM branch
  is scaled by ``res_scale``.
* The network carries an unused 1-element parameter ``a`` (counted in the parameter totals).
* The GLA itself departs from the paper in its learnable score and round weights: see
  :mod:`srlib.attention.gla` (``lss_variant`` / ``round_weights``, defaults ``"official"``).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch.nn as nn

from srlib._checks import check_choice, check_sr_config
from srlib.attention.gla import LSS_VARIANTS, ROUND_WEIGHTS, GlobalLearnableAttention
from srlib.models.common import AttentionGroup, ResBlockStack, SRNetwork, official_config_reader
from srlib.models.registry import register_model

__all__ = ["DLSN", "DLSNConfig", "GLAFFM", "LFFB", "config_from_official"]


@dataclass
class DLSNConfig:
    """DLSN hyper-parameters; defaults are the paper / official README configuration.

    Attributes:
        scale: upscaling factor (2, 3 or 4).
        n_resgroups: number of GLAFFMs ``m`` (10).
        n_resblocks: residual blocks per LFFB ``n`` (4).
        n_feats: channels (256; the paper's smaller variant uses 128).
        reduction: GLA embedding channels ``n_feats // reduction`` (4 -> 64).
        chunk_size: GLA bucket size ``l`` (128).
        n_hashes: hash rounds ``h`` (3).
        res_scale: GLAFFM residual scale (0.1).
        gla_res_scale: residual scale inside each GLA (official: 1).
        lss_variant: ``"official"``, ``"paper"`` or ``"none"`` (see :mod:`srlib.attention.gla`).
        round_weights: ``"official"`` or ``"paper"``.
        rgb_range: input/output range (1 = images in ``[0, 1]``); n_colors: 3.
    """

    scale: int = 2
    n_resgroups: int = 10
    n_resblocks: int = 4
    n_feats: int = 256
    reduction: int = 4
    chunk_size: int = 128
    n_hashes: int = 3
    res_scale: float = 0.1
    gla_res_scale: float = 1.0
    lss_variant: str = "official"
    round_weights: str = "official"
    rgb_range: float = 1.0
    n_colors: int = 3

    def __post_init__(self) -> None:
        """Raises ValueError naming any field outside its range (:func:`srlib._checks.check_sr_config`)."""
        check_sr_config(self)
        check_choice("DLSNConfig", "lss_variant", self.lss_variant, LSS_VARIANTS)
        check_choice("DLSNConfig", "round_weights", self.round_weights, ROUND_WEIGHTS)

    @classmethod
    def small(cls, **overrides) -> "DLSNConfig":
        """A CPU-sized DLSN: 2 GLAFFMs of 1 residual block, 32 channels (8-channel GLA embeddings), bucket
        size 48, 3 hash rounds: the configuration of the reference network case (152,980 parameters)."""
        base = dict(n_resgroups=2, n_resblocks=1, n_feats=32, chunk_size=48)
        base.update(overrides)
        return cls(**base)


#: :class:`DLSNConfig` from the ``config`` dict of a reference case / state-dict listing (official ``args``).
config_from_official = official_config_reader(DLSNConfig, (
    "n_resgroups", "n_resblocks", "n_feats", "reduction", "chunk_size", "n_hashes", "res_scale", "rgb_range",
    "n_colors"))


class LFFB(ResBlockStack):
    """Local features fusion block (paper Sec. 3.2.1): ``n_resblocks`` simplified residual blocks.

    Each block is ``x + conv3x3(ReLU(conv3x3(x)))`` (no batch norm, no residual scaling; the official class
    named ``LFFB`` is one such block). ``(B, F, H, W) -> (B, F, H, W)``; see
    :class:`~srlib.models.common.ResBlockStack`.
    """


class GLAFFM(AttentionGroup):
    """Global-learnable-attention-based features fusion module (paper Sec. 3.2, Fig. 2; Eq. 7 for the chain).

    ``F_i = F_{i-1} + res_scale * conv3x3(GLA(LFFB(F_{i-1})))``; ``body = [LFFB blocks..., GLA, conv]`` flat, so
    keys are ``body.{0..n-1}.body.{0,2}.*`` (blocks), ``body.n.conv_match.0.*`` ... (GLA), ``body.{n+1}.*``
    (feature refinement conv).

    Args:
        n_feats: channels ``F``; n_resblocks: blocks in the LFFB; reduction, chunk_size, n_hashes,
        lss_variant, round_weights: passed to :class:`~srlib.attention.gla.GlobalLearnableAttention`;
        res_scale: branch scale; gla_res_scale: the GLA's own residual scale (official 1).

    Shapes: ``(B, F, H, W) -> (B, F, H, W)``, any ``H, W >= 1``.
    """

    def __init__(
        self,
        n_feats: int, n_resblocks: int,
        reduction: int = 4, chunk_size: int = 128, n_hashes: int = 3,  # GLA: C / C', bucket size l, rounds R
        res_scale: float = 0.1, gla_res_scale: float = 1.0,  # GLAFFM branch, GLA's own residual (official 1)
        lss_variant: str = "official", round_weights: str = "official",
    ) -> None:
        super().__init__(n_feats, n_resblocks, res_scale, lambda: GlobalLearnableAttention(
            n_hashes=n_hashes, channels=n_feats, k_size=3, reduction=reduction, chunk_size=chunk_size,
            res_scale=gla_res_scale, lss_variant=lss_variant, round_weights=round_weights,
        ))

    @property
    def lffb(self) -> nn.Sequential:
        """The LFFB's residual blocks (a view sharing the modules of ``body``)."""
        return self.body[: self.n_resblocks]

    @property
    def attention(self) -> GlobalLearnableAttention:
        """The GLA of this module."""
        return self.body[self.n_resblocks]


class DLSN(SRNetwork):
    """DLSN network. ``x: (B, n_colors, h, w)`` LR in ``[0, rgb_range]`` -> SR ``(B, n_colors, s*h, s*w)``.

    State-dict keys and order equal the official ``DLSN`` (``a``, ``sub_mean.*``, ``add_mean.*``, ``head.*``,
    ``body.*``, ``tail.*``; ``tests/reference/state_dicts/dlsn_x*.json``), so official checkpoints load with
    ``load_state_dict(strict=True)`` (with ``lss_variant="official"``).

    Any ``h, w >= 1`` (GLA pads a map smaller than one chunk). The GLA modules draw fresh super-bit
    projections in every call; see
    :meth:`attention_modules` to fix them (``module.projections``) or give them a ``torch.Generator``
    (``module.generator``).

    Raises:
        ValueError: bad config (unsupported scale, unknown GLA variant, any field out of range); at call, ``x`` not
            a floating point ``(B, 3, h, w)`` image in ``[0, rgb_range]`` (or with NaN/Inf).
    """

    attention_class = GlobalLearnableAttention

    def __init__(self, cfg: DLSNConfig | None = None) -> None:
        super().__init__()
        cfg = cfg or DLSNConfig()
        if cfg.lss_variant not in LSS_VARIANTS:
            raise ValueError(f"lss_variant must be one of {LSS_VARIANTS}, got {cfg.lss_variant!r}")
        if cfg.round_weights not in ROUND_WEIGHTS:
            raise ValueError(f"round_weights must be one of {ROUND_WEIGHTS}, got {cfg.round_weights!r}")
        self.cfg = cfg
        # a, sub_mean, add_mean, head (Eq. 3), body = [GLAFFMs, conv] (Eqs. 4, 7), tail (Eq. 5): official order
        def glaffm() -> GLAFFM:
            return GLAFFM(cfg.n_feats, cfg.n_resblocks, reduction=cfg.reduction, chunk_size=cfg.chunk_size,
                          n_hashes=cfg.n_hashes, res_scale=cfg.res_scale, gla_res_scale=cfg.gla_res_scale,
                          lss_variant=cfg.lss_variant, round_weights=cfg.round_weights)

        self.build_edsr_layout(lambda: [glaffm() for _ in range(cfg.n_resgroups)], unused_a=True)


@register_model("dlsn", DLSNConfig)
def build_dlsn(cfg: DLSNConfig) -> DLSN:
    return DLSN(cfg)
