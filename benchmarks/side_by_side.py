"""srlib's default (blocked) inference paths side by side with the single-pass computation of the official code.

Usage::

    python benchmarks/side_by_side.py                          # sides 100 and 150, threads 1, 2 and all cores
    python benchmarks/side_by_side.py --sizes 100 --cases ENLCA NLSA --threads 1 2 --repeats 7
    python benchmarks/side_by_side.py --clock cpu              # 1-thread rows timed with thread CPU time
    python benchmarks/side_by_side.py --device cuda            # GPU: both columns synchronised with the device

**What the baseline is.** The official code is not installed here and is not copied into the project. The
baseline column is srlib's own single-pass computation, which is the official code's algorithm: every
temporary built whole, as the official forward does (``NLA``: the explicit ``L x L`` scores and weights;
``HSPA``: ``block_size=None``, the official dense path; NLSA, ENLCA, GLA, LCoA: the same module with an
unlimited block budget, :mod:`srlib.attention.blocking`, so the scores / random features are computed in
one pass). It is *not* a timing of the authors' code: their glue (padding, reshapes, index arithmetic) differs.
The srlib column is the default path (``NLA``: ``scaled_dot_product_attention``; the others: the default
block budget of the device).

**How.** One process, input ``1 x 64 x side x side`` float32, eval mode, ``torch.no_grad``. For each module,
size and thread count (``torch.set_num_threads``), ``--warmup`` untimed calls of each, then ``--repeats``
rounds that call srlib and the baseline alternately (interleaved, so a burst of load on a shared machine
hits both); the median per call is reported. ``--clock cpu`` times the 1-thread rows with the CPU time of the
calling thread (``time.thread_time``: other jobs on the machine do not count; the multi-thread rows stay
wall time, since the CPU time of several threads is not their duration). Peak memory is the peak of the
tensors the forward holds (``srlib.analysis.measure.peak_tensor_bytes``: deterministic, independent of the
thread count) on the CPU, ``torch.cuda.max_memory_allocated`` above the level before the call on CUDA.

The table printed (and written with ``--out``) has one row per module, size and thread count, with the
ratio srlib / baseline of time and of peak memory, and a header with the machine, torch version, clock and
the load average (``/proc/loadavg``) before and after. Times are machine- and load-dependent: compare
ratios within one table.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Callable

import torch

from srlib.analysis.bench import bench_cases, machine_info
from srlib.analysis.measure import peak_tensor_bytes
from srlib.attention.blocking import block_budget, get_block_budget

#: table name -> (harness case, how the baseline differs)
MODULES = {
    "NLA": ("NLA-sdpa", "explicit L x L scores (NLA-map)"),
    "NLSA": ("NLSA-r4", "one pass"),
    "ENLCA": ("ENLA-m128", "one pass"),
    "GLA": ("GLA-r3", "one pass"),
    "HSPA": ("HSPA-k128", "dense, block_size=None"),
    "LCoA": ("LCoA-LSP", "one pass"),
    "LCoA-4x": ("LCoA-4xCoA", "one pass"),
}

UNLIMITED = 2**62


def _loadavg() -> str:
    try:
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return "n/a"


def build_pair(name: str, device: str) -> tuple[Callable, Callable, torch.nn.Module, torch.nn.Module]:
    """``(srlib_call, baseline_call, srlib_module, baseline_module)`` for one table row; the calls take ``x``."""
    cases = bench_cases()
    case, _ = MODULES[name]
    mod = cases[case].build(64, device=device).eval()
    if name == "NLA":
        base = cases["NLA-map"].build(64, device=device).eval()
        base.load_state_dict(mod.state_dict())
    elif name == "HSPA":
        base = cases[case].build(64, device=device).eval()
        base.load_state_dict(mod.state_dict())
        base.block_size = None
    else:
        base = mod  # the same module (same weights, same hash draws per call) with an unlimited budget

    # hash rotations / k-means draws: every call starts from the same generator states (srlib and baseline
    # then compute the same thing, and the output difference checks it)
    gens = [g for g in (getattr(m, "generator", None) for mm in {mod, base} for m in mm.modules())
            if isinstance(g, torch.Generator)]
    states = [g.get_state() for g in gens]

    def reset():
        torch.manual_seed(0)
        for g, st in zip(gens, states):
            g.set_state(st)

    def run_srlib(x):
        reset()
        return mod(x)

    def run_base(x):
        reset()
        ctx = block_budget(UNLIMITED, device) if base is mod else contextlib.nullcontext()
        with ctx:
            return base(x)

    return run_srlib, run_base, mod, base


def _seed_call(fn, x):
    return fn(x)


def _time(fn, x, device, clock):
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    t0 = clock()
    _seed_call(fn, x)
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    return clock() - t0


def _peak(fn, x, device) -> int:
    if device.startswith("cuda"):
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        before = torch.cuda.memory_allocated()
        _seed_call(fn, x)
        torch.cuda.synchronize()
        return torch.cuda.max_memory_allocated() - before
    return peak_tensor_bytes(_seed_call, fn, x)


def measure_row(name: str, side: int, threads: int, *, device: str = "cpu", repeats: int = 5, warmup: int = 1,
                clock: str = "wall") -> dict:
    """One row: median times and peak memory of srlib and of the baseline, interleaved in this process."""
    torch.set_num_threads(threads)
    use_thread_clock = clock == "cpu" and threads == 1 and device == "cpu"
    now = time.thread_time if use_thread_clock else time.perf_counter
    srlib_fn, base_fn, mod, base = build_pair(name, device)
    x = torch.randn(1, 64, side, side, generator=torch.Generator().manual_seed(side)).to(device)
    with torch.no_grad():
        out_s, out_b = _seed_call(srlib_fn, x), _seed_call(base_fn, x)
        max_diff = float((out_s - out_b).abs().max())
        for _ in range(max(0, warmup - 1)):
            _seed_call(srlib_fn, x), _seed_call(base_fn, x)
        ts, tb = [], []
        for i in range(repeats):  # alternate the order too
            pair = [(ts, srlib_fn), (tb, base_fn)]
            for acc, fn in (pair if i % 2 == 0 else pair[::-1]):
                acc.append(_time(fn, x, device, now))
        ps, pb = _peak(srlib_fn, x, device), _peak(base_fn, x, device)
    t_s, t_b = statistics.median(ts), statistics.median(tb)
    return {"module": name, "side": side, "threads": threads, "clock": "thread cpu" if use_thread_clock else "wall",
            "srlib_s": t_s, "base_s": t_b, "time_ratio": t_s / t_b, "srlib_mib": ps / 2**20, "base_mib": pb / 2**20,
            "mem_ratio": ps / pb if pb else float("nan"), "max_abs_diff": max_diff,
            "baseline": MODULES[name][1]}


def markdown(rows: list[dict], header: list[str]) -> str:
    lines = header + ["", "| module | side | threads | clock | srlib (ms) | single pass (ms) | time ratio | "
                      "srlib peak (MiB) | single-pass peak (MiB) | memory ratio | baseline |",
                      "|---|---:|---:|---|---:|---:|---:|---:|---:|---:|---|"]
    for r in rows:
        lines.append(f"| {r['module']} | {r['side']}² | {r['threads']} | {r['clock']} | {1e3 * r['srlib_s']:.1f} | "
                     f"{1e3 * r['base_s']:.1f} | {r['time_ratio']:.2f} | {r['srlib_mib']:.1f} | {r['base_mib']:.1f} | "
                     f"{r['mem_ratio']:.3f} | {r['baseline']} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", type=int, nargs="+", default=[100, 150])
    ap.add_argument("--cases", nargs="+", default=list(MODULES), choices=list(MODULES))
    ap.add_argument("--threads", type=int, nargs="+", default=None,
                    help="thread counts (default: 1, 2 and all cores, without repeats)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--clock", default="wall", choices=["wall", "cpu"])
    ap.add_argument("--out", type=Path, help="also write the table (markdown) to this file")
    args = ap.parse_args(argv)
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        ap.error("--device cuda requested but CUDA is not available")
    threads = args.threads or sorted({1, 2, os.cpu_count() or 1})
    if min(threads) < 1 or args.repeats < 1 or min(args.sizes) < 1:
        ap.error("threads, repeats and sizes must be positive")
    info = machine_info(args.device, max(threads))
    load0, t0 = _loadavg(), time.time()
    rows: list[dict] = []
    info.pop("threads", None)

    def header() -> list[str]:
        return ["# srlib (default blocks) vs the single pass (the official code's algorithm)", "",
                  "Machine: " + "; ".join(f"{k} = {v}" for k, v in info.items()),
                  f"Block budget ({args.device}): {get_block_budget(args.device) / 2**20:g} MiB; threads: "
                  f"{', '.join(map(str, threads))}; repeats: {args.repeats} (interleaved, median); clock: {args.clock}"
                  f"{' (1-thread rows: thread CPU time)' if args.clock == 'cpu' else ''}",
                  f"Load average at start / at this row: {load0} / {_loadavg()}; run took {time.time() - t0:.0f} s; "
                  f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}",
                  "Baseline: srlib's single-pass computation (the official code's algorithm, not the official code; "
                  "see benchmarks/side_by_side.py). Peak memory: tensors the forward holds (CPU) / "
                  "max_memory_allocated (CUDA)."]

    def write() -> None:  # after every row, so that a run cut short keeps what it measured
        if args.out:
            tmp = args.out.with_name(f".{args.out.name}.tmp")
            tmp.write_text(markdown(rows, header()))
            os.replace(tmp, args.out)

    for name in args.cases:
        for side in args.sizes:
            for th in threads:
                r = measure_row(name, side, th, device=args.device, repeats=args.repeats, warmup=args.warmup,
                                clock=args.clock)
                rows.append(r)
                print(f"{name:8s} {side}² {th}t  srlib {1e3 * r['srlib_s']:8.1f} ms  single pass "
                      f"{1e3 * r['base_s']:8.1f} ms  ratio {r['time_ratio']:.2f}   memory {r['srlib_mib']:7.1f} / "
                      f"{r['base_mib']:7.1f} MiB ({r['mem_ratio']:.3f})  max|diff| {r['max_abs_diff']:.1e}",
                      flush=True)
                write()
    print()
    print(markdown(rows, header()))
    if args.out:
        print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
