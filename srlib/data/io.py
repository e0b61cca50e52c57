"""Image input/output with Pillow: 8-bit RGB PNG files <-> float tensors in [0, 1].

Conventions used everywhere in srlib:

* an image tensor is ``(3, H, W)`` (or ``(B, 3, H, W)``), float32, RGB in ``[0, 1]``;
* files are 8-bit RGB PNGs; a value ``v`` in ``[0, 1]`` is stored as ``round(255 v)``.

Loading refuses, with an error naming the file, anything whose conversion to 8-bit RGB
would silently lose information (alpha, 16-bit depth) or change its meaning (CMYK);
grayscale is refused unless ``allow_gray=True`` because a benchmark image stored as
grayscale must be handled deliberately (Set14's ``img_003``, "bridge", is one).
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from torch import Tensor

__all__ = [
    "ImageError",
    "ImageReadError",
    "ImageModeError",
    "load_image",
    "save_image",
    "quantize",
    "from_uint8",
    "to_uint8",
    "IMAGE_EXTENSIONS",
    "is_grayscale_file",
]

#: File name endings treated as images when a folder is listed.
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")

_GRAY_MODES = ("L", "1")


class ImageError(ValueError):
    """Base class of the image-file errors raised by :func:`load_image`."""


class ImageReadError(ImageError):
    """The file exists but Pillow cannot read it as an image (not an image, or truncated)."""


class ImageModeError(ImageError):
    """The image is readable but its pixel format is not 8-bit RGB (or 8-bit gray when allowed)."""


def quantize(x: Tensor, rgb_range: float = 1.0) -> Tensor:
    """Round ``x`` to the 8-bit grid of ``[0, rgb_range]`` and clamp to that range.

    ``quantize(x) == round(clamp(x, 0, 1) * 255) / 255`` for ``rgb_range = 1``. Used before
    every metric and before saving, as in the official EDSR-family code
    (``src/utility.py`` ``quantize``).

    Args:
        x: any shape, floating point, values nominally in ``[0, rgb_range]``.
        rgb_range: the value that stands for white (1 or 255).

    Returns:
        Tensor of the same shape, dtype and device, values in ``{0, 1, ..., 255} * rgb_range / 255``.

    Raises:
        ValueError: non-floating input or non-positive ``rgb_range``.
    """
    if not x.is_floating_point():
        raise ValueError(f"quantize expects a floating-point tensor, got dtype {x.dtype}")
    if not rgb_range > 0:
        raise ValueError(f"rgb_range must be positive, got {rgb_range!r}")
    pixel = 255.0 / rgb_range
    return x.mul(pixel).clamp(0.0, 255.0).round().div(pixel)


def from_uint8(array: np.ndarray) -> Tensor:
    """Convert an ``(H, W, 3)`` (or ``(H, W)``) uint8 array to a ``(3, H, W)`` float32 tensor in ``[0, 1]``.

    A 2-D (grayscale) array is replicated to three channels.

    Raises:
        ValueError: wrong dtype or shape.
    """
    array = np.asarray(array)
    if array.dtype != np.uint8:
        raise ValueError(f"from_uint8 expects a uint8 array, got {array.dtype}")
    if array.ndim == 2:
        array = np.repeat(array[:, :, None], 3, axis=2)
    if array.ndim != 3 or array.shape[2] != 3:
        raise ValueError(f"from_uint8 expects (H, W, 3) or (H, W), got shape {array.shape}")
    if not array.flags.writeable or not array.flags.c_contiguous:
        array = np.array(array, order="C", copy=True)  # torch wants writable memory
    return torch.from_numpy(array).permute(2, 0, 1).float().div_(255.0)


def to_uint8(x: Tensor) -> np.ndarray:
    """Quantise a ``(3, H, W)`` or ``(1, 3, H, W)`` image in ``[0, 1]`` to an ``(H, W, 3)`` uint8 array.

    Raises:
        ValueError: wrong shape, non-floating dtype or non-finite values.
    """
    if not isinstance(x, Tensor):
        raise ValueError(f"expected a torch.Tensor, got {type(x).__name__}")
    if x.ndim == 4 and x.shape[0] == 1:
        x = x[0]
    if x.ndim != 3 or x.shape[0] != 3:
        raise ValueError(f"expected an image of shape (3, H, W) or (1, 3, H, W), got {tuple(x.shape)}")
    if not x.is_floating_point():
        raise ValueError(f"expected a floating-point image in [0, 1], got dtype {x.dtype}")
    if not torch.isfinite(x).all():
        raise ValueError("image contains NaN or infinite values")
    q = quantize(x.detach().to("cpu", torch.float32)).mul_(255.0).round_()
    return q.to(torch.uint8).permute(1, 2, 0).contiguous().numpy()


def _is_16bit(im: Image.Image) -> bool:
    # Pillow opens 48-bit RGB PNGs as mode "RGB" and silently keeps the top 8 bits; the
    # decoder's raw mode ("RGB;16B") still tells the truth.
    for tile in getattr(im, "tile", None) or ():
        args = tile[3] if len(tile) > 3 else None
        raw = args if isinstance(args, str) else (args[0] if isinstance(args, tuple) and args else "")
        if isinstance(raw, str) and ";16" in raw:
            return True
    return im.mode.startswith("I;16") or im.mode in ("I", "F")


def load_image(path: str | os.PathLike, *, allow_gray: bool = False) -> Tensor:
    """Read an image file as RGB ``(3, H, W)`` float32 in ``[0, 1]``.

    Accepted: 8-bit RGB, and palette images without transparency (converted to RGB).
    With ``allow_gray=True`` also 8-bit grayscale (``L``) and bilevel (``1``) images,
    replicated to three equal channels (then the Y channel of :func:`srlib.metrics.rgb_to_y`
    is ``16 + 219 g``).

    Args:
        path: file to read (PNG, or any format Pillow reads).
        allow_gray: accept grayscale files instead of raising.

    Returns:
        ``(3, H, W)`` float32 tensor on the CPU, values ``k / 255``.

    Raises:
        FileNotFoundError: ``path`` does not exist or is not a file (message names it).
        ImageReadError: Pillow cannot decode the file (not an image, truncated).
        ImageModeError: grayscale without ``allow_gray``; alpha channel (RGBA, LA,
            palette with transparency); 16-bit or float samples; CMYK and other colour
            spaces. The message names the file and the mode.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"image file not found: {path}")
    if not path.is_file():
        raise FileNotFoundError(f"not a file: {path}")
    try:
        with Image.open(path) as im:
            mode = im.mode
            if _is_16bit(im):
                raise ImageModeError(
                    f"{path}: 16-bit or floating-point image (mode {mode!r}); srlib expects 8-bit RGB"
                )
            if mode == "P" and im.has_transparency_data:
                raise ImageModeError(f"{path}: palette image with transparency (mode 'P'); expected 8-bit RGB")
            if mode in ("RGBA", "LA", "PA", "La", "RGBa"):
                raise ImageModeError(f"{path}: image has an alpha channel (mode {mode!r}); expected 8-bit RGB")
            if mode in _GRAY_MODES:
                if not allow_gray:
                    raise ImageModeError(
                        f"{path}: grayscale image (mode {mode!r}); pass allow_gray=True to replicate it to RGB"
                    )
                array = np.asarray(im.convert("L"), dtype=np.uint8)
            elif mode in ("RGB", "P"):
                array = np.asarray(im.convert("RGB"), dtype=np.uint8)
            else:
                raise ImageModeError(f"{path}: unsupported image mode {mode!r}; expected 8-bit RGB")
    except UnidentifiedImageError as err:
        raise ImageReadError(f"{path}: not an image file Pillow can read") from err
    except ImageError:
        raise
    except (OSError, SyntaxError, ValueError) as err:  # truncated / corrupt data
        raise ImageReadError(f"{path}: cannot decode image ({err})") from err
    return from_uint8(array)


def is_grayscale_file(path: str | os.PathLike) -> bool:
    """Whether an image file is stored as grayscale (Pillow mode ``L`` or ``1``); reads the header only.

    Raises:
        FileNotFoundError: missing file. ImageReadError: not an image.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"image file not found: {path}")
    try:
        with Image.open(path) as im:
            return im.mode in _GRAY_MODES
    except UnidentifiedImageError as err:
        raise ImageReadError(f"{path}: not an image file Pillow can read") from err


def save_image(x: Tensor, path: str | os.PathLike) -> Path:
    """Write an image as an 8-bit RGB PNG, atomically.

    The tensor is quantised (:func:`quantize`: clamp to ``[0, 1]``, round to ``k / 255``),
    written to a temporary file in the destination folder, and moved into place with
    ``os.replace``: a reader never sees a half-written file, and a failure leaves any
    previous file untouched. The parent folder is created if needed.

    Args:
        x: ``(3, H, W)`` or ``(1, 3, H, W)``, floating point, RGB in ``[0, 1]``, any device.
        path: destination; must end in ``.png``.

    Returns:
        The destination path.

    Raises:
        ValueError: wrong shape/dtype, NaN/inf values, or a name not ending in ``.png``.
    """
    path = Path(path)
    if path.suffix.lower() != ".png":
        raise ValueError(f"save_image writes PNG files; name must end in .png, got {path}")
    array = to_uint8(x)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            Image.fromarray(array).save(fh, format="PNG")
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path
