"""Input and hyper-parameter checks shared by the attention modules, the networks and the data helpers.

Bad input must never pass silently: a NaN in a feature map, a uint8 image, a one-channel picture or an
impossible hyper-parameter raises a :class:`ValueError` that names the offending tensor or field, its value
and what is allowed, instead of an all-NaN result or a raw PyTorch error deep inside a convolution.

* :func:`check_finite` -- one ``torch.isfinite(x).all()`` per call, cheap next to any attention
  (``O(L)`` against ``O(L * 3c)`` or ``O(L^2)``); called at the top of every attention ``forward``.
* :func:`check_feature_map` -- ``(B, C, H, W)`` floating point feature maps (attention modules).
* :func:`check_image_tensor` -- RGB images ``(B, 3, h, w)`` (or ``(3, h, w)``) as the networks and
  :func:`srlib.inference.super_resolve` expect them: floating point, 3 channels, values in
  ``[0, rgb_range]`` (with a margin for the overshoot of bicubic resampling), all finite.
* :func:`check_int`, :func:`check_number`, :func:`check_choice` -- config fields, with the field name and
  the allowed range in the message.

The checks that read the values of a tensor (NaN/Inf, image value range; on a GPU each is a device
sync) can be switched off, e.g. for a benchmark that has already validated its data, with
:func:`set_input_checks` or the environment variable ``SRLIB_INPUT_CHECKS=0``. Shape, channel and dtype
checks and the hyper-parameter checks always run.
"""

from __future__ import annotations

import math
import numbers
import operator
import os
from typing import Any, Iterable

import torch

__all__ = [
    "IMAGE_BULK_FRACTION",
    "IMAGE_BULK_TOLERANCE",
    "IMAGE_RANGE_MARGIN",
    "NonFiniteError",
    "as_integer",
    "check_attention_args",
    "check_choice",
    "check_divisible",
    "check_feature_map",
    "check_finite",
    "check_image_tensor",
    "check_int",
    "check_ints",
    "check_number",
    "check_sr_config",
    "input_checks_enabled",
    "set_input_checks",
]

#: Images may exceed ``[0, rgb_range]`` by this fraction of ``rgb_range`` on either side (bicubic
#: resampling overshoots near edges); anything further out (e.g. a 0-255 image) is refused.
IMAGE_RANGE_MARGIN = 0.5

#: The bulk check of :func:`check_image_tensor` (``bulk=True``): at most :data:`IMAGE_BULK_FRACTION` of the
#: values may lie further than :data:`IMAGE_BULK_TOLERANCE` ``* rgb_range`` outside ``[0, rgb_range]``.
#: Bicubic overshoot stays far below (measured on the bundled photographs downscaled x2-x4 with
#: ``srlib.data.imresize``: at most 0.35 % of the values beyond 0.02), while an image shifted into
#: ``[-0.45, 0]`` or ``[1, 1.45]`` (within the margin at its extremes) has nearly all its values there.
IMAGE_BULK_TOLERANCE = 0.02
IMAGE_BULK_FRACTION = 0.02

_enabled = os.environ.get("SRLIB_INPUT_CHECKS", "1").strip().lower() not in ("0", "false", "no", "off")


class NonFiniteError(ValueError):
    """A tensor holds NaN or Inf (raised by :func:`check_finite`; a ``ValueError``, so ``except ValueError``
    catches it). The training loop turns it into a ``FloatingPointError`` naming the iteration."""


def set_input_checks(enabled: bool) -> bool:
    """Switch the value checks (NaN/Inf in any checked tensor, the value range of images) on or off.

    Args:
        enabled: ``True`` (default at import, unless ``SRLIB_INPUT_CHECKS=0``) or ``False``.
    Returns:
        The previous setting, so that callers can restore it.
    """
    global _enabled
    previous, _enabled = _enabled, bool(enabled)
    return previous


def input_checks_enabled() -> bool:
    """Whether the value checks of :func:`check_finite` and :func:`check_image_tensor` are active."""
    return _enabled


def check_finite(x: torch.Tensor, name: str) -> None:
    """Raise if ``x`` holds a NaN or an infinity.

    Args:
        x: any tensor (integer tensors are always finite).
        name: how the message calls it, e.g. ``"NonLocalAttention input x"``.
    Raises:
        NonFiniteError: (a ``ValueError``) naming ``name``, how many of the ``x.numel()`` values are
            non-finite (NaN / +-Inf).
    """
    if not _enabled or not x.is_floating_point():
        return
    if bool(torch.isfinite(x).all()):
        return
    bad = ~torch.isfinite(x.detach())
    n_nan = int(torch.isnan(x.detach()).sum())
    raise NonFiniteError(
        f"{name} has {int(bad.sum())} non-finite values of {x.numel()} ({n_nan} NaN, {int(bad.sum()) - n_nan} "
        f"Inf), shape {tuple(x.shape)}; check the data or the previous layer"
    )


def check_feature_map(x: torch.Tensor, name: str, channels: int | None = None) -> None:
    """A feature map ``(B, C, H, W)`` of floating point values, all finite, with ``channels`` channels if given.

    Any ``H, W >= 1`` is accepted (the bucketed attentions pad, see their docstrings).

    Raises:
        ValueError: wrong number of dims, channels, an integer/bool dtype, an empty map or non-finite values,
            naming ``name`` and the offending shape / dtype / count.
    """
    c = "" if channels is None else f" = (B, {channels}, H, W)"
    if x.dim() != 4 or (channels is not None and x.shape[1] != channels):
        raise ValueError(f"{name}: expected a feature map (B, C, H, W){c}, got shape {tuple(x.shape)}")
    if not x.is_floating_point():
        raise ValueError(f"{name}: expected a floating point feature map, got dtype {x.dtype}")
    if x.numel() == 0:
        raise ValueError(f"{name}: empty feature map of shape {tuple(x.shape)}")
    check_finite(x, name)


def check_image_tensor(
    x: torch.Tensor,
    name: str = "image",
    *,
    channels: int = 3,
    rgb_range: float = 1.0,
    dims: tuple[int, ...] = (4,),
    bulk: bool = False,
) -> None:
    """An RGB image batch as the networks take it: ``(B, 3, h, w)`` float in ``[0, rgb_range]``.

    Values may exceed the range by :data:`IMAGE_RANGE_MARGIN` ``* rgb_range`` (resampling overshoot).
    With ``bulk=True`` the bulk of the values must also lie in the range: at most
    :data:`IMAGE_BULK_FRACTION` of them further than :data:`IMAGE_BULK_TOLERANCE` ``* rgb_range`` outside.

    Args:
        x: the tensor to check.
        name: how the message calls it (``"lr"``, ``"NLSN input x"``).
        channels: expected channel count (3 for RGB).
        rgb_range: the network's ``rgb_range`` (1: images in ``[0, 1]``).
        dims: accepted numbers of dims: ``(4,)`` for a batch, ``(3, 4)`` to also allow one ``(3, h, w)`` image.
        bulk: also check the bulk of the values (above), not only the extremes.
    Raises:
        ValueError: wrong dims, channel count, dtype (integer such as uint8), an empty image, values far
            outside ``[0, rgb_range]`` or non-finite values; the message names ``name``, the value found and
            what to pass instead (e.g. ``x.float() / 255``, ``srlib.data.from_uint8(array)``).
    """
    shapes = " or ".join({3: f"({channels}, h, w)", 4: f"(B, {channels}, h, w)"}[d] for d in dims)
    if x.dim() not in dims:
        raise ValueError(f"{name} expects {shapes} images, got shape {tuple(x.shape)}")
    if x.shape[-3] != channels:
        hint = (" (grayscale? repeat it to RGB with x.repeat_interleave(3, dim=-3), or read the file with "
                "srlib.data.load_image(path, allow_gray=True))" if x.shape[-3] == 1 else
                " (channels last? move them with x.movedim(-1, -3))" if x.shape[-1] == channels else "")
        raise ValueError(f"{name} expects {shapes} images with {channels} channels in dim -3, got "
                         f"{x.shape[-3]} channels, shape {tuple(x.shape)}{hint}")
    if not x.is_floating_point():
        raise ValueError(
            f"{name} expects a floating point image in [0, {rgb_range:g}], got dtype {x.dtype}; pass "
            f"x.float() / 255 for 8-bit values, or srlib.data.from_uint8(array) / srlib.data.load_image(path)"
        )
    if x.numel() == 0:
        raise ValueError(f"{name} got an empty image, shape {tuple(x.shape)}")
    if not _enabled:
        return
    check_finite(x, f"{name} input image")
    lo, hi = float(x.min()), float(x.max())
    margin = IMAGE_RANGE_MARGIN * rgb_range
    if lo < -margin or hi > rgb_range + margin:
        hint = " (a 0-255 image? divide it by 255)" if hi > 2 and rgb_range <= 1 else ""
        raise ValueError(
            f"{name} expects values in [0, {rgb_range:g}] (rgb_range), got values in [{lo:.4g}, {hi:.4g}]{hint}"
        )
    if bulk:
        tol = IMAGE_BULK_TOLERANCE * rgb_range
        outside = float(((x < -tol) | (x > rgb_range + tol)).float().mean())
        if outside > IMAGE_BULK_FRACTION:
            raise ValueError(
                f"{name} expects values in [0, {rgb_range:g}] (rgb_range), but {100 * outside:.1f} % of its values "
                f"lie outside [{-tol:g}, {rgb_range + tol:g}] (values in [{lo:.4g}, {hi:.4g}], mean "
                f"{float(x.float().mean()):.4g}; at most {100 * IMAGE_BULK_FRACTION:g} % may, for resampling "
                "overshoot); shifted or wrongly normalised image? clamp it with x.clamp(0, 1) if that is meant"
            )


def as_integer(value: Any) -> int | None:
    """``value`` as a Python ``int`` if it is an integer (``int``, NumPy integer, anything with ``__index__``),
    else ``None``: bools, floats (even ``2.0``), strings and ``None`` give ``None``.

    For the checks that accept any integer type and name the offending value themselves
    (:func:`srlib.data.check_scale`, the ``topk`` of soft thresholding).
    """
    if isinstance(value, bool):
        return None
    try:
        return operator.index(value)
    except TypeError:
        return None


def _is_int(value: Any) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def check_int(
    owner: str, field: str, value: Any, minimum: int = 1, maximum: int | None = None, *, odd: bool = False
) -> int:
    """An integer hyper-parameter in ``[minimum, maximum]`` (and odd, if ``odd``: kernel sizes).

    Args:
        owner: the class or config, e.g. ``"NLSNConfig"``; field: the field name.
    Returns:
        ``value``.
    Raises:
        ValueError: not an ``int`` (bools and floats are refused), out of range or even where odd is
            required; names ``owner.field``, the value and the allowed range.
    """
    allowed = f">= {minimum}" if maximum is None else f"in [{minimum}, {maximum}]"
    kind = "an odd integer" if odd else "an integer"
    if (not _is_int(value) or value < minimum or (maximum is not None and value > maximum)
            or (odd and value % 2 == 0)):
        raise ValueError(f"{owner}.{field} must be {kind} {allowed}, got {value!r}")
    return value


def check_ints(owner: str, minimum: int = 1, **values: Any) -> None:
    """:func:`check_int` for several fields at once: ``check_ints("NLSA", channels=64, chunk_size=144)``."""
    for field, value in values.items():
        check_int(owner, field, value, minimum)


def check_number(
    owner: str,
    field: str,
    value: Any,
    *,
    low: float | None = None,
    high: float | None = None,
    low_open: bool = False,
) -> float:
    """A finite real hyper-parameter with ``low <= value <= high`` (``low < value`` if ``low_open``).

    Raises:
        ValueError: not a real number, NaN/Inf, or out of range; names ``owner.field``, the value and the
            allowed range.
    """
    parts = []
    if low is not None:
        parts.append(f"{'>' if low_open else '>='} {low:g}")
    if high is not None:
        parts.append(f"<= {high:g}")
    allowed = "a finite number" + (" " + " and ".join(parts) if parts else "")
    ok = isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value)
    if ok and low is not None:
        ok = value > low if low_open else value >= low
    if ok and high is not None:
        ok = value <= high
    if not ok:
        raise ValueError(f"{owner}.{field} must be {allowed}, got {value!r}")
    return value


def check_choice(owner: str, field: str, value: Any, choices: Iterable[Any]) -> Any:
    """``value`` must be one of ``choices``.

    Raises:
        ValueError: naming ``owner.field``, the value and the valid choices.
    """
    choices = tuple(choices)
    if value not in choices:
        raise ValueError(f"{owner}.{field} must be one of {choices}, got {value!r}")
    return value


def check_divisible(owner: str, field: str, value: int, divisor_field: str, divisor: int) -> None:
    """``value % divisor == 0`` (e.g. channels divisible by the reduction).

    Raises:
        ValueError: naming both fields and values.
    """
    if value % divisor:
        raise ValueError(f"{owner}.{field} ({value}) must be divisible by {divisor_field} ({divisor})")


def check_attention_args(owner: str, res_scale: Any, k_size: Any = None, **sizes: Any) -> None:
    """The constructor checks the attention blocks share (NLA, NLSA, ENLCA): sizes, embedding, residual scale.

    In this order: every entry of ``sizes`` is an integer >= 1 (:func:`check_ints`, in the order given);
    ``k_size``, if given, is an odd integer (the embedding convolution's kernel); the channel count
    (``sizes["channels"]``, or ``sizes["channel"]`` in the official spelling of NLA/ENLCA) is divisible by
    ``sizes["reduction"]`` (the embedding has ``C / reduction`` channels); ``res_scale`` is a finite number
    >= 0 (``out = res_scale * y + x``).

    Example: ``check_attention_args("NonLocalSparseAttention", 1.0, 3, n_hashes=4, channels=64, reduction=4)``.

    Raises:
        ValueError: the first check that fails, with the message of :func:`check_int`, :func:`check_divisible`
            or :func:`check_number` (naming ``owner.field`` and the value).
    """
    check_ints(owner, **sizes)
    if k_size is not None:
        check_int(owner, "k_size", k_size, odd=True)
    field = "channels" if "channels" in sizes else "channel"
    check_divisible(owner, field, sizes[field], "reduction", sizes["reduction"])
    check_number(owner, "res_scale", res_scale, low=0)


#: Upscaling factors the networks' sub-pixel upsampler builds (:data:`srlib.models.common.UPSAMPLER_SCALES`).
_SCALES = (2, 3, 4, 8)


def check_sr_config(cfg: Any) -> None:
    """Validate the fields every network config shares, where present (``__post_init__`` of each config).

    ``scale`` in (2, 3, 4, 8); counts ``n_resgroups``, ``n_feats``, ``reduction``, ``chunk_size``,
    ``window_size``, ``n_hashes``, ``n_rounds``, ``n_clusters``, ``n_features``, ``attn_every`` >= 1;
    ``n_resblocks`` >= 0 (0: no residual blocks); ``n_feats`` divisible by ``reduction``; ``res_scale``,
    ``gla_res_scale`` finite >= 0; ``rgb_range`` > 0; ``n_colors`` == 3 (RGB, the mean-shift layers).

    Raises:
        ValueError: naming ``<Config>.<field>``, the value and the allowed range.
    """
    owner = type(cfg).__name__
    get = lambda f: getattr(cfg, f)  # noqa: E731
    has = lambda f: hasattr(cfg, f)  # noqa: E731
    if has("scale") and (not _is_int(cfg.scale) or cfg.scale not in _SCALES):
        raise ValueError(f"unsupported upscaling factor {owner}.scale={cfg.scale!r}; supported: "
                         f"{', '.join(map(str, _SCALES))}")
    for field in ("n_resgroups", "n_feats", "reduction", "chunk_size", "window_size", "n_hashes", "n_rounds",
                  "n_clusters", "n_features", "attn_every"):
        if has(field):
            check_int(owner, field, get(field), 1)
    if has("n_resblocks"):
        check_int(owner, "n_resblocks", cfg.n_resblocks, 0)
    if has("n_feats") and has("reduction"):
        check_divisible(owner, "n_feats", cfg.n_feats, "reduction", cfg.reduction)
    for field in ("res_scale", "gla_res_scale"):
        if has(field):
            check_number(owner, field, get(field), low=0)
    if has("rgb_range"):
        check_number(owner, "rgb_range", cfg.rgb_range, low=0, low_open=True)
    if has("n_colors") and cfg.n_colors != 3:
        raise ValueError(f"{owner}.n_colors must be 3 (RGB; the mean-shift layers are RGB), got {cfg.n_colors!r}")
