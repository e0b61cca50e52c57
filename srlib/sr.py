"""Super-resolve your own images from the command line: ``python -m srlib.sr`` (console script ``srlib-sr``).

::

    python -m srlib.sr photo.jpg --out sr/ --model hspan-small-x2            # a shipped network
    python -m srlib.sr photos/ --out sr/ --model nlsn --weights model_x2.pt  # the authors' released checkpoint
    python -m srlib.sr "shots/*.png" --out sr/ --model runs/edsr/last.pt     # an srlib training run
    python -m srlib.sr photos/ --out sr/ --model bicubic --scale 4           # MATLAB-compatible bicubic

Inputs are files, folders (their images, not recursive) or glob patterns. Each result is written as
``OUT/<input stem>.png`` (8-bit RGB PNG, atomically). Nothing is written before every input has been read,
every output name is known to be free (or ``--overwrite`` is given) and the network is loaded; bad input
gives one line on stderr and exit status 2, as argparse does.

The model-loading helpers here (:func:`add_model_arguments`, :func:`load_super_resolver`) are shared with
``python -m srlib.evaluate``.
"""

from __future__ import annotations

import argparse
import ast
import contextlib
import glob
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import torch
from torch import nn

__all__ = ["main", "SuperResolver", "load_super_resolver", "add_model_arguments", "collect_inputs",
           "DEFAULT_TILES", "CLIError"]

#: LR tile and overlap used by default for networks whose attention holds a dense ``L x L`` score matrix per
#: image (HSPAN: about 0.9 GB and hours on CPU for a whole 1024² image): attention then works within
#: ``tile + 2 overlap`` LR windows. These are the values of the README's results table
#: (:data:`srlib.course.DENSE_TILE`, :data:`srlib.course.DENSE_OVERLAP`). Other networks run on whole images
#: unless ``--tile`` is given.
DENSE_TILE, DENSE_OVERLAP = 32, 8
DEFAULT_TILES: dict[str, tuple[int, int]] = {"hspan": (DENSE_TILE, DENSE_OVERLAP), "hspan_s": (DENSE_TILE, DENSE_OVERLAP)}
#: ``--tile-overlap`` when ``--tile N`` is given without it (LR pixels of context on each side).
DEFAULT_OVERLAP = 16
PRECISIONS = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


class CLIError(ValueError):
    """Bad command-line input; the message is printed as one line and the command exits with status 2."""


# ----------------------------------------------------------------------------------------------------------
# Loading a super-resolver
# ----------------------------------------------------------------------------------------------------------
@dataclass
class SuperResolver:
    """A loaded network (or bicubic) with the way to run it.

    Calling it maps LR ``(B, 3, h, w)`` RGB in ``[0, 1]`` (any device) to SR ``(B, 3, s*h, s*w)`` float32 on the
    CPU, unclamped; use it through :func:`srlib.inference.super_resolve` (checks, self-ensemble, clamp).

    Attributes:
        name: what the table/progress bar calls it (``"hspan-small-x2"``, ``"nlsn"``, ``"bicubic"``).
        scale: upscaling factor.
        network: the ``nn.Module`` in eval mode on ``device`` (``None`` for bicubic).
        tile, overlap: LR tile and context of :func:`srlib.inference.forward_chop` (``tile=None``: whole image).
        device: where the network runs; dtype: autocast dtype on CUDA (``float32``: no autocast).
        source: where the weights came from (for messages).
    """

    name: str
    scale: int
    network: nn.Module | None
    tile: int | None = None
    overlap: int = DEFAULT_OVERLAP
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    dtype: torch.dtype = torch.float32
    source: str = ""

    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        assert self.network is not None
        autocast = (torch.autocast(self.device.type, dtype=self.dtype) if self.dtype != torch.float32
                    else contextlib.nullcontext())
        with autocast:
            out = self.network(x)
        out = out[0] if isinstance(out, (tuple, list)) else out
        return out.float()

    @torch.no_grad()
    def __call__(self, lr: torch.Tensor) -> torch.Tensor:
        if self.network is None:
            from srlib.data import imresize

            return imresize(lr.float().cpu(), self.scale)
        x = lr.to(self.device)
        if self.tile:
            from srlib.inference import forward_chop

            sr = forward_chop(self._forward, x, self.scale, tile=self.tile, overlap=self.overlap, tile_batch=1)
        else:
            sr = self._forward(x)
        return sr.cpu()

    def describe(self) -> str:
        """One line: network, scale, device, precision, tiling."""
        if self.network is None:
            return f"bicubic x{self.scale} (MATLAB-compatible imresize)"
        tiling = f"tiles of {self.tile} LR px, overlap {self.overlap}" if self.tile else "whole images"
        prec = {v: k for k, v in PRECISIONS.items()}[self.dtype]
        return f"{self.name} x{self.scale} on {self.device} ({prec}, {tiling}){' from ' + self.source if self.source else ''}"


def add_model_arguments(p: argparse.ArgumentParser) -> None:
    """The options shared by ``srlib.sr`` and ``srlib.evaluate``: model, weights, scale, tiling, device, precision."""
    g = p.add_argument_group("model")
    g.add_argument("--model", required=True, metavar="NAME",
                   help="a shipped network (hspan-small-x2, nlsn-small-x2, ...: see srlib.list_pretrained()), "
                        "a registered architecture (edsr, nlsn, enlcn, dlsn, hspan, lcoan; then give --weights), "
                        "'bicubic', or the path of an srlib training checkpoint (runs/<name>/last.pt)")
    g.add_argument("--weights", default=None, metavar="FILE|NAME",
                   help="weights for an architecture given by --model: an srlib checkpoint or .safetensors file, "
                        "the authors' released state_dict (model_x2.pt) or a shipped name")
    g.add_argument("--scale", type=int, default=None,
                   help="upscaling factor 2, 3 or 4 (default: the weights' scale, else 2)")
    g.add_argument("--preset", default="paper",
                   help="configuration of an architecture given by --model: paper (the authors' checkpoints) "
                        "or small (default: %(default)s)")
    g.add_argument("--model-arg", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config field of the architecture, e.g. --model-arg n_feats=64 (repeatable)")
    g.add_argument("--tile", type=int, default=None, metavar="N",
                   help="run the network on N x N LR tiles to bound memory; 0: whole images "
                        f"(default: {DENSE_TILE} for "
                        f"{' and '.join(DEFAULT_TILES)}, whose attention holds an L x L matrix; whole images for "
                        "the others)")
    g.add_argument("--tile-overlap", type=int, default=None, metavar="N",
                   help="LR pixels of context around each tile "
                        f"(default: {DENSE_OVERLAP} for {' and '.join(DEFAULT_TILES)}; "
                        f"{DEFAULT_OVERLAP} otherwise)")
    g.add_argument("--self-ensemble", action="store_true",
                   help="average over the 8 flips/rotations (the papers' '+' rows; 8 times slower)")
    g.add_argument("--device", default=None,
                   help="cpu, cuda, cuda:1, ... (default: cuda if available, else cpu)")
    g.add_argument("--precision", choices=tuple(PRECISIONS), default="fp32",
                   help="network arithmetic: fp32, or bf16/fp16 autocast on CUDA (default: %(default)s)")
    g.add_argument("--seed", type=int, default=0,
                   help="seed of the random projections NLSN/ENLCN/DLSN draw at every forward, so results "
                        "repeat (default: %(default)s)")


def _parse_overrides(items: Sequence[str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise CLIError(f"--model-arg expects KEY=VALUE, got {item!r}")
        try:
            out[key.strip()] = ast.literal_eval(value.strip())
        except (ValueError, SyntaxError):
            out[key.strip()] = value.strip()
    return out


def _device(spec: str | None) -> torch.device:
    if spec is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(spec)
    except RuntimeError as err:
        raise CLIError(f"--device {spec!r}: {err}") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise CLIError(f"--device {spec}: CUDA is not available on this machine (torch {torch.__version__}); "
                       "use --device cpu")
    if dev.type == "cuda" and dev.index is not None and dev.index >= torch.cuda.device_count():
        raise CLIError(f"--device {spec}: only {torch.cuda.device_count()} CUDA device(s)")
    return dev


def _check_scale(scale: int | None, wanted: int, what: str) -> int:
    if scale is not None and scale != wanted:
        raise CLIError(f"--scale {scale} does not match {what}, which is x{wanted}")
    return wanted


def _load_network(args: argparse.Namespace) -> tuple[str, int, nn.Module | None, str]:
    """``(name, scale, network or None for bicubic, source)`` from ``--model`` / ``--weights`` / ``--scale``."""
    from srlib.checkpoint import load_checkpoint, load_weights
    from srlib.models import build_model, list_models
    from srlib.pretrained import list_pretrained, pretrained, pretrained_spec

    model, weights = str(args.model), args.weights
    overrides = _parse_overrides(args.model_arg)
    if args.scale is not None and args.scale not in (2, 3, 4):
        raise CLIError(f"--scale must be 2, 3 or 4, got {args.scale}")
    shipped = list_pretrained()
    key = model.lower()
    if key == "bicubic":
        if weights:
            raise CLIError("--model bicubic takes no --weights")
        return "bicubic", args.scale or 2, None, ""
    if key in shipped:
        if weights:
            raise CLIError(f"--model {model} is a shipped network with its own weights; drop --weights "
                           f"(or give --model {pretrained_spec(key).model} --weights FILE)")
        spec = pretrained_spec(key)
        scale = _check_scale(args.scale, spec.scale, f"the shipped network {key}")
        return key, scale, pretrained(key), f"srlib/weights/{spec.filename}"
    path = Path(model)
    if key not in list_models():
        if path.suffix in (".pt", ".pth", ".ckpt") or path.exists():
            if not path.is_file():
                raise CLIError(f"--model {model}: checkpoint file not found")
            if weights:
                raise CLIError(f"--model {model} is a checkpoint with its own weights; drop --weights")
            return _from_training_checkpoint(path, args, overrides)
        raise CLIError(f"unknown --model {model!r}; choose a shipped network ({', '.join(shipped)}), an "
                       f"architecture ({', '.join(list_models())}), 'bicubic' or a training checkpoint file")
    if not weights:
        raise CLIError(f"--model {model} is an architecture without weights: give --weights FILE "
                       f"(or a shipped network: {', '.join(n for n in shipped if n.startswith(key)) or 'none'})")
    if str(weights).lower() in shipped:
        spec = pretrained_spec(str(weights).lower())
        if spec.model != key:
            raise CLIError(f"--weights {weights} are {spec.model} weights, not {key}")
        scale = _check_scale(args.scale, spec.scale, f"the shipped weights {spec.name}")
        return spec.name, scale, pretrained(spec.name), f"srlib/weights/{spec.filename}"
    wpath = Path(weights)
    if not wpath.is_file():
        raise CLIError(f"--weights {weights}: file not found (nor a shipped name: {', '.join(shipped)})")
    scale = args.scale or 2
    if wpath.suffix != ".safetensors":
        ckpt = load_checkpoint(wpath)
        if isinstance(ckpt.get("model_config"), dict) and not overrides and args.preset == "paper":
            # an srlib training checkpoint records how its network was built: use that
            return _from_training_checkpoint(wpath, args, overrides, ckpt=ckpt, expect=key)
        obj: Any = ckpt
    else:
        obj = wpath
    try:
        net = build_model(key, scale=scale, preset=args.preset, **overrides)
    except TypeError as err:
        raise CLIError(str(err)) from None
    load_weights(net, obj, source=f"--weights {wpath}")
    return key, scale, net, str(wpath)


def _from_training_checkpoint(path: Path, args: argparse.Namespace, overrides: dict[str, Any], *,
                              ckpt: dict | None = None, expect: str | None = None):
    """An srlib training checkpoint (``last.pt``/``best.pt``): its ``model_name`` and ``model_config`` rebuild
    the network exactly."""
    import dataclasses

    from srlib.checkpoint import load_checkpoint, load_weights
    from srlib.models import build_model, get_config

    ckpt = ckpt if ckpt is not None else load_checkpoint(path)
    name, mcfg = ckpt.get("model_name"), ckpt.get("model_config")
    if not isinstance(name, str) or not isinstance(mcfg, dict):
        raise CLIError(f"{path} does not record its network (no model_name/model_config): give the architecture "
                       f"with --model NAME --weights {path}")
    if expect is not None and name.lower() != expect:
        raise CLIError(f"{path} holds a {name} network, not {expect}")
    fields = {f.name for f in dataclasses.fields(get_config(name))}
    cfg = {k: (tuple(v) if isinstance(v, list) else v) for k, v in mcfg.items() if k in fields}
    scale = _check_scale(args.scale, int(cfg.pop("scale", 2)), str(path))
    cfg.update(overrides)
    net = build_model(name, scale=scale, preset="paper", **cfg)
    load_weights(net, ckpt, source=f"checkpoint {path}")
    return name.lower(), scale, net, str(path)


def load_super_resolver(args: argparse.Namespace) -> SuperResolver:
    """Build the :class:`SuperResolver` the parsed options ask for (see :func:`add_model_arguments`).

    Raises:
        CLIError: inconsistent or unknown options (scale, device, precision, tile, model name).
        FileNotFoundError / CheckpointError: weights missing or not fitting the network (names the file).
    """
    device = _device(args.device)
    dtype = PRECISIONS[args.precision]
    if dtype != torch.float32 and device.type != "cuda":
        raise CLIError(f"--precision {args.precision} is for CUDA devices (autocast on the GPU); on {device} "
                       "srlib runs in fp32: drop --precision")
    if args.tile is not None and args.tile < 0:
        raise CLIError(f"--tile must be >= 0 (0: whole images), got {args.tile}")
    if args.tile_overlap is not None and args.tile_overlap < 0:
        raise CLIError(f"--tile-overlap must be >= 0, got {args.tile_overlap}")
    name, scale, net, source = _load_network(args)
    arch = getattr(net, "model_name", name.split("-")[0]) if net is not None else "bicubic"
    tile, overlap = DEFAULT_TILES.get(arch, (None, DEFAULT_OVERLAP))
    if args.tile is not None:
        tile, overlap = (args.tile or None), DEFAULT_OVERLAP
    if args.tile_overlap is not None:
        overlap = args.tile_overlap
    if net is not None:
        if getattr(net, "pretrained_name", "").startswith("hspan") and hasattr(net, "set_topk"):
            # The shipped HSPAN uses exact soft thresholding: the output is the same for any top-k; starting the
            # search at 256 skips the 64 -> 128 -> 256 retries (speed only; srlib.course.shipped does the same).
            net.set_topk(256)
        net = net.to(device).eval()
    return SuperResolver(name, scale, net, tile, overlap, device, dtype, source)


# ----------------------------------------------------------------------------------------------------------
# Inputs and outputs
# ----------------------------------------------------------------------------------------------------------
def collect_inputs(specs: Sequence[str]) -> list[Path]:
    """Image files named by ``specs``: files, folders (their images, sorted, not recursive) or glob patterns.

    Raises:
        CLIError: a path that does not exist and matches nothing, a folder or pattern without images, or a file
            whose extension is not an image extension (:data:`srlib.data.IMAGE_EXTENSIONS`).
    """
    from srlib.data import IMAGE_EXTENSIONS

    files: list[Path] = []
    for spec in specs:
        p = Path(spec)
        if p.is_dir():
            found = sorted(q for q in p.iterdir() if q.is_file() and q.suffix.lower() in IMAGE_EXTENSIONS)
            if not found:
                raise CLIError(f"no image files ({', '.join(IMAGE_EXTENSIONS)}) in folder {p}")
            files.extend(found)
        elif p.is_file():
            if p.suffix.lower() not in IMAGE_EXTENSIONS:
                raise CLIError(f"{p}: not an image file name (expected {', '.join(IMAGE_EXTENSIONS)})")
            files.append(p)
        elif glob.has_magic(spec):
            found = sorted(Path(q) for q in glob.glob(spec, recursive=True)
                           if Path(q).is_file() and Path(q).suffix.lower() in IMAGE_EXTENSIONS)
            if not found:
                raise CLIError(f"pattern {spec!r} matches no image file")
            files.extend(found)
        else:
            raise CLIError(f"input not found: {spec}")
    unique: list[Path] = []
    seen: set[Path] = set()
    for f in files:
        r = f.resolve()
        if r not in seen:
            seen.add(r)
            unique.append(f)
    return unique


def plan_outputs(files: Sequence[Path], out_dir: Path, *, overwrite: bool) -> list[Path]:
    """``out_dir/<stem>.png`` for every input, checked before anything is written.

    Raises:
        CLIError: two inputs with the same stem, an output that is one of the inputs, or existing outputs
            without ``overwrite`` (names the first ones).
    """
    if out_dir.exists() and not out_dir.is_dir():
        raise CLIError(f"--out {out_dir} exists and is not a folder")
    outputs = [out_dir / f"{f.stem}.png" for f in files]
    by_name: dict[Path, Path] = {}
    for f, o in zip(files, outputs):
        if o in by_name:
            raise CLIError(f"{by_name[o]} and {f} would both be written to {o}; super-resolve them into "
                           "different --out folders")
        by_name[o] = f
        if o.exists() and o.resolve() == f.resolve():
            raise CLIError(f"output {o} would replace its own input; choose another --out")
    existing = [o for o in outputs if o.exists()]
    if existing and not overwrite:
        shown = ", ".join(str(o) for o in existing[:3]) + (f" and {len(existing) - 3} more" if len(existing) > 3 else "")
        raise CLIError(f"{len(existing)} output file(s) exist already ({shown}); pass --overwrite to replace them")
    return outputs


# ----------------------------------------------------------------------------------------------------------
# Command line
# ----------------------------------------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    """The ``python -m srlib.sr`` parser."""
    p = argparse.ArgumentParser(
        prog="srlib-sr", description="Super-resolve image files with a shipped, trained or released network.",
        epilog="Example: srlib-sr photo.jpg --out sr/ --model hspan-small-x2")
    p.add_argument("inputs", nargs="+", metavar="INPUT",
                   help="image file, folder of images (not recursive) or glob pattern such as 'shots/*.jpg'")
    p.add_argument("--out", "-o", required=True, metavar="DIR",
                   help="output folder; each result is DIR/<input name>.png (created if needed)")
    p.add_argument("--overwrite", action="store_true", help="replace output files that exist already")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    add_model_arguments(p)
    return p


def _fail(parser: argparse.ArgumentParser, err: BaseException) -> None:
    msg = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
    parser.exit(2, f"{parser.prog}: error: {msg}\n")


def _run_cli(parser: argparse.ArgumentParser, run: Callable[[argparse.Namespace], Any], argv: Sequence[str] | None,
             extra_errors: tuple[type[BaseException], ...] = ()) -> int:
    """The ``main`` of the srlib commands (``srlib-sr``, ``srlib-evaluate``): parse ``argv``, call ``run(args)``.

    The errors of bad input (:class:`CLIError`, a missing file, an unreadable image or checkpoint, a
    ``ValueError`` / ``TypeError`` such as a config value a network rejects, and ``extra_errors``) print
    ``<prog>: error: <first line of the message>`` on stderr and exit with status 2 (:func:`_fail`); any
    other exception propagates. Returns 0.
    """
    from srlib.checkpoint import CheckpointError
    from srlib.data import ImageError

    args = parser.parse_args(argv)
    try:
        run(args)
    except (CLIError, FileNotFoundError, ImageError, CheckpointError, ValueError, TypeError, *extra_errors) as err:
        _fail(parser, err)
    return 0


def run(args: argparse.Namespace, log: Callable[[str], None] = print) -> list[Path]:
    """Do what the parsed command line asks; returns the written files.

    Raises:
        CLIError, FileNotFoundError, srlib.data.ImageError, srlib.checkpoint.CheckpointError: bad input,
            raised before any file is written.
    """
    from tqdm.auto import tqdm

    from srlib.data import load_image, save_image
    from srlib.inference import super_resolve

    files = collect_inputs(args.inputs)
    outputs = plan_outputs(files, Path(args.out), overwrite=args.overwrite)
    for f in files:  # read every input once before loading the network or writing anything
        load_image(f, allow_gray=True)
    sr_fn = load_super_resolver(args)
    log(f"{len(files)} image(s) -> {args.out}: {sr_fn.describe()}"
        + (", x8 self-ensemble" if args.self_ensemble else ""))
    written: list[Path] = []
    for f, o in tqdm(list(zip(files, outputs)), desc="srlib-sr", unit="image", disable=args.no_progress):
        lr = load_image(f, allow_gray=True)
        torch.manual_seed(args.seed)  # same random projections for every image, whatever the order
        sr = super_resolve(sr_fn, lr, ensemble=args.self_ensemble, clamp=True)
        written.append(save_image(sr, o))
    return written


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``python -m srlib.sr`` / ``srlib-sr``. Returns 0; bad input exits with status 2."""
    return _run_cli(build_parser(), run, argv, (FileExistsError,))  # FileExistsError: output there, no --overwrite


if __name__ == "__main__":
    sys.exit(main())
