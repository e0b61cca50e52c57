"""PSNR and SSIM under the standard super-resolution evaluation protocol.

The protocol of the papers reproduced here and of the "Bicubic" rows their tables carry
(the numbers go back to VDSR and are repeated by EDSR, RCAN, NLSN, ...), as done by the
MATLAB evaluation scripts of the SR literature:

1. quantise the super-resolved image to 8 bits (the HR image already is);
2. convert both to the luma channel Y of YCbCr, ITU-R BT.601 "studio swing", exactly as
   MATLAB's ``rgb2ycbcr``: ``Y = 16 + 65.481 R + 128.553 G + 24.966 B`` for R, G, B in
   ``[0, 1]``, so Y is in ``[16, 235]``;
3. ignore ``scale`` pixels at every border;
4. PSNR = ``10 log10(255^2 / MSE)`` on Y; SSIM of Wang et al. (2004) on Y: 11x11 Gaussian
   window with sigma 1.5, ``K1 = 0.01``, ``K2 = 0.03``, ``L = 255``, statistics with
   ``1/N`` normalisation, averaged over the positions where the window fits inside
   the image ("valid" filtering), which is what their reference MATLAB ``ssim_index.m``
   computes (without the automatic downsampling of the later ``ssim.m``).

Grayscale-stored HR images (Set14's ``img_003``, "bridge", in the SelfExSR release):
MATLAB's ``rgb2ycbcr`` needs three channels, so MATLAB scripts compare such an image's
intensity ``0..255`` directly (and the published Bicubic rows are reproduced only that
way: Set14 x2 30.23 dB against the published 30.24; 30.33 otherwise), while the
official PyTorch code (EDSR ``src/utility.py calc_psnr``) replicates it to RGB and takes
Y, i.e. the intensity compressed to ``[16, 235]``, which makes the PSNR of that image
``20 log10(255 / 219) = 1.32`` dB *higher* (0.09 dB on the Set14 mean). The decision
depends on how the file is stored, not on its content (Set14's ``img_010`` has three
equal channels but is stored as RGB, so MATLAB takes its Y): pass ``gray=True`` for
images stored as grayscale -- :class:`srlib.data.BenchmarkDataset` items carry that flag
as ``item["gray"]`` -- to follow MATLAB; the default ``gray=False`` follows the
PyTorch code. With the flag, bicubic upsampling reproduces the published Bicubic rows
(tests/test_metrics.py).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
from skimage.metrics import structural_similarity
from torch import Tensor

from srlib.data.io import quantize

__all__ = ["rgb_to_y", "psnr", "ssim", "calc_psnr_ssim", "SSIM_KWARGS", "Y_COEFFS"]

#: MATLAB ``rgb2ycbcr`` luma row (ITU-R BT.601 scaled to studio swing), for R, G, B in [0, 1].
Y_COEFFS = (65.481, 128.553, 24.966)
#: Y offset of ``rgb2ycbcr``.
Y_OFFSET = 16.0
#: Keyword arguments of ``skimage.metrics.structural_similarity`` that give Wang et al.'s SSIM:
#: Gaussian window, sigma 1.5, truncated at 3.5 sigma -> radius int(3.5 * 1.5 + 0.5) = 5, an
#: 11x11 window; population (1/N) statistics; L = 255; K1 = 0.01, K2 = 0.03 (skimage defaults).
SSIM_KWARGS = dict(gaussian_weights=True, sigma=1.5, use_sample_covariance=False, data_range=255.0)

def rgb_to_y(x: Tensor) -> Tensor:
    """Luma Y of MATLAB's ``rgb2ycbcr`` (ITU-R BT.601): ``16 + 65.481 R + 128.553 G + 24.966 B``.

    Args:
        x: ``(..., 3, H, W)`` RGB in ``[0, 1]``, floating point.

    Returns:
        ``(..., 1, H, W)`` Y in ``[16, 235]``, same dtype (not rounded; MATLAB rounds
        when its input is ``uint8``, which moves PSNR by about 0.01 dB).

    Raises:
        ValueError: fewer than 3 dims, channel dimension not 3, or non-floating dtype.
    """
    if x.ndim < 3 or x.shape[-3] != 3:
        raise ValueError(f"rgb_to_y expects (..., 3, H, W), got shape {tuple(x.shape)}")
    if not x.is_floating_point():
        raise ValueError(f"rgb_to_y expects a floating-point tensor in [0, 1], got dtype {x.dtype}")
    r, g, b = x.unbind(dim=-3)
    y = Y_OFFSET + Y_COEFFS[0] * r + Y_COEFFS[1] * g + Y_COEFFS[2] * b
    return y.unsqueeze(-3)


def _gray_flags(gray, batch: int) -> Tensor:
    """``gray`` as a bool tensor of shape (batch,)."""
    flags = torch.as_tensor(gray, dtype=torch.bool).reshape(-1)
    if flags.numel() == 1:
        flags = flags.expand(batch)
    if flags.numel() != batch:
        raise ValueError(f"gray must be a bool or one bool per image ({batch}), got {flags.numel()} values")
    return flags


#: Values may exceed ``[0, rgb_range]`` by this fraction of ``rgb_range`` (unclamped network output, bicubic
#: overshoot); they are clamped by the quantisation. Anything further out is refused: a 0-255 image passed
#: with ``rgb_range=1`` would otherwise be clamped to white and give a plausible-looking but wrong PSNR.
RANGE_MARGIN = 0.5


def _check_image(x: Any, name: str, rgb_range: float) -> None:
    """``x`` must be a floating point tensor, all finite, in ``[0, rgb_range]`` (+- :data:`RANGE_MARGIN`)."""
    if not isinstance(x, Tensor):
        raise ValueError(f"{name} must be a torch tensor, got {type(x).__name__}")
    if not x.is_floating_point():
        raise ValueError(f"{name} must be a floating point image in [0, {rgb_range:g}] (rgb_range), got dtype "
                         f"{x.dtype}; pass x.float() / 255 for 8-bit values (or rgb_range=255 with x.float())")
    if x.numel() == 0:
        raise ValueError(f"{name} is empty, shape {tuple(x.shape)}")
    finite = torch.isfinite(x.detach())
    if not bool(finite.all()):
        raise ValueError(f"{name} has {int((~finite).sum())} non-finite values (NaN/Inf) of {x.numel()}")
    lo, hi = float(x.min()), float(x.max())
    margin = RANGE_MARGIN * rgb_range
    if lo < -margin or hi > rgb_range + margin:
        hint = " (a 0-255 image? divide it by 255, or pass rgb_range=255)" if hi > 2 and rgb_range <= 1 else ""
        raise ValueError(f"{name} has values in [{lo:.4g}, {hi:.4g}], outside [0, {rgb_range:g}] (rgb_range){hint}")


def _prepare(sr: Tensor, hr: Tensor, scale: int, border, rgb_range: float, y_channel: bool, gray):
    """Check, quantise, convert and crop; return float64 numpy arrays (B, C, h, w) on the 0..255 scale."""
    if not (isinstance(rgb_range, (int, float)) and not isinstance(rgb_range, bool) and math.isfinite(rgb_range)
            and rgb_range > 0):
        raise ValueError(f"rgb_range must be a positive number, got {rgb_range!r}")
    _check_image(sr, "sr", rgb_range)
    _check_image(hr, "hr", rgb_range)
    if sr.shape != hr.shape:
        raise ValueError(f"sr and hr must have the same shape, got {tuple(sr.shape)} and {tuple(hr.shape)}")
    if sr.ndim == 3:
        sr, hr = sr.unsqueeze(0), hr.unsqueeze(0)
    if sr.ndim != 4 or sr.shape[1] != 3:
        raise ValueError(f"expected images of shape (3, H, W) or (B, 3, H, W), got {tuple(sr.shape)}")
    gray = _gray_flags(gray, sr.shape[0])
    scale = int(scale)
    border = scale if border is None else int(border)
    if border < 0:
        raise ValueError(f"border must be >= 0, got {border}")
    h, w = sr.shape[-2:]
    if h <= 2 * border or w <= 2 * border:
        raise ValueError(f"image of size {h}x{w} is too small to crop a border of {border} pixels")
    sr = quantize(sr.detach().to("cpu", torch.float64), rgb_range) / rgb_range
    hr = quantize(hr.detach().to("cpu", torch.float64), rgb_range) / rgb_range
    if y_channel:
        a, b = rgb_to_y(sr), rgb_to_y(hr)
        if bool(gray.any()):
            # Grayscale-stored images: compare full-range intensities, (Y - 16) * 255 / 219
            # (= 255 g for a gray image), as MATLAB scripts do for single-channel images.
            sel = gray.view(-1, 1, 1, 1)
            a = torch.where(sel, (a - Y_OFFSET) * (255.0 / 219.0), a)
            b = torch.where(sel, (b - Y_OFFSET) * (255.0 / 219.0), b)
    else:
        a, b = sr * 255.0, hr * 255.0
    if border > 0:
        a = a[..., border:-border, border:-border]
        b = b[..., border:-border, border:-border]
    return a.numpy(), b.numpy()


def psnr(sr: Tensor, hr: Tensor, scale: int, *, y_channel: bool = True, border: int | None = None,
         rgb_range: float = 1.0, gray=False) -> float:
    """Peak signal-to-noise ratio in dB under the SR protocol (module docstring).

    Args:
        sr: super-resolved image ``(3, H, W)`` or ``(B, 3, H, W)``, RGB in ``[0, rgb_range]``.
        hr: ground truth, same shape.
        scale: SR factor; ``scale`` pixels are cropped at every border unless ``border`` is given.
        y_channel: compare Y (default) or the three RGB channels.
        border: pixels cropped at each border (default ``scale``; EDSR uses ``scale + 6``
            on DIV2K validation images).
        rgb_range: value of white in ``sr`` / ``hr``; both must lie in ``[0, rgb_range]`` (up to
            :data:`RANGE_MARGIN` ``* rgb_range`` outside, clamped by the quantisation).
        gray: ``True`` if the HR image is stored as grayscale (MATLAB protocol: compare
            intensities ``0..255`` instead of Y; module docstring); a bool or one per image.

    Returns:
        PSNR in dB (``inf`` for identical images); for a batch, the mean of the per-image PSNRs.

    Raises:
        ValueError: ``sr`` / ``hr`` not a floating point tensor (uint8: pass ``x.float() / 255``), NaN/Inf
            values, values outside ``[0, rgb_range]`` (e.g. 0-255 floats with ``rgb_range=1``), shape
            mismatch, wrong channel count, image too small for the border, wrong number of ``gray`` flags;
            the message names the argument (``sr`` / ``hr``) and the value found.
    """
    return _psnr_arrays(*_prepare(sr, hr, scale, border, rgb_range, y_channel, gray))


def _psnr_arrays(a: np.ndarray, b: np.ndarray) -> float:
    values = []
    for ai, bi in zip(a, b):
        mse = float(np.mean((ai - bi) ** 2))
        values.append(math.inf if mse == 0.0 else 10.0 * math.log10(255.0**2 / mse))
    return float(np.mean(values))


def _ssim_arrays(a: np.ndarray, b: np.ndarray) -> float:
    if min(a.shape[-2:]) < 11:
        raise ValueError(f"SSIM needs at least 11x11 pixels after cropping, got {a.shape[-2]}x{a.shape[-1]}")
    values = []
    for ai, bi in zip(a, b):
        per_channel = [structural_similarity(ac, bc, **SSIM_KWARGS) for ac, bc in zip(ai, bi)]
        values.append(float(np.mean(per_channel)))
    return float(np.mean(values))


def ssim(sr: Tensor, hr: Tensor, scale: int, *, y_channel: bool = True, border: int | None = None,
         rgb_range: float = 1.0, gray=False) -> float:
    """Structural similarity (Wang et al. 2004, Eq. (13)) on Y under the SR protocol.

    Computed by ``skimage.metrics.structural_similarity`` with :data:`SSIM_KWARGS`
    (11x11 Gaussian window, sigma 1.5, population statistics, L = 255), which equals
    Wang et al.'s MATLAB ``ssim_index.m`` (``filter2(window, ., 'valid')`` then the mean);
    tests/test_metrics.py checks it against an independent implementation of that.

    Args:
        sr, hr, scale, y_channel, border, rgb_range, gray: as in :func:`psnr`. With
            ``y_channel=False`` the SSIM of the three RGB channels is averaged.

    Returns:
        SSIM in ``[-1, 1]`` (1.0 for identical images); for a batch, the mean over images.

    Raises:
        ValueError: as :func:`psnr`; also when the cropped image is smaller than 11x11.
    """
    return _ssim_arrays(*_prepare(sr, hr, scale, border, rgb_range, y_channel, gray))


def calc_psnr_ssim(sr: Tensor, hr: Tensor, scale: int, *, y_channel: bool = True, border: int | None = None,
                   rgb_range: float = 1.0, gray=False) -> tuple[float, float]:
    """``(psnr(sr, hr, scale, ...), ssim(sr, hr, scale, ...))`` with one shared preparation;
    arguments, shapes and errors as in :func:`psnr` / :func:`ssim`."""
    a, b = _prepare(sr, hr, scale, border, rgb_range, y_channel, gray)
    return _psnr_arrays(a, b), _ssim_arrays(a, b)
