"""Degradation models: how a low-resolution training/test input is made from an HR image.

A :class:`Degradation` is a callable ``HR (C, H, W) -> LR (C, H / scale, W / scale)``
(batched ``(B, C, H, W)`` works too). Pieces compose with :class:`Compose`:

* :class:`BicubicDownsample` -- the "BI" model of all five papers (MATLAB ``imresize``,
  bicubic, antialiased);
* :class:`GaussianBlur` + a downsampler -- blur models such as the "BD" setting of
  RDN / RCAN (7x7 Gaussian, sigma 1.6), which DLSN also evaluates;
* :class:`AddGaussianNoise` -- additive white Gaussian noise given in grey levels;
* :class:`Quantize` -- round to the 8-bit grid, as when LR images are stored as PNG.

Every degradation also reports ``margin``: how many HR pixels around a region it needs
so that degrading a crop equals cropping the degraded full image (``None`` when
unknown). :class:`srlib.data.HRFolderDataset` uses it to degrade only a patch plus its
margin, which is exact (not an approximation at patch borders).
"""

from __future__ import annotations

import math
import operator
from typing import Iterable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from srlib._checks import as_integer

from .imresize import imresize
from .io import quantize

__all__ = [
    "SUPPORTED_SCALES",
    "check_scale",
    "modcrop",
    "Degradation",
    "BicubicDownsample",
    "GaussianBlur",
    "AddGaussianNoise",
    "Quantize",
    "Compose",
    "gaussian_kernel2d",
]

#: Super-resolution factors the papers report (and the benchmark folders provide).
SUPPORTED_SCALES = (2, 3, 4)


def check_scale(scale) -> int:
    """Return ``scale`` as an int if it is one of :data:`SUPPORTED_SCALES`.

    Raises:
        ValueError: naming the value, for anything else (``1``, ``8``, ``2.5``, ``"2"``, ``True``).
    """
    value = as_integer(scale)
    if value not in SUPPORTED_SCALES:  # also None: not an integer
        raise ValueError(f"unsupported scale {scale!r}; supported scales are {SUPPORTED_SCALES}")
    return value


def modcrop(x: Tensor, scale: int) -> Tensor:
    """Crop the bottom/right so that height and width are multiples of ``scale``.

    Same as the MATLAB ``modcrop`` used to prepare every benchmark (keeps the top-left corner).

    Args:
        x: ``(..., H, W)``.
        scale: positive integer.

    Returns:
        A view ``x[..., :H - H % scale, :W - W % scale]``.

    Raises:
        ValueError: ``scale < 1`` or the image is smaller than ``scale``.
    """
    scale = operator.index(scale)
    if scale < 1:
        raise ValueError(f"modcrop scale must be >= 1, got {scale}")
    h, w = x.shape[-2:]
    if h < scale or w < scale:
        raise ValueError(f"image of size {h}x{w} is smaller than the scale {scale}")
    return x[..., : h - h % scale, : w - w % scale]


class Degradation:
    """Base class: a callable mapping an HR image to its degraded (LR) version.

    Subclasses implement :meth:`forward` and set:

    * ``scale`` -- size reduction factor (1 for blur/noise);
    * ``margin`` -- HR-side context (pixels, in this degradation's *input* grid) needed
      to degrade a crop exactly, or ``None`` if unknown (then datasets degrade whole images).

    Random degradations draw from the ``generator`` given to the call, else from their
    own, else from torch's global generator.
    """

    scale: int = 1
    margin: int | None = None

    def forward(self, x: Tensor, generator: torch.Generator | None = None) -> Tensor:
        raise NotImplementedError

    def __call__(self, x: Tensor, *, generator: torch.Generator | None = None) -> Tensor:
        """Degrade ``x``: ``(C, H, W)`` or ``(B, C, H, W)`` -> ``(..., H / scale, W / scale)``."""
        if not isinstance(x, Tensor) or x.ndim not in (3, 4):
            shape = tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__
            raise ValueError(f"{type(self).__name__} expects (C, H, W) or (B, C, H, W), got {shape}")
        return self.forward(x, generator)

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


class BicubicDownsample(Degradation):
    """MATLAB ``imresize(HR, 1/scale, 'bicubic')``: the standard "BI" degradation.

    Args:
        scale: one of :data:`SUPPORTED_SCALES`.
        matlab_uint8: emulate MATLAB on ``uint8`` input (round each pass to 8 bits);
            then the result equals the stored benchmark/DIV2K LR files (see
            :func:`srlib.data.imresize`). Default ``False``: a float result, not quantised.

    Input ``(C, H, W)`` / ``(B, C, H, W)`` in ``[0, 1]`` with ``H`` and ``W`` multiples of
    ``scale`` (use :func:`modcrop`); output ``(..., H / scale, W / scale)``.

    Raises:
        ValueError: unsupported scale; input size not a multiple of ``scale``.
    """

    def __init__(self, scale: int, *, matlab_uint8: bool = False):
        self.scale = check_scale(scale)
        self.matlab_uint8 = bool(matlab_uint8)
        # The antialiased kernel reaches 2 * scale HR pixels from an LR pixel's centre, i.e.
        # at most 1.5 * scale + 0.5 pixels beyond its block; 2 * scale covers it.
        self.margin = 2 * self.scale

    def forward(self, x: Tensor, generator: torch.Generator | None = None) -> Tensor:
        h, w = x.shape[-2:]
        if h % self.scale or w % self.scale:
            raise ValueError(f"image size {h}x{w} is not a multiple of scale {self.scale}; modcrop it first")
        return imresize(x, 1.0 / self.scale, matlab_uint8=self.matlab_uint8)

    def __repr__(self) -> str:
        extra = ", matlab_uint8=True" if self.matlab_uint8 else ""
        return f"BicubicDownsample({self.scale}{extra})"


def _gaussian1d(sigma: float, kernel_size: int, dtype=torch.float64) -> Tensor:
    if not sigma > 0:
        raise ValueError(f"sigma must be positive, got {sigma!r}")
    if kernel_size < 1 or kernel_size % 2 == 0:
        raise ValueError(f"kernel_size must be a positive odd integer, got {kernel_size!r}")
    t = torch.arange(kernel_size, dtype=dtype) - (kernel_size - 1) / 2
    g = torch.exp(-(t**2) / (2 * sigma**2))
    return g / g.sum()


def gaussian_kernel2d(sigma: float, kernel_size: int, dtype=torch.float64) -> Tensor:
    """Normalised ``(k, k)`` Gaussian, as MATLAB ``fspecial('gaussian', k, sigma)``
    (the outer product of a normalised 1-D Gaussian with itself).

    Raises:
        ValueError: non-positive sigma or an even / non-positive ``kernel_size``.
    """
    g = _gaussian1d(sigma, kernel_size, dtype)
    return g[:, None] * g[None, :]


class GaussianBlur(Degradation):
    """Isotropic Gaussian blur with replicated borders (MATLAB ``imfilter(x, fspecial(...), 'replicate')``).

    The "BD" degradation of RDN / RCAN / DLSN uses ``sigma = 1.6``, ``kernel_size = 7``
    followed by downsampling.

    Args:
        sigma: standard deviation in pixels (> 0).
        kernel_size: odd window size; default ``2 * ceil(3 sigma) + 1``.

    Shapes: ``(C, H, W)`` / ``(B, C, H, W)`` -> same shape. Computed in float64, returns
    the input dtype.
    """

    scale = 1

    def __init__(self, sigma: float, kernel_size: int | None = None):
        if not sigma > 0:
            raise ValueError(f"sigma must be positive, got {sigma!r}")
        if kernel_size is None:
            kernel_size = 2 * math.ceil(3 * sigma) + 1
        self.sigma = float(sigma)
        self.kernel_size = int(kernel_size)
        self._g1 = _gaussian1d(self.sigma, self.kernel_size)  # the 2-D kernel is its outer product
        self.margin = self.kernel_size // 2

    @property
    def kernel(self) -> Tensor:
        """The ``(k, k)`` float64 kernel (:func:`gaussian_kernel2d`)."""
        return self._g1[:, None] * self._g1[None, :]

    def forward(self, x: Tensor, generator: torch.Generator | None = None) -> Tensor:
        squeeze = x.ndim == 3
        y = x.to(torch.float32 if x.device.type == "mps" else torch.float64)  # MPS has no float64
        if squeeze:
            y = y.unsqueeze(0)
        b, c, h, w = y.shape
        r = self.kernel_size // 2
        y = F.pad(y.reshape(b * c, 1, h, w), (r, r, r, r), mode="replicate")
        g = self._g1.to(device=y.device, dtype=y.dtype)
        y = F.conv2d(y, g.view(1, 1, -1, 1))  # separable: columns, then rows
        y = F.conv2d(y, g.view(1, 1, 1, -1))
        y = y.reshape(b, c, h, w)
        if squeeze:
            y = y[0]
        return y.to(x.dtype)

    def __repr__(self) -> str:
        return f"GaussianBlur(sigma={self.sigma}, kernel_size={self.kernel_size})"


class AddGaussianNoise(Degradation):
    """Additive white Gaussian noise, ``x + (level / 255) * N(0, 1)``, optionally clipped to ``[0, 1]``.

    Args:
        level: noise standard deviation in grey levels of the 0..255 scale (e.g. 15, 25, 50).
        generator: default random generator (a call's ``generator=`` overrides it).
        clip: clamp the result to ``[0, 1]``.

    Shapes: same in and out. The generator must live on the input's device.
    """

    scale = 1
    margin = 0

    def __init__(self, level: float, generator: torch.Generator | None = None, *, clip: bool = True):
        if not level >= 0:
            raise ValueError(f"noise level must be >= 0, got {level!r}")
        self.level = float(level)
        self.generator = generator
        self.clip = bool(clip)

    def forward(self, x: Tensor, generator: torch.Generator | None = None) -> Tensor:
        gen = generator if generator is not None else self.generator
        noise = torch.randn(x.shape, generator=gen, dtype=x.dtype, device=x.device)
        y = x + (self.level / 255.0) * noise
        return y.clamp(0.0, 1.0) if self.clip else y

    def __repr__(self) -> str:
        return f"AddGaussianNoise(level={self.level}, clip={self.clip})"


class Quantize(Degradation):
    """Round to the 8-bit grid (what saving the LR image as a PNG does). Same shape in and out."""

    scale = 1
    margin = 0

    def forward(self, x: Tensor, generator: torch.Generator | None = None) -> Tensor:
        return quantize(x)


class Compose(Degradation):
    """Apply degradations in order; ``scale`` is the product of their scales.

    ``margin`` (in HR pixels) adds each step's margin times the total scale of the steps
    before it; ``None`` if any step's margin is unknown.

    Example: ``Compose([GaussianBlur(1.6, 7), BicubicDownsample(3), AddGaussianNoise(15)])``.

    Raises:
        ValueError: empty list or an element that is not callable.
    """

    def __init__(self, degradations: Iterable[Degradation] | Sequence[Degradation]):
        self.degradations = list(degradations)
        if not self.degradations:
            raise ValueError("Compose needs at least one degradation")
        scale, margin = 1, 0
        for d in self.degradations:
            if not callable(d):
                raise ValueError(f"Compose got a non-callable element {d!r}")
            m = getattr(d, "margin", None)
            margin = None if (margin is None or m is None) else margin + m * scale
            scale *= int(getattr(d, "scale", 1))
        self.scale = scale
        self.margin = margin

    def forward(self, x: Tensor, generator: torch.Generator | None = None) -> Tensor:
        for d in self.degradations:
            x = d(x, generator=generator) if isinstance(d, Degradation) else d(x)
        return x

    def __repr__(self) -> str:
        return "Compose([" + ", ".join(repr(d) for d in self.degradations) + "])"
