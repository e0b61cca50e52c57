"""Memory budgets for the blocked inference paths of the attention mechanisms.

Several mechanisms build a large temporary in inference: the scores ``(B, R, n, c, 3c)`` of the bucketed
attentions (NLSA, GLA, LCoA; :func:`srlib.attention.buckets.bucketed_attention`), ENLA's random-feature
matrices ``(L, m)`` (:func:`srlib.attention.enla.enla`), HSPA's scores ``(B, L, L)``
(:func:`srlib.attention.hspa.hspa_attention`). Without autograd they compute that temporary **in one pass
when it fits the budget of its device**, and otherwise in as few blocks as the budget allows (each block's
temporary at most the budget). The result is the same either way, up to float rounding.

The budget is a number of bytes per device type:

==========  =============================  ==================================================================
device      default                        why
==========  =============================  ==================================================================
``cpu``     16 MiB (``2**24`` bytes)       measured on a 2-core AMD EPYC (``benchmarks/budget_sweep.py``): one
                                           block of 4-16 MiB is as fast as anything larger at 1 thread and
                                           large enough to share between threads; much smaller blocks pay a
                                           per-block overhead (2**15 float32 features per block made ENLA
                                           3-4x slower), a single pass over ~100 MiB of scores goes to main
                                           memory at every elementwise step (up to 2-4x slower).
``cuda``    1 GiB (``2**30`` bytes)        on a GPU one large kernel beats many small launches: any map the
(and any                                   benchmarks use (up to 200 x 200) runs in one pass
other)
==========  =============================  ==================================================================

Set it for a process with :func:`set_block_budget` (``None`` restores the default), for a block of code with
:func:`block_budget`, or through the environment variables ``SRLIB_BLOCK_BUDGET_CPU`` and
``SRLIB_BLOCK_BUDGET_CUDA`` (read when no value was set; bytes, or with a suffix ``K``/``M``/``G``, binary,
e.g. ``64M``). Devices other than ``cpu`` use the ``cuda`` budget unless given their own.

The training paths (autograd) always run in one pass: their temporaries are saved for the backward anyway.
"""

from __future__ import annotations

import contextlib
import os
import re
from typing import Iterator

import torch

__all__ = [
    "DEFAULT_BLOCK_BUDGETS",
    "block_budget",
    "get_block_budget",
    "items_per_block",
    "set_block_budget",
]

#: Built-in budgets in bytes per device type (module docstring).
DEFAULT_BLOCK_BUDGETS = {"cpu": 2**24, "cuda": 2**30}

_ENV = "SRLIB_BLOCK_BUDGET_{}"
_UNITS = {"": 1, "K": 2**10, "M": 2**20, "G": 2**30}
_budgets: dict[str, int] = {}


def _kind(device: torch.device | str | None) -> str:
    if device is None:
        return "cpu"
    return torch.device(device).type


def _parse(text: str, name: str) -> int:
    m = re.fullmatch(r"\s*(\d+)\s*([KMG]?)(?:I?B)?\s*", text.upper())
    if not m or int(m.group(1)) < 1:
        raise ValueError(f"{name} = {text!r}: expected a positive number of bytes, e.g. 16777216 or 16M")
    return int(m.group(1)) * _UNITS[m.group(2)]


def get_block_budget(device: torch.device | str | None = "cpu") -> int:
    """Bytes one block's temporary may take on ``device`` (a ``torch.device``, ``"cpu"``, ``"cuda:0"``...).

    Order: the value of :func:`set_block_budget`, else ``SRLIB_BLOCK_BUDGET_<TYPE>`` (e.g.
    ``SRLIB_BLOCK_BUDGET_CPU``), else :data:`DEFAULT_BLOCK_BUDGETS` (``cuda``'s for device types not listed).

    Raises:
        ValueError: the environment variable is set but is not a positive size.
    """
    kind = _kind(device)
    if kind in _budgets:
        return _budgets[kind]
    env = _ENV.format(kind.upper())
    if os.environ.get(env, "").strip():
        return _parse(os.environ[env], env)
    return DEFAULT_BLOCK_BUDGETS.get(kind, DEFAULT_BLOCK_BUDGETS["cuda"])


def set_block_budget(nbytes: int | None, device: torch.device | str = "cpu") -> None:
    """Set the block budget of a device type for this process (``None``: back to environment / default).

    Args:
        nbytes: bytes per block (``>= 1``; ``1`` forces the smallest blocks, a huge value a single pass), or
            ``None``.
        device: ``"cpu"``, ``"cuda"`` (the index of ``"cuda:1"`` is ignored: one budget per device type).
    Raises:
        ValueError: ``nbytes`` not a positive integer.
    """
    kind = _kind(device)
    if nbytes is None:
        _budgets.pop(kind, None)
        return
    if isinstance(nbytes, bool) or not isinstance(nbytes, int) or nbytes < 1:
        raise ValueError(f"block budget must be a positive number of bytes, got {nbytes!r}")
    _budgets[kind] = nbytes


@contextlib.contextmanager
def block_budget(nbytes: int | None, device: torch.device | str = "cpu") -> Iterator[None]:
    """``with block_budget(2**20):`` the budget of ``device`` inside the block, restored afterwards."""
    kind = _kind(device)
    had, old = kind in _budgets, _budgets.get(kind)
    set_block_budget(nbytes, kind)
    try:
        yield
    finally:
        if had:
            _budgets[kind] = old
        else:
            _budgets.pop(kind, None)


def items_per_block(n_items: int, bytes_per_item: int, device: torch.device | str | None = "cpu") -> int:
    """How many of ``n_items`` units (rows, chunks) go in one block: all of them when their temporary
    ``n_items * bytes_per_item`` fits the budget of ``device`` (a single pass), otherwise as many as fit
    (at least 1).

    Raises:
        ValueError: ``n_items < 1`` or ``bytes_per_item < 1``.
    """
    if n_items < 1 or bytes_per_item < 1:
        raise ValueError(f"need n_items >= 1 and bytes_per_item >= 1, got {n_items}, {bytes_per_item}")
    return max(1, min(n_items, get_block_budget(device) // bytes_per_item))
