"""Inference helpers: tiled forward ("chop"), x8 self-ensemble, and benchmark evaluation.

* :func:`forward_chop` runs a network tile by tile with an overlap margin, the way the official repositories'
  ``--chop`` option bounds memory on large images (EDSR-PyTorch ``src/model/__init__.py``, ``forward_chop``,
  which recursively quarters the image with a fixed ``shave``; here the tiles form a regular grid, all
  tiles have the same size and several run in one batch). For a network whose receptive field radius fits in
  the overlap (any pure-convolution EDSR), the result equals the full forward. Attention networks see only
  their tile, so tiled results differ from a full forward there, as in the official code.
* :func:`self_ensemble` averages the network over the 8 flips/rotations of the input (Lim et al. 2017,
  "geometric self-ensemble", the "+" models in the papers' tables).
* :func:`evaluate` computes mean PSNR / SSIM (Y channel, ``scale`` border cropped, :mod:`srlib.metrics`) over a
  dataset of ``{"lr", "hr", "name"}`` items.

Images are RGB ``(B, 3, h, w)`` (or ``(3, h, w)``) in ``[0, 1]``; networks use ``rgb_range = 1``.
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Callable, Iterator

import torch
from torch import nn

from srlib._checks import check_finite, check_image_tensor, check_int

__all__ = ["forward_chop", "self_ensemble", "dihedral", "inverse_dihedral", "super_resolve", "evaluate"]

Forward = Callable[[torch.Tensor], torch.Tensor]


def _sr_only(out: Any) -> torch.Tensor:
    """Networks may return ``(sr, aux)`` (ENLCN in train mode); the SR image is the first element."""
    return out[0] if isinstance(out, (tuple, list)) else out


def _as_forward(model: nn.Module | Forward) -> Forward:
    return lambda x: _sr_only(model(x))


def _windows(size: int, tile: int, overlap: int) -> list[tuple[int, int, int]]:
    """1-D tiling: ``(core_start, window_start, window_len)`` so that every core of length ``tile`` has
    ``overlap`` context on each side or reaches the image border; all windows have the same length."""
    if size <= tile:
        return [(0, 0, size)]
    win = min(tile + 2 * overlap, size)
    starts = list(range(0, size - tile, tile)) + [size - tile]
    return [(s, min(max(s - overlap, 0), size - win), win) for s in starts]


@torch.no_grad()
def forward_chop(
    model: nn.Module | Forward,
    lr: torch.Tensor,
    scale: int | None = None,
    tile: int = 96,
    overlap: int = 16,
    *,
    tile_batch: int = 4,
) -> torch.Tensor:
    """Super-resolve ``lr`` tile by tile.

    The LR image is covered by a grid of ``tile x tile`` cores (the last row/column shifted inwards so that
    every tile has the same size); each core is run with ``overlap`` LR pixels of context on every side
    (less only at the image border), and the SR pixels of the core are written to the output. Up to
    ``tile_batch`` windows (times the image batch) run in one forward call.

    Exactness: if every output pixel depends only on inputs within ``overlap`` LR pixels (e.g. an EDSR with
    ``n`` 3x3 convs before the upsampler needs ``overlap >= n``), the result equals ``model(lr)``.

    Args:
        model: network or callable ``(N, 3, h, w) -> (N, 3, s*h, s*w)`` (a tuple output's first element is
            used). Its train/eval mode is left as it is.
        lr: ``(B, 3, h, w)`` LR images.
        scale: upscaling factor; ``None`` infers it from the first tile.
        tile: core size in LR pixels; overlap: context in LR pixels.
        tile_batch: windows per forward call.

    Returns:
        ``(B, 3, scale*h, scale*w)``, on ``lr``'s device.

    Raises:
        ValueError: ``lr`` not a 4-D tensor; ``tile``, ``overlap``, ``tile_batch`` or ``scale`` not an integer
            (``tile=2.5``) or out of range (``tile >= 1``, ``overlap >= 0``, ``tile_batch >= 1``,
            ``scale >= 1``), naming the argument; or the model's output size is not ``scale`` times its input size.
    """
    if not isinstance(lr, torch.Tensor) or lr.dim() != 4:
        raise ValueError(f"forward_chop: lr must be a (B, C, h, w) tensor, got "
                         f"{tuple(lr.shape) if isinstance(lr, torch.Tensor) else type(lr).__name__}")
    check_int("forward_chop", "tile", tile, 1)
    check_int("forward_chop", "overlap", overlap, 0)
    check_int("forward_chop", "tile_batch", tile_batch, 1)
    if scale is not None:
        check_int("forward_chop", "scale", scale, 1)
    fwd = _as_forward(model)
    b, _, h, w = lr.shape
    jobs = [(ry, rx) for ry in _windows(h, tile, overlap) for rx in _windows(w, tile, overlap)]
    out: torch.Tensor | None = None
    for i in range(0, len(jobs), tile_batch):
        group = jobs[i:i + tile_batch]
        x = torch.cat([lr[..., wy:wy + hy, wx:wx + hx] for (_, wy, hy), (_, wx, hx) in group], dim=0)
        y = fwd(x)
        hy, hx = group[0][0][2], group[0][1][2]
        s = scale if scale is not None else y.shape[-1] // hx
        if tuple(y.shape[-2:]) != (s * hy, s * hx):
            raise ValueError(
                f"model output {tuple(y.shape[-2:])} for input {(hy, hx)} is not scale={s} times larger"
            )
        if out is None:
            out = lr.new_zeros(b, y.shape[1], s * h, s * w, dtype=y.dtype)
        for j, ((cy, wy, _), (cx, wx, _)) in enumerate(group):
            th, tw = min(tile, h), min(tile, w)  # core size (the whole side if the image is smaller)
            oy, ox = cy - wy, cx - wx  # core offset inside the window
            out[..., s * cy:s * (cy + th), s * cx:s * (cx + tw)] = y[
                j * b:(j + 1) * b, :, s * oy:s * (oy + th), s * ox:s * (ox + tw)
            ]
    assert out is not None
    return out


def dihedral(x: torch.Tensor, k: int) -> torch.Tensor:
    """The ``k``-th of the 8 dihedral transforms of the last two dims (``k`` in 0..7).

    ``k % 4`` quarter turns (``torch.rot90``), preceded by a horizontal flip when ``k >= 4``.
    """
    if k >= 4:
        x = x.flip(-1)
    return torch.rot90(x, k % 4, dims=(-2, -1))


def inverse_dihedral(y: torch.Tensor, k: int) -> torch.Tensor:
    """Undo :func:`dihedral`: ``inverse_dihedral(dihedral(x, k), k) == x``."""
    y = torch.rot90(y, -(k % 4), dims=(-2, -1))
    return y.flip(-1) if k >= 4 else y


@torch.no_grad()
def self_ensemble(model: nn.Module | Forward, lr: torch.Tensor, fn: Forward | None = None) -> torch.Tensor:
    """Geometric self-ensemble x8: ``mean_k T_k^{-1}(f(T_k(lr)))`` over the 8 flips/rotations ``T_k``.

    Source: Lim et al., EDSR (CVPRW 2017), Sec. 4 ("geometric self-ensemble"); EDSR-PyTorch
    ``src/model/__init__.py`` (``forward_x8``).

    Args:
        model: the network (used when ``fn`` is None).
        lr: ``(B, 3, h, w)``.
        fn: forward to use instead of ``model``, e.g. ``lambda x: forward_chop(model, x, 2)``.

    Returns:
        ``(B, 3, s*h, s*w)``. For a network that commutes with flips and rotations the result equals
        ``fn(lr)`` exactly (pairwise summation of 8 equal terms gives ``8 f`` exactly; dividing by 8 is exact).
    """
    f = _as_forward(fn if fn is not None else model)
    # Pairwise summation ((y0+y1)+(y2+y3)) + ((y4+y5)+(y6+y7)), merged as the terms arrive (binary counter,
    # at most 4 partial sums alive): 8 equal terms then sum to exactly 8*y.
    partials: list[tuple[int, torch.Tensor]] = []  # (level, partial sum of 2**level terms)
    for k in range(8):
        level, acc = 0, inverse_dihedral(f(dihedral(lr, k)), k)
        while partials and partials[-1][0] == level:
            acc = partials.pop()[1] + acc
            level += 1
        partials.append((level, acc))
    (_, total), = partials
    return total / 8


@contextlib.contextmanager
def _eval_mode(model: Any) -> Iterator[None]:
    """Temporarily put an ``nn.Module`` into eval mode (restored afterwards)."""
    if not isinstance(model, nn.Module):
        yield
        return
    was_training = model.training
    model.eval()
    try:
        yield
    finally:
        model.train(was_training)


def _model_device(model: Any, default: torch.device) -> torch.device:
    if isinstance(model, nn.Module):
        for p in model.parameters():
            return p.device
    return default


def _model_dtype(model: Any) -> torch.dtype | None:
    """The floating point dtype of the network's first floating parameter (``None``: not a module / none)."""
    if isinstance(model, nn.Module):
        for p in model.parameters():
            if p.is_floating_point():
                return p.dtype
    return None


def _check_lr_object(lr: Any, model: Any) -> None:
    """``lr`` must be a real (not meta) tensor, and the network must hold real weights."""
    if not isinstance(lr, torch.Tensor):
        hint = (" (a NumPy array: torch.from_numpy(a).permute(2, 0, 1).float() / 255 for an (H, W, 3) uint8 "
                "array, or srlib.data.from_uint8(a))" if type(lr).__module__.startswith("numpy") else "")
        raise ValueError(f"super_resolve: lr must be a torch.Tensor (3, h, w) or (B, 3, h, w) RGB in [0, 1], "
                         f"got {type(lr).__name__}{hint}")
    if lr.device.type == "meta":
        raise ValueError(f"super_resolve: lr is a meta tensor (shape {tuple(lr.shape)}, no values); pass an image "
                         "with data, e.g. srlib.data.load_image(path)")
    if isinstance(model, nn.Module) and any(p.device.type == "meta" for p in model.parameters()):
        raise ValueError(f"super_resolve: {type(model).__name__} has meta parameters (no values); build it "
                         "on a real device or load its weights with model.to_empty(device=...) + load_weights")


@torch.no_grad()
def super_resolve(
    model: nn.Module | Forward,
    lr: torch.Tensor,
    *,
    chop: bool = False,
    ensemble: bool = False,
    scale: int | None = None,
    tile: int = 96,
    overlap: int = 16,
    clamp: bool = True,
) -> torch.Tensor:
    """Super-resolve one image or a batch in eval mode, optionally tiled and/or self-ensembled.

    Args:
        model: network taking ``(B, 3, h, w)`` RGB in ``[0, 1]``.
        lr: ``(3, h, w)`` or ``(B, 3, h, w)`` in ``[0, 1]``; moved to the model's device.
        chop: use :func:`forward_chop` (``tile``, ``overlap``); ensemble: use :func:`self_ensemble`.
        scale: passed to :func:`forward_chop` (``None``: inferred).
        clamp: clamp the result to ``[0, 1]``.

    Returns:
        SR with the same number of dims as ``lr``, on ``lr``'s device, in ``lr``'s dtype. An ``lr`` in another
        floating point dtype than the network's weights (float16, bfloat16, float64 for a float32 network) is
        converted to the weights' dtype for the forward pass, with a :class:`UserWarning` saying so.

    Raises:
        ValueError: ``lr`` is not a tensor (a NumPy array: the message says how to convert it), a meta tensor
            (or the network has meta weights), not 3-D or 4-D, has not 3 channels, is not floating point (e.g.
            uint8: pass ``lr.float() / 255``), has values outside ``[0, 1]`` (beyond the margin of
            :data:`srlib._checks.IMAGE_RANGE_MARGIN`, or more than :data:`srlib._checks.IMAGE_BULK_FRACTION`
            of the values beyond :data:`srlib._checks.IMAGE_BULK_TOLERANCE`: a shifted image) or NaN/Inf;
            ``tile`` / ``overlap`` / ``scale`` not integers; or the network returned NaN/Inf (counted).
            Each message names the tensor and the value found.
    """
    _check_lr_object(lr, model)
    if lr.dim() not in (3, 4):
        raise ValueError(f"super_resolve: lr must be (3, h, w) or (B, 3, h, w), got shape {tuple(lr.shape)}")
    check_image_tensor(lr, "super_resolve: lr", dims=(3, 4), bulk=True)
    if chop:
        check_int("super_resolve", "tile", tile, 1)
        check_int("super_resolve", "overlap", overlap, 0)
    if scale is not None:
        check_int("super_resolve", "scale", scale, 1)
    single = lr.dim() == 3
    x = lr[None] if single else lr
    x = x.to(_model_device(model, x.device))
    want = _model_dtype(model)
    if want is not None and x.dtype != want:
        warnings.warn(f"super_resolve: lr is {x.dtype} but {type(model).__name__} computes in {want}; lr converted "
                      f"to {want} (the result is returned as {lr.dtype})", UserWarning, stacklevel=3)
        x = x.to(want)
    if chop:
        fwd: Forward = lambda t: forward_chop(model, t, scale, tile, overlap)  # noqa: E731
    else:
        fwd = _as_forward(model)
    with _eval_mode(model):
        sr = self_ensemble(model, x, fn=fwd) if ensemble else fwd(x)
    check_finite(sr, f"super_resolve: the output of {type(model).__name__} (finite input; check its weights)")
    if clamp:
        sr = sr.clamp(0, 1)
    sr = sr.to(lr.device, lr.dtype)
    return sr[0] if single else sr


def _metrics():
    try:
        from srlib import metrics
    except ImportError as err:  # pragma: no cover - only while srlib.metrics is missing
        raise ImportError(f"evaluation needs srlib.metrics (PSNR/SSIM), which could not be imported: {err}") from err
    return metrics


def evaluate(
    model: nn.Module | Forward,
    dataset: Any,
    scale: int,
    chop: bool = False,
    ensemble: bool = False,
    device: str | torch.device | None = None,
    *,
    ssim: bool = True,
    tile: int = 96,
    overlap: int = 16,
    save_dir: str | Path | None = None,
    progress: bool = False,
) -> dict[str, Any]:
    """Mean PSNR / SSIM of ``model`` on ``dataset`` under the standard SR protocol.

    Each item ``{"lr": (3, h, w), "hr": (3, H, W), "name": str}`` (float in ``[0, 1]``) is super-resolved one
    image at a time (sizes differ), clamped, and compared with HR by :func:`srlib.metrics.psnr` /
    :func:`srlib.metrics.ssim`: quantised to 8 bits, Y channel (BT.601), ``scale`` border pixels cropped.

    Args:
        model: network (switched to eval mode for the call; its mode is restored).
        dataset: indexable with ``len`` (e.g. :class:`srlib.data.BenchmarkDataset`).
        scale: upscaling factor (border crop and chop).
        chop, ensemble: see :func:`super_resolve`.
        device: where to run; ``None`` uses the model's device. A given device moves the model (in place).
        ssim: also compute SSIM (slower on large images).
        save_dir: if given, SR images are saved there as ``<name>.png``.
        progress: show a tqdm bar.

    Returns:
        ``{"psnr": mean, "ssim": mean or None, "scale": scale, "n_images": n,
        "per_image": [{"name", "psnr", "ssim"}, ...]}``.

    Raises:
        ValueError: empty dataset; an item that is not a dict with tensors under ``"lr"`` and ``"hr"`` (names
            the item and the keys it has); or an SR image whose size differs from its HR image (names the image).
        ImportError: :mod:`srlib.metrics` is not available.
    """
    metrics = _metrics()
    n = len(dataset)
    if n == 0:
        raise ValueError("evaluate: the dataset is empty")
    if device is not None and isinstance(model, nn.Module):
        model.to(device)
    if save_dir is not None:
        from srlib.data import save_image

        save_dir = Path(save_dir)
    rows: list[dict[str, Any]] = []
    indices: Any = range(n)
    if progress:
        from tqdm.auto import tqdm

        indices = tqdm(indices, desc="evaluate", leave=False)
    for i in indices:
        item = dataset[i]
        if not isinstance(item, Mapping) or not all(isinstance(item.get(k), torch.Tensor) for k in ("lr", "hr")):
            keys = sorted(map(str, item)) if isinstance(item, Mapping) else type(item).__name__
            raise ValueError(f"evaluate: item {i} of the dataset must be a dict with tensors under 'lr' and 'hr' "
                             f"(and a 'name'), got {keys}; a dataset without HR images cannot be scored "
                             "(use super_resolve for those)")
        lr, hr, name = item["lr"], item["hr"], str(item.get("name", i))
        sr = super_resolve(model, lr, chop=chop, ensemble=ensemble, scale=scale, tile=tile, overlap=overlap)
        sr = sr.detach().float().cpu()
        if sr.shape != hr.shape:
            raise ValueError(
                f"image {name!r}: SR shape {tuple(sr.shape)} != HR shape {tuple(hr.shape)} "
                f"(LR {tuple(lr.shape)}, scale {scale}); is the HR image modcropped and the scale right?"
            )
        # Grayscale-stored HR images (Set14 "bridge") are scored on intensity, as the MATLAB protocol does.
        gray = bool(item.get("gray", False))
        row = {"name": name, "psnr": float(metrics.psnr(sr, hr, scale, gray=gray))}
        row["ssim"] = float(metrics.ssim(sr, hr, scale, gray=gray)) if ssim else None
        rows.append(row)
        if save_dir is not None:
            save_image(sr, save_dir / f"{name}.png")
    mean_psnr = sum(r["psnr"] for r in rows) / n
    mean_ssim = sum(r["ssim"] for r in rows) / n if ssim else None
    return {"psnr": mean_psnr, "ssim": mean_ssim, "scale": scale, "n_images": n, "per_image": rows}
