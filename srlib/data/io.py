"""Image input/output with Pillow: 8-bit RGB PNG files <-> float tensors in [0, 1].

Conventions used everywhere in srlib:

* an image tensor is ``(3, H, W)`` (or ``(B, 3, H, W)``), float32, RGB in ``[0, 1]``;
* files are 8-bit RGB PNGs; a value ``v`` in ``[0, 1]`` is stored as ``round(255 v)``.

Loading refuses, with an error naming the file, anything whose conversion to 8-bit RGB
would silently lose information (alpha, 16-bit depth) or change its meaning (CMYK);
grayscale is refused unless ``allow_gray=True`` because a benchmark image stored as
grayscale must be handled deliberately (Set14's ``img_003``, "bridge", is one). It also refuses
multi-frame files (animated GIF/PNG/WebP, multi-page TIFF: which frame would be meant?) and
images of more than :data:`MAX_PIXELS` pixels (a tiny compressed file can decode to gigabytes);
it applies the EXIF orientation tag, so a camera photo comes out the way viewers show it.
"""

from __future__ import annotations

import errno
import os
import tempfile
import warnings
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from torch import Tensor

__all__ = [
    "ImageError",
    "ImageReadError",
    "ImageModeError",
    "ImageTooLargeError",
    "MAX_PIXELS",
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

#: Largest image (width x height, in pixels) :func:`load_image` decodes: 50 megapixels, i.e. 150 MB as 8-bit
#: RGB and 600 MB as the float32 tensor. Set ``srlib.data.io.MAX_PIXELS = n`` (read at every call) or the
#: environment variable ``SRLIB_MAX_PIXELS`` (read at import) to change it; ``None`` or ``0`` lifts it
#: (Pillow's own decompression-bomb limit, ``2 * PIL.Image.MAX_IMAGE_PIXELS``, still applies).
MAX_PIXELS: int | None = int(os.environ.get("SRLIB_MAX_PIXELS", "50000000")) or None

# EXIF orientation tag (0x0112) -> the transpose that shows the picture upright (EXIF 2.32, Sec. 4.6.5).
_EXIF_ORIENTATION = 0x0112
_ORIENT = {2: Image.Transpose.FLIP_LEFT_RIGHT, 3: Image.Transpose.ROTATE_180, 4: Image.Transpose.FLIP_TOP_BOTTOM,
           5: Image.Transpose.TRANSPOSE, 6: Image.Transpose.ROTATE_270, 7: Image.Transpose.TRANSVERSE,
           8: Image.Transpose.ROTATE_90}


class ImageError(ValueError):
    """Base class of the image-file errors raised by :func:`load_image`."""


class ImageReadError(ImageError):
    """The file exists but Pillow cannot read it as an image (not an image, or truncated)."""


class ImageModeError(ImageError):
    """The image is readable but its pixel format is not 8-bit RGB (or 8-bit gray when allowed), or the file
    holds several frames."""


class ImageTooLargeError(ImageError):
    """The image has more pixels than :data:`MAX_PIXELS` (or Pillow's decompression-bomb limit)."""


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


def _stat_file(path: Path) -> None:
    """Raise FileNotFoundError (missing, broken link, not a file) or ImageReadError (link loop, no permission)."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        broken = " (a broken symbolic link)" if path.is_symlink() else ""
        raise FileNotFoundError(f"image file not found: {path}{broken}") from None
    except OSError as err:
        if err.errno == errno.ELOOP:
            raise ImageReadError(f"{path}: cannot open: symbolic link loop (the link points back to itself)") \
                from None
        raise ImageReadError(f"{path}: cannot open: {err.strerror or err}") from None
    import stat

    if not stat.S_ISREG(st.st_mode):
        raise FileNotFoundError(f"not a file: {path}")


def load_image(path: str | os.PathLike, *, allow_gray: bool = False) -> Tensor:
    """Read an image file as RGB ``(3, H, W)`` float32 in ``[0, 1]``.

    Accepted: 8-bit RGB, and palette images without transparency (converted to RGB).
    With ``allow_gray=True`` also 8-bit grayscale (``L``) and bilevel (``1``) images,
    replicated to three equal channels (then the Y channel of :func:`srlib.metrics.rgb_to_y`
    is ``16 + 219 g``). An EXIF orientation tag (camera JPEGs) is applied, so ``H, W`` are
    those of the upright picture. A camera MPO file (a JPEG with an embedded preview) gives its
    primary picture; any other file with several frames is refused.

    Args:
        path: file to read (PNG, or any format Pillow reads).
        allow_gray: accept grayscale files instead of raising.

    Returns:
        ``(3, H, W)`` float32 tensor on the CPU, values ``k / 255``.

    Raises:
        FileNotFoundError: ``path`` does not exist, is a broken symbolic link, or is not a file (message names it).
        ImageReadError: Pillow cannot decode the file (not an image, truncated), a symbolic link loop, or
            no permission to read it.
        ImageModeError: grayscale without ``allow_gray``; alpha channel (RGBA, LA,
            palette with transparency); 16-bit or float samples; CMYK and other colour
            spaces; several frames (animated GIF/PNG/WebP, multi-page TIFF; names the frame count).
            The message names the file and the mode.
        ImageTooLargeError: more than :data:`MAX_PIXELS` pixels, read from the header before decoding
            (names the size and the setting), or a header Pillow flags as a decompression bomb.
    """
    path = Path(path)
    _stat_file(path)
    try:
        with warnings.catch_warnings():
            # our own limit (MAX_PIXELS) is checked below, with an error naming the file
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(path) as im:
                array = _decode(im, path, allow_gray)
    except Image.DecompressionBombError as err:
        raise ImageTooLargeError(f"{path}: refused as a decompression bomb by Pillow ({err})") from None
    except UnidentifiedImageError as err:
        raise ImageReadError(f"{path}: not an image file Pillow can read") from err
    except ImageError:
        raise
    except (OSError, SyntaxError, ValueError) as err:  # truncated / corrupt data
        raise ImageReadError(f"{path}: cannot decode image ({err})") from err
    return from_uint8(array)


def _decode(im: Image.Image, path: Path, allow_gray: bool) -> np.ndarray:
    """Checks and decoding of an open Pillow image (see :func:`load_image`); ``(H, W[, 3])`` uint8."""
    w, h = im.size
    limit = MAX_PIXELS
    if limit and w * h > limit:
        raise ImageTooLargeError(
            f"{path}: {w} x {h} = {w * h:,} pixels is more than the limit of {limit:,} "
            f"({w * h * 12 / 2**30:.1f} GiB as a float32 tensor); raise srlib.data.io.MAX_PIXELS or the "
            "environment variable SRLIB_MAX_PIXELS if the image is meant"
        )
    n_frames = int(getattr(im, "n_frames", 1) or 1)
    if n_frames > 1 and im.format != "MPO":
        raise ImageModeError(
            f"{path}: the file holds {n_frames} frames ({im.format}, animated or multi-page); srlib reads single "
            "images: save the frame you mean as its own file"
        )
    mode = im.mode
    if _is_16bit(im):
        raise ImageModeError(f"{path}: 16-bit or floating-point image (mode {mode!r}); srlib expects 8-bit RGB")
    if mode == "P" and im.has_transparency_data:
        raise ImageModeError(f"{path}: palette image with transparency (mode 'P'); expected 8-bit RGB")
    if mode in ("RGBA", "LA", "PA", "La", "RGBa"):
        raise ImageModeError(f"{path}: image has an alpha channel (mode {mode!r}); expected 8-bit RGB")
    try:
        orientation = int(im.getexif().get(_EXIF_ORIENTATION, 1))
    except Exception:  # an unreadable EXIF block: no orientation
        orientation = 1
    if mode in _GRAY_MODES:
        if not allow_gray:
            raise ImageModeError(
                f"{path}: grayscale image (mode {mode!r}); pass allow_gray=True to replicate it to RGB"
            )
        out = im.convert("L")
    elif mode in ("RGB", "P"):
        out = im.convert("RGB")
    else:
        raise ImageModeError(f"{path}: unsupported image mode {mode!r}; expected 8-bit RGB")
    if orientation in _ORIENT:
        out = out.transpose(_ORIENT[orientation])
    return np.asarray(out, dtype=np.uint8)


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
    previous file untouched. The parent folder is created if needed. The file gets the usual
    permissions, ``0o666`` minus the process umask (``0o644`` under the common ``022``).

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
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600 files; a saved picture gets the usual mode
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


def _umask() -> int:
    """The process umask, read without changing it where Linux shows it (``/proc/self/status``)."""
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask
