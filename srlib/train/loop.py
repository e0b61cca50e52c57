"""The training loop: :func:`train` and its steps (build, resume, batches, optimisation step, log, validation, checkpoint)."""

from __future__ import annotations

import dataclasses
import json
import math
import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Mapping, Sequence

import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import DataLoader, Dataset

from .._checks import NonFiniteError
from ..checkpoint import CheckpointError, _atomic_write, load_checkpoint, load_weights, save_checkpoint

from .config import CHECKPOINT_FORMAT, ExtraLoss, TrainConfig
from .distributed import _DistContext, _gather, _setup_distributed
from .resume import _check_resume_config
from .runlock import RunLockedError, _RunLock, _remove_stale_temporaries
from .seeding import InfiniteSampler, SeededDataset, _rng_state, _seed_everything, _seed_from, _set_rng_state


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
    from ..inference import evaluate

    devices = [device] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(cfg.seed)
        return float(evaluate(model, val_set, scale, chop=cfg.val_chop, ssim=False)["psnr"])


#: Fields that may change when a run is resumed: they do not touch the updates (length, periods, logging,
#: workers, tiled validation). Every other field of :class:`TrainConfig`, the network's name and every field of
#: its config must be as saved, unless ``allow_config_change`` is given.

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
    dist_ctx, device = _setup_distributed(model, device)
    lock = _RunLock(out_dir) if dist_ctx.main else None
    ok = False
    try:
        lock_error: RunLockedError | None = None
        if lock is not None:
            try:
                lock.acquire()
            except RunLockedError as err:
                lock_error = err
        if dist_ctx.world_size > 1 and _gather(lock_error is not None, dist_ctx)[0] and lock_error is None:
            raise RunLockedError(f"rank 0 could not lock the run folder {out_dir}")  # every rank stops
        if lock_error is not None:
            raise lock_error
        if lock is not None:
            _remove_stale_temporaries(out_dir)
        result = _train(model, train_set, val_set, cfg, out_dir, resume, extra_loss, device, progress, dist_ctx, tqdm,
                        allow_config_change)
        ok = True
        return result
    finally:
        if lock is not None:
            lock.release(failed=not ok)
        if dist_ctx.created_group:
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
    dist: _DistContext
    model: nn.Module  # the model itself (saved, validated)
    step_module: nn.Module  # what the step calls: ``model``, or its DistributedDataParallel wrapper
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
    if run.dist.world_size > 1:
        dist.all_reduce(flag, op=dist.ReduceOp.MIN)  # the earliest bad iteration of any rank
    first = 0 if int(flag) == none else int(flag)
    bad_weights = [n for n, t in run.model.state_dict().items()
                   if t.is_floating_point() and not bool(torch.isfinite(t).all())]
    if first or bad_weights:
        where = (f"non-finite training loss at iteration {first}" if first
                 else f"non-finite weights {bad_weights[:5]}")
        raise FloatingPointError(f"{where}; stopped without saving (last checkpoint: "
                                 f"{run.last_path if run.last_path.exists() else 'none'})")


def _build_run(model: nn.Module, cfg: TrainConfig, out_dir: Path, device: torch.device, dist_ctx: _DistContext) -> _Run:
    """Model on ``device`` (wrapped in DDP when ``dist_ctx.world_size > 1``), Adam, step decay, AMP scaler and loss."""
    raw = model.to(device)
    net: nn.Module = raw
    if dist_ctx.world_size > 1:
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
    return _Run(cfg, out_dir, device, dist_ctx, raw, net, params, optimizer, scheduler, scaler, loss_fn, use_amp, amp_dtype)


def _resume(run: _Run, allow_config_change: bool = False) -> None:
    """Restore ``run`` from ``run.last_path``: weights, optimiser, scheduler, scaler, this rank's RNG states,
    iteration, history and best PSNR.

    Raises:
        ResumeConfigError: the saved training/network config differs (unless ``allow_config_change``).
        CheckpointError: not an srlib training checkpoint, or weights that do not fit the model.
    """
    last_path, dist_ctx, cfg = run.last_path, run.dist, run.cfg
    ckpt = load_checkpoint(last_path)
    if ckpt.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(f"{last_path} is not an srlib training checkpoint (format {ckpt.get('format')!r})")
    saved_name = ckpt.get("model_name")
    _check_resume_config(ckpt, cfg, run.model, last_path, allow_config_change)
    try:
        load_weights(run.model, ckpt["model"], source=f"checkpoint {last_path} (model {saved_name!r})")
    except CheckpointError as err:
        raise CheckpointError(f"{err} To start a new run, use another out_dir or resume=False.") from None
    run.optimizer.load_state_dict(ckpt["optimizer"])
    run.scheduler.load_state_dict(ckpt["scheduler"])
    if run.scaler.is_enabled() and ckpt.get("scaler"):
        run.scaler.load_state_dict(ckpt["scaler"])
    rng = ckpt["rng"]
    if len(rng) == dist_ctx.world_size:
        _set_rng_state(rng[dist_ctx.rank], run.device)
    else:
        warnings.warn(f"{last_path} was written by {len(rng)} rank(s), now {dist_ctx.world_size}: RNG states reseeded",
                      stacklevel=4)
        _seed_everything(_seed_from(cfg.seed, 2, ckpt["iteration"], dist_ctx.rank))
    run.start = run.resumed_from = int(ckpt["iteration"])
    run.history = {"train": list(ckpt["history"]["train"]), "val": list(ckpt["history"]["val"])}
    best = ckpt.get("best", {})
    run.best_psnr = best.get("psnr") if best.get("psnr") is not None else -math.inf
    run.best_iter = best.get("iteration")


def _batches(run: _Run, train_set: Dataset) -> Iterator[dict]:
    """Endless collated batches from ``run.start`` on (:class:`InfiniteSampler` + :class:`SeededDataset`)."""
    cfg, dist_ctx = run.cfg, run.dist
    run.sampler = InfiniteSampler(len(train_set), cfg.batch_size, seed=cfg.seed, rank=dist_ctx.rank,
                                  world_size=dist_ctx.world_size, start_iteration=run.start)
    # The loader's own generator (worker base seeds) keeps iter(loader) from drawing on the global RNG, which
    # networks such as NLSN use in their forward pass: a resumed run must see the same global stream.
    loader = DataLoader(SeededDataset(train_set), batch_size=cfg.batch_size, sampler=run.sampler, drop_last=True,
                        num_workers=cfg.num_workers, pin_memory=run.device.type == "cuda",
                        generator=torch.Generator().manual_seed(_seed_from(cfg.seed, 3, run.start, dist_ctx.rank)))
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
            output = run.step_module(lr_img)
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
    if run.dist.world_size > 1:
        dist.all_reduce(mean)
        mean /= run.dist.world_size
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
    if run.dist.main:
        psnr = _validate(run.model, val_set, scale, run.cfg, run.device)
        run.history["val"].append({"iteration": done, "psnr": psnr})
        if psnr > run.best_psnr:
            run.best_psnr, run.best_iter, new_best = psnr, done, True
        if progress and bar is not None:
            bar.write(f"[{done}] val PSNR {psnr:.3f} dB (best {run.best_psnr:.3f} dB @ {run.best_iter})")
        if run.writer is not None:
            run.writer.add_scalar("val/psnr", psnr, done)
            run.writer.add_image("val/sr", _sr_crop(run.model, val_set, run.cfg.seed, run.device), done)
            run.writer.flush()
    run.step_module.train()
    return bool(_gather(new_best, run.dist)[0])


def _save_checkpoint(run: _Run, done: int, paths: Sequence[Path]) -> None:
    """Write the full training state after ``done`` iterations to each of ``paths`` (rank 0; every rank's RNG
    state is gathered first, so every rank must call this) and ``history.json`` beside them."""
    _stop_if_non_finite(run)  # never write a diverged model
    rngs = _gather(_rng_state(run.device), run.dist)  # collective: every rank takes part
    if not run.dist.main:
        return
    raw, cfg = run.model, run.cfg
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


def _train(model, train_set, val_set, cfg, out_dir, resume, extra_loss, device, progress, dist_ctx, tqdm,
           allow_config_change=False) -> dict:
    run = _build_run(model, cfg, out_dir, device, dist_ctx)
    if resume and run.last_path.is_file():
        _resume(run, allow_config_change)
    else:
        _seed_everything(cfg.seed + dist_ctx.rank)
    scale = _infer_scale(run.model, cfg, val_set) if val_set is not None else cfg.scale
    batches = _batches(run, train_set)
    if dist_ctx.main:
        out_dir.mkdir(parents=True, exist_ok=True)
        if cfg.tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            run.writer = SummaryWriter(log_dir=str(out_dir / "tensorboard"), purge_step=run.start + 1)
    bar = tqdm(total=cfg.iterations, initial=run.start, disable=not (progress and dist_ctx.main), desc="train",
               dynamic_ncols=True)
    try:
        run.step_module.train()
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
    dist_ctx.barrier()
    return {
        "history": run.history,
        "iteration": max(run.start, cfg.iterations),
        "best_psnr": None if run.best_psnr == -math.inf else run.best_psnr,
        "best_iteration": run.best_iter,
        "checkpoint": str(run.last_path) if dist_ctx.main and run.last_path.exists() else None,
        "best_checkpoint": str(run.best_path) if dist_ctx.main and run.best_path.exists() else None,
        "resumed_from": run.resumed_from,
    }
