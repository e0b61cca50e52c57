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

Run folder. One training at a time writes a run folder: rank 0 holds a lock (:data:`LOCK_NAME`, naming its PID
and host) and a second live writer is refused; a lock left by a killed process is taken over with a note, and
the temporary files of a checkpoint write it interrupted are removed. Resuming checks that the saved training
and network configs equal the new ones (``--allow-config-change`` overrides, and says so). The command line
checks everything it can before training (``--out`` writable, ``--device`` present, model arguments, every
training image) and reports a bad command line as one ``error:`` line on stderr with exit status 2.

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
import datetime
import errno
import json
import math
import numbers
import os
import platform
import random
import re
import sys
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping, Sequence

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import DataLoader, Dataset, Sampler

from ._checks import NonFiniteError, check_choice, check_int, check_number
from .checkpoint import CheckpointError, _atomic_write, load_checkpoint, load_weights, save_checkpoint

try:  # POSIX advisory locks (the kernel drops them when the holder dies, even by kill -9)
    import fcntl
except ImportError:  # pragma: no cover - Windows: PID-based stale detection only
    fcntl = None  # type: ignore[assignment]

__all__ = ["TrainConfig", "train", "InfiniteSampler", "SeededDataset", "main", "CHECKPOINT_FORMAT",
           "PAPER_SCHEDULES", "paper_command", "RunLockedError", "ResumeConfigError", "LOCK_NAME"]

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


def _check_device(device: str | torch.device) -> torch.device:
    """``torch.device(device)``, refusing a device this machine does not have.

    Raises:
        ValueError: not a device name, CUDA/MPS not available, or a CUDA index beyond the GPUs present.
    """
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as err:
        raise ValueError(f"device {device!r} is not a device name (cpu, cuda, cuda:1, mps): {err}") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"device {str(device)!r}: CUDA is not available on this machine (no GPU, or a "
                             "CPU-only PyTorch build); use device 'cpu' (--device cpu) or leave it unset")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise ValueError(f"device {str(device)!r}: this machine has {torch.cuda.device_count()} CUDA device(s)")
    elif dev.type == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise ValueError(f"device {str(device)!r}: MPS is not available on this machine; use 'cpu'")
    return dev


def _resolve_device(model: nn.Module, device: str | torch.device | None, local_rank: int | None) -> torch.device:
    if device is not None:
        dev = _check_device(device)
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


#: Fields that may change when a run is resumed: they do not touch the updates (length, periods, logging,
#: workers, tiled validation). Every other field of :class:`TrainConfig`, the network's name and every field of
#: its config must be as saved, unless ``allow_config_change`` is given.
_RESUME_FREE = ("iterations", "val_every", "ckpt_every", "log_every", "num_workers", "tensorboard", "val_chop", "amp")


class ResumeConfigError(CheckpointError):
    """``last.pt`` was written with another training or network configuration (lists the differing fields)."""


def _plain(v: Any) -> Any:
    """Tuples, lists and dicts compared by value (a loaded checkpoint may hold lists where the config has tuples)."""
    if isinstance(v, (tuple, list)):
        return [_plain(x) for x in v]
    if isinstance(v, Mapping):
        return {k: _plain(x) for k, x in v.items()}
    return v


def _config_changes(ckpt: Mapping[str, Any], cfg: TrainConfig, model: nn.Module) -> list[str]:
    """``"field: saved -> now"`` for every setting that differs between ``ckpt`` and this run."""
    changes = []
    saved = ckpt.get("config") or {}
    for f in dataclasses.fields(cfg):
        if f.name in _RESUME_FREE or f.name not in saved:
            continue
        if _plain(saved[f.name]) != _plain(getattr(cfg, f.name)):
            changes.append(f"{f.name}: {saved[f.name]!r} -> {getattr(cfg, f.name)!r}")
    name = getattr(model, "model_name", type(model).__name__)
    if ckpt.get("model_name") is not None and ckpt["model_name"] != name:
        changes.append(f"model: {ckpt['model_name']!r} -> {name!r}")
    mcfg = getattr(model, "config", None)
    saved_m = ckpt.get("model_config")
    if isinstance(saved_m, Mapping) and dataclasses.is_dataclass(mcfg):
        now_m = dataclasses.asdict(mcfg)
        for k in sorted(set(saved_m) | set(now_m)):
            if _plain(saved_m.get(k)) != _plain(now_m.get(k)):
                changes.append(f"model {k}: {saved_m.get(k)!r} -> {now_m.get(k)!r}")
    return changes


def _check_resume_config(ckpt: Mapping[str, Any], cfg: TrainConfig, model: nn.Module, path: Path,
                         allow_change: bool) -> None:
    """Refuse to resume ``path`` with another configuration, unless ``allow_change`` (then say so, loudly).

    Raises:
        ResumeConfigError: naming every differing field with its saved and new value.
    """
    changes = _config_changes(ckpt, cfg, model)
    if not changes:
        return
    if not allow_change:
        raise ResumeConfigError(
            f"{path} was written with another configuration ({'; '.join(changes)}); resume with the saved "
            "settings, choose another --out / out_dir, or pass --allow-config-change (train(..., "
            "allow_config_change=True)) to continue anyway"
        )
    msg = (f"resuming {path} with a changed config because of --allow-config-change / allow_config_change=True "
           f"({'; '.join(changes)}); the run will not reproduce an uninterrupted one")
    _note(msg)
    warnings.warn(msg, stacklevel=5)


def _note(msg: str) -> None:
    """A one-line note on stderr (the run lock, cleaned temporary files, config overrides)."""
    print(f"srlib.train: {msg}", file=sys.stderr, flush=True)


# ----------------------------------------------------------------------------------------------------------
# The run folder lock
# ----------------------------------------------------------------------------------------------------------
#: Name of the lock file in a run folder while a training writes there (JSON: pid, host, start time).
LOCK_NAME = ".srlib-train.lock"

#: Temporary files of an interrupted checkpoint write (``checkpoint._atomic_write``: ``.<name>.<random>.tmp``).
_STALE_PATTERNS = (".last.pt.*.tmp", ".best.pt.*.tmp", ".history.json.*.tmp")


class RunLockedError(RuntimeError):
    """Another live process trains into the same run folder (names the folder, its PID and host)."""


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


class _RunLock:
    """An exclusive lock on a run folder: ``out_dir/.srlib-train.lock`` holding the owner's PID, host and start.

    Held with ``fcntl.flock`` on the open file, which the kernel releases when the process ends in any way
    (even ``kill -9``): a lock file nobody holds is stale and is taken over, with a note naming the dead
    process. Where ``flock`` is unavailable, a lock of a PID that no longer runs on this host is taken over.
    A lock left by another host is never taken over automatically (its process cannot be checked from here).
    """

    def __init__(self, out_dir: Path) -> None:
        self.out_dir = Path(out_dir)
        self.path = self.out_dir / LOCK_NAME
        self.fd: int | None = None
        self.created_dir = False

    def _describe(self, holder: Mapping[str, Any]) -> str:
        return (f"PID {holder.get('pid', '?')} on host {holder.get('host', '?')}"
                + (f", started {holder['started']}" if holder.get("started") else ""))

    @staticmethod
    def _read(fd: int) -> dict[str, Any]:
        try:
            os.lseek(fd, 0, os.SEEK_SET)
            text = os.read(fd, 4096).decode("utf-8", "replace").strip()
            return json.loads(text) if text else {}
        except (OSError, ValueError):
            return {"pid": "?", "host": "?"}

    def acquire(self) -> "_RunLock":
        """Take the lock (creating ``out_dir`` if needed).

        Raises:
            RunLockedError: a live process holds it (names the folder, the PID and the host), or a lock
                written on another host whose process cannot be checked.
            OSError: the folder cannot be created or written.
        """
        self.created_dir = not self.out_dir.exists()
        self.out_dir.mkdir(parents=True, exist_ok=True)
        host = platform.node()  # the host name (uname), without the socket module
        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o666)
            try:
                if fcntl is not None:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as err:
                holder = self._read(fd)
                os.close(fd)
                if err.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                    raise RunLockedError(
                        f"run folder {self.out_dir} is in use by another training ({self._describe(holder)}); "
                        "wait for it to end, or choose another --out / out_dir") from None
                raise
            try:  # the file may have been removed by the previous holder between our open and our lock
                same = os.fstat(fd).st_ino == os.stat(self.path).st_ino
            except FileNotFoundError:
                same = False
            if same:
                break
            os.close(fd)
        previous = self._read(fd)
        if previous:
            pid = previous.get("pid")
            other_host = previous.get("host") not in (None, host)
            alive = isinstance(pid, int) and not other_host and _pid_alive(pid) and fcntl is None
            if other_host or alive:
                os.close(fd)
                raise RunLockedError(
                    f"run folder {self.out_dir} is locked by {self._describe(previous)}"
                    + ("; that host's process cannot be checked from here: if it has ended, delete "
                       f"{self.path}" if other_host else "") + "; or choose another --out / out_dir")
            _note(f"took over the stale lock of {self.out_dir} left by {self._describe(previous)} "
                  "(that process is no longer running)")
        info = {"pid": os.getpid(), "host": host,
                "started": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")}
        os.ftruncate(fd, 0)
        os.lseek(fd, 0, os.SEEK_SET)
        os.write(fd, json.dumps(info).encode())
        os.fsync(fd)
        self.fd = fd
        return self

    def release(self, *, failed: bool = False) -> None:
        """Remove the lock file and drop the lock; after a failure, also remove ``out_dir`` if this lock
        created it and it is still empty (nothing left behind)."""
        if self.fd is None:
            return
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path)  # before unlocking: a waiting process then re-opens a fresh file
        os.close(self.fd)
        self.fd = None
        if failed and self.created_dir:
            with contextlib.suppress(OSError):
                self.out_dir.rmdir()  # only if empty


def _remove_stale_temporaries(out_dir: Path) -> tuple[int, int]:
    """Delete temporary files of checkpoint writes interrupted by a crash (call with the run lock held).

    Returns:
        ``(number of files, bytes)`` removed; a note on stderr says so when there were any.
    """
    n = size = 0
    names = []
    for pattern in _STALE_PATTERNS:
        for p in sorted(out_dir.glob(pattern)):
            with contextlib.suppress(FileNotFoundError):
                b = p.stat().st_size
                p.unlink()
                n, size = n + 1, size + b
                names.append(p.name)
    if n:
        _note(f"removed {n} stale temporary file(s) of an interrupted checkpoint write from {out_dir} "
              f"({size:,} bytes): {', '.join(names)}")
    return n, size


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
    allow_config_change: bool = False,
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
            iteration; ``cfg.iterations`` may be raised to train longer). The saved training and network
            configs must equal this run's, apart from lengths and periods (``iterations``, ``*_every``,
            ``num_workers``, ``tensorboard``, ``val_chop``, ``amp``). If False an existing run is overwritten.
        extra_loss: ``extra_loss(output, batch) -> tensor`` added to the loss, where ``output`` is what the
            model returned (e.g. ENLCN's ``(sr, [contrastive losses])``) and ``batch`` is the collated batch
            with ``"lr"``/``"hr"`` on the device plus ``"iteration"`` (0-based step being taken), so warm-ups
            such as ENLCN's "no contrastive loss for the first epochs" can be expressed. Must return a tensor
            or number, already weighted.
        device: ``None``: the model's device if not CPU, else CUDA when available, else CPU. Under torchrun,
            ``cuda:LOCAL_RANK``.
        progress: show a tqdm bar (rank 0).
        allow_config_change: resume even though the saved config differs (the changes are printed and
            warned about); the CLI's ``--allow-config-change``.

    Run folder. Rank 0 holds a lock on ``out_dir`` (:data:`LOCK_NAME`, with its PID and host) for the whole
    call: a second training into the same folder is refused while this one lives; the lock is removed on
    exit and a lock left by a killed process is taken over with a note on stderr. Temporary files of a
    checkpoint write interrupted by a crash (``.last.pt.*.tmp``, ...) are deleted at the start (note with
    their count and size). A call that fails before writing anything leaves no folder behind.

    Seeding. ``train`` seeds the global RNGs with ``cfg.seed`` for the data and the training noise, but it
    receives the network already built: for weights reproducible from scratch, seed before building it
    (``torch.manual_seed(cfg.seed)``), as ``python -m srlib.train`` does with ``--seed``.

    Returns:
        ``{"history": {"train": [{"iteration", "loss", "lr"}], "val": [{"iteration", "psnr"}]},
        "iteration", "best_psnr", "best_iteration", "checkpoint", "best_checkpoint", "resumed_from"}``
        (on ranks other than 0 the same structure, without files).

    Raises:
        ImportError: ``val_set`` given but :mod:`srlib.metrics` cannot be imported; ``cfg.tensorboard`` set but
            the ``tensorboard`` package is not installed.
        RunLockedError: another live process trains into ``out_dir`` (names it, its PID and host).
        ResumeConfigError: (a ``CheckpointError``) resuming with another training/network config without
            ``allow_config_change`` (names each differing field, saved and new value).
        CheckpointError: ``last.pt`` does not fit the model.
        ValueError: ``device`` names CUDA (or MPS) on a machine without it, or a GPU index that does not exist.
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
    lock = _RunLock(out_dir) if d.main else None
    ok = False
    try:
        lock_error: RunLockedError | None = None
        if lock is not None:
            try:
                lock.acquire()
            except RunLockedError as err:
                lock_error = err
        if d.world_size > 1 and _gather(lock_error is not None, d)[0] and lock_error is None:
            raise RunLockedError(f"rank 0 could not lock the run folder {out_dir}")  # every rank stops
        if lock_error is not None:
            raise lock_error
        if lock is not None:
            _remove_stale_temporaries(out_dir)
        result = _train(model, train_set, val_set, cfg, out_dir, resume, extra_loss, device, progress, d, tqdm,
                        allow_config_change)
        ok = True
        return result
    finally:
        if lock is not None:
            lock.release(failed=not ok)
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


def _resume(run: _Run, allow_config_change: bool = False) -> None:
    """Restore ``run`` from ``run.last_path``: weights, optimiser, scheduler, scaler, this rank's RNG states,
    iteration, history and best PSNR.

    Raises:
        ResumeConfigError: the saved training/network config differs (unless ``allow_config_change``).
        CheckpointError: not an srlib training checkpoint, or weights that do not fit the model.
    """
    last_path, d, cfg = run.last_path, run.d, run.cfg
    ckpt = load_checkpoint(last_path)
    if ckpt.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(f"{last_path} is not an srlib training checkpoint (format {ckpt.get('format')!r})")
    saved_name = ckpt.get("model_name")
    _check_resume_config(ckpt, cfg, run.raw, last_path, allow_config_change)
    try:
        load_weights(run.raw, ckpt["model"], source=f"checkpoint {last_path} (model {saved_name!r})")
    except CheckpointError as err:
        raise CheckpointError(f"{err} To start a new run, use another out_dir or resume=False.") from None
    run.optimizer.load_state_dict(ckpt["optimizer"])
    run.scheduler.load_state_dict(ckpt["scheduler"])
    if run.scaler.is_enabled() and ckpt.get("scaler"):
        run.scaler.load_state_dict(ckpt["scaler"])
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


def _train(model, train_set, val_set, cfg, out_dir, resume, extra_loss, device, progress, d, tqdm,
           allow_config_change=False) -> dict:
    run = _build_run(model, cfg, out_dir, device, d)
    if resume and run.last_path.is_file():
        _resume(run, allow_config_change)
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
    p.add_argument("--allow-config-change", action="store_true",
                   help="with --resume: continue even though the saved training/model config differs "
                        "(the differences are printed); without it such a resume is refused")
    p.add_argument("--skip-bad-images", action="store_true",
                   help="leave unreadable or too small training images out (listed) instead of stopping")
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


class _UsageError(Exception):
    """A bad command line found before training: printed as one line on stderr, exit status 2."""


def _check_out(out: Path) -> None:
    """``--out`` must be a folder (or not exist yet) in which this process can create files; nothing is
    created here.

    Raises:
        _UsageError: a file, under a file, or not writable (names the folder and why).
    """
    if out.exists() and not out.is_dir():
        raise _UsageError(f"--out {out} is a file, not a folder; choose a folder for the run")
    probe = out
    while not probe.exists():
        if probe.parent == probe:
            break
        probe = probe.parent
    if not probe.is_dir():
        raise _UsageError(f"--out {out}: {probe} is a file, so the run folder cannot be created there")
    try:
        fd, tmp = tempfile.mkstemp(prefix=".srlib-write-test.", dir=probe)
        os.close(fd)
        os.unlink(tmp)
    except OSError as err:
        where = "" if probe == out else f" (in {probe}, where it would be created)"
        raise _UsageError(f"--out {out}: cannot write there{where}: {err.strerror or err}; "
                          "choose a writable --out") from None


def _check_training_images(train_set: Any, patch_size: int, skip: bool, log: Callable[[str], None]) -> None:
    """Read every training image once before training (a corrupt file otherwise stops the run at whatever
    iteration first draws it, and again at every resume).

    Each unusable file (unreadable, not 8-bit RGB, smaller than the patch) gets one line on stderr. Without
    ``skip`` that is an error; with it (``--skip-bad-images``) the files are left out of the training set, and
    the log says how many and which.

    Raises:
        _UsageError: bad files and not ``skip``, or no usable file at all.
    """
    sources = getattr(train_set, "sources", None)
    if not sources:
        return
    good, bad = [], []
    for name, load in sources:
        where = getattr(load, "path", name)
        try:
            hr = load()
        except (OSError, ValueError) as err:
            msg = str(err)
            bad.append(msg if str(where) in msg else f"{where}: {msg}")
            continue
        if patch_size and min(hr.shape[-2:]) < patch_size:
            bad.append(f"{where}: {hr.shape[-1]} x {hr.shape[-2]} pixels, smaller than --patch-size {patch_size}")
            continue
        good.append((name, load))
    if not bad:
        return
    for line in bad:
        print(f"bad training image: {line}", file=sys.stderr, flush=True)
    if not skip:
        raise _UsageError(f"--train-dir: {len(bad)} of {len(sources)} training images cannot be used (listed above); "
                          f"fix or remove them, or pass --skip-bad-images to train on the other {len(good)}")
    if not good:
        raise _UsageError(f"--train-dir: none of the {len(sources)} training images can be used (listed above)")
    train_set.sources = good
    log(f"--skip-bad-images: leaving out {len(bad)} bad training image(s) (listed above), "
        f"training on {len(good)}")


def _build_datasets(args: argparse.Namespace, log: Callable[[str], None]) -> tuple[Dataset, Dataset | None]:
    from . import data as sdata

    if args.train_dir is not None:
        folder = Path(args.train_dir)
        if not folder.is_dir():
            raise FileNotFoundError(f"--train-dir: folder not found: {folder}")
    else:
        folder = sdata.default_train_folder()
    if folder is not None:
        try:
            train_set = sdata.HRFolderDataset(folder, args.scale, patch_size=args.patch_size, augment=True)
        except ValueError as err:
            if "patch" not in str(err):
                raise
            raise _UsageError(f"--patch-size {args.patch_size} (--scale {args.scale}): {_one_line(err)}") from None
        _check_training_images(train_set, args.patch_size, args.skip_bad_images, log)
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


def _flag_names(msg: str) -> str:
    """``TrainConfig.patch_size`` -> ``--patch-size`` in messages shown by the command line."""
    return re.sub(r"TrainConfig\.(\w+)", lambda m: "--" + m.group(1).replace("_", "-"), msg)


def _one_line(err: BaseException) -> str:
    msg = err.args[0] if isinstance(err, KeyError) and err.args else str(err)
    return " ".join(str(msg).split())


def _usage_exit(prog: str, err: BaseException | str) -> None:
    """Print ``prog: error: message`` (one line, as argparse does) and exit with status 2."""
    text = err if isinstance(err, str) else _one_line(err)
    print(f"{prog}: error: {_flag_names(text)}", file=sys.stderr, flush=True)
    raise SystemExit(2)


def _setup(args: argparse.Namespace, log: Callable[[str], None]) -> dict[str, Any]:
    """Everything the command line checks and builds before training (raises on bad input)."""
    from .models import build_model

    out = Path(args.out)
    _check_out(out)
    if (out / "last.pt").exists() and not args.resume:
        raise FileExistsError(f"{out} already holds a run (last.pt); pass --resume to continue it "
                              "or choose another --out")
    if args.device is not None:
        try:
            _check_device(args.device)
        except ValueError as err:
            raise _UsageError(f"--device: {err}") from None
    milestones = []
    for m in args.milestones.split(","):
        if m.strip():
            try:
                milestones.append(int(m))
            except ValueError:
                raise _UsageError(f"--milestones expects comma-separated integers (iterations), e.g. "
                                  f"200000,400000; got {args.milestones!r}") from None
    try:
        betas = tuple(float(b) for b in args.betas.split(","))
    except ValueError:
        betas = ()
    if len(betas) != 2 or not all(0 <= b < 1 for b in betas):
        raise ValueError(f"--betas expects two numbers in [0, 1) separated by a comma, got {args.betas!r}")
    cfg = TrainConfig(iterations=args.iterations, batch_size=args.batch_size, patch_size=args.patch_size, lr=args.lr,
                      betas=betas, eps=args.eps, weight_decay=args.weight_decay, milestones=tuple(milestones),
                      gamma=args.gamma, loss=args.loss, val_every=args.val_every,
                      ckpt_every=args.ckpt_every, log_every=args.log_every, amp=args.amp, seed=args.seed,
                      num_workers=args.num_workers, grad_clip=args.grad_clip, scale=args.scale,
                      val_chop=args.val_chop, tensorboard=args.tensorboard)
    overrides = {}
    for item in args.model_arg:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"--model-arg expects KEY=VALUE, got {item!r}")
        overrides[key.strip()] = _parse_value(value.strip())
    # Seed before building: the weight initialisation is part of the run that --seed reproduces.
    _seed_everything(args.seed)
    try:
        model = build_model(args.model, scale=args.scale, preset=args.preset, **overrides)
    except TypeError as err:  # an unknown config field
        raise _UsageError(f"--model-arg: {_one_line(err)}") from None
    except (ValueError, KeyError) as err:  # unknown model / preset, a bad --scale or --model-arg value
        raise _UsageError(f"--model {args.model} --scale {args.scale} --preset {args.preset}"
                          f"{''.join(' --model-arg ' + a for a in args.model_arg)}: {_one_line(err)}") from None
    if args.weights:
        load_weights(model, args.weights)
    train_set, val_set = _build_datasets(args, log)
    return {"out": out, "cfg": cfg, "model": model, "train_set": train_set, "val_set": val_set}


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point (``python -m srlib.train``, ``srlib-train``, ``torchrun -m srlib.train``).

    Every check that needs no training runs first: the command line, ``--out`` (a folder this process can
    write in, no run there unless ``--resume``), ``--device``, the model and its ``--model-arg`` s, the
    weights, and every training image (``--skip-bad-images`` leaves unusable ones out, saying which). A
    failure prints one line ``python -m srlib.train: error: ...`` on stderr (bad training images: one line
    each before it) and exits with status 2, as argparse does for its own errors; nothing is written.
    ``--seed`` seeds the RNGs before the network is built, so a run is reproducible from scratch.

    Returns:
        0 after training.

    Raises:
        SystemExit: status 2 on a usage error (above), on a run folder in use by another live training
            (names its PID and host), or on ``--resume`` with a changed configuration without
            ``--allow-config-change`` (names the differing fields).
    """
    parser = _parser()
    args = parser.parse_args(argv)
    rank = int(os.environ.get("RANK", "0"))
    log = (lambda msg: print(msg, flush=True)) if rank == 0 else (lambda msg: None)
    try:
        setup = _setup(args, log)
    except (_UsageError, ValueError, TypeError, KeyError, OSError, CheckpointError) as err:
        _usage_exit(parser.prog, err)
    out, model = setup["out"], setup["model"]
    n_params = sum(p.numel() for p in model.parameters() if p.requires_grad)
    log(f"{args.model} x{args.scale} ({args.preset}): {n_params:,} trainable parameters -> {out}")
    # Networks with an auxiliary training loss (ENLCN's contrastive term, Eq. 8-10) provide it themselves.
    extra_loss = model.make_extra_loss() if hasattr(model, "make_extra_loss") else None
    if extra_loss is not None:
        log(f"adding {type(extra_loss).__name__} to the L1 loss")
    try:
        result = train(model, setup["train_set"], setup["val_set"], setup["cfg"], out, resume=args.resume,
                       device=args.device, progress=not args.no_progress, extra_loss=extra_loss,
                       allow_config_change=args.allow_config_change)
    except (RunLockedError, ResumeConfigError) as err:
        _usage_exit(parser.prog, err)
    if result["best_psnr"] is not None:
        log(f"done: {result['iteration']} iterations, best PSNR {result['best_psnr']:.3f} dB "
            f"@ {result['best_iteration']}")
    else:
        log(f"done: {result['iteration']} iterations")
    return 0


if __name__ == "__main__":
    sys.exit(main())
