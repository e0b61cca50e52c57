"""LCoAN: residual network with Learnable Collaborative Attention (Zhao et al., LCoAN paper Sec. III-C, Fig. 1a).

Structure (official ``YigangZhao/LCoAN`` ``src/model/lcoan.py``, an RCAN fork)::

    sub_mean -> head (3x3 conv) -> body -> m_conv (3x3 conv) -> (+ head output) -> tail (upsampler, 3x3 conv)
             -> add_mean
    body  = FAU x n_resgroups                    (the paper's "feature aggregation units", official ResidualGroup)
    FAU   = x + res_scale * m_conv(LCoA(local_body(x)))
    local_body = n_resblocks x [x + conv3x3(ReLU(conv3x3(x)))]    ("RCAB" with its channel attention removed)

The first FAU's LCoA computes the k-means sparse pattern and the attention weights (LSP, Eq. 11); the LCoA
of every later FAU reuses them for its own values (CoA, Eq. 12). The shared state travels with the features
from FAU to FAU (official: the tuple ``(x, att_map, bucket_score, kmeans_codes)``).

Paper configuration: 10 FAUs of 4 blocks, 128 features, 128 clusters, windows of 384, one k-means round,
``res_scale`` 0.1, 15.67M parameters at x2 (16.41M at x3, 16.26M at x4; the paper repeats 15.67M).

Where the code differs from a plain reading of the paper (we follow the code, so official checkpoints load):

* The "RCAB" blocks have their channel-attention layer commented out and ignore ``res_scale``.
* LCoA scales its attention by ``res_scale`` and the FAU scales its whole branch by ``res_scale`` again.
* After the FAUs the network has a separate ``m_conv`` (not inside ``body``), and an unused parameter ``a``.
* The LCoA value conv is 1x1 (the paper says all kernels are 3x3).
* The k-means centroids are frozen after the first batch (see :mod:`srlib.attention.lcoa`); set
  ``ema_update=True`` for the paper's EMA update.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn

from srlib._checks import check_choice, check_number, check_sr_config
from srlib.attention.lcoa import EMA_TARGETS, LearnableCollaborativeAttention, SharedAttention
from srlib.models.common import (DIV2K_MEAN, MeanShift, ResBlock, SRNetwork, Upsampler, default_conv,
                                 official_config_reader)
from srlib.models.registry import register_model

__all__ = ["FAU", "LCoAN", "LCoANConfig", "RCABNoCA", "config_from_official"]


@dataclass
class LCoANConfig:
    """LCoAN hyper-parameters; defaults are the paper / official README configuration.

    Attributes:
        scale: upscaling factor (2, 3 or 4).
        n_resgroups: FAUs (10); n_resblocks: residual blocks per FAU (4); n_feats: channels (128).
        reduction: LCoA embedding channels ``n_feats // reduction`` (1).
        n_clusters: k-means clusters ``K`` (128); window_size: sorted window ``c`` (384).
        n_rounds: k-means rounds (official ``--n_hashes``, default 1).
        ema_decay: ``lambda`` of Eq. (10) (0.999).
        ema_update: False = official code (centroids frozen after the first batch); True = paper's EMA.
        ema_target: ``"centroid"`` (the code's dormant update) or ``"sum"`` (Eq. 10 as printed).
        collaborative: True = LSP in the first FAU and CoA in the others (LCoAN); False = every FAU computes
            its own k-means pattern and weights (the paper's Table I case 3, "LSP" without CoA).
        res_scale: FAU and LCoA residual scale (0.1).
        rgb_range: input/output range (1 = images in [0, 1]); n_colors: 3.
    """

    scale: int = 2
    n_resgroups: int = 10
    n_resblocks: int = 4
    n_feats: int = 128
    reduction: int = 1
    n_clusters: int = 128
    window_size: int = 384
    n_rounds: int = 1
    ema_decay: float = 0.999
    ema_update: bool = False
    ema_target: str = "centroid"
    collaborative: bool = True
    res_scale: float = 0.1
    rgb_range: float = 1.0
    n_colors: int = 3

    def __post_init__(self) -> None:
        """Raises ValueError naming any field outside its range (:func:`srlib._checks.check_sr_config`)."""
        check_sr_config(self)
        check_number("LCoANConfig", "ema_decay", self.ema_decay, low=0, high=1)
        check_choice("LCoANConfig", "ema_target", self.ema_target, EMA_TARGETS)

    @classmethod
    def small(cls, **overrides) -> "LCoANConfig":
        """A CPU-sized LCoAN: 2 FAUs of 1 block, 32 channels, 16 clusters, windows of 48 (the reference case)."""
        base = dict(n_resgroups=2, n_resblocks=1, n_feats=32, n_clusters=16, window_size=48)
        base.update(overrides)
        return cls(**base)


#: :class:`LCoANConfig` from the official ``args`` attributes (a reference case's ``config``); ``n_rounds`` is
#: the official ``n_hashes``.
config_from_official = official_config_reader(LCoANConfig, (
    "n_resgroups", "n_resblocks", "n_feats", "reduction", "n_clusters", "window_size", "ema_decay", "res_scale",
    "rgb_range", "n_colors"), renames={"n_rounds": ("n_hashes", 1)})


class RCABNoCA(ResBlock):
    """LCoAN's "RCAB": ``x + conv3x3(ReLU(conv3x3(x)))`` with the channel attention removed and no residual
    scaling (official ``RCAB`` in ``src/model/lcoan.py``: ``CALayer`` commented out, ``res_scale`` unused).

    Keys ``body.0.*``, ``body.2.*``; ``(B, F, H, W) -> (B, F, H, W)``.
    """

    def __init__(self, n_feats: int, kernel_size: int = 3) -> None:
        super().__init__(default_conv, n_feats, kernel_size, act=nn.ReLU(True), res_scale=1.0)


class FAU(nn.Module):
    """Feature aggregation unit (official ``ResidualGroup``): ``x + res_scale * m_conv(LCoA(local_body(x)))``.

    Keys: ``local_body.{i}.body.{0,2}.*``, ``attention.0.*`` (the LCoA), ``m_conv.0.*``.

    ``forward(x, shared)`` returns ``(out, shared)``: with ``shared=None`` the LCoA computes the pattern and
    weights (LSP), otherwise it reuses them (CoA).
    """

    def __init__(self, cfg: LCoANConfig) -> None:
        super().__init__()
        F = cfg.n_feats
        # Construction order as the official ResidualGroup: blocks, attention, conv.
        local_body = nn.Sequential(*[RCABNoCA(F, 3) for _ in range(cfg.n_resblocks)])
        attention = nn.Sequential(
            LearnableCollaborativeAttention(
                channels=F, k_size=3, reduction=cfg.reduction, n_clusters=cfg.n_clusters,
                window_size=cfg.window_size, res_scale=cfg.res_scale, ema_decay=cfg.ema_decay,
                n_rounds=cfg.n_rounds, ema_update=cfg.ema_update, ema_target=cfg.ema_target,
            )
        )
        m_conv = nn.Sequential(default_conv(F, F, 3))
        self.local_body, self.attention, self.m_conv = local_body, attention, m_conv
        self.res_scale = cfg.res_scale

    @property
    def lcoa(self) -> LearnableCollaborativeAttention:
        return self.attention[0]

    def forward(
        self, x: torch.Tensor, shared: SharedAttention | None = None
    ) -> tuple[torch.Tensor, SharedAttention]:
        res = self.local_body(x)
        res, shared = self.lcoa(res, shared)
        res = self.m_conv(res)
        return res * self.res_scale + x, shared


class LCoAN(SRNetwork):
    """LCoAN network. ``x: (B, 3, h, w)`` LR RGB in ``[0, rgb_range]`` -> ``(B, 3, s*h, s*w)``.

    Any ``h, w >= 1`` (LCoA pads a map smaller than its window, see
    :class:`~srlib.attention.lcoa.LearnableCollaborativeAttention`); ``x`` not a floating point
    ``(B, 3, h, w)`` image in ``[0, rgb_range]`` (or with NaN/Inf) raises ``ValueError``, as does a config
    field out of range (:meth:`LCoANConfig.__post_init__`). On the first call, the k-means centroids of the
    computing LCoA are initialised from that batch, in train and
    eval mode (official behaviour; give ``module.kmeans.generator`` a ``torch.Generator`` to make the draw
    reproducible, see :meth:`attention_modules`).

    State-dict order as the official checkpoints: ``a``, ``sub_mean``, ``add_mean``, ``head``, ``body``,
    ``m_conv``, ``tail``.
    """

    attention_class = LearnableCollaborativeAttention

    def __init__(self, cfg: LCoANConfig | None = None) -> None:
        super().__init__()
        cfg = cfg or LCoANConfig()
        self.cfg = cfg
        conv, F = default_conv, cfg.n_feats
        # Unused 1-element parameter of the official network (counted in its 15.67M parameters).
        self.a = nn.Parameter(torch.zeros(1))
        self.sub_mean = MeanShift(cfg.rgb_range, DIV2K_MEAN, sign=-1)
        # Built in the official construction order (head, body, m_conv, tail, add_mean) so that a seeded
        # construction draws the same initial weights, then registered in the official state_dict order.
        head = nn.Sequential(conv(cfg.n_colors, F, 3))
        body = nn.Sequential(*[FAU(cfg) for _ in range(cfg.n_resgroups)])
        m_conv = nn.Sequential(conv(F, F, 3))
        tail = nn.Sequential(Upsampler(conv, cfg.scale, F), conv(F, cfg.n_colors, 3))
        self.add_mean = MeanShift(cfg.rgb_range, DIV2K_MEAN, sign=1)
        self.head, self.body, self.m_conv, self.tail = head, body, m_conv, tail


    def trunk(self, x: torch.Tensor) -> torch.Tensor:
        """The FAUs, each passing its shared attention pattern to the next (CoA), then ``m_conv`` and the skip."""
        res, shared = x, None
        for fau in self.body:
            res, shared = fau(res, shared if self.cfg.collaborative else None)
        return self.m_conv(res) + x


@register_model("lcoan", LCoANConfig)
def build_lcoan(cfg: LCoANConfig) -> LCoAN:
    return LCoAN(cfg)
