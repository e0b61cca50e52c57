"""Measuring the cost of an attention module as the image grows: time and peak memory (the one implementation).

Dense non-local attention (NLSN paper, Eq. 4) compares every one of the ``L = H * W`` positions with every
other: ``O(L²)`` time and, when the ``L x L`` weight matrix is stored, ``O(L²)`` memory. The helpers here
measure both on feature maps of growing size so that a log-log plot shows the exponent:
:func:`measure_attention_cost` runs the measurement, :func:`time_calls` times a callable with
``torch.utils.benchmark`` (``Timer``, ``blocked_autorange``, a fixed thread count; CUDA synchronised),
:func:`peak_tensor_bytes` and :func:`cuda_peak_bytes` track memory, :func:`loglog_slope` fits the exponent.
The benchmark harness (:mod:`srlib.analysis.bench`, ``benchmarks/harness.py``) times and tracks memory with
these same functions.

Timings depend on the machine and its load; never assert on them in tests.
"""

from __future__ import annotations

import math
import time
from typing import Any, Callable, Sequence

import torch
from torch import Tensor
from torch.utils import benchmark
from torch.multiprocessing.reductions import StorageWeakRef
from torch.overrides import TorchFunctionMode
from torch.utils._pytree import tree_flatten

__all__ = ["time_calls", "peak_tensor_bytes", "cuda_peak_bytes", "measure_attention_cost", "loglog_slope",
           "return_freed_memory"]

#: Clocks of :func:`time_calls`: wall time, or CPU time of this process (all its threads).
CLOCKS = ("wall", "cpu")


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


def _clock(device: torch.device, clock: str) -> Callable[[], float]:
    """The timer handed to ``benchmark.Timer``: ``perf_counter`` (after a CUDA synchronisation on CUDA, so that
    queued kernels are inside the interval) or ``process_time`` (CPU devices only)."""
    if clock not in CLOCKS:
        raise ValueError(f"clock must be one of {CLOCKS}, got {clock!r}")
    if clock == "cpu":
        if device.type != "cpu":
            raise ValueError(f"clock='cpu' measures host CPU time; use clock='wall' on {device.type}")
        return time.process_time
    if device.type == "cuda":
        def synced() -> float:
            torch.cuda.synchronize(device)
            return time.perf_counter()

        return synced
    return time.perf_counter


def time_calls(
    fn: Callable[[], Any],
    *,
    repeats: int = 3,
    warmup: int = 1,
    device: torch.device | str = "cpu",
    clock: str = "wall",
    threads: int | None = None,
    label: str = "",
) -> benchmark.Measurement:
    """Time ``fn()`` with ``torch.utils.benchmark``: ``warmup`` untimed calls, then about ``repeats`` timed blocks.

    After the warm-up calls, a ``torch.utils.benchmark.Timer`` runs ``fn`` under ``threads`` intra-op threads
    and its ``blocked_autorange`` measures: it first sizes a block (one call for anything slower than ~10 ms,
    more calls per block for fast functions so that the timer's own overhead stays below 0.01 %; this call is
    also a warm-up), then times blocks until ``min_run_time`` has passed. ``min_run_time`` is set to
    ``(repeats - 0.5)`` times the duration of the last warm-up call, so a slow call gets about ``repeats``
    blocks of one call each; with ``warmup=0`` one block is timed. On CUDA the clock synchronises the device
    before every reading, so the time includes the queued kernels.

    Args:
        fn: the callable (no arguments); its result is dropped.
        repeats: targeted number of timed blocks (``>= 1``); warmup: untimed calls first (``>= 0``).
        device: where ``fn`` runs (``cuda`` synchronises); clock: ``"wall"`` (``time.perf_counter``) or
            ``"cpu"`` (``time.process_time``: CPU time of this process, which other processes on a shared
            machine do not inflate; CPU only).
        threads: intra-op threads while timing (default ``torch.get_num_threads()``); label: the measurement's
            label.
    Returns:
        a ``torch.utils.benchmark.Measurement``: ``.times`` (seconds per call, one per block), ``.median``,
        ``.mean``, ``.iqr``, ``.number_per_run``.
    Raises:
        ValueError: ``repeats < 1``, ``warmup < 0``, ``threads < 1``, an unknown ``clock`` or ``clock="cpu"`` off CPU.
    """
    if repeats < 1 or warmup < 0:
        raise ValueError(f"need repeats >= 1 and warmup >= 0, got {repeats} and {warmup}")
    threads = torch.get_num_threads() if threads is None else int(threads)
    if threads < 1:
        raise ValueError(f"threads must be >= 1, got {threads}")
    device = torch.device(device)
    now = _clock(device, clock)
    timer = benchmark.Timer(stmt="fn()", globals={"fn": fn}, num_threads=threads, timer=now, label=label)
    last = 0.0
    for _ in range(warmup):
        t0 = now()
        fn()
        last = now() - t0
    return timer.blocked_autorange(min_run_time=(repeats - 0.5) * last)


def cuda_peak_bytes(fn: Callable[[], Any], device: torch.device | str) -> int:
    """Peak CUDA memory that one call of ``fn()`` allocates above the level before it (``max_memory_allocated``).

    Raises:
        ValueError: ``device`` is not a CUDA device.
    """
    device = torch.device(device)
    if device.type != "cuda":
        raise ValueError(f"cuda_peak_bytes needs a CUDA device, got {device}")
    torch.cuda.synchronize(device)
    base = torch.cuda.memory_allocated(device)
    torch.cuda.reset_peak_memory_stats(device)
    fn()
    torch.cuda.synchronize(device)
    return torch.cuda.max_memory_allocated(device) - base


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

    For each side ``s``: draw ``x`` from ``N(0, 1)`` (CPU ``generator``, then moved to ``device``) and time
    ``fn(x)`` under ``torch.no_grad()`` with :func:`time_calls` (one warm-up call, then about ``repeats`` timed
    blocks of ``torch.utils.benchmark``); the median and the minimum are reported (on a shared, loaded machine
    the minimum is the least disturbed estimate). With ``memory=True`` one more run measures
    :func:`peak_tensor_bytes` (and, on CUDA, :func:`cuda_peak_bytes`, one run more).

    Args:
        fn: maps a feature map ``(B, C, s, s)`` to anything (e.g. a ``NonLocalAttention`` module).
        sizes: spatial sides ``s`` (each ``>= 1``); ``L = s * s`` positions.
        repeats: targeted timed blocks per size (``>= 1``).
        channels, batch, device, dtype: of the random input.
        generator: CPU generator for the inputs (``None``: seeded with 0).
        memory: also measure peak tensor memory.
        progress: show a ``tqdm.auto`` progress bar.
        clock: ``"wall"`` (``time.perf_counter``, CUDA synchronised) or ``"cpu"`` (``time.process_time``: CPU
            time of this process, all its threads; other processes competing for a shared machine do not
            inflate it; CPU devices only).

    Returns:
        dict of equally long lists: ``"size"`` (s), ``"length"`` (L), ``"seconds"`` (median time per call),
        ``"seconds_min"`` (fastest block, per call), ``"seconds_all"`` (per-call time of every timed block),
        ``"peak_bytes"`` (tensor bytes, or ``None`` without ``memory``), ``"cuda_peak_bytes"`` (``None`` off CUDA).

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
    _clock(device, clock)  # validate before any work
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
            timing = time_calls(lambda: fn(x), repeats=repeats, warmup=1, device=device, clock=clock)
            peak = peak_tensor_bytes(fn, x) if memory else None
            cuda_peak = cuda_peak_bytes(lambda: fn(x), device) if memory and device.type == "cuda" else None
            result["size"].append(s)
            result["length"].append(s * s)
            result["seconds"].append(timing.median)
            result["seconds_min"].append(min(timing.times))
            result["seconds_all"].append(list(timing.times))
            result["peak_bytes"].append(peak)
            result["cuda_peak_bytes"].append(cuda_peak)
    return result


def return_freed_memory() -> None:
    """Hand freed heap pages back to the operating system (glibc ``malloc_trim(0)``).

    Large temporaries (attention scores, ``L x m`` feature products) are freed at once, but glibc keeps such
    memory in the process heap: without this, the resident size of a long session (the explorer) creeps up,
    and a resident-memory peak measured after it (the harness) would not count reused pages. A no-op where the
    C library has no ``malloc_trim``.
    """
    global _MALLOC_TRIM
    if _MALLOC_TRIM is None:
        import ctypes
        import ctypes.util

        try:
            _MALLOC_TRIM = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").malloc_trim
        except (OSError, AttributeError):
            _MALLOC_TRIM = False
    if _MALLOC_TRIM:
        _MALLOC_TRIM(0)


_MALLOC_TRIM: Any = None
