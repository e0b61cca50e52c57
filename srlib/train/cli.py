"""Command line ``python -m srlib.train`` and the papers' schedules (:data:`PAPER_SCHEDULES`, :func:`paper_command`)."""

from __future__ import annotations

import argparse
import ast
import os
import re
import sys
import tempfile
from pathlib import Path
from typing import Any, Callable, Sequence

from torch.utils.data import Dataset

from ..checkpoint import CheckpointError, load_weights

from .config import TrainConfig
from .distributed import _check_device
from .loop import train
from .resume import ResumeConfigError
from .runlock import RunLockedError
from .seeding import _seed_everything


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
    defaults = TrainConfig()
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
    p.add_argument("--iterations", type=int, default=defaults.iterations,
                   help="optimisation steps in total (default: %(default)s)")
    p.add_argument("--batch-size", type=int, default=defaults.batch_size,
                   help="HR/LR pairs per step, per process under torchrun (default: %(default)s)")
    p.add_argument("--patch-size", type=int, default=defaults.patch_size, help="HR patch side (default: %(default)s)")
    p.add_argument("--lr", type=float, default=defaults.lr, help="Adam learning rate (default: %(default)s)")
    p.add_argument("--milestones", default=",".join(map(str, defaults.milestones)),
                   help="comma-separated iterations at which the learning rate is multiplied by --gamma "
                        "(default: %(default)s)")
    p.add_argument("--gamma", type=float, default=defaults.gamma,
                   help="learning-rate factor at each milestone (default: %(default)s)")
    p.add_argument("--betas", default=",".join(map(str, defaults.betas)),
                   help="Adam betas, comma-separated B1,B2 (default: %(default)s)")
    p.add_argument("--eps", type=float, default=defaults.eps, help="Adam epsilon (default: %(default)s)")
    p.add_argument("--weight-decay", type=float, default=defaults.weight_decay,
                   help="Adam weight decay (default: %(default)s)")
    p.add_argument("--loss", choices=("l1", "mse"), default=defaults.loss, help="training loss (default: %(default)s)")
    p.add_argument("--val-every", type=int, default=defaults.val_every,
                   help="validate every N iterations, 0: only at the end (default: %(default)s)")
    p.add_argument("--ckpt-every", type=int, default=defaults.ckpt_every,
                   help="write OUT/last.pt every N iterations, 0: only at the end (default: %(default)s)")
    p.add_argument("--log-every", type=int, default=defaults.log_every,
                   help="record the mean loss every N iterations (default: %(default)s)")
    p.add_argument("--seed", type=int, default=defaults.seed,
                   help="seed of the weights, sample order and augmentation (default: %(default)s)")
    p.add_argument("--num-workers", type=int, default=defaults.num_workers,
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
    from .. import data as sdata

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
    from ..models import build_model

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
