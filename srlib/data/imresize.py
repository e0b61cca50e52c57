"""MATLAB-compatible bicubic resizing in PyTorch.

Every super-resolution benchmark makes its low-resolution images with MATLAB's
``imresize(HR, 1/s, 'bicubic')`` and every paper's "Bicubic" row upsamples with
``imresize(LR, s, 'bicubic')``. ``torch.nn.functional.interpolate`` and Pillow do
something different (another index mapping, another border rule, no or another
antialiasing), which shifts PSNR by tenths of a dB. This module re-implements
MATLAB's algorithm from its documented behaviour:

* kernel: Keys' cubic convolution with ``a = -0.5`` (Keys 1981, Eq. (15)),
  support ``[-2, 2]``;
* antialiasing when shrinking (scale ``s < 1``): the kernel is stretched to
  ``s * k(s * x)``, i.e. its width grows by ``1 / s``;
* index mapping (1-based, as MATLAB): output pixel ``x`` sits at input coordinate
  ``u = x / s + 0.5 * (1 - 1 / s)``; the first contributing input pixel is
  ``left = floor(u - width / 2)`` and ``ceil(width) + 2`` pixels contribute;
* weights are normalised to sum to one for every output pixel;
* borders: out-of-range indices are mirrored *with* the edge pixel repeated
  (MATLAB's "symmetric" rule: ``... 2 1 | 1 2 3 ... n | n n-1 ...``);
* kernel taps that are zero for every output pixel are dropped;
* separable, one dimension at a time; the dimension with the smaller scale factor
  goes first (ties: height first), as MATLAB does. Each pass is one product with the
  sparse weights scattered into a dense ``(out, in)`` matrix (or, for very long
  dimensions, a sum over the kernel taps of gathered rows/columns).

All arithmetic is float64. By default nothing is rounded or clamped between or
after the two passes: the result can leave ``[0, 1]`` slightly (bicubic overshoot),
and callers that need 8-bit images call :func:`srlib.data.quantize` themselves.

MATLAB on a ``uint8`` image (how every benchmark and DIV2K LR file was made) is
different in one respect: each 1-D pass returns ``uint8``, so the intermediate image
is rounded (half away from zero) and clamped to ``0..255`` before the second pass.
``matlab_uint8=True`` emulates that.

Accuracy on the SelfExSR benchmark files (``benchmark/<Set>/image_SRF_<s>``), HR -> LR,
comparing with the stored LR PNGs away from the outermost pixel ring (which differs
in the files themselves, by a few levels):

* default (float, then :func:`quantize`): mean absolute difference 0.10-0.15 grey
  levels; max 2 levels on Set5; up to ~12 levels on a few Set14/B100/Urban100 pixels
  near saturated edges, where MATLAB's rounded and clamped intermediate differs from
  the float one;
* ``matlab_uint8=True``: Set5, Set14 and B100 at x2/x3 are reproduced exactly; at x4
  fewer than 0.1% of the pixels are off by one level (rounding ties decided by float
  round-off).

tests/test_imresize.py asserts these numbers.
"""

from __future__ import annotations

import math
from functools import lru_cache
from typing import Sequence

import torch
from torch import Tensor

__all__ = ["imresize", "cubic_kernel", "resize_weights"]

#: Keys' parameter used by MATLAB's 'bicubic' (and by every SR benchmark).
CUBIC_A = -0.5
#: Support of the cubic kernel (it is zero for |x| >= 2).
CUBIC_WIDTH = 4.0
# Tolerance for the size computation ceil(scale * n): 1/3 * 510 must give 170, not 171.
_SIZE_EPS = 1e-9


def cubic_kernel(x: Tensor, a: float = CUBIC_A) -> Tensor:
    """Keys' cubic convolution kernel (Keys 1981, Eq. (15)), elementwise.

    ``k(x) = (a+2)|x|^3 - (a+3)|x|^2 + 1`` for ``|x| <= 1``,
    ``a|x|^3 - 5a|x|^2 + 8a|x| - 4a`` for ``1 < |x| <= 2``, ``0`` elsewhere.

    Args:
        x: any shape, floating point.
        a: the free parameter; MATLAB's ``imresize(..., 'bicubic')`` uses ``-0.5``.

    Returns:
        Tensor of the same shape and dtype as ``x``.
    """
    ax = x.abs()
    ax2 = ax * ax
    ax3 = ax2 * ax
    inner = (a + 2.0) * ax3 - (a + 3.0) * ax2 + 1.0
    outer = a * ax3 - 5.0 * a * ax2 + 8.0 * a * ax - 4.0 * a
    return torch.where(ax <= 1.0, inner, torch.where(ax <= 2.0, outer, torch.zeros_like(ax)))


@lru_cache(maxsize=256)
def _weights_cached(in_len: int, out_len: int, scale: float, antialias: bool) -> tuple[Tensor, Tensor]:
    x = torch.arange(1, out_len + 1, dtype=torch.float64)  # 1-based output coordinates
    if scale < 1.0 and antialias:
        # Antialiasing: h(x) = s * k(s * x), whose support is 4 / s input pixels.
        width = CUBIC_WIDTH / scale

        def kernel(t: Tensor) -> Tensor:
            return scale * cubic_kernel(scale * t)
    else:
        width = CUBIC_WIDTH
        kernel = cubic_kernel
    u = x / scale + 0.5 * (1.0 - 1.0 / scale)  # position of each output pixel in input coordinates
    left = torch.floor(u - width / 2.0)
    taps = int(math.ceil(width)) + 2
    idx = left[:, None] + torch.arange(taps, dtype=torch.float64)[None, :]  # (out, taps), 1-based
    weights = kernel(u[:, None] - idx)
    weights = weights / weights.sum(dim=1, keepdim=True)
    # MATLAB's symmetric border: index sequence 1..n, n..1 repeated (edge pixel repeated).
    idx0 = idx.long() - 1
    period = 2 * in_len
    idx0 = torch.remainder(idx0, period)
    idx0 = torch.where(idx0 >= in_len, period - 1 - idx0, idx0)
    # Drop taps whose weight is zero for every output pixel (only saves work).
    keep = (weights != 0).any(dim=0)
    return weights[:, keep].contiguous(), idx0[:, keep].contiguous()


def resize_weights(in_len: int, out_len: int, scale: float, antialias: bool = True) -> tuple[Tensor, Tensor]:
    """Weights and source indices of a 1-D MATLAB-bicubic resize.

    Output sample ``i`` (0-based) is ``sum_j weights[i, j] * input[indices[i, j]]``.

    Args:
        in_len: input length (>= 1).
        out_len: output length (>= 1).
        scale: output/input scale factor used in the index mapping (> 0).
        antialias: widen the kernel by ``1 / scale`` when ``scale < 1``.

    Returns:
        ``(weights, indices)``: float64 ``(out_len, taps)`` (rows sum to 1) and int64
        ``(out_len, taps)`` 0-based indices in ``[0, in_len)``. Cached; do not modify in place.

    Raises:
        ValueError: non-positive lengths or scale.
    """
    if in_len < 1 or out_len < 1:
        raise ValueError(f"resize lengths must be >= 1, got in_len={in_len}, out_len={out_len}")
    if not scale > 0 or not math.isfinite(scale):
        raise ValueError(f"resize scale must be a positive finite number, got {scale!r}")
    return _weights_cached(int(in_len), int(out_len), float(scale), bool(antialias))


#: Above this many (out x in) entries the dense resize matrix is not built; taps are summed instead.
_DENSE_LIMIT = 1 << 24


def _resize_dim(x: Tensor, dim: int, out_len: int, scale: float, antialias: bool) -> Tensor:
    """Resize float64 ``x`` along ``dim`` (-2 for height or -1 for width)."""
    in_len = x.shape[dim]
    weights, idx = resize_weights(in_len, out_len, scale, antialias)
    taps = idx.shape[1]
    if out_len * in_len <= _DENSE_LIMIT:
        # Scatter the sparse weights into a dense (out, in) matrix (mirrored taps that hit the same
        # pixel add up) and let one matrix product do the work: fastest on CPU and GPU.
        # Built on the CPU (deterministic accumulation), then moved to x's device.
        rows = torch.arange(out_len).repeat_interleave(taps)
        mat = torch.zeros(out_len, in_len, dtype=torch.float64)
        mat.index_put_((rows, idx.reshape(-1)), weights.reshape(-1), accumulate=True)
        mat = mat.to(device=x.device, dtype=x.dtype)
        return mat @ x if dim == -2 else x @ mat.T
    # Very long dimensions: sum over the few taps, gathering one shifted copy of x per tap.
    weights, idx = weights.to(x.device), idx.to(x.device)
    out = None
    for t in range(taps):
        w_t = weights[:, t].to(x.dtype)
        term = x.index_select(dim, idx[:, t]) * (w_t[:, None] if dim == -2 else w_t)
        out = term if out is None else out.add_(term)
    return out


def _pair(value, what: str) -> tuple:
    if isinstance(value, (tuple, list)):
        if len(value) != 2:
            raise ValueError(f"{what} must be a number or a pair (h, w), got {value!r}")
        return tuple(value)
    return (value, value)


def imresize(
    x: Tensor,
    scale: float | Sequence[float] | None = None,
    *,
    output_size: Sequence[int] | None = None,
    antialias: bool = True,
    matlab_uint8: bool = False,
) -> Tensor:
    """Resize images exactly like MATLAB's ``imresize(x, scale, 'bicubic')``.

    Give either ``scale`` (output size ``ceil(scale * input size)``, and ``scale`` is
    used in the index mapping, as MATLAB does) or ``output_size`` (then the scale of
    each dimension is ``out / in``). See the module docstring for the algorithm.

    Args:
        x: ``(C, H, W)`` or ``(B, C, H, W)`` (any ``(..., H, W)`` works), floating point,
            usually RGB in ``[0, 1]``. Any device.
        scale: a positive number, or a pair ``(scale_h, scale_w)``; e.g. ``1/4`` shrinks by 4.
        output_size: ``(h, w)``, instead of ``scale``.
        antialias: widen the kernel when shrinking (MATLAB's default ``true``).
        matlab_uint8: emulate MATLAB on a ``uint8`` image: the input is rounded to the
            8-bit grid and every 1-D pass is rounded (half away from zero) and clamped
            to ``k / 255``, ``k`` in ``0..255``. Reproduces benchmark LR files exactly.

    Returns:
        ``(..., h, w)`` with the dtype and device of ``x`` (computed in float64; float32 on
        Apple MPS, which lacks float64). By default values are not
        clamped or quantised (bicubic overshoot may leave ``[0, 1]`` slightly); with
        ``matlab_uint8`` they are on the 8-bit grid.

    Raises:
        ValueError: neither or both of ``scale`` / ``output_size``; non-positive scale or
            size; fewer than 2 dimensions; non-floating dtype.

    Source: MATLAB Image Processing Toolbox ``imresize`` (bicubic method, documented
    behaviour), Keys (1981) "Cubic convolution interpolation for digital image processing".
    """
    if not isinstance(x, Tensor):
        raise ValueError(f"imresize expects a torch.Tensor, got {type(x).__name__}")
    if x.ndim < 2:
        raise ValueError(f"imresize expects (..., H, W) with at least 2 dims, got shape {tuple(x.shape)}")
    if not x.is_floating_point():
        raise ValueError(f"imresize expects a floating-point tensor in [0, 1], got dtype {x.dtype}")
    if (scale is None) == (output_size is None):
        raise ValueError("imresize needs exactly one of scale= and output_size=")
    in_size = (x.shape[-2], x.shape[-1])
    if scale is not None:
        scales = tuple(float(s) for s in _pair(scale, "scale"))
        for s in scales:
            if not (s > 0 and math.isfinite(s)):
                raise ValueError(f"imresize scale must be positive and finite, got {scale!r}")
        out_size = tuple(max(1, math.ceil(s * n - _SIZE_EPS)) for s, n in zip(scales, in_size))
    else:
        out_size = tuple(int(v) for v in _pair(output_size, "output_size"))
        if min(out_size) < 1:
            raise ValueError(f"imresize output_size must be positive, got {output_size!r}")
        scales = tuple(o / n for o, n in zip(out_size, in_size))
    if min(in_size) < 1:
        raise ValueError(f"imresize got an empty image of shape {tuple(x.shape)}")

    dtype = x.dtype
    # float64 everywhere except Apple's MPS backend, which has no float64.
    y = x.to(torch.float32 if x.device.type == "mps" else torch.float64)
    if matlab_uint8:
        y = _round_uint8(y * 255.0)
    # MATLAB processes the dimension with the smaller scale first; stable for ties (height first).
    order = sorted(range(2), key=lambda d: scales[d])
    for d in order:
        if out_size[d] == in_size[d] and scales[d] == 1.0:
            continue  # identity: the cubic kernel is 1 at 0 and 0 at every other integer
        y = _resize_dim(y, d - 2, out_size[d], scales[d], antialias)
        if matlab_uint8:
            y = _round_uint8(y)  # MATLAB returns uint8 after every pass
    if matlab_uint8:
        y = y / 255.0
    return y.to(dtype)


def _round_uint8(v: Tensor) -> Tensor:
    """Round half away from zero and clamp to 0..255, as MATLAB's conversion to uint8."""
    return torch.floor(v.clamp(0.0, 255.0) + 0.5).clamp_(max=255.0)
