"""ENLCN: EDSR backbone with Efficient Non-Local Contrastive Attention (Xia et al., AAAI 2022).

Structure (official ``Zj-BinXia/ENLCA`` ``src/model/enlcn.py``)::

    sub_mean -> head (3x3 conv) -> body -> (+ head output) -> tail (upsampler, 3x3 conv) -> add_mean
    body = [ENLCA, (ResBlock x 8, ENLCA) x (n_resblocks / 8), 3x3 conv]

The paper (Fig. 3) says "five ENLCA modules ... one insertion after every eight residual blocks"; the code
puts the first ENLCA *before* the first residual block, so 32 blocks give ENLCAs at body indices
0, 9, 18, 27, 36. We follow the code, so the authors' checkpoints load (``state_dicts/enlcn_x*.json``).

Training (paper Eqs. 11-12): ``L = L1(SR, HR) + lambda_cl * L_cl`` with ``lambda_cl = 1e-3`` and
``L_cl`` the mean over the ENLCA modules of their contrastive losses, after a warm-up with the
reconstruction loss only (paper: 150 epochs; official trainer: the term is added once more than 100
epochs are completed). In training mode the network stores each module's loss; :class:`ContrastiveTerm`
(``model.make_extra_loss()``, the ``extra_loss`` of :func:`srlib.train.train`) turns them into the extra
loss term and also redraws the random matrices ``F`` on schedule.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn as nn

from srlib._checks import check_choice, check_int, check_number, check_sr_config
from srlib.attention.enla import ENLCA, redraw_projections
from srlib.models.common import DIV2K_MEAN, MeanShift, SRNetwork, Upsampler, attention_every, default_conv
from srlib.models.registry import register_model

__all__ = ["ENLCN", "ENLCNConfig", "ContrastiveTerm", "build_enlcn"]

#: Iterations per "epoch" in EDSR-PyTorch-derived trainers (``--test_every 1000`` batches).
ITERS_PER_EPOCH = 1000


@dataclass
class ENLCNConfig:
    """ENLCN hyper-parameters; defaults are the paper / official README configuration.

    Attributes:
        scale: upscaling factor (2, 3 or 4).
        n_resblocks: residual blocks (32); n_feats: channels (256); res_scale: residual scaling (0.1),
            used by the residual blocks and by every ENLCA.
        reduction: ENLCA embedding reduction, ``d = n_feats / reduction`` (4 -> 64 channels).
        n_features: random features ``m`` (128); amplification: ``k`` (6).
        attn_every: one ENLCA after every ``attn_every`` residual blocks (8), plus one before the first.
        feature_eps: constant inside the feature map (official 1e-4; paper 0).
        loss_variant: contrastive loss, ``"official"`` (fixed ranks + hinge), ``"paper"`` (Eq. 10) or
            ``None`` (never computed: no ``O(L^2)`` score matrix in training, e.g. for an ENLA-only ablation).
        contrastive_weight: ``lambda_cl`` (1e-3).
        warmup_iters: iterations with the reconstruction loss only (paper: 150 epochs = 150,000 iterations;
            the official trainer adds the term from 101,000 iterations on).
        redraw_every: iterations between redraws of ``F`` (paper: every epoch = 1000; the official wrapper
            uses 640 forward calls); ``0`` never redraws.
        rgb_range: input/output range (1 = images in [0, 1]); n_colors: 3.
    """

    scale: int = 2
    n_resblocks: int = 32
    n_feats: int = 256
    res_scale: float = 0.1
    reduction: int = 4
    n_features: int = 128
    amplification: float = 6.0
    attn_every: int = 8
    feature_eps: float = 1e-4
    loss_variant: Literal["official", "paper"] | None = "official"
    contrastive_weight: float = 1e-3
    warmup_iters: int = 150 * ITERS_PER_EPOCH
    redraw_every: int = ITERS_PER_EPOCH
    rgb_range: float = 1.0
    n_colors: int = 3

    def __post_init__(self) -> None:
        """Raises ValueError naming any field outside its range (:func:`srlib._checks.check_sr_config`)."""
        check_sr_config(self)
        check_number("ENLCNConfig", "amplification", self.amplification, low=0, low_open=True)  # sqrt(k), Eq. 3
        check_number("ENLCNConfig", "feature_eps", self.feature_eps, low=0)
        check_choice("ENLCNConfig", "loss_variant", self.loss_variant, ("official", "paper", None))
        check_number("ENLCNConfig", "contrastive_weight", self.contrastive_weight, low=0)
        check_int("ENLCNConfig", "warmup_iters", self.warmup_iters, 0)
        check_int("ENLCNConfig", "redraw_every", self.redraw_every, 0)

    @classmethod
    def small(cls, **overrides) -> "ENLCNConfig":
        """A CPU-sized ENLCN: 8 blocks, 32 channels (two ENLCA modules, 8-channel embeddings).

        Short schedule: warm-up 100 iterations, ``F`` redrawn every 100 iterations.
        """
        base = dict(n_resblocks=8, n_feats=32, warmup_iters=100, redraw_every=100)
        base.update(overrides)
        return cls(**base)


class ENLCN(SRNetwork):
    """ENLCN network. ``x: (B, 3, h, w)`` LR RGB in ``[0, rgb_range]`` -> ``(B, 3, s*h, s*w)``.

    In training mode every ENLCA computes its contrastive loss (needs ``h*w >= 65`` with the official
    ranks, else ``ValueError``); after a forward pass :attr:`contrastive_losses` holds them (one 0-dim tensor
    per module, in body order) and :meth:`contrastive_loss` their mean. In eval mode the list is empty.
    (The official network returns ``(sr, losses)`` in training mode; srlib networks always return ``sr``.)

    Construction consumes the global RNG in the official order, so after ``torch.manual_seed(s)`` the
    parameters equal those of the official network built after the same seed.

    Raises:
        ValueError: unsupported scale, ``n_feats`` not divisible by ``reduction``, ``attn_every < 1``, any
            config field out of range (:meth:`ENLCNConfig.__post_init__`); at call, ``x`` not a floating point
            ``(B, 3, h, w)`` image in ``[0, rgb_range]`` (or with NaN/Inf).
    """

    attention_class = ENLCA

    def __init__(self, cfg: ENLCNConfig | None = None) -> None:
        super().__init__()
        cfg = cfg or ENLCNConfig()
        if cfg.attn_every < 1:
            raise ValueError(f"attn_every must be >= 1, got {cfg.attn_every}")
        self.cfg = cfg
        conv, n_feats = default_conv, cfg.n_feats

        def enlca() -> ENLCA:
            return ENLCA(
                n_feats, cfg.reduction, cfg.res_scale, n_features=cfg.n_features,
                amplification=cfg.amplification, feature_eps=cfg.feature_eps, loss_variant=cfg.loss_variant,
            )

        # Creation order = official order (RNG draws); assignment order = official state_dict order
        # (sub_mean, add_mean, head, body, tail).
        self.sub_mean = MeanShift(cfg.rgb_range, DIV2K_MEAN, sign=-1)
        head = [conv(cfg.n_colors, n_feats, 3)]
        body = attention_every(enlca, cfg.n_resblocks, cfg.attn_every, n_feats, cfg.res_scale, conv)
        body.append(conv(n_feats, n_feats, 3))
        tail = [Upsampler(conv, cfg.scale, n_feats), conv(n_feats, cfg.n_colors, 3)]
        self.add_mean = MeanShift(cfg.rgb_range, DIV2K_MEAN, sign=1)
        self.head = nn.Sequential(*head)
        self.body = nn.ModuleList(body)
        self.tail = nn.Sequential(*tail)
        self.contrastive_losses: list[torch.Tensor] = []


    def redraw_projections(self, generator: torch.Generator | None = None) -> int:
        """Redraw the random matrix ``F`` of every ENLCA (paper: every epoch). Returns how many."""
        return redraw_projections(self, generator)

    def make_extra_loss(self, generator: torch.Generator | None = None) -> "ContrastiveTerm":
        """The ``extra_loss`` for :func:`srlib.train.train`: ``ContrastiveTerm.from_model(self)``."""
        return ContrastiveTerm.from_model(self, generator)

    def contrastive_loss(self) -> torch.Tensor | None:
        """Mean of the last forward pass's ENLCA losses (official trainer), or ``None`` in eval mode."""
        if not self.contrastive_losses:
            return None
        return torch.stack(self.contrastive_losses).mean()

    def trunk(self, x: torch.Tensor) -> torch.Tensor:
        """Body with the long skip; records each ENLCA's contrastive loss of this pass (training mode)."""
        res = x
        losses = []
        for block in self.body:
            res = block(res)
            if isinstance(block, ENLCA) and block.last_loss is not None:
                losses.append(block.last_loss)
        self.contrastive_losses = losses
        return res + x


class ContrastiveTerm:
    """Extra training loss ``lambda_cl * L_cl`` with warm-up, and scheduled redraws of ``F`` (Eq. 12).

    Matches :func:`srlib.train.train`'s ``extra_loss(output, batch)`` hook: ``batch["iteration"]`` is the
    0-based step being taken. Returns ``weight * model.contrastive_loss()`` once
    ``iteration >= warmup_iters`` and a zero before (warm-up: reconstruction loss only). If ``output`` is an
    official-style tuple ``(sr, [losses])`` the listed losses are averaged instead.

    After the forward pass of step ``it``, when ``redraw_every > 0`` and ``(it + 1) % redraw_every == 0``,
    every ``F`` is redrawn in place, so steps ``[0, R)`` use the first matrix, ``[R, 2R)`` the second, ...
    (paper: every epoch; official: every 640 forward calls). The ENLA kernel keeps a private copy of ``F``
    for backward, so redrawing between forward and backward is safe. Draws come from ``generator``
    (``None``: the global RNG, which the trainer checkpoints, so resumed runs redraw identically).

    Args:
        model: the :class:`ENLCN` being trained (or a wrapper with ``.module``).
        weight: ``lambda_cl`` (paper 1e-3).
        warmup_iters: number of initial steps without the term.
        redraw_every: redraw interval in steps, ``0`` for never.
        generator: randomness for the redraws.

    Raises:
        ValueError: ``model`` is not an ENLCN; negative ``weight``/``warmup_iters``/``redraw_every``;
        ``batch`` without ``"iteration"``.
    """

    def __init__(
        self,
        model: nn.Module,
        weight: float = 1e-3,
        warmup_iters: int = 150 * ITERS_PER_EPOCH,
        redraw_every: int = ITERS_PER_EPOCH,
        generator: torch.Generator | None = None,
    ) -> None:
        net = getattr(model, "module", model)  # unwrap DistributedDataParallel
        if not isinstance(net, ENLCN):
            raise ValueError(f"ContrastiveTerm needs an ENLCN model, got {type(net).__name__}")
        if weight < 0 or warmup_iters < 0 or redraw_every < 0:
            raise ValueError(
                f"weight, warmup_iters and redraw_every must be >= 0, got {weight}, {warmup_iters}, {redraw_every}"
            )
        self.net = net
        self.weight = weight
        self.warmup_iters = warmup_iters
        self.redraw_every = redraw_every
        self.generator = generator

    @classmethod
    def from_model(cls, model: nn.Module, generator: torch.Generator | None = None) -> "ContrastiveTerm":
        """Weight, warm-up and redraw interval from the model's :class:`ENLCNConfig`."""
        cfg = getattr(model, "module", model).cfg
        return cls(model, cfg.contrastive_weight, cfg.warmup_iters, cfg.redraw_every, generator)

    def __call__(self, output, batch: dict) -> torch.Tensor:
        if "iteration" not in batch:
            raise ValueError("ContrastiveTerm needs batch['iteration'] (the 0-based training step)")
        it = int(batch["iteration"])
        if isinstance(output, (tuple, list)) and len(output) > 1 and isinstance(output[1], (list, tuple)):
            losses = list(output[1])
            loss = torch.stack(losses).mean() if losses else None
        else:
            loss = self.net.contrastive_loss()
        if self.redraw_every and (it + 1) % self.redraw_every == 0:
            self.net.redraw_projections(self.generator)
        if loss is None or it < self.warmup_iters:
            ref = self.net.head[0].weight
            return torch.zeros((), device=ref.device, dtype=ref.dtype)
        return self.weight * loss


@register_model("enlcn", ENLCNConfig)
def build_enlcn(cfg: ENLCNConfig) -> ENLCN:
    return ENLCN(cfg)
