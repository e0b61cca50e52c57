"""Training configuration: :class:`TrainConfig` and the checkpoint format tag."""

from __future__ import annotations

import numbers
from dataclasses import dataclass
from typing import Any, Callable

import torch

from .._checks import check_choice, check_int, check_number


CHECKPOINT_FORMAT = "srlib.train/1"
ExtraLoss = Callable[[Any, dict], "torch.Tensor | float"]


# ----------------------------------------------------------------------------------------------------------
# Configuration
# ----------------------------------------------------------------------------------------------------------
@dataclass
class TrainConfig:
    """Training hyper-parameters; defaults follow the papers' EDSR-derived recipe (NLSN README for lengths).

    Attributes:
        iterations: optimisation steps in total (1,000,000 = NLSN's 1000 "epochs" of 1000 steps).
        batch_size: HR/LR pairs per step (per rank under DDP); 16 in all five papers.
        patch_size: HR patch side used when the CLI builds the training set (96 at x2 = LR 48); ``train``
            itself takes the dataset as given.
        lr, betas, eps, weight_decay: Adam.
        milestones, gamma: step decay (``MultiStepLR``), in iterations.
        loss: ``"l1"`` (the papers) or ``"mse"``.
        val_every, ckpt_every, log_every: periods in iterations (0 disables; the last iteration always
            validates and checkpoints).
        amp: ``None``, ``"bf16"`` or ``"fp16"`` autocast on CUDA (fp16 with a ``GradScaler``); ignored with a
            warning on other devices.
        seed: seeds the global RNGs (fresh start), the sample order and the per-sample augmentation.
        num_workers: DataLoader workers (results do not depend on it).
        grad_clip: max global gradient norm, or ``None``.
        scale: upscaling factor for validation; ``None`` takes ``model.config.scale`` or the data's ratio.
        val_chop: tiled validation (:func:`srlib.inference.forward_chop`) for memory-hungry networks.
        tensorboard: also log to TensorBoard (``torch.utils.tensorboard.SummaryWriter`` in
            ``out_dir/tensorboard``, rank 0): ``train/loss`` and ``train/lr`` at every log point, ``val/psnr`` and
            ``val/sr`` (the SR of a central crop of the first validation image) at every validation. Needs the
            ``tensorboard`` package (``pip install 'srlib[tensorboard]'``); does not change the training.

    Raises:
        ValueError: any field of the wrong type or out of range, naming ``TrainConfig.<field>`` and the value:
            counts and periods must be integers (``iterations=2.7`` is refused, bools too), sizes >= 1, periods
            and ``seed`` >= 0; ``lr``, ``eps``, ``gamma``, ``grad_clip`` finite and > 0 (``gamma=-1`` would make
            the learning rate negative); ``weight_decay`` >= 0; ``betas`` two numbers in ``[0, 1)``;
            ``milestones`` sorted integers >= 1; ``loss`` / ``amp`` one of the listed values.
    """

    iterations: int = 1_000_000
    batch_size: int = 16
    patch_size: int = 96
    lr: float = 1e-4
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-8
    weight_decay: float = 0.0
    milestones: tuple[int, ...] = (200_000, 400_000, 600_000, 800_000)
    gamma: float = 0.5
    loss: str = "l1"
    val_every: int = 1000
    ckpt_every: int = 1000
    log_every: int = 100
    amp: str | None = None
    seed: int = 0
    num_workers: int = 0
    grad_clip: float | None = None
    scale: int | None = None
    val_chop: bool = False
    tensorboard: bool = False

    def __post_init__(self) -> None:
        owner = "TrainConfig"
        for name in ("iterations", "batch_size", "patch_size"):
            check_int(owner, name, getattr(self, name), 1)
        for name in ("val_every", "ckpt_every", "log_every", "num_workers", "seed"):
            check_int(owner, name, getattr(self, name), 0)
        check_number(owner, "lr", self.lr, low=0, low_open=True)
        check_number(owner, "eps", self.eps, low=0, low_open=True)
        check_number(owner, "weight_decay", self.weight_decay, low=0)
        check_number(owner, "gamma", self.gamma, low=0, low_open=True)
        if isinstance(self.betas, (str, bytes)) or not hasattr(self.betas, "__len__") or len(self.betas) != 2:
            raise ValueError(f"TrainConfig.betas must be two numbers in [0, 1), got {self.betas!r}")
        for b in self.betas:
            if not (isinstance(b, numbers.Real) and not isinstance(b, bool) and 0 <= b < 1):
                raise ValueError(f"TrainConfig.betas must be two numbers in [0, 1), got {self.betas!r}")
        self.betas = tuple(float(b) for b in self.betas)  # type: ignore[assignment]
        if isinstance(self.milestones, (str, bytes)) or not hasattr(self.milestones, "__iter__"):
            raise ValueError(f"TrainConfig.milestones must be a sequence of integers >= 1, got {self.milestones!r}")
        for m in self.milestones:
            check_int(owner, "milestones", m, 1)
        self.milestones = tuple(int(m) for m in self.milestones)
        if list(self.milestones) != sorted(self.milestones):
            raise ValueError(f"TrainConfig.milestones must be increasing, got {self.milestones}")
        check_choice(owner, "loss", self.loss, ("l1", "mse"))
        if self.amp not in (None, "bf16", "fp16"):
            raise ValueError(f"TrainConfig.amp must be None, 'bf16' or 'fp16', got {self.amp!r}")
        if self.grad_clip is not None:
            check_number(owner, "grad_clip", self.grad_clip, low=0, low_open=True)
        if self.scale is not None:
            check_int(owner, "scale", self.scale, 1)
        for name in ("val_chop", "tensorboard"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"TrainConfig.{name} must be True or False, got {getattr(self, name)!r}")

    @classmethod
    def small(cls, **overrides: Any) -> "TrainConfig":
        """A few hundred CPU-friendly steps on small patches (notebooks, smoke tests)."""
        base = dict(iterations=200, batch_size=4, patch_size=48, milestones=(150,), val_every=100,
                    ckpt_every=100, log_every=10)
        base.update(overrides)
        return cls(**base)
