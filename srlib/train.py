"""Training loop and command line for every srlib network (single process, or DDP under ``torchrun``).

The recipe is the one the five papers inherit from EDSR-PyTorch (``src/trainer.py``, ``src/utility.py``):
L1 loss on RGB in ``[0, 1]``, Adam (betas 0.9/0.999, eps 1e-8), learning rate 1e-4 halved at fixed
milestones, random HR patches with flips/rotations, periodic PSNR on a benchmark. The official code counts
"epochs" of 1000 iterations (``--test_every 1000``, batch 16); here everything counts iterations: NLSN's
1000 epochs with decay at 200/400/600/800 become 1,000,000 iterations with milestones 200k/400k/600k/800k.

Exact resume. A checkpoint holds the model, optimizer, scheduler, AMP scaler, the iteration, every random
state (torch CPU/CUDA, Python ``random``, NumPy; one set per rank under DDP) and the config. The data order is
a pure function of ``(seed, sample position)``: :class:`InfiniteSampler` draws epoch permutations from
generators seeded with ``(seed, epoch)`` and gives every sample its own seed, under which the dataset's random
crop/flip is drawn (:class:`SeededDataset`). So training ``N`` iterations, or ``k`` iterations, a kill and a
resume for ``N - k`` more, give bit-identical weights on CPU, whatever ``num_workers`` is.

Command line::

    python -m srlib.train --model edsr --scale 2 --preset small --iterations 2000 --out runs/edsr_x2
    torchrun --nproc_per_node 4 -m srlib.train --model nlsn --scale 2 --batch-size 4 --out runs/nlsn_x2

With ``WORLD_SIZE > 1`` (torchrun) the process group is initialised (NCCL on CUDA, Gloo on CPU), every rank
reads its own share of each global batch, gradients are averaged by ``DistributedDataParallel``, and only
rank 0 validates and writes files. ``batch_size`` is per rank.
"""

from __future__ import annotations

import argparse
import ast
import contextlib
import dataclasses
import json
import math
import os
import random
import sys
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping, Sequence

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import DataLoader, Dataset, Sampler

from ._checks import NonFiniteError
from .checkpoint import CheckpointError, _atomic_write, load_checkpoint, load_weights, save_checkpoint

__all__ = ["TrainConfig", "train", "InfiniteSampler", "SeededDataset", "main", "CHECKPOINT_FORMAT",
           "PAPER_SCHEDULES", "paper_command"]

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
        ValueError: a non-positive size/period, unknown ``loss`` / ``amp``, or unsorted milestones.
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
        self.betas = tuple(self.betas)  # type: ignore[assignment]
        self.milestones = tuple(int(m) for m in self.milestones)
        for name in ("iterations", "batch_size", "patch_size"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"TrainConfig.{name} must be >= 1, got {getattr(self, name)}")
        for name in ("val_every", "ckpt_every", "log_every", "num_workers"):
            if int(getattr(self, name)) < 0:
                raise ValueError(f"TrainConfig.{name} must be >= 0, got {getattr(self, name)}")
        if self.loss not in ("l1", "mse"):
            raise ValueError(f"TrainConfig.loss must be 'l1' or 'mse', got {self.loss!r}")
        if self.amp not in (None, "bf16", "fp16"):
            raise ValueError(f"TrainConfig.amp must be None, 'bf16' or 'fp16', got {self.amp!r}")
        if list(self.milestones) != sorted(self.milestones):
            raise ValueError(f"TrainConfig.milestones must be increasing, got {self.milestones}")
        if self.grad_clip is not None and self.grad_clip <= 0:
            raise ValueError(f"TrainConfig.grad_clip must be positive or None, got {self.grad_clip}")

    @classmethod
    def small(cls, **overrides: Any) -> "TrainConfig":
        """A few hundred CPU-friendly steps on small patches (notebooks, smoke tests)."""
        base = dict(iterations=200, batch_size=4, patch_size=48, milestones=(150,), val_every=100,
                    ckpt_every=100, log_every=10)
        base.update(overrides)
        return cls(**base)


# Fields whose change between a checkpoint and a resume breaks exact reproduction of the data/updates.
_RESUME_SENSITIVE = ("batch_size", "seed", "lr", "betas", "eps", "weight_decay", "milestones", "gamma", "loss")


# ----------------------------------------------------------------------------------------------------------
# Data order: a resumable infinite sampler and per-sample seeding
# ----------------------------------------------------------------------------------------------------------
def _mix(*words: int) -> int:
    """A well-mixed 63-bit seed from integers (NumPy ``SeedSequence``)."""
    a, b = np.random.SeedSequence([int(w) & 0xFFFFFFFFFFFFFFFF for w in words]).generate_state(2, np.uint32)
    return ((int(a) << 32) | int(b)) & 0x7FFFFFFFFFFFFFFF


class InfiniteSampler(Sampler):
    """Endless shuffled sample order that can restart at any iteration; DDP-aware.

    The global sample stream ``g = 0, 1, 2, ...`` runs through epochs of ``n`` samples; epoch ``e`` is the
    permutation ``randperm(n)`` drawn from a generator seeded with ``(seed, e)``. At iteration ``t`` rank ``r``
    of ``world_size`` takes the ``batch_size`` consecutive stream positions starting at
    ``(t * world_size + r) * batch_size``, so the union over ranks is the single-process batch of size
    ``world_size * batch_size`` (the role of ``DistributedSampler``, but resumable mid-epoch).

    Each yielded item is ``(index, sample_seed)``; :class:`SeededDataset` uses the seed for the augmentation.
    Because nothing here has hidden state, prefetching workers do not disturb resuming.

    Args:
        n: dataset length. batch_size: samples per iteration and rank.
        seed: base seed; if ``None`` it is drawn from ``generator`` (or the global torch RNG).
        generator: injectable source of the base seed.
        rank, world_size: DDP position. start_iteration: first iteration to produce.
        shuffle: ``False`` gives ``0, 1, ..., n-1, 0, 1, ...``.

    Raises:
        ValueError: ``n < 1`` or ``batch_size < 1`` or a bad rank.
    """

    def __init__(self, n: int, batch_size: int, *, seed: int | None = None, generator: torch.Generator | None = None,
                 rank: int = 0, world_size: int = 1, start_iteration: int = 0, shuffle: bool = True) -> None:
        if n < 1:
            raise ValueError("InfiniteSampler: the dataset is empty")
        if batch_size < 1 or not 0 <= rank < world_size:
            raise ValueError(f"InfiniteSampler: bad batch_size={batch_size}, rank={rank}, world_size={world_size}")
        if seed is None:
            seed = int(torch.randint(0, 2**62, (), generator=generator))
        self.n, self.batch_size, self.seed = n, batch_size, int(seed)
        self.rank, self.world_size, self.start_iteration, self.shuffle = rank, world_size, start_iteration, shuffle
        self._epoch, self._perm = -1, torch.arange(n)

    def permutation(self, epoch: int) -> torch.Tensor:
        """Sample order of ``epoch``: ``(n,)`` int64."""
        if not self.shuffle:
            return torch.arange(self.n)
        if epoch != self._epoch:
            g = torch.Generator().manual_seed(_mix(self.seed, 0, epoch))
            self._epoch, self._perm = epoch, torch.randperm(self.n, generator=g)
        return self._perm

    def item(self, position: int) -> tuple[int, int]:
        """``(dataset index, sample seed)`` at global stream ``position``."""
        epoch, offset = divmod(position, self.n)
        return int(self.permutation(epoch)[offset]), _mix(self.seed, 1, position)

    def __iter__(self) -> Iterator[tuple[int, int]]:
        t = self.start_iteration
        while True:
            first = (t * self.world_size + self.rank) * self.batch_size
            for j in range(self.batch_size):
                yield self.item(first + j)
            t += 1

    def state_dict(self) -> dict[str, int]:
        return {"seed": self.seed, "batch_size": self.batch_size, "world_size": self.world_size}


@contextlib.contextmanager
def _seeded(seed: int, generator: torch.Generator | None = None) -> Iterator[None]:
    """Run a block with torch CPU / Python / NumPy RNGs (and ``generator``) seeded, then restore them."""
    saved = (torch.get_rng_state(), random.getstate(), np.random.get_state(),
             generator.get_state() if generator is not None else None)
    torch.default_generator.manual_seed(seed)  # CPU only: leaves CUDA streams alone
    random.seed(seed)
    np.random.seed(seed % 2**32)
    if generator is not None:
        generator.manual_seed(seed)
    try:
        yield
    finally:
        torch.set_rng_state(saved[0])
        random.setstate(saved[1])
        np.random.set_state(saved[2])
        if generator is not None:
            generator.set_state(saved[3])


class SeededDataset(Dataset):
    """Wraps a dataset so item ``(index, seed)`` is drawn with all RNGs seeded by ``seed``.

    The random crop / flip of ``base[index]`` then depends only on the sample's seed, not on which process
    or worker computes it or what ran before; the caller's RNG states are restored afterwards. If ``base``
    has a ``generator`` attribute holding a ``torch.Generator`` (e.g. ``HRFolderDataset(generator=...)``), it
    is seeded the same way.
    """

    def __init__(self, base: Dataset) -> None:
        self.base = base

    def __len__(self) -> int:
        return len(self.base)  # type: ignore[arg-type]

    def __getitem__(self, key: tuple[int, int]) -> Any:
        index, seed = key
        gen = getattr(self.base, "generator", None)
        with _seeded(seed, gen if isinstance(gen, torch.Generator) else None):
            return self.base[index]


# ----------------------------------------------------------------------------------------------------------
# RNG state capture (kept loadable with weights_only=True: tensors, ints, tuples, lists)
# ----------------------------------------------------------------------------------------------------------
def _rng_state(device: torch.device) -> dict[str, Any]:
    np_state = np.random.get_state(legacy=False)
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state(device) if device.type == "cuda" else None,
        "python": random.getstate(),
        "numpy": {"key": torch.from_numpy(np_state["state"]["key"].astype(np.int64)),
                  "pos": int(np_state["state"]["pos"]), "has_gauss": int(np_state["has_gauss"]),
                  "gauss": float(np_state["gauss"])},
    }


def _set_rng_state(state: Mapping[str, Any], device: torch.device) -> None:
    torch.set_rng_state(state["torch"])
    if state.get("cuda") is not None and device.type == "cuda":
        torch.cuda.set_rng_state(state["cuda"], device)
    py = state["python"]
    random.setstate((py[0], tuple(py[1]), py[2]))
    npy = state["numpy"]
    np.random.set_state({"bit_generator": "MT19937",
                         "state": {"key": npy["key"].numpy().astype(np.uint32), "pos": npy["pos"]},
                         "has_gauss": npy["has_gauss"], "gauss": npy["gauss"]})


def _seed_everything(seed: int) -> None:
    torch.manual_seed(seed)
    random.seed(seed)
    np.random.seed(seed % 2**32)


# ----------------------------------------------------------------------------------------------------------
# Distributed helpers
# ----------------------------------------------------------------------------------------------------------
@dataclass
class _Dist:
    rank: int = 0
    world_size: int = 1
    created_group: bool = False

    @property
    def main(self) -> bool:
        return self.rank == 0

    def barrier(self) -> None:
        if self.world_size > 1:
            dist.barrier()


def _resolve_device(model: nn.Module, device: str | torch.device | None, local_rank: int | None) -> torch.device:
    if device is not None:
        dev = torch.device(device)
    else:
        p = next(model.parameters(), None)
        if p is not None and p.device.type != "cpu":
            dev = p.device
        elif torch.cuda.is_available():
            dev = torch.device("cuda")
        else:
            dev = torch.device("cpu")
    if dev.type == "cuda" and dev.index is None:
        dev = torch.device("cuda", local_rank if local_rank is not None else torch.cuda.current_device())
    return dev


def _setup_distributed(model: nn.Module, device: str | torch.device | None) -> tuple[_Dist, torch.device]:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return _Dist(), _resolve_device(model, device, None)
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", str(rank)))
    dev = _resolve_device(model, device, local_rank)
    created = False
    if not dist.is_initialized():
        if dev.type == "cuda":
            torch.cuda.set_device(dev)
        dist.init_process_group(backend="nccl" if dev.type == "cuda" else "gloo")
        created = True
    return _Dist(dist.get_rank(), dist.get_world_size(), created), dev


def _gather(obj: Any, d: _Dist) -> list[Any]:
    if d.world_size == 1:
        return [obj]
    out: list[Any] = [None] * d.world_size
    dist.all_gather_object(out, obj)
    return out


# ----------------------------------------------------------------------------------------------------------
# The loop
# ----------------------------------------------------------------------------------------------------------
def _metrics_available() -> None:
    try:
        import srlib.metrics  # noqa: F401
    except ImportError as err:
        raise ImportError(f"validation needs srlib.metrics (PSNR on Y), which could not be imported: {err}. "
                          "Pass val_set=None to train without validation.") from err


def _infer_scale(model: nn.Module, cfg: TrainConfig, val_set: Any) -> int:
    if cfg.scale is not None:
        return int(cfg.scale)
    mcfg = getattr(model, "config", None)
    if getattr(mcfg, "scale", None) is not None:
        return int(mcfg.scale)
    item = val_set[0]
    return int(item["hr"].shape[-1] // item["lr"].shape[-1])


def _validate(model: nn.Module, val_set: Any, scale: int, cfg: TrainConfig, device: torch.device) -> float:
    """Mean Y-PSNR on ``val_set``; RNG-neutral (random draws inside networks use a fixed, forked stream)."""
    from .inference import evaluate

    devices = [device] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(cfg.seed)
        return float(evaluate(model, val_set, scale, chop=cfg.val_chop, ssim=False)["psnr"])


def _check_resume_config(saved: Mapping[str, Any], cfg: TrainConfig, path: Path) -> None:
    changed = [f"{k}: {saved.get(k)!r} -> {getattr(cfg, k)!r}" for k in _RESUME_SENSITIVE
               if k in saved and _plain(saved[k]) != _plain(getattr(cfg, k))]
    if changed:
        warnings.warn(f"resuming {path} with a changed config ({'; '.join(changed)}); "
                      "the run will not reproduce an uninterrupted one", stacklevel=5)


def _plain(v: Any) -> Any:
    return list(v) if isinstance(v, (tuple, list)) else v


def train(
    model: nn.Module,
    train_set: Dataset,
    val_set: Dataset | None,
    cfg: TrainConfig,
    out_dir: str | os.PathLike,
    *,
    resume: bool = True,
    extra_loss: ExtraLoss | None = None,
    device: str | torch.device | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Train ``model`` for ``cfg.iterations`` steps, validating and checkpointing into ``out_dir``.

    The loop (:func:`_train`) is made of named pieces, each tested on its own: :func:`_build_run` (model on
    the device, DDP, optimiser, scheduler, AMP scaler), :func:`_resume` (everything back from ``last.pt``),
    :func:`_optimisation_step` (one step), :func:`_log` (mean loss, learning rate, progress bar, TensorBoard),
    :func:`_validation` (PSNR, best model) and :func:`_save_checkpoint`.

    Args:
        model: network mapping LR ``(B, 3, h, w)`` in ``[0, 1]`` to SR ``(B, 3, s*h, s*w)``. In train mode it
            may return a tuple ``(sr, aux, ...)``: the first element is the SR image (used for the L1 loss),
            the whole output is passed to ``extra_loss``. Moved to ``device``; left in train mode.
        train_set: map-style dataset of ``{"lr": (3, h, w), "hr": (3, s*h, s*w), "name": str}`` patches, all
            the same size (e.g. ``HRFolderDataset(..., patch_size=96, augment=True)``). Its randomness must come
            from the global torch / Python / NumPy RNGs or a ``generator`` attribute (see
            :class:`SeededDataset`).
        val_set: dataset of full images (``BenchmarkDataset("Set5", 2)``) for PSNR on Y
            (:mod:`srlib.metrics`), or ``None``.
        cfg: :class:`TrainConfig`.
        out_dir: receives ``last.pt`` (every ``ckpt_every`` steps and at the end), ``best.pt`` (best validation
            PSNR) and ``history.json``, and with ``cfg.tensorboard`` the TensorBoard event files in
            ``out_dir/tensorboard``. All written by rank 0 only (the checkpoints atomically).
        resume: continue from ``out_dir/last.pt`` if it exists (model, optimizer, scheduler, scaler, RNG states,
            iteration; ``cfg.iterations`` may be raised to train longer). If False an existing run is
            overwritten.
        extra_loss: ``extra_loss(output, batch) -> tensor`` added to the loss, where ``output`` is what the
            model returned (e.g. ENLCN's ``(sr, [contrastive losses])``) and ``batch`` is the collated batch
            with ``"lr"``/``"hr"`` on the device plus ``"iteration"`` (0-based step being taken), so warm-ups
            such as ENLCN's "no contrastive loss for the first epochs" can be expressed. Must return a tensor
            or number, already weighted.
        device: ``None``: the model's device if not CPU, else CUDA when available, else CPU. Under torchrun,
            ``cuda:LOCAL_RANK``.
        progress: show a tqdm bar (rank 0).

    Returns:
        ``{"history": {"train": [{"iteration", "loss", "lr"}], "val": [{"iteration", "psnr"}]},
        "iteration", "best_psnr", "best_iteration", "checkpoint", "best_checkpoint", "resumed_from"}``
        (on ranks other than 0 the same structure, without files).

    Raises:
        ImportError: ``val_set`` given but :mod:`srlib.metrics` cannot be imported; ``cfg.tensorboard`` set but
            the ``tensorboard`` package is not installed.
        CheckpointError: ``last.pt`` does not fit the model.
        FloatingPointError: the loss became NaN/inf, or a NaN/Inf reached the network's input or an attention
            module (names the first such iteration). Checked at every log point and before every checkpoint,
            so no checkpoint of a diverged run is written; the last good one is named.
        ValueError: the model's output size differs from the HR patch size.
    """
    from tqdm.auto import tqdm

    out_dir = Path(out_dir)
    if val_set is not None:
        _metrics_available()
    if cfg.tensorboard:
        _tensorboard_available()
    d, device = _setup_distributed(model, device)
    try:
        return _train(model, train_set, val_set, cfg, out_dir, resume, extra_loss, device, progress, d, tqdm)
    finally:
        if d.created_group:
            dist.destroy_process_group()


def _tensorboard_available() -> None:
    """Raise a clear ImportError when ``tensorboard`` (needed by ``torch.utils.tensorboard``) is missing."""
    import importlib.util

    if importlib.util.find_spec("tensorboard") is None:
        raise ImportError("TrainConfig(tensorboard=True) / --tensorboard needs the tensorboard package, which is "
                          "not installed: pip install 'srlib[tensorboard]' (or pip install tensorboard)")


@dataclass
class _Run:
    """What the pieces of one training run share (one per rank): the modules, the optimiser state and the
    running record (history, best PSNR, where it started)."""

    cfg: TrainConfig
    out_dir: Path
    device: torch.device
    d: _Dist
    raw: nn.Module  # the model itself (saved, validated)
    net: nn.Module  # what the step calls: ``raw``, or its DistributedDataParallel wrapper
    params: list[nn.Parameter]
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    scaler: torch.amp.GradScaler
    loss_fn: nn.Module
    use_amp: bool
    amp_dtype: torch.dtype
    history: dict[str, list] = dataclasses.field(default_factory=lambda: {"train": [], "val": []})
    best_psnr: float = -math.inf
    best_iter: int | None = None
    start: int = 0
    resumed_from: int | None = None
    sampler: InfiniteSampler | None = None
    writer: Any = None  # torch.utils.tensorboard.SummaryWriter on rank 0 with cfg.tensorboard, else None
    bad_iter: torch.Tensor | None = None  # first iteration with a NaN/Inf loss (0: none), kept on the device

    @property
    def last_path(self) -> Path:
        return self.out_dir / "last.pt"

    @property
    def best_path(self) -> Path:
        return self.out_dir / "best.pt"

    @property
    def lr(self) -> float:
        return self.optimizer.param_groups[0]["lr"]


def _stop_if_non_finite(run: _Run) -> None:
    """Raise before anything is saved if a loss so far was NaN/Inf (``run.bad_iter``: first such iteration, 0 if
    none; reduced over ranks) or a weight is non-finite."""
    none = torch.iinfo(torch.long).max
    bad_iter = run.bad_iter if run.bad_iter is not None else torch.zeros((), dtype=torch.long)
    flag = torch.where(bad_iter == 0, none, bad_iter)
    if run.d.world_size > 1:
        dist.all_reduce(flag, op=dist.ReduceOp.MIN)  # the earliest bad iteration of any rank
    first = 0 if int(flag) == none else int(flag)
    bad_weights = [n for n, t in run.raw.state_dict().items()
                   if t.is_floating_point() and not bool(torch.isfinite(t).all())]
    if first or bad_weights:
        where = (f"non-finite training loss at iteration {first}" if first
                 else f"non-finite weights {bad_weights[:5]}")
        raise FloatingPointError(f"{where}; stopped without saving (last checkpoint: "
                                 f"{run.last_path if run.last_path.exists() else 'none'})")


def _build_run(model: nn.Module, cfg: TrainConfig, out_dir: Path, device: torch.device, d: _Dist) -> _Run:
    """Model on ``device`` (wrapped in DDP when ``d.world_size > 1``), Adam, step decay, AMP scaler and loss."""
    raw = model.to(device)
    net: nn.Module = raw
    if d.world_size > 1:
        net = nn.parallel.DistributedDataParallel(
            raw, device_ids=[device.index] if device.type == "cuda" else None,
            find_unused_parameters=True)  # DLSN/HSPAN/LCoAN carry an unused parameter `a`
    params = [p for p in raw.parameters() if p.requires_grad]
    optimizer = torch.optim.Adam(params, lr=cfg.lr, betas=cfg.betas, eps=cfg.eps, weight_decay=cfg.weight_decay)
    scheduler = torch.optim.lr_scheduler.MultiStepLR(optimizer, milestones=list(cfg.milestones), gamma=cfg.gamma)
    use_amp = cfg.amp is not None and device.type == "cuda"
    if cfg.amp is not None and not use_amp:
        warnings.warn(f"amp={cfg.amp!r} needs CUDA; training in float32 on {device}", stacklevel=4)
    amp_dtype = torch.float16 if cfg.amp == "fp16" else torch.bfloat16
    scaler = torch.amp.GradScaler("cuda", enabled=use_amp and cfg.amp == "fp16")
    loss_fn = nn.L1Loss() if cfg.loss == "l1" else nn.MSELoss()
    return _Run(cfg, out_dir, device, d, raw, net, params, optimizer, scheduler, scaler, loss_fn, use_amp, amp_dtype)


def _resume(run: _Run) -> None:
    """Restore ``run`` from ``run.last_path``: weights, optimiser, scheduler, scaler, this rank's RNG states,
    iteration, history and best PSNR.

    Raises:
        CheckpointError: not an srlib training checkpoint, or weights that do not fit the model.
    """
    last_path, d, cfg = run.last_path, run.d, run.cfg
    ckpt = load_checkpoint(last_path)
    if ckpt.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(f"{last_path} is not an srlib training checkpoint (format {ckpt.get('format')!r})")
    saved_name = ckpt.get("model_name")
    try:
        load_weights(run.raw, ckpt["model"], source=f"checkpoint {last_path} (model {saved_name!r})")
    except CheckpointError as err:
        raise CheckpointError(f"{err} To start a new run, use another out_dir or resume=False.") from None
    run.optimizer.load_state_dict(ckpt["optimizer"])
    run.scheduler.load_state_dict(ckpt["scheduler"])
    if run.scaler.is_enabled() and ckpt.get("scaler"):
        run.scaler.load_state_dict(ckpt["scaler"])
    _check_resume_config(ckpt.get("config", {}), cfg, last_path)
    rng = ckpt["rng"]
    if len(rng) == d.world_size:
        _set_rng_state(rng[d.rank], run.device)
    else:
        warnings.warn(f"{last_path} was written by {len(rng)} rank(s), now {d.world_size}: RNG states reseeded",
                      stacklevel=4)
        _seed_everything(_mix(cfg.seed, 2, ckpt["iteration"], d.rank))
    run.start = run.resumed_from = int(ckpt["iteration"])
    run.history = {"train": list(ckpt["history"]["train"]), "val": list(ckpt["history"]["val"])}
    best = ckpt.get("best", {})
    run.best_psnr = best.get("psnr") if best.get("psnr") is not None else -math.inf
    run.best_iter = best.get("iteration")


def _batches(run: _Run, train_set: Dataset) -> Iterator[dict]:
    """Endless collated batches from ``run.start`` on (:class:`InfiniteSampler` + :class:`SeededDataset`)."""
    cfg, d = run.cfg, run.d
    run.sampler = InfiniteSampler(len(train_set), cfg.batch_size, seed=cfg.seed, rank=d.rank,
                                  world_size=d.world_size, start_iteration=run.start)
    # The loader's own generator (worker base seeds) keeps iter(loader) from drawing on the global RNG, which
    # networks such as NLSN use in their forward pass: a resumed run must see the same global stream.
    loader = DataLoader(SeededDataset(train_set), batch_size=cfg.batch_size, sampler=run.sampler, drop_last=True,
                        num_workers=cfg.num_workers, pin_memory=run.device.type == "cuda",
                        generator=torch.Generator().manual_seed(_mix(cfg.seed, 3, run.start, d.rank)))
    return iter(loader)


def _optimisation_step(run: _Run, batch: Mapping[str, Any], it: int, extra_loss: ExtraLoss | None) -> torch.Tensor:
    """One step on ``batch``: forward (autocast with AMP), loss (+ ``extra_loss``), backward, optional gradient
    clipping, optimiser and scheduler step. ``it`` is the 0-based step being taken.

    Returns:
        the step's loss, detached, float32, 0-dim on the device.
    Raises:
        ValueError: the model's output size differs from the HR batch.
    """
    device = run.device
    lr_img = batch["lr"].to(device, non_blocking=True)
    hr_img = batch["hr"].to(device, non_blocking=True)
    with torch.autocast(device.type, dtype=run.amp_dtype, enabled=run.use_amp):
        try:
            output = run.net(lr_img)
        except NonFiniteError as err:
            raise FloatingPointError(f"iteration {it + 1}: {err}; stopped without saving") from err
        sr = output[0] if isinstance(output, (tuple, list)) else output
        if sr.shape != hr_img.shape:
            raise ValueError(f"model output {tuple(sr.shape)} does not match the HR batch {tuple(hr_img.shape)}"
                             " (wrong scale, or LR/HR patches not aligned?)")
        loss = run.loss_fn(sr.float(), hr_img)
        if extra_loss is not None:
            loss = loss + extra_loss(output, {**batch, "lr": lr_img, "hr": hr_img, "iteration": it})
    if run.bad_iter is None:
        run.bad_iter = torch.zeros((), dtype=torch.long, device=device)
    # remember the first non-finite loss without a device sync; checked at log points and checkpoints
    run.bad_iter = torch.where((run.bad_iter == 0) & ~torch.isfinite(loss.detach()), it + 1, run.bad_iter)
    run.optimizer.zero_grad(set_to_none=True)
    run.scaler.scale(loss).backward()
    if run.cfg.grad_clip is not None:
        run.scaler.unscale_(run.optimizer)
        torch.nn.utils.clip_grad_norm_(run.params, run.cfg.grad_clip)
    run.scaler.step(run.optimizer)
    run.scaler.update()
    run.scheduler.step()
    return loss.detach().float()


def _log(run: _Run, done: int, running: torch.Tensor, n_running: int, bar: Any = None) -> float:
    """Record the mean loss of the last ``n_running`` steps (averaged over ranks) and the learning rate at
    iteration ``done``: history, progress bar and TensorBoard (``train/loss``, ``train/lr``).

    Returns:
        the mean loss.
    Raises:
        FloatingPointError: the mean loss is NaN or infinite (names the iteration and the last checkpoint).
    """
    _stop_if_non_finite(run)
    mean = running / n_running
    if run.d.world_size > 1:
        dist.all_reduce(mean)
        mean /= run.d.world_size
    mean_loss = float(mean)
    if not math.isfinite(mean_loss):
        raise FloatingPointError(f"non-finite training loss {mean_loss} at iteration {done}; "
                                 f"last checkpoint: {run.last_path if run.last_path.exists() else 'none'}")
    run.history["train"].append({"iteration": done, "loss": mean_loss, "lr": run.lr})
    if bar is not None:
        bar.set_postfix(loss=f"{mean_loss:.4f}", lr=f"{run.lr:.1e}")
    if run.writer is not None:
        run.writer.add_scalar("train/loss", mean_loss, done)
        run.writer.add_scalar("train/lr", run.lr, done)
        run.writer.flush()
    return mean_loss


def _sr_crop(model: nn.Module, val_set: Any, seed: int, device: torch.device, size: int = 64) -> torch.Tensor:
    """SR of the central ``size x size`` LR crop of the first validation image, ``(3, s*size, s*size)`` RGB in
    ``[0, 1]`` on the CPU (for TensorBoard). RNG-neutral, like :func:`_validate`."""
    lr = val_set[0]["lr"]
    h, w = lr.shape[-2:]
    top, left = max((h - size) // 2, 0), max((w - size) // 2, 0)
    lr = lr[:, top:top + size, left:left + size]
    devices = [device] if device.type == "cuda" else []
    was_training = model.training
    model.eval()
    try:
        with torch.random.fork_rng(devices=devices), torch.no_grad():
            torch.manual_seed(seed)
            out = model(lr[None].to(device))
    finally:
        model.train(was_training)
    sr = out[0] if isinstance(out, (tuple, list)) else out
    return sr[0].float().clamp(0, 1).cpu()


def _validation(run: _Run, val_set: Any, scale: int, done: int, bar: Any = None, progress: bool = False) -> bool:
    """Validate at iteration ``done`` on rank 0 (PSNR into the history and TensorBoard, ``val/psnr`` and an SR
    crop ``val/sr``), update the best PSNR, put the network back in train mode.

    Returns:
        whether this is a new best (rank 0 decides; every rank takes part in the exchange).
    """
    new_best = False
    if run.d.main:
        psnr = _validate(run.raw, val_set, scale, run.cfg, run.device)
        run.history["val"].append({"iteration": done, "psnr": psnr})
        if psnr > run.best_psnr:
            run.best_psnr, run.best_iter, new_best = psnr, done, True
        if progress and bar is not None:
            bar.write(f"[{done}] val PSNR {psnr:.3f} dB (best {run.best_psnr:.3f} dB @ {run.best_iter})")
        if run.writer is not None:
            run.writer.add_scalar("val/psnr", psnr, done)
            run.writer.add_image("val/sr", _sr_crop(run.raw, val_set, run.cfg.seed, run.device), done)
            run.writer.flush()
    run.net.train()
    return bool(_gather(new_best, run.d)[0])


def _save_checkpoint(run: _Run, done: int, paths: Sequence[Path]) -> None:
    """Write the full training state after ``done`` iterations to each of ``paths`` (rank 0; every rank's RNG
    state is gathered first, so every rank must call this) and ``history.json`` beside them."""
    _stop_if_non_finite(run)  # never write a diverged model
    rngs = _gather(_rng_state(run.device), run.d)  # collective: every rank takes part
    if not run.d.main:
        return
    raw, cfg = run.raw, run.cfg
    state = {
        "format": CHECKPOINT_FORMAT,
        "iteration": done,
        "model": raw.state_dict(),
        "optimizer": run.optimizer.state_dict(),
        "scheduler": run.scheduler.state_dict(),
        "scaler": run.scaler.state_dict(),
        "rng": rngs,
        "sampler": run.sampler.state_dict() if run.sampler is not None else None,
        "config": dataclasses.asdict(cfg),
        "history": run.history,
        "best": {"psnr": None if run.best_psnr == -math.inf else run.best_psnr, "iteration": run.best_iter},
        "model_name": getattr(raw, "model_name", type(raw).__name__),
        "model_config": (dataclasses.asdict(raw.config)
                         if dataclasses.is_dataclass(getattr(raw, "config", None)) else None),
    }
    for p in paths:
        save_checkpoint(p, state)
    summary = {"history": run.history, "best_psnr": state["best"]["psnr"], "best_iteration": run.best_iter}
    _atomic_write(run.out_dir / "history.json", lambda tmp: Path(tmp).write_text(json.dumps(summary, indent=1)))


def _due(every: int, done: int, total: int) -> bool:
    """A periodic event (log, validation, checkpoint) at iteration ``done``: every ``every`` steps (0: never)
    and always at the last one."""
    return bool(every and done % every == 0) or done == total


def _train(model, train_set, val_set, cfg, out_dir, resume, extra_loss, device, progress, d, tqdm) -> dict:
    run = _build_run(model, cfg, out_dir, device, d)
    if resume and run.last_path.is_file():
        _resume(run)
    else:
        _seed_everything(cfg.seed + d.rank)
    scale = _infer_scale(run.raw, cfg, val_set) if val_set is not None else cfg.scale
    batches = _batches(run, train_set)
    if d.main:
        out_dir.mkdir(parents=True, exist_ok=True)
        if cfg.tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            run.writer = SummaryWriter(log_dir=str(out_dir / "tensorboard"), purge_step=run.start + 1)
    bar = tqdm(total=cfg.iterations, initial=run.start, disable=not (progress and d.main), desc="train",
               dynamic_ncols=True)
    try:
        run.net.train()
        running, n_running = torch.zeros((), device=device), 0
        for it in range(run.start, cfg.iterations):
            running += _optimisation_step(run, next(batches), it, extra_loss)
            n_running += 1
            done = it + 1
            bar.update(1)
            if _due(cfg.log_every, done, cfg.iterations):
                _log(run, done, running, n_running, bar)
                running, n_running = torch.zeros((), device=device), 0
            new_best = val_set is not None and _due(cfg.val_every, done, cfg.iterations) and _validation(
                run, val_set, scale, done, bar, progress)
            save_last = _due(cfg.ckpt_every, done, cfg.iterations)
            if save_last or new_best:
                _save_checkpoint(run, done, [p for p, want in ((run.last_path, save_last), (run.best_path, new_best))
                                             if want])
    finally:
        bar.close()
        if run.writer is not None:
            run.writer.close()
    d.barrier()
    return {
        "history": run.history,
        "iteration": max(run.start, cfg.iterations),
        "best_psnr": None if run.best_psnr == -math.inf else run.best_psnr,
        "best_iteration": run.best_iter,
        "checkpoint": str(run.last_path) if d.main and run.last_path.exists() else None,
        "best_checkpoint": str(run.best_path) if d.main and run.best_path.exists() else None,
        "resumed_from": run.resumed_from,
    }


# ----------------------------------------------------------------------------------------------------------
# Command line
# ----------------------------------------------------------------------------------------------------------
#: The papers' ×2 training schedules in iterations (the official trainers' "epoch" is 1000 iterations of batch
#: 16; 48×48 LR patches, i.e. ``--patch-size 96`` HR at ×2; learning rate 1e-4, halved at each milestone):
#: NLSN, ENLCN and HSPAN 1000 epochs halved every 200 (NLSN Sec. 4.1, ENLCN and HSPAN official READMEs);
#: DLSN 1500 epochs halved every 300 (DLSN Sec. 4.2); LCoAN as DLSN (its official trainer). HSPAN validates
#: with tiled inference (its dense ``L × L`` scores do not fit whole validation images).
PAPER_SCHEDULES: dict[str, dict[str, Any]] = {
    "nlsn": {"iterations": 1_000_000, "milestones": (200_000, 400_000, 600_000, 800_000)},
    "enlcn": {"iterations": 1_000_000, "milestones": (200_000, 400_000, 600_000, 800_000)},
    "hspan": {"iterations": 1_000_000, "milestones": (200_000, 400_000, 600_000, 800_000), "val_chop": True},
    "dlsn": {"iterations": 1_500_000, "milestones": (300_000, 600_000, 900_000, 1_200_000)},
    "lcoan": {"iterations": 1_500_000, "milestones": (300_000, 600_000, 900_000, 1_200_000)},
}


def paper_command(model: str, scale: int = 2, *, train_dir: str = "data/DIV2K/DIV2K_train_HR",
                  out: str | None = None, batch_size: int = 16, lr_patch: int = 48) -> str:
    """The ``python -m srlib.train`` command line of a network's paper-configuration training run.

    What the notebooks print behind their ``SRLIB_RUN_FULL`` switch, and what to paste into a GPU shell (prefix
    ``torchrun --nproc_per_node N`` for several GPUs; ``--batch-size`` is then per GPU; add ``--amp bf16``).

    Args:
        model: a key of :data:`PAPER_SCHEDULES` (``nlsn``, ``enlcn``, ``dlsn``, ``hspan``, ``lcoan``).
        scale: upscaling factor (2, 3 or 4); the HR patch side is ``lr_patch * scale``.
        train_dir: folder of HR training images (DIV2K: ``python -m srlib.data.download div2k --root data``).
        out: run folder (default ``runs/<model>_x<scale>``).
        batch_size: patches per iteration (the papers: 16); lr_patch: LR patch side (the papers: 48).

    Returns:
        One shell-ready line (no quoting needed for the default paths).

    Raises:
        ValueError: unknown model (the message lists the known ones) or scale outside 2-4.
    """
    if model not in PAPER_SCHEDULES:
        raise ValueError(f"no paper schedule for model {model!r}; known: {sorted(PAPER_SCHEDULES)}")
    if scale not in (2, 3, 4):
        raise ValueError(f"scale must be 2, 3 or 4, got {scale!r}")
    sched = PAPER_SCHEDULES[model]
    val = " --val-set Set5" + (" --val-chop" if sched.get("val_chop") else "")
    return (f"python -m srlib.train --model {model} --scale {scale} --preset paper"
            f" --train-dir {train_dir}{val}"
            f" --batch-size {batch_size} --patch-size {lr_patch * scale} --lr 1e-4 --iterations {sched['iterations']}"
            f" --milestones {','.join(map(str, sched['milestones']))} --val-every 1000 --ckpt-every 1000"
            f" --out {out or f'runs/{model}_x{scale}'}")


def _parse_value(text: str) -> Any:
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text


def _parser() -> argparse.ArgumentParser:
    # Every option has its own help text; defaults are written in it once ("%(default)s"), not appended by
    # ArgumentDefaultsHelpFormatter (which doubled the ones already stated, and printed "(default: None)").
    p = argparse.ArgumentParser(prog="python -m srlib.train", description=__doc__.split("\n\n")[0])
    d = TrainConfig()
    p.add_argument("--model", required=True, help="registered network (see srlib.models.list_models())")
    p.add_argument("--scale", type=int, default=2, help="upscaling factor 2, 3 or 4 (default: %(default)s)")
    p.add_argument("--preset", default="paper", help="model preset: paper, small, ... (default: %(default)s)")
    p.add_argument("--model-arg", action="append", default=[], metavar="KEY=VALUE",
                   help="override a model config field, e.g. --model-arg n_feats=32 (repeatable)")
    p.add_argument("--weights", default=None,
                   help="initial weights (srlib checkpoint, .safetensors or the authors' state_dict; default: none)")
    p.add_argument("--train-dir", default=None,
                   help="folder of HR training images (default: srlib.data.default_train_folder(); "
                        "else the bundled sample images)")
    p.add_argument("--val-set", default="Set5", help="benchmark for validation, or 'none' (default: %(default)s)")
    p.add_argument("--out", required=True, help="run folder (checkpoints, history.json)")
    p.add_argument("--resume", action="store_true", help="continue from OUT/last.pt")
    p.add_argument("--iterations", type=int, default=d.iterations,
                   help="optimisation steps in total (default: %(default)s)")
    p.add_argument("--batch-size", type=int, default=d.batch_size,
                   help="HR/LR pairs per step, per process under torchrun (default: %(default)s)")
    p.add_argument("--patch-size", type=int, default=d.patch_size, help="HR patch side (default: %(default)s)")
    p.add_argument("--lr", type=float, default=d.lr, help="Adam learning rate (default: %(default)s)")
    p.add_argument("--milestones", default=",".join(map(str, d.milestones)),
                   help="comma-separated iterations at which the learning rate is multiplied by --gamma "
                        "(default: %(default)s)")
    p.add_argument("--gamma", type=float, default=d.gamma,
                   help="learning-rate factor at each milestone (default: %(default)s)")
    p.add_argument("--betas", default=",".join(map(str, d.betas)),
                   help="Adam betas, comma-separated B1,B2 (default: %(default)s)")
    p.add_argument("--eps", type=float, default=d.eps, help="Adam epsilon (default: %(default)s)")
    p.add_argument("--weight-decay", type=float, default=d.weight_decay,
                   help="Adam weight decay (default: %(default)s)")
    p.add_argument("--loss", choices=("l1", "mse"), default=d.loss, help="training loss (default: %(default)s)")
    p.add_argument("--val-every", type=int, default=d.val_every,
                   help="validate every N iterations, 0: only at the end (default: %(default)s)")
    p.add_argument("--ckpt-every", type=int, default=d.ckpt_every,
                   help="write OUT/last.pt every N iterations, 0: only at the end (default: %(default)s)")
    p.add_argument("--log-every", type=int, default=d.log_every,
                   help="record the mean loss every N iterations (default: %(default)s)")
    p.add_argument("--seed", type=int, default=d.seed,
                   help="seed of the weights, sample order and augmentation (default: %(default)s)")
    p.add_argument("--num-workers", type=int, default=d.num_workers,
                   help="DataLoader worker processes; results do not depend on it (default: %(default)s)")
    p.add_argument("--grad-clip", type=float, default=None,
                   help="clip the global gradient norm to this value (default: no clipping)")
    p.add_argument("--amp", nargs="?", const="bf16", default=None, choices=("bf16", "fp16"),
                   help="mixed precision on CUDA; bare --amp = bf16 (default: float32)")
    p.add_argument("--val-chop", action="store_true", help="tiled validation (networks with dense L x L attention)")
    p.add_argument("--tensorboard", action="store_true",
                   help="log loss, PSNR, learning rate and an SR crop to OUT/tensorboard (needs tensorboard)")
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:1 (default: CUDA if available)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    return p


def _build_datasets(args: argparse.Namespace, log: Callable[[str], None]) -> tuple[Dataset, Dataset | None]:
    from . import data as sdata

    if args.train_dir is not None:
        folder = Path(args.train_dir)
        if not folder.is_dir():
            raise FileNotFoundError(f"--train-dir: folder not found: {folder}")
    else:
        folder = sdata.default_train_folder()
    if folder is not None:
        train_set = sdata.HRFolderDataset(folder, args.scale, patch_size=args.patch_size, augment=True)
        log(f"training on {len(train_set)} images from {folder}")
    else:
        train_set = sdata.SampleImagesDataset(args.scale, patch_size=args.patch_size, augment=True)
        log("no training folder found (see `python -m srlib.data.download div2k`): "
            f"training on the {len(train_set)} bundled sample images")

    val_set: Dataset | None = None
    name = args.val_set
    if name and name.lower() != "none":
        available = sdata.available_benchmarks(scale=args.scale)
        if name in available:
            val_set = sdata.BenchmarkDataset(name, args.scale)
            log(f"validating on {name} x{args.scale} ({len(val_set)} images)")
        elif available:
            raise FileNotFoundError(f"--val-set {name!r} not found under the benchmark root; "
                                    f"available: {', '.join(available)}")
        else:
            val_set = sdata.SampleImagesDataset(args.scale)
            log(f"no benchmark data (run `python -m srlib.data.download benchmark`): validating on the "
                f"{len(val_set)} bundled sample images")
    return train_set, val_set


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point (``python -m srlib.train``, ``srlib-train``, ``torchrun -m srlib.train``).

    Raises:
        FileNotFoundError: a given ``--train-dir`` / ``--val-set`` / ``--weights`` does not exist.
        FileExistsError: ``--out`` already holds a checkpoint and ``--resume`` was not given.
        ValueError / TypeError: unknown model, preset, scale or ``--model-arg``.
    """
    args = _parser().parse_args(argv)
    from .models import build_model

    rank = int(os.environ.get("RANK", "0"))
    log = (lambda msg: print(msg, flush=True)) if rank == 0 else (lambda msg: None)
    out = Path(args.out)
    if (out / "last.pt").exists() and not args.resume:
        raise FileExistsError(f"{out} already holds a run (last.pt); pass --resume to continue it "
                              "or choose another --out")
    overrides = {}
    for item in args.model_arg:
        key, sep, value = item.partition("=")
        if not sep:
            raise ValueError(f"--model-arg expects KEY=VALUE, got {item!r}")
        overrides[key.strip()] = _parse_value(value.strip())
    model = build_model(args.model, scale=args.scale, preset=args.preset, **overrides)
    if args.weights:
        load_weights(model, args.weights)
    milestones = tuple(int(m) for m in args.milestones.split(",") if m.strip())
    try:
        betas = tuple(float(b) for b in args.betas.split(","))
    except ValueError:
        betas = ()
    if len(betas) != 2 or not all(0 <= b < 1 for b in betas):
        raise ValueError(f"--betas expects two numbers in [0, 1) separated by a comma, got {args.betas!r}")
    cfg = TrainConfig(iterations=args.iterations, batch_size=args.batch_size, patch_size=args.patch_size, lr=args.lr,
                      betas=betas, eps=args.eps, weight_decay=args.weight_decay, milestones=milestones, gamma=args.gamma, loss=args.loss, val_every=args.val_every,
                      ckpt_every=args.ckpt_every, log_every=args.log_every, amp=args.amp, seed=args.seed,
                      num_workers=args.num_workers, grad_clip=args.grad_clip, scale=args.scale,
                      val_chop=args.val_chop, tensorboard=args.tensorboard)
    train_set, val_set = _build_datasets(args, log)
    n_params = sum(p.numel() for p in model.parameters() if p.requires_grad)
    log(f"{args.model} x{args.scale} ({args.preset}): {n_params:,} trainable parameters -> {out}")
    # Networks with an auxiliary training loss (ENLCN's contrastive term, Eq. 8-10) provide it themselves.
    extra_loss = model.make_extra_loss() if hasattr(model, "make_extra_loss") else None
    if extra_loss is not None:
        log(f"adding {type(extra_loss).__name__} to the L1 loss")
    result = train(model, train_set, val_set, cfg, out, resume=args.resume, device=args.device,
                   progress=not args.no_progress, extra_loss=extra_loss)
    if result["best_psnr"] is not None:
        log(f"done: {result['iteration']} iterations, best PSNR {result['best_psnr']:.3f} dB "
            f"@ {result['best_iteration']}")
    else:
        log(f"done: {result['iteration']} iterations")
    return 0


if __name__ == "__main__":
    sys.exit(main())
