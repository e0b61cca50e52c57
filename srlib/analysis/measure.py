"""Measuring the cost of an attention module as the image grows: wall-clock time and peak tensor memory.

Dense non-local attention (NLSN paper, Eq. 4) compares every one of the ``L = H * W`` positions with every
other: ``O(L²)`` time and, when the ``L x L`` weight matrix is stored, ``O(L²)`` memory. The helpers here
measure both on feature maps of growing size so that a log-log plot shows the exponent:
:func:`measure_attention_cost` runs the measurement, :func:`peak_tensor_bytes` tracks memory,
:func:`loglog_slope` fits the exponent.

Timings depend on the machine and its load; never assert on them in tests.
"""

from __future__ import annotations

import math
import statistics
import time
from typing import Any, Callable, Sequence

import torch
from torch import Tensor
from torch.multiprocessing.reductions import StorageWeakRef
from torch.overrides import TorchFunctionMode
from torch.utils._pytree import tree_flatten

__all__ = ["peak_tensor_bytes", "measure_attention_cost", "loglog_slope"]


class _LiveTensorBytes(TorchFunctionMode):
    """Function mode that records every storage a torch function returns and the peak of the live total."""

    def __init__(self) -> None:
        super().__init__()
        self._refs: dict[int, tuple[StorageWeakRef, int]] = {}
        self.peak = 0

    def _live_bytes(self) -> int:
        for key in [k for k, (ref, _) in self._refs.items() if ref.expired()]:
            del self._refs[key]
        return sum(n for _, n in self._refs.values())

    def _register(self, tensors, count: bool) -> None:
        for t in tensors:
            if isinstance(t, Tensor) and t.device.type != "meta":
                storage = t.untyped_storage()
                ref = StorageWeakRef(storage)
                known = self._refs.get(ref.cdata)
                if known is None or known[0].expired():
                    self._refs[ref.cdata] = (ref, storage.nbytes() if count else 0)

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        # An input storage not seen before was allocated before the call: track it with 0 bytes, so that
        # views of it returned by this function are not mistaken for new allocations.
        self._register(tree_flatten((args, kwargs))[0], count=False)
        out = func(*args, **kwargs)
        self._register(tree_flatten(out)[0], count=True)
        self.peak = max(self.peak, self._live_bytes())
        return out


def peak_tensor_bytes(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> int:
    """Peak number of bytes held by tensors that ``fn(*args, **kwargs)`` creates, on any device.

    Every torch function and tensor method that ``fn`` calls from Python is intercepted (a
    ``TorchFunctionMode``, which is light: it does not change which kernels run); the storages it returns
    are tracked with weak references, and after each call the bytes of the storages still alive are added
    up. The maximum over the call is returned. Tensors that existed before the call (inputs, parameters)
    are not counted; views share their base's storage and are counted once.

    What it sees: every tensor that Python code holds, e.g. the ``L x L`` scores and weights of an explicit
    softmax attention. What it does not see: buffers that a single function allocates and frees
    internally (the blocks a fused ``scaled_dot_product_attention`` kernel streams through, the workspace
    of a convolution). The result is exact and deterministic for a given PyTorch version.

    Args:
        fn: the callable to measure; run once (wrap it in ``torch.no_grad()`` for inference memory).
        *args, **kwargs: passed to ``fn``.

    Returns:
        Peak live bytes (int, ``>= 0``).
    """
    mode = _LiveTensorBytes()
    with mode:
        result = fn(*args, **kwargs)
    del result
    return mode.peak


def loglog_slope(x: Sequence[float], y: Sequence[float]) -> float:
    """Least-squares slope of ``log y`` against ``log x``: the exponent ``a`` in ``y ~ c * x^a``.

    Args:
        x, y: equally long sequences (at least 2) of positive numbers; ``x`` not all equal.

    Returns:
        The fitted exponent (float). ``y = 3 * x**2`` gives exactly 2.

    Raises:
        ValueError: different lengths, fewer than 2 points, non-positive values, or constant ``x``.
    """
    xs, ys = [float(v) for v in x], [float(v) for v in y]
    if len(xs) != len(ys) or len(xs) < 2:
        raise ValueError(f"need two equally long sequences of >= 2 values, got {len(xs)} and {len(ys)}")
    if min(xs) <= 0 or min(ys) <= 0:
        raise ValueError("log-log fit needs positive values")
    lx, ly = [math.log(v) for v in xs], [math.log(v) for v in ys]
    mx, my = sum(lx) / len(lx), sum(ly) / len(ly)
    sxx = sum((a - mx) ** 2 for a in lx)
    if sxx == 0:
        raise ValueError("x values are all equal; the slope is undefined")
    return sum((a - mx) * (b - my) for a, b in zip(lx, ly)) / sxx


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def measure_attention_cost(
    fn: Callable[[Tensor], Any],
    sizes: Sequence[int],
    repeats: int = 3,
    *,
    channels: int = 64,
    batch: int = 1,
    device: torch.device | str = "cpu",
    dtype: torch.dtype = torch.float32,
    generator: torch.Generator | None = None,
    memory: bool = True,
    progress: bool = False,
    clock: str = "wall",
) -> dict[str, list]:
    """Time (and track the memory of) ``fn`` on random ``(batch, channels, s, s)`` feature maps, ``s`` in ``sizes``.

    For each side ``s``: draw ``x`` from ``N(0, 1)`` (CPU ``generator``, then moved to ``device``), run
    ``fn(x)`` once to warm up, then ``repeats`` timed runs under ``torch.no_grad()``; the median and the
    minimum are reported (on a shared, loaded machine the minimum is the least disturbed estimate). With
    ``memory=True`` one more run measures
    :func:`peak_tensor_bytes` (and, on CUDA, ``torch.cuda.max_memory_allocated`` above the level before
    the call).

    Args:
        fn: maps a feature map ``(B, C, s, s)`` to anything (e.g. a ``NonLocalAttention`` module).
        sizes: spatial sides ``s`` (each ``>= 1``); ``L = s * s`` positions.
        repeats: timed runs per size (``>= 1``).
        channels, batch, device, dtype: of the random input.
        generator: CPU generator for the inputs (``None``: seeded with 0).
        memory: also measure peak tensor memory.
        progress: show a ``tqdm.auto`` progress bar.
        clock: ``"wall"`` (``time.perf_counter``, CUDA synchronised) or ``"cpu"`` (``time.process_time``: CPU
            time of this process, all its threads; other processes competing for a shared machine do not
            inflate it; CPU devices only).

    Returns:
        dict of equally long lists: ``"size"`` (s), ``"length"`` (L), ``"seconds"`` (median time),
        ``"seconds_min"`` (fastest run), ``"seconds_all"`` (all timed runs), ``"peak_bytes"`` (tensor bytes,
        or ``None`` without ``memory``), ``"cuda_peak_bytes"`` (``None`` off CUDA).

    Raises:
        ValueError: empty ``sizes``, a size ``< 1``, ``repeats < 1``, ``channels < 1`` or ``batch < 1``;
            an unknown ``clock``, or ``clock="cpu"`` on a non-CPU device.
    """
    sizes = [int(s) for s in sizes]
    if not sizes or min(sizes) < 1:
        raise ValueError(f"sizes must be a non-empty list of positive sides, got {sizes}")
    if repeats < 1 or channels < 1 or batch < 1:
        raise ValueError(f"repeats, channels and batch must be >= 1 (got {repeats}, {channels}, {batch})")
    device = torch.device(device)
    if clock not in ("wall", "cpu"):
        raise ValueError(f"clock must be 'wall' or 'cpu', got {clock!r}")
    if clock == "cpu" and device.type != "cpu":
        raise ValueError(f"clock='cpu' measures host CPU time; use clock='wall' on {device.type}")
    now = time.perf_counter if clock == "wall" else time.process_time
    if generator is None:
        generator = torch.Generator().manual_seed(0)
    keys = ("size", "length", "seconds", "seconds_min", "seconds_all", "peak_bytes", "cuda_peak_bytes")
    result: dict[str, list] = {k: [] for k in keys}
    iterator: Sequence[int] = sizes
    if progress:
        from tqdm.auto import tqdm

        iterator = tqdm(sizes, desc="sizes")
    with torch.no_grad():
        for s in iterator:
            x = torch.randn(batch, channels, s, s, generator=generator, dtype=dtype).to(device)
            fn(x)  # warm-up
            _sync(device)
            times = []
            for _ in range(repeats):
                t0 = now()
                fn(x)
                _sync(device)
                times.append(now() - t0)
            peak = peak_tensor_bytes(fn, x) if memory else None
            cuda_peak = None
            if memory and device.type == "cuda":
                _sync(device)
                base = torch.cuda.memory_allocated(device)
                torch.cuda.reset_peak_memory_stats(device)
                fn(x)
                _sync(device)
                cuda_peak = torch.cuda.max_memory_allocated(device) - base
            result["size"].append(s)
            result["length"].append(s * s)
            result["seconds"].append(statistics.median(times))
            result["seconds_min"].append(min(times))
            result["seconds_all"].append(times)
            result["peak_bytes"].append(peak)
            result["cuda_peak_bytes"].append(cuda_peak)
    return result
