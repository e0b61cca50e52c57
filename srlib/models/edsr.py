"""EDSR (Lim et al., "Enhanced Deep Residual Networks for Single Image Super-Resolution", CVPRW 2017).

EDSR is the backbone every attention network in srlib extends: NLSN/ENLCN insert attention modules into its
body, DLSN/HSPAN/LCoAN group its residual blocks. Structure (keys as in EDSR-PyTorch ``src/model/edsr.py``)::

    sub_mean                     MeanShift(-1)
    head.0                       conv3x3 3 -> F
    body.0 .. body.{N-1}         ResBlock (body.i.body.0 / body.i.body.2), branch scaled by res_scale
    body.N                       conv3x3 F -> F
    (+ head output: global skip)
    tail.0                       Upsampler (tail.0.0, tail.0.2 for x4)
    tail.1                       conv3x3 F -> 3
    add_mean                     MeanShift(+1)

Presets: ``paper`` = EDSR (32 blocks, 256 features, res_scale 0.1), ``baseline`` = EDSR baseline
(16 blocks, 64 features, res_scale 1), ``small`` = a CPU toy (2 blocks, 16 features).
"""

from __future__ import annotations

from dataclasses import dataclass

from srlib._checks import check_int, check_sr_config

from .common import ResBlock, SRNetwork, default_conv
from .registry import register_model

__all__ = ["EDSR", "EDSRConfig"]


@dataclass
class EDSRConfig:
    """EDSR hyper-parameters; defaults are the paper's full EDSR.

    ``rgb_range`` is 1 (inputs in ``[0, 1]``) as in the five attention papers' training commands; the
    original EDSR release used 255.
    """

    scale: int = 2
    n_resblocks: int = 32
    n_feats: int = 256
    res_scale: float = 0.1
    rgb_range: float = 1.0
    n_colors: int = 3
    kernel_size: int = 3

    EXTRA_PRESETS = ("baseline",)

    def __post_init__(self) -> None:
        """Raises ValueError naming any field outside its range (:func:`srlib._checks.check_sr_config`)."""
        check_sr_config(self)
        check_int("EDSRConfig", "kernel_size", self.kernel_size, odd=True)

    @classmethod
    def baseline(cls) -> "EDSRConfig":
        """EDSR baseline: 16 residual blocks, 64 features, no residual scaling (about 1.37M parameters at x2)."""
        return cls(n_resblocks=16, n_feats=64, res_scale=1.0)

    @classmethod
    def small(cls) -> "EDSRConfig":
        """A toy for CPU tests and notebooks: 2 blocks, 16 features."""
        return cls(n_resblocks=2, n_feats=16, res_scale=1.0)


class EDSR(SRNetwork):
    """EDSR network: LR ``(B, 3, h, w)`` RGB in ``[0, rgb_range]`` -> SR ``(B, 3, s*h, s*w)``.

    Source: Lim et al. 2017, Fig. 3; key layout of EDSR-PyTorch ``src/model/edsr.py``.

    Raises:
        ValueError: a config field out of range (:meth:`EDSRConfig.__post_init__`); at call, ``x`` not a floating
            point ``(B, 3, h, w)`` image in ``[0, rgb_range]`` (or with NaN/Inf).
    """

    def __init__(self, cfg: EDSRConfig, conv=default_conv) -> None:
        super().__init__()
        self.cfg = cfg
        f, k = cfg.n_feats, cfg.kernel_size
        # the official state_dict order: sub_mean, add_mean, head, body = [ResBlocks, conv], tail
        self.build_edsr_layout(lambda: [ResBlock(conv, f, k, res_scale=cfg.res_scale) for _ in range(cfg.n_resblocks)],
                               conv=conv, kernel_size=k)


@register_model("edsr", EDSRConfig)
def build_edsr(cfg: EDSRConfig) -> EDSR:
    """Registry builder for :class:`EDSR`."""
    return EDSR(cfg)
