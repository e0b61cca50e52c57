"""Efficiency benchmark of the six attention mechanisms: one harness for time, peak memory and FLOPs.

What is measured, for each *case* (a mechanism with its settings, :func:`bench_cases`) on a random
``(1, C, s, s)`` feature map (``L = s²`` positions):

* **time**: ``warmup`` untimed calls, then about ``repeats`` timed blocks of ``torch.utils.benchmark``'s
  ``Timer.blocked_autorange`` at the process's thread count (:func:`srlib.analysis.measure.time_calls`, also
  used by notebooks 00b and 05); the median (and the fastest block) per call is reported. On CUDA the clock
  synchronises the device at every reading. With ``clock="cpu"`` the CPU time of the process is
  timed instead of wall time (robust to other jobs on a shared machine; one thread).
* **peak memory** of one more call after the timed ones, above the level before it, in one of three ways
  (``memory=``): ``"rss"`` (CPU; the peak resident set size of the process, after handing freed heap pages
  back with ``malloc_trim`` and resetting the peak through ``/proc/self/clear_refs``, so that one process can
  measure several sizes; it sees everything, including the buffers that fused kernels allocate internally;
  meaningful only in a process that runs nothing else, hence :func:`run_isolated`),
  ``"cuda"`` (``torch.cuda.max_memory_allocated`` above the allocated level before the calls) or
  ``"tensor"`` (:func:`srlib.analysis.measure.peak_tensor_bytes`: exact and deterministic, but only the tensors that
  Python code holds during a forward pass; used by notebook 06).
* **FLOPs**: analytic, from :mod:`srlib.analysis.flops` with the module's own settings; ``gflops`` in the
  papers' convention (attention only, embeddings excluded), ``gflops_module`` with the embedding
  convolutions (what :class:`torch.utils.flop_counter.FlopCounterMode` counts on the module).
* **modes**: ``"forward"`` (``torch.no_grad``) and ``"forward+backward"`` (gradient of ``<y, g>`` for a fixed
  random ``g`` with respect to the input and every parameter).

Every case uses the same embedding width ``d = C // 4`` for queries/keys (NLSN Table 5's setting and the
official reduction of NLSA, GLA, LCoA and ENLCA; official HSPA uses ``C // 2``) and ``C`` value channels,
so the cases differ in which pairs they score and how, not in widths.

:func:`run_isolated` runs one case over increasing sizes in a child process
(``python -m srlib.analysis.bench``), skips a size whose time or memory, extrapolated from the previous size,
would exceed the budget (and every larger one), and survives a child that dies (out of memory) or hangs
(timeout). :func:`write_results` writes the CSV and the markdown table with fitted slopes (and saves a figure
it is given: the log-log plots are drawn by :func:`srlib.viz.plots.plot_benchmark`). The command-line front
end is ``benchmarks/harness.py``.

Timings depend on the machine and its load: never assert on them in tests.
"""

from __future__ import annotations

import argparse
import csv
import gc
import json
import os
import platform
import resource
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

import torch
import torch.nn as nn

from srlib.attention import registry
from srlib.analysis.flops import FlopCount, enla_flops, gla_flops, hspa_flops, lcoa_flops, nla_flops, nlsa_flops
from srlib.analysis.measure import cuda_peak_bytes, loglog_slope, peak_tensor_bytes, return_freed_memory, time_calls

__all__ = [
    "CLOCKS",
    "MODES",
    "MEMORY_KINDS",
    "CSV_FIELDS",
    "BenchCase",
    "CoAStack",
    "bench_cases",
    "machine_info",
    "machine_label",
    "measure",
    "peak_memory",
    "run_isolated",
    "predict_next",
    "fit_slopes",
    "markdown_table",
    "read_csv",
    "write_csv",
    "write_results",
]

#: The two things timed: inference, and one training step of the attention block.
MODES = ("forward", "forward+backward")
#: Clocks of the CPU timings: wall time, or the CPU time of the calling thread (:func:`time_calls`).
CLOCKS = ("wall", "cpu")
#: How peak memory is measured (module docstring).
MEMORY_KINDS = ("rss", "cuda", "tensor")
#: Columns of the result CSV (one row per case, mode and size).
CSV_FIELDS = (
    "case", "mechanism", "mode", "side", "L", "status", "time_median_s", "time_min_s", "peak_mib",
    "memory_kind", "gflops", "gflops_module", "device", "threads", "note",
)

REDUCTION = 4  # query/key embedding width C // 4 for every case (module docstring)


# ----------------------------------------------------------------------------------------------------------
# The cases
# ----------------------------------------------------------------------------------------------------------
class CoAStack(nn.Module):
    """``n_layers`` LCoA modules in a row: the first computes the sparse pattern and weights (LSP), the others
    reuse them (collaborative attention, LCoAN Eqs. 11-12): ``x -> LSP -> CoA -> ... -> CoA``.

    Args:
        n_layers: ``>= 1`` modules; channels, n_clusters, window_size: of each
            :class:`~srlib.attention.lcoa.LearnableCollaborativeAttention`; generator: for the k-means
            initialisation of the first module.
    Shapes: ``(B, C, H, W) -> (B, C, H, W)``.
    """

    def __init__(self, n_layers: int, channels: int, *, n_clusters: int = 128, window_size: int = 144,
                 generator: torch.Generator | None = None) -> None:
        super().__init__()
        from srlib.attention.lcoa import LearnableCollaborativeAttention

        if n_layers < 1:
            raise ValueError(f"n_layers must be >= 1, got {n_layers}")
        self.layers = nn.ModuleList(
            LearnableCollaborativeAttention(channels=channels, reduction=REDUCTION, n_clusters=n_clusters,
                                            window_size=window_size, res_scale=1.0)
            for _ in range(n_layers)
        )
        self.layers[0].kmeans.generator = generator

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x, shared = self.layers[0](x)
        for layer in self.layers[1:]:
            x, _ = layer(x, shared)
        return x


@dataclass(frozen=True)
class BenchCase:
    """One benchmarked setting of one mechanism.

    Attributes:
        name: short unique name, e.g. ``"NLSA-r4"``.
        mechanism: a registered mechanism (:mod:`srlib.attention.registry`), e.g. ``"NLSA"``.
        description: the settings, in words.
        builder: ``(channels, generator) -> nn.Module`` mapping ``(B, C, H, W)`` to ``(B, C, H, W)``.
        counter: ``(h, w, channels, include_embeddings) -> FlopCount``.
        quadratic: True when time and memory grow with ``L²`` (dense ``L x L`` scores).
    """

    name: str
    mechanism: str
    description: str
    builder: Callable[[int, torch.Generator], nn.Module] = field(repr=False)
    counter: Callable[[int, int, int, bool], FlopCount] = field(repr=False)
    quadratic: bool = False

    def build(self, channels: int = 64, *, device: torch.device | str = "cpu", seed: int = 0) -> nn.Module:
        """The module in eval mode on ``device``, built deterministically from ``seed`` (weights, LSH /
        random-feature / k-means draws); the caller's global RNG state is left untouched."""
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            gen = torch.Generator(device=device).manual_seed(seed)
            module = self.builder(channels, gen)
        return module.to(device).eval()

    def flops(self, side: int, channels: int = 64, *, include_embeddings: bool = False) -> FlopCount:
        """Analytic FLOPs on a ``side x side`` map (papers' convention unless ``include_embeddings``)."""
        return self.counter(side, side, channels, include_embeddings)


def _nla(explicit: bool):
    def build(c: int, gen: torch.Generator) -> nn.Module:
        from srlib.attention.nla import NonLocalAttention, softmax_last

        return NonLocalAttention(channel=c, reduction=REDUCTION, normalizer=softmax_last if explicit else None)

    return build


def _nlsa(rounds: int):
    def build(c: int, gen: torch.Generator) -> nn.Module:
        from srlib.attention.nlsa import NonLocalSparseAttention

        m = NonLocalSparseAttention(n_hashes=rounds, channels=c, reduction=REDUCTION, chunk_size=144)
        m.generator = gen
        return m

    return build


def _enla(m: int):
    def build(c: int, gen: torch.Generator) -> nn.Module:
        from srlib.attention.enla import ENLCA

        return ENLCA(channel=c, reduction=REDUCTION, res_scale=1.0, n_features=m, loss_variant=None,
                     generator=torch.Generator().manual_seed(gen.initial_seed()))

    return build


def _gla(c: int, gen: torch.Generator) -> nn.Module:
    from srlib.attention.gla import GlobalLearnableAttention

    m = GlobalLearnableAttention(n_hashes=3, channels=c, reduction=REDUCTION, chunk_size=128)
    m.generator = gen
    return m


def _hspa(c: int, gen: torch.Generator) -> nn.Module:
    from srlib.attention.hspa import HSPA

    return HSPA(channel=c, reduction=REDUCTION, topk=128)


def _lcoa(n_layers: int):
    def build(c: int, gen: torch.Generator) -> nn.Module:
        kgen = torch.Generator().manual_seed(gen.initial_seed())  # k-means init draws on the CPU
        return CoAStack(n_layers, c, generator=kgen)

    return build


def _lcoa_count(n_layers: int):
    def count(h: int, w: int, c: int, emb: bool) -> FlopCount:
        lsp = lcoa_flops(h, w, c, 128, 144, reduction=REDUCTION, include_embeddings=emb)
        for _ in range(n_layers - 1):
            lsp = lsp + lcoa_flops(h, w, c, 128, 144, shared=True, reduction=REDUCTION, include_embeddings=emb)
        return lsp

    return count


# The cases of each mechanism (named by its entry in srlib.attention.registry), in table order.
def _nla_cases() -> list[BenchCase]:
    r = REDUCTION
    return [
        BenchCase("NLA-map", "NLA", "dense softmax, explicit L x L scores and weights (Eq. 4 written out)",
                  _nla(True), lambda h, w, c, e: nla_flops(h, w, c, reduction=r, include_embeddings=e), True),
        BenchCase("NLA-sdpa", "NLA", "dense softmax through srlib's default path (scaled_dot_product_attention)",
                  _nla(False), lambda h, w, c, e: nla_flops(h, w, c, reduction=r, include_embeddings=e), True),
    ]


def _nlsa_cases() -> list[BenchCase]:
    r = REDUCTION
    return [BenchCase(
        f"NLSA-r{n}", "NLSA", f"spherical LSH, {n} round(s), chunks of 144, 3 chunks attended", _nlsa(n),
        lambda h, w, c, e, n=n: nlsa_flops(h, w, c, 144, n, reduction=r, include_embeddings=e))
        for n in (1, 2, 4, 8)]


def _enla_cases() -> list[BenchCase]:
    r = REDUCTION
    return [BenchCase(
        f"ENLA-m{m}", "ENLA", f"positive random features, m = {m}, amplification 6", _enla(m),
        lambda h, w, c, e, m=m: enla_flops(h, w, c, m, reduction=r, include_embeddings=e))
        for m in (16, 32, 64, 128, 256)]


def _gla_cases() -> list[BenchCase]:
    return [BenchCase("GLA-r3", "GLA", "super-bit LSH, 3 rounds, buckets of 128, official learned score", _gla,
                      lambda h, w, c, e: gla_flops(h, w, c, 128, 3, reduction=REDUCTION, include_embeddings=e))]


def _hspa_cases() -> list[BenchCase]:
    return [BenchCase("HSPA-k128", "HSPA", "dense scores, soft thresholding with top-k 128 (exact mode)", _hspa,
                      lambda h, w, c, e: hspa_flops(h, w, c, 128, reduction=REDUCTION, include_embeddings=e), True)]


def _lcoa_cases() -> list[BenchCase]:
    return [
        BenchCase("LCoA-LSP", "LCoA", "k-means pattern (128 clusters), windows of 144, one module", _lcoa(1),
                  _lcoa_count(1)),
        BenchCase("LCoA-4xCoA", "LCoA", "4 layers: 1 LSP + 3 CoA modules sharing its weights (total)",
                  _lcoa(4), _lcoa_count(4)),
    ]


def bench_cases() -> dict[str, BenchCase]:
    """The benchmarked cases of every registered mechanism (:mod:`srlib.attention.registry`, each entry's
    ``bench_cases``), in table order: dense NLA (explicit map and srlib's SDPA path), NLSA with
    ``r = 1, 2, 4, 8`` rounds, ENLA with ``m = 16 ... 256`` random features, GLA (3 rounds, buckets of 128,
    official learned score), HSPA (top-k 128, official exact mode), LCoA alone (LSP) and four LCoA layers
    sharing one pattern (1 LSP + 3 CoA), then the cases of any mechanism registered later. All with
    ``d = C // 4`` (module docstring)."""
    cases: list[BenchCase] = []
    for name in registry.mechanisms():
        make = registry.resolve(registry.get(name).bench_cases)
        if make is not None:
            cases += make()
    return {c.name: c for c in cases}


# ----------------------------------------------------------------------------------------------------------
# The machine
# ----------------------------------------------------------------------------------------------------------
def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine_info(device: torch.device | str = "cpu", threads: int | None = None) -> dict[str, str]:
    """What the numbers were measured on: ``uname``, CPU model, logical CPUs, torch version, threads, device.

    Args:
        device: the device measured (``cuda`` adds the GPU name and CUDA version).
        threads: intra-op threads used (default ``torch.get_num_threads()``).
    """
    device = torch.device(device)
    u = platform.uname()
    info = {
        "uname": f"{u.system} {u.node} {u.release} {u.version} {u.machine}",
        "cpu": _cpu_model(),
        "logical_cpus": str(os.cpu_count()),
        "torch": torch.__version__,
        "threads": str(threads if threads is not None else torch.get_num_threads()),
        "device": device.type,
    }
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
        info["cuda"] = str(torch.version.cuda)
    try:
        info["loadavg"] = " ".join(f"{v:.2f}" for v in os.getloadavg())
    except OSError:
        pass
    return info


def machine_label(info: dict[str, str]) -> str:
    """A file-name-safe label: device kind, CPU or GPU model and thread count, e.g. ``cpu-amd-epyc-2t``."""
    model = info.get("gpu") if info.get("device") == "cuda" else info.get("cpu", "unknown")
    slug = "".join(ch if ch.isalnum() else "-" for ch in (model or "unknown").lower())
    slug = "-".join(p for p in slug.split("-") if p)[:40]
    return f"{info.get('device', 'cpu')}-{slug}-{info.get('threads', '?')}t"


# ----------------------------------------------------------------------------------------------------------
# Measuring
# ----------------------------------------------------------------------------------------------------------
def _proc_status_kib(key: str) -> int | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


class _RssPeak:
    """Peak resident memory above the current level, using the resettable ``VmHWM`` of Linux when possible
    (``echo 5 > /proc/self/clear_refs``), else the never-reset ``ru_maxrss`` (exact only for the first
    measurement of a process)."""

    def __init__(self) -> None:
        gc.collect()
        return_freed_memory()  # give freed heap pages back, so that reusing them counts again
        self.resettable = False
        try:
            Path("/proc/self/clear_refs").write_text("5")
            self.resettable = _proc_status_kib("VmHWM") is not None
        except OSError:
            pass
        self.base_kib = self._current()

    def _current(self) -> int:
        if self.resettable:
            return _proc_status_kib("VmRSS") or 0
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss

    def peak_bytes(self) -> int:
        peak = _proc_status_kib("VmHWM") if self.resettable else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return max(0, (peak or 0) - self.base_kib) * 1024


def peak_memory(step: Callable[[], Any], memory: str, device: torch.device | str = "cpu") -> int:
    """Peak bytes of one call of ``step()`` above the level before it, by ``memory`` kind (module docstring).

    ``"cuda"``: synchronise, reset the allocator's peak, read the allocated level, call, synchronise, then
    ``torch.cuda.max_memory_allocated`` minus that level. ``"rss"``: the resettable resident-set peak
    (:class:`_RssPeak`). ``"tensor"``: :func:`srlib.analysis.measure.peak_tensor_bytes`.

    Raises:
        ValueError: an unknown kind.
    """
    if memory == "cuda":
        return cuda_peak_bytes(step, device)
    if memory == "rss":
        rss = _RssPeak()
        step()
        return rss.peak_bytes()
    if memory == "tensor":
        return peak_tensor_bytes(step)
    raise ValueError(f"memory must be one of {MEMORY_KINDS}, got {memory!r}")


def measure(
    case: BenchCase | str,
    side: int,
    mode: str = "forward",
    *,
    channels: int = 64,
    repeats: int = 3,
    warmup: int = 1,
    device: torch.device | str = "cpu",
    memory: str | None = "auto",
    seed: int = 0,
    clock: str = "wall",
) -> dict[str, Any]:
    """Time, peak memory and FLOPs of one case on a random ``(1, channels, side, side)`` map, in this process.

    Args:
        case: a :class:`BenchCase` or its name in :func:`bench_cases`.
        side: map side ``s`` (``L = s²``).
        mode: ``"forward"`` or ``"forward+backward"`` (:data:`MODES`).
        channels: ``C``.
        repeats, warmup: see :func:`srlib.analysis.measure.time_calls`.
        device: where to run.
        memory: ``"rss"``, ``"cuda"``, ``"tensor"`` (forward only), ``None`` (not measured) or ``"auto"``
            (``"cuda"`` on CUDA, ``"rss"`` otherwise).
        seed: seed of the module and of the input / output-gradient draws.
        clock: ``"wall"`` or ``"cpu"`` (CPU timings, see :func:`time_calls`).
    Returns:
        a row with the keys of :data:`CSV_FIELDS` (``status = "ok"``) plus ``times`` (all timed runs).
    Raises:
        ValueError: unknown case / mode / memory kind, ``"tensor"`` memory with a backward pass, ``side < 1``.
    """
    case = bench_cases()[case] if isinstance(case, str) else case
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    if side < 1:
        raise ValueError(f"side must be >= 1, got {side}")
    device = torch.device(device)
    if memory == "auto":
        memory = "cuda" if device.type == "cuda" else "rss"
    if memory is not None and memory not in MEMORY_KINDS:
        raise ValueError(f"memory must be one of {MEMORY_KINDS}, None or 'auto', got {memory!r}")
    if memory == "tensor" and mode != "forward":
        raise ValueError("memory='tensor' sees only Python-level calls: use it with mode='forward'")
    if memory == "cuda" and device.type != "cuda":
        raise ValueError(f"memory='cuda' needs a CUDA device, got {device}")

    module = case.build(channels, device=device, seed=seed)
    gen = torch.Generator().manual_seed(seed + 1)
    x = torch.randn(1, channels, side, side, generator=gen).to(device)
    if mode == "forward":
        def step() -> None:
            with torch.no_grad():
                module(x)
    else:
        x.requires_grad_(True)
        g = torch.randn(1, channels, side, side, generator=gen).to(device)
        params = [p for p in module.parameters() if p.requires_grad]

        def step() -> None:
            y = module(x)
            torch.autograd.grad(y, [x, *params], g, allow_unused=True)  # CoA layers leave conv_match unused

    # warm-up calls (also one-off work such as LCoA's k-means initialisation), then the timed calls
    timing = time_calls(step, repeats=repeats, warmup=warmup, device=device, clock=clock, label=case.name)
    times = list(timing.times)
    peak = None if memory is None else peak_memory(step, memory, device)  # memory: one more call, on its own
    return {
        "case": case.name, "mechanism": case.mechanism, "mode": mode, "side": side, "L": side * side,
        "status": "ok", "time_median_s": timing.median, "time_min_s": min(times),
        "peak_mib": None if peak is None else peak / 2**20, "memory_kind": memory or "",
        "gflops": case.flops(side, channels).gflops,
        "gflops_module": case.flops(side, channels, include_embeddings=True).gflops,
        "device": device.type, "threads": torch.get_num_threads(), "note": "", "times": times,
    }


def predict_next(case: BenchCase, prev: dict[str, Any], side: int, channels: int = 64) -> tuple[float, float]:
    """Extrapolate ``(seconds per call, peak bytes)`` at ``side`` from a measured row ``prev`` of the same case
    and mode: time scales like the case's FLOPs, memory like ``L²`` for quadratic cases and ``L`` otherwise."""
    f0 = max(case.flops(prev["side"], channels, include_embeddings=True).total, 1)
    f1 = case.flops(side, channels, include_embeddings=True).total
    ratio_l = (side * side) / (prev["side"] ** 2)
    seconds = float(prev["time_median_s"]) * f1 / f0
    mem = float(prev["peak_mib"] or 0.0) * 2**20 * ratio_l ** (2 if case.quadratic else 1)
    return seconds, mem


def _first_guess_bytes(case: BenchCase, side: int, mode: str) -> float:
    """Memory of the dense ``L x L`` float32 matrices alone (2 forward, 4 with backward); 0 for sparse cases."""
    if not case.quadratic:
        return 0.0
    return (2 if mode == "forward" else 4) * 4.0 * (side * side) ** 2


def _skip_row(case: BenchCase, side: int, mode: str, channels: int, device: str, note: str,
              status: str = "skipped") -> dict[str, Any]:
    return {
        "case": case.name, "mechanism": case.mechanism, "mode": mode, "side": side, "L": side * side,
        "status": status, "time_median_s": None, "time_min_s": None, "peak_mib": None, "memory_kind": "",
        "gflops": case.flops(side, channels).gflops,
        "gflops_module": case.flops(side, channels, include_embeddings=True).gflops,
        "device": device, "threads": None, "note": note,
    }


def _run_sizes(case: BenchCase, sizes: Sequence[int], mode: str, *, channels: int, repeats: int, warmup: int,
               clock: str = "wall",
               device: str, max_bytes: float, max_seconds: float, emit: Callable[[dict], None]) -> None:
    """Measure ``sizes`` in increasing order, skipping those predicted over budget (child process body)."""
    prev = None
    stop = ""
    for side in sorted(sizes):
        if stop:
            emit(_skip_row(case, side, mode, channels, device, stop))
            continue
        if prev is not None:
            sec, mem = predict_next(case, prev, side, channels)
        else:
            sec, mem = 0.0, _first_guess_bytes(case, side, mode)
        calls = warmup + repeats + 2  # + 2: blocked_autorange's block-size call and the memory call
        total = sec * calls
        if mem > max_bytes:
            stop = f"skipped: predicted peak {mem / 2**30:.1f} GiB > budget {max_bytes / 2**30:.1f} GiB"
        elif total > max_seconds:
            stop = f"skipped: predicted {total:.0f} s for {calls} calls > budget {max_seconds:.0f} s"
        if stop:
            emit(_skip_row(case, side, mode, channels, device, stop))
            continue
        row = measure(case, side, mode, channels=channels, repeats=repeats, warmup=warmup, device=device,
                      clock=clock)
        row.pop("times")
        emit(row)
        prev = row


def run_isolated(
    case: str,
    sizes: Sequence[int],
    modes: str | Sequence[str] = "forward",
    *,
    channels: int = 64,
    repeats: int = 3,
    warmup: int = 1,
    device: str = "cpu",
    threads: int | None = None,
    max_mem_gib: float = 6.0,
    max_seconds: float = 60.0,
    timeout: float = 600.0,
    clock: str = "wall",
) -> list[dict[str, Any]]:
    """Run one case over ``sizes`` (ascending), for each of ``modes``, in a fresh child process; one row per
    mode and size.

    The child (``python -m srlib.analysis.bench --child ...``) measures with :func:`measure` (peak memory: ``"rss"`` on
    CPU, reset before each size; ``"cuda"`` on CUDA) and prints one JSON row per size as soon as it has it. A
    size is skipped, with the reason in ``note``, when the time of ``warmup + repeats + 2`` calls or the peak
    memory extrapolated from the previous size (:func:`predict_next`) exceeds ``max_seconds`` /
    ``max_mem_gib``; larger sizes of that mode are then skipped too. If the child dies (killed for memory) or
    exceeds ``timeout`` seconds, the sizes it did not report get ``status = "error"`` with the reason.

    Args:
        case: a name from :func:`bench_cases`; sizes: map sides; modes: one or several of :data:`MODES`.
        threads: ``torch.set_num_threads`` in the child (default: PyTorch's default).
    Raises:
        ValueError: unknown case or mode, empty sizes.
    """
    cases = bench_cases()
    if case not in cases:
        raise ValueError(f"unknown case {case!r}; choose from {list(cases)}")
    modes = [modes] if isinstance(modes, str) else list(modes)
    bad = [m for m in modes if m not in MODES]
    if bad or not modes:
        raise ValueError(f"modes must be among {MODES}, got {modes!r}")
    sizes = sorted(int(s) for s in sizes)
    if not sizes:
        raise ValueError("sizes must not be empty")
    cmd = [sys.executable, "-m", "srlib.analysis.bench", "--child", case, ",".join(modes), ",".join(map(str, sizes)),
           "--channels", str(channels), "--repeats", str(repeats), "--warmup", str(warmup), "--device", device,
           "--max-mem-gib", str(max_mem_gib), "--max-seconds", str(max_seconds), "--clock", clock]
    if threads is not None:
        cmd += ["--threads", str(threads)]
    env = dict(os.environ)
    if threads is not None:
        env["OMP_NUM_THREADS"] = str(threads)
    rows: list[dict[str, Any]] = []
    why = ""
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)
        out, err, rc = proc.stdout, proc.stderr, proc.returncode
    except subprocess.TimeoutExpired as e:
        out = e.stdout.decode() if isinstance(e.stdout, bytes) else (e.stdout or "")
        err, rc = "", None
        why = f"error: child exceeded the {timeout:.0f} s timeout"
    for line in out.splitlines():
        if line.startswith("{"):
            rows.append(json.loads(line))
    if rc not in (0, None) and not why:
        last = err.strip().splitlines()[-1] if err.strip() else ""
        why = "error: child killed by signal 9 (out of memory?)" if rc == -9 else f"error: exit {rc}: {last}"
    done = {(r["mode"], r["side"]) for r in rows}
    for mode in modes:
        for side in sizes:
            if (mode, side) not in done:
                rows.append(_skip_row(cases[case], side, mode, channels, device, why or "error: no result",
                                      status="error"))
    return sorted(rows, key=lambda r: (MODES.index(r["mode"]), r["side"]))


# ----------------------------------------------------------------------------------------------------------
# Results: slopes, tables, files
# ----------------------------------------------------------------------------------------------------------
def fit_slopes(rows: Iterable[dict[str, Any]], metric: str = "time_median_s") -> dict[tuple[str, str], float]:
    """Log-log slope of ``metric`` against ``L`` per ``(case, mode)``, over its ``"ok"`` rows with a positive
    value (at least 2 sizes needed; otherwise the pair is left out).

    ``metric`` is a numeric column, e.g. ``"time_median_s"``, ``"peak_mib"`` or ``"gflops"``.
    """
    groups: dict[tuple[str, str], list[tuple[float, float]]] = {}
    for r in rows:
        v = r.get(metric)
        if r.get("status") == "ok" and v not in (None, "") and float(v) > 0:
            groups.setdefault((r["case"], r["mode"]), []).append((float(r["L"]), float(v)))
    slopes = {}
    for key, pts in groups.items():
        if len({p[0] for p in pts}) >= 2:
            xs, ys = zip(*sorted(pts))
            slopes[key] = loglog_slope(xs, ys)
    return slopes


def _fmt(v: Any, spec: str) -> str:
    return "" if v in (None, "") else format(float(v), spec)


def markdown_table(rows: Sequence[dict[str, Any]], info: dict[str, str] | None = None) -> str:
    """The results as markdown: a header naming the machine, then per mode one table with a row per case and
    a column per size (median time / peak memory / FLOPs), and the fitted log-log slopes of time and memory
    against ``L``; skipped or failed sizes are marked and explained below the table.

    The time slope is fitted on the *fastest* of the timed calls (``time_min_s``): on a shared machine a
    median of three can still carry a stolen time slice, the minimum rarely does."""
    lines: list[str] = []
    if info:
        lines.append("Machine: " + "; ".join(f"{k} = {v}" for k, v in info.items()))
        lines.append("")
    sides = sorted({int(r["side"]) for r in rows})
    t_slopes, m_slopes = fit_slopes(rows, "time_min_s"), fit_slopes(rows, "peak_mib")
    notes: list[str] = []
    for mode in MODES:
        mode_rows = [r for r in rows if r["mode"] == mode]
        if not mode_rows:
            continue
        kinds = ", ".join(sorted({r["memory_kind"] for r in mode_rows if r.get("memory_kind")})) or "none"
        lines.append(f"### {mode}: median time (s) / peak memory (MiB, {kinds}) / GFLOPs (attention only)")
        lines.append("")
        lines.append("| case | " + " | ".join(f"{s}² (L={s * s})" for s in sides)
                     + " | time slope (fastest call) | memory slope |")
        lines.append("|---|" + "---:|" * len(sides) + "---:|---:|")
        for name in dict.fromkeys(r["case"] for r in mode_rows):
            cells = []
            for s in sides:
                r = next((r for r in mode_rows if r["case"] == name and int(r["side"]) == s), None)
                if r is None:
                    cells.append("")
                elif r["status"] == "ok":
                    cells.append(f"{_fmt(r['time_median_s'], '.3g')} / {_fmt(r['peak_mib'], '.0f')} / "
                                 f"{_fmt(r['gflops'], '.3g')}")
                else:
                    notes.append(f"{name}, {mode}, {s}²: {r['note']}")
                    cells.append(f"{r['status']}¹ / – / {_fmt(r['gflops'], '.3g')}")
            ts, ms = t_slopes.get((name, mode)), m_slopes.get((name, mode))
            lines.append(f"| {name} | " + " | ".join(cells) + f" | {_fmt(ts, '.2f')} | {_fmt(ms, '.2f')} |")
        lines.append("")
    if notes:
        lines.append("¹ " + "; ".join(notes))
        lines.append("")
    return "\n".join(lines)


def write_csv(rows: Sequence[dict[str, Any]], path: str | os.PathLike) -> Path:
    """Write rows (columns :data:`CSV_FIELDS`) atomically (temp file in the same folder, then ``os.replace``)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=CSV_FIELDS, extrasaction="ignore")
        w.writeheader()
        for r in rows:
            w.writerow({k: ("" if r.get(k) is None else r.get(k)) for k in CSV_FIELDS})
    os.replace(tmp, path)
    return path


def read_csv(path: str | os.PathLike) -> list[dict[str, Any]]:
    """Read a result CSV back (numbers as float / int, empty cells as ``None``).

    Raises:
        FileNotFoundError: no such file. ValueError: a file without the :data:`CSV_FIELDS` columns.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no benchmark result file {path}")
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        missing = set(CSV_FIELDS) - set(reader.fieldnames or ())
        if missing:
            raise ValueError(f"{path} is not a benchmark result file: missing columns {sorted(missing)}")
        rows = []
        for raw in reader:
            r: dict[str, Any] = {}
            for k, v in raw.items():
                if v == "":
                    r[k] = None
                elif k in ("side", "L", "threads"):
                    r[k] = int(float(v))
                elif k in ("time_median_s", "time_min_s", "peak_mib", "gflops", "gflops_module"):
                    r[k] = float(v)
                else:
                    r[k] = v
            rows.append(r)
    return rows


def write_results(rows: Sequence[dict[str, Any]], out_dir: str | os.PathLike, info: dict[str, str],
                  label: str | None = None, figure: Any = None) -> dict[str, Path]:
    """Write ``<label>.csv`` and ``<label>.md`` (machine header + :func:`markdown_table`) into ``out_dir``, and
    ``<label>.png`` when a ``figure`` is given; ``label`` defaults to :func:`machine_label`.

    Every file is written to a temporary name in ``out_dir`` first and then renamed, so a crash never leaves a
    half-written result.

    Args:
        rows: result rows (columns :data:`CSV_FIELDS`); out_dir: created if missing; info: :func:`machine_info`.
        label: file stem; figure: anything with a matplotlib-style ``savefig(path, dpi=...)``, e.g.
            :func:`srlib.viz.plots.plot_benchmark` (this module draws nothing itself).
    Returns:
        the paths by kind (``"csv"``, ``"md"`` and, with a figure, ``"png"``).
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    label = label or machine_label(info)
    paths = {"csv": write_csv(rows, out / f"{label}.csv")}
    md = out / f"{label}.md"
    tmp = md.with_name(f".{md.name}.tmp")
    tmp.write_text(f"# Attention benchmark: {label}\n\n" + markdown_table(rows, info))
    os.replace(tmp, md)
    paths["md"] = md
    if figure is not None:
        png = out / f"{label}.png"
        tmp_png = png.with_name(f".{png.stem}.tmp.png")
        figure.savefig(tmp_png, dpi=90)
        os.replace(tmp_png, png)
        paths["png"] = png
    return paths


# ----------------------------------------------------------------------------------------------------------
# Child process entry point (used by run_isolated)
# ----------------------------------------------------------------------------------------------------------
def _child(argv: Sequence[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m srlib.analysis.bench", description="one case over sizes (internal)")
    ap.add_argument("--child", nargs=3, metavar=("CASE", "MODES", "SIZES"), required=True)
    ap.add_argument("--channels", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int)
    ap.add_argument("--max-mem-gib", type=float, default=6.0)
    ap.add_argument("--max-seconds", type=float, default=60.0)
    ap.add_argument("--clock", default="wall", choices=CLOCKS)
    a = ap.parse_args(argv)
    if a.threads:
        torch.set_num_threads(a.threads)
    name, modes, sizes = a.child
    for mode in modes.split(","):
        _run_sizes(bench_cases()[name], [int(s) for s in sizes.split(",")], mode, channels=a.channels,
                   repeats=a.repeats, warmup=a.warmup, device=a.device, max_bytes=a.max_mem_gib * 2**30,
                   max_seconds=a.max_seconds, clock=a.clock, emit=lambda r: print(json.dumps(r), flush=True))


if __name__ == "__main__":
    _child()
