"""Score a network on the benchmark sets under the papers' protocol: ``python -m srlib.evaluate``
(console script ``srlib-evaluate``).

::

    python -m srlib.evaluate --model bicubic --scale 4                      # the papers' Bicubic row
    python -m srlib.evaluate --model hspan-small-x2 --sets Set5 Set14       # a shipped network (tiled)
    python -m srlib.evaluate --model nlsn --weights model_x2.pt --scale 2 --self-ensemble --save-sr sr/

The protocol of the five papers' tables (the MATLAB scripts of the SR literature; :mod:`srlib.metrics`):
SR clamped and quantised to 8 bits, Y of ITU-R BT.601 (MATLAB ``rgb2ycbcr``), ``scale`` pixels cropped at
every border, PSNR in dB and SSIM (Wang et al. 2004) on Y; grayscale-stored HR files (Set14 "bridge") are
compared on intensity as MATLAB does. The benchmark sets are read by :class:`srlib.data.BenchmarkDataset`
from ``$SRLIB_DATA/benchmark`` (``--data-root`` to override). The table is printed in the papers' row format,
one ``PSNR / SSIM`` column per set; ``--per-image FILE.csv|FILE.json`` writes every image's numbers.

The same seed (``--seed``, 0) is set before each set, as for the README's results table, so networks that
draw random projections at every forward (NLSN, ENLCN, DLSN) give the same numbers on every run.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import sys
from pathlib import Path
from typing import Any, Callable, Sequence

import torch

from srlib.sr import CLIError, _run_cli, add_model_arguments, load_super_resolver

__all__ = ["main", "evaluate_sets", "format_table", "write_per_image"]


def build_parser() -> argparse.ArgumentParser:
    """The ``python -m srlib.evaluate`` parser."""
    p = argparse.ArgumentParser(
        prog="srlib-evaluate",
        description="PSNR / SSIM on Y (BT.601, border = scale, 8-bit output) on the benchmark sets, as in the papers.",
        epilog="Example: srlib-evaluate --model bicubic --scale 2 --sets Set5 Set14")
    p.add_argument("--sets", nargs="+", default=None, metavar="SET",
                   help="benchmark sets, e.g. Set5 Set14 B100 Urban100 (default: every set present at --scale)")
    p.add_argument("--data-root", default=None, metavar="DIR",
                   help="folder holding the sets (default: $SRLIB_DATA/benchmark)")
    p.add_argument("--per-image", default=None, metavar="FILE",
                   help="write every image's PSNR/SSIM to FILE (.csv or .json)")
    p.add_argument("--save-sr", default=None, metavar="DIR",
                   help="save the SR images as DIR/<set>_x<scale>/<image>.png")
    p.add_argument("--overwrite", action="store_true",
                   help="replace existing --per-image / --save-sr files")
    p.add_argument("--no-ssim", action="store_true", help="PSNR only (faster on large images)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    add_model_arguments(p)
    return p


def _datasets(sets: Sequence[str] | None, scale: int, root: str | None) -> dict[str, Any]:
    from srlib.config import data_dir
    from srlib.data import BenchmarkDataset, available_benchmarks

    base = Path(root) if root is not None else data_dir() / "benchmark"
    if root is not None and not base.is_dir():
        raise CLIError(f"--data-root {root}: folder not found")
    available = available_benchmarks(base, scale=scale)
    if not available:
        raise CLIError(f"no benchmark set with x{scale} data under {base}; set SRLIB_DATA or run "
                       "`python -m srlib.data.download benchmark --root data`")
    names = list(sets) if sets else available
    missing = [n for n in names if n not in available]
    if missing:
        raise CLIError(f"benchmark set(s) {', '.join(missing)} not found at x{scale} under {base}; "
                       f"available: {', '.join(available)}")
    return {n: BenchmarkDataset(n, scale, root=base) for n in names}


def _save_dirs(args: argparse.Namespace, datasets: dict[str, Any], scale: int) -> dict[str, Path | None]:
    if args.save_sr is None:
        return {n: None for n in datasets}
    root = Path(args.save_sr)
    if root.exists() and not root.is_dir():
        raise CLIError(f"--save-sr {root} exists and is not a folder")
    dirs = {n: root / f"{n}_x{scale}" for n in datasets}
    if not args.overwrite:
        existing = [d / f"{ds.names[i] if hasattr(ds, 'names') else i}.png"
                    for n, ds in datasets.items() for d in [dirs[n]] for i in range(len(ds))]
        existing = [e for e in existing if e.exists()]
        if existing:
            raise CLIError(f"{len(existing)} SR file(s) exist already under {root} (e.g. {existing[0]}); "
                           "pass --overwrite to replace them")
    return dirs


def evaluate_sets(sr_fn: Callable[[torch.Tensor], torch.Tensor], datasets: dict[str, Any], scale: int, *,
                  ensemble: bool = False, ssim: bool = True, seed: int | None = 0,
                  save_dirs: dict[str, Path | None] | None = None, progress: bool = False) -> dict[str, dict]:
    """:func:`srlib.inference.evaluate` on every set, the global seed reset to ``seed`` before each.

    Args:
        sr_fn: network or callable LR ``(B, 3, h, w)`` -> SR ``(B, 3, s*h, s*w)`` in ``[0, 1]``.
        datasets: ``{"Set5": BenchmarkDataset("Set5", scale), ...}``.

    Returns:
        ``{set name: {"psnr", "ssim", "scale", "n_images", "per_image": [{"name", "psnr", "ssim"}]}}``.
    """
    from srlib.inference import evaluate

    results = {}
    for name, ds in datasets.items():
        if seed is not None:
            torch.manual_seed(seed)
        save = (save_dirs or {}).get(name)
        results[name] = evaluate(sr_fn, ds, scale, ensemble=ensemble, ssim=ssim, save_dir=save, progress=progress)
    return results


def format_table(model: str, results: dict[str, dict], scale: int) -> str:
    """The papers' row format: a header ``Set5 x2  Set14 x2 ...`` and one row ``model  PSNR / SSIM ...``
    (PSNR in dB with two decimals, SSIM with four)."""
    cells = []
    for r in results.values():
        cells.append(f"{r['psnr']:.2f}" + (f" / {r['ssim']:.4f}" if r.get("ssim") is not None else ""))
    heads = [f"{n} x{scale}" for n in results]
    widths = [max(len(h), len(c)) for h, c in zip(heads, cells)]
    w0 = max(len(model), len("model"))
    head = "  ".join([f"{'model':<{w0}}"] + [f"{h:>{w}}" for h, w in zip(heads, widths)])
    row = "  ".join([f"{model:<{w0}}"] + [f"{c:>{w}}" for c, w in zip(cells, widths)])
    return f"{head}\n{row}"


def write_per_image(path: Path, model: str, results: dict[str, dict], scale: int, meta: dict[str, Any]) -> Path:
    """Every image's numbers to ``path``: CSV (``set,scale,image,psnr,ssim``) or JSON (the means, the options
    and the per-image rows), written atomically.

    Raises:
        CLIError: the file name ends neither in ``.csv`` nor in ``.json``.
    """
    from srlib.checkpoint import _atomic_write

    suffix = path.suffix.lower()
    if suffix == ".csv":
        buf = io.StringIO()
        w = csv.writer(buf, lineterminator="\n")
        w.writerow(["model", "set", "scale", "image", "psnr", "ssim"])
        for s, r in results.items():
            for row in r["per_image"]:
                w.writerow([model, s, scale, row["name"], f"{row['psnr']:.4f}",
                            "" if row["ssim"] is None else f"{row['ssim']:.6f}"])
        text = buf.getvalue()
    elif suffix == ".json":
        text = json.dumps({"model": model, "scale": scale, **meta,
                           "sets": {s: {k: r[k] for k in ("psnr", "ssim", "n_images", "per_image")}
                                    for s, r in results.items()}}, indent=1)
    else:
        raise CLIError(f"--per-image {path}: the name must end in .csv or .json")
    _atomic_write(path, lambda tmp: Path(tmp).write_text(text))
    return path


def run(args: argparse.Namespace, log: Callable[[str], None] = print) -> dict[str, dict]:
    """Do what the parsed command line asks; returns the per-set results (see :func:`evaluate_sets`)."""
    per_image = Path(args.per_image) if args.per_image else None
    if per_image is not None:
        if per_image.suffix.lower() not in (".csv", ".json"):
            raise CLIError(f"--per-image {per_image}: the name must end in .csv or .json")
        if per_image.exists() and not args.overwrite:
            raise CLIError(f"--per-image {per_image} exists already; pass --overwrite to replace it")
    sr_fn = load_super_resolver(args)
    datasets = _datasets(args.sets, sr_fn.scale, args.data_root)
    save_dirs = _save_dirs(args, datasets, sr_fn.scale)
    log(f"{sr_fn.describe()}{', x8 self-ensemble' if args.self_ensemble else ''}; "
        f"{', '.join(f'{n} ({len(d)} images)' for n, d in datasets.items())}")
    results = evaluate_sets(sr_fn, datasets, sr_fn.scale, ensemble=args.self_ensemble, ssim=not args.no_ssim,
                            seed=args.seed, save_dirs=save_dirs, progress=not args.no_progress)
    label = sr_fn.name + ("+" if args.self_ensemble else "")
    log(format_table(label, results, sr_fn.scale))
    if per_image is not None:
        meta = {"self_ensemble": bool(args.self_ensemble), "tile": sr_fn.tile, "tile_overlap": sr_fn.overlap,
                "precision": args.precision, "seed": args.seed, "weights": sr_fn.source,
                "protocol": "Y (BT.601), border = scale, 8-bit SR"}
        write_per_image(per_image, label, results, sr_fn.scale, meta)
        log(f"per-image results: {per_image}")
    return results


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``python -m srlib.evaluate`` / ``srlib-evaluate``. Returns 0; bad input exits with 2."""
    return _run_cli(build_parser(), run, argv)


if __name__ == "__main__":
    sys.exit(main())
