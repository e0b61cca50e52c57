"""NLSN: EDSR backbone with Non-Local Sparse Attention (Mei, Fan, Zhou, CVPR 2021).

Structure (official ``HarukiYqM/Non-Local-Sparse-Attention`` ``src/model/nlsn.py``)::

    sub_mean -> head (3x3 conv) -> body -> (+ head output) -> tail (upsampler, 3x3 conv) -> add_mean
    body = [NLSA, (ResBlock x 8, NLSA) x (n_resblocks / 8), 3x3 conv]

The paper says "5 attention blocks with one insertion after every 8 residual blocks"; the code puts the
first NLSA *before* the first residual block, so 32 blocks give NLSAs at body indices 0, 9, 18, 27, 36.
We follow the code, so the authors' released checkpoints load (``state_dicts/nlsn_x*.json``).
"""

from __future__ import annotations

from dataclasses import dataclass

from srlib._checks import check_sr_config
from srlib.attention.nlsa import NonLocalSparseAttention
from srlib.models.common import SRNetwork, attention_every
from srlib.models.registry import register_model

__all__ = ["NLSN", "NLSNConfig"]


@dataclass
class NLSNConfig:
    """NLSN hyper-parameters; defaults are the paper / official README configuration.

    Attributes:
        scale: upscaling factor (2, 3 or 4).
        n_resblocks: residual blocks (32); n_feats: channels (256); res_scale: residual scaling (0.1).
        chunk_size: NLSA chunk size ``k`` (144); n_hashes: hash rounds (4); reduction: embedding reduction (4).
        attn_every: one NLSA after every ``attn_every`` residual blocks (8), plus one before the first.
        rgb_range: input/output range (1 = images in [0, 1]); n_colors: 3.
    """

    scale: int = 2
    n_resblocks: int = 32
    n_feats: int = 256
    res_scale: float = 0.1
    chunk_size: int = 144
    n_hashes: int = 4
    reduction: int = 4
    attn_every: int = 8
    rgb_range: float = 1.0
    n_colors: int = 3

    def __post_init__(self) -> None:
        """Raises ValueError naming any field outside its range (:func:`srlib._checks.check_sr_config`)."""
        check_sr_config(self)

    @classmethod
    def small(cls, **overrides) -> "NLSNConfig":
        """A CPU-sized NLSN: 8 blocks, 32 channels, chunk 48, 2 hash rounds (two NLSA modules)."""
        base = dict(n_resblocks=8, n_feats=32, chunk_size=48, n_hashes=2)
        base.update(overrides)
        return cls(**base)


class NLSN(SRNetwork):
    """NLSN network. ``x: (B, 3, h, w)`` LR RGB in ``[0, rgb_range]`` -> ``(B, 3, s*h, s*w)``.

    Any ``h, w >= 1``: NLSA pads a map smaller than one chunk (see
    :class:`~srlib.attention.nlsa.NonLocalSparseAttention`). Its random rotations are redrawn in every forward
    call; see :meth:`attention_modules` to fix them (``module.projections``) or give them a
    ``torch.Generator`` (``module.generator``).

    Raises:
        ValueError: a config field out of range (:meth:`NLSNConfig.__post_init__`); at call, ``x`` not a floating
            point ``(B, 3, h, w)`` image in ``[0, rgb_range]`` (or with NaN/Inf).
    """

    attention_class = NonLocalSparseAttention

    def __init__(self, cfg: NLSNConfig | None = None) -> None:
        super().__init__()
        cfg = cfg or NLSNConfig()
        self.cfg = cfg

        def nlsa() -> NonLocalSparseAttention:
            return NonLocalSparseAttention(
                n_hashes=cfg.n_hashes, channels=cfg.n_feats, k_size=3, reduction=cfg.reduction,
                chunk_size=cfg.chunk_size, res_scale=cfg.res_scale,
            )

        # sub_mean, add_mean, head, body = [NLSA, (ResBlock x 8, NLSA) ..., conv], tail: the official order
        self.build_edsr_layout(
            lambda: attention_every(nlsa, cfg.n_resblocks, cfg.attn_every, cfg.n_feats, cfg.res_scale))


@register_model("nlsn", NLSNConfig)
def build_nlsn(cfg: NLSNConfig) -> NLSN:
    return NLSN(cfg)
