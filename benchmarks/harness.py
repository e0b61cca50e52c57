"""All six attention mechanisms under one harness: time, peak memory and FLOPs against the number of positions.

Usage::

    python benchmarks/harness.py                               # CPU, 64 channels, 50² ... 200², both modes
    python benchmarks/harness.py --device cuda --repeats 10    # GPU (clock synchronised with the device)
    python benchmarks/harness.py --sizes 50 100 --cases NLA-map NLA-sdpa NLSA-r4 --modes forward
    python benchmarks/harness.py --list                        # the cases and their settings
    python benchmarks/harness.py --cases GLA-r3 --modes forward --merge   # re-measure some rows of a result file
    python benchmarks/harness.py --threads 1 2 all --cases ENLA-m128 --sizes 50 100   # thread scaling

Thread scaling: ``--threads`` takes one or several counts (``all`` = every logical CPU). Each count is a
separate run with its own result files (the label ends in ``-<threads>t``; the header and every CSV row record
the thread count); with several counts, ``<machine>-threads.md`` gets the speed-up table (time at 1 thread /
time at ``t`` threads, per case, mode and size). ``--clock cpu`` applies to the 1-thread run (the CPU time of
several threads is not their duration: the other counts are timed with the wall clock, and say so).

Each (case, mode) runs in its own child process (``srlib.analysis.bench.run_isolated``) over increasing
sizes; peak memory is the resident-set peak of that process above its level before the timed calls (CPU) or
``torch.cuda.max_memory_allocated`` above the allocated level (CUDA). Times come from ``torch.utils.benchmark``
(``srlib.analysis.measure.time_calls``): ``--warmup`` untimed calls, then about ``--repeats`` blocks of
``Timer.blocked_autorange``; the median per call is reported. A size whose time or memory, extrapolated from
the previous size, would exceed ``--max-seconds`` / ``--max-mem-gib`` is skipped (with every larger one) and
the table says so.

Output (``--out``, default ``benchmarks/results``): ``<machine>.csv`` (one row per case, mode and size),
``<machine>.md`` (machine header, the tables with fitted log-log slopes, the papers' FLOP tables next to ours)
and ``<machine>.png`` (log-log time and memory against ``L``, drawn by ``srlib.viz.plots.plot_benchmark``). ``<machine>`` is ``srlib.analysis.bench.machine_label``
(e.g. ``cpu-amd-epyc-2t``; on a GPU ``cuda-<gpu model>-...``, so GPU results never overwrite the CPU ones)
unless ``--label`` is given. On CUDA the timer synchronises the device (``torch.cuda.synchronize``) at every reading and memory is ``torch.cuda.max_memory_allocated`` above the level before the call;
the table, the slopes and the files are the same. Numbers depend on the machine and its load: compare
ratios and slopes within one file.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import torch

from srlib.analysis.bench import MODES, bench_cases, machine_info, machine_label, read_csv, run_isolated, write_results
from srlib.analysis.flops import paper_flops_comparison
from srlib.viz.plots import plot_benchmark

HERE = Path(__file__).resolve().parent


def _paper_section() -> str:
    lines = ["## The papers' FLOP tables (100 x 100 input, 64 channels) and ours", "",
             "| table | row | paper GFLOPs | ours | diff | our setting |", "|---|---|---:|---:|---:|---|"]
    for r in paper_flops_comparison():
        lines.append(f"| {r['table']} | {r['row']} | {r['paper']:g} | {r['ours']:.3f} | {100 * r['diff']:+.1f}% | "
                     f"{r['setting']} |")
    lines += ["", "NLSN counts queries/keys with C/4 = 16 channels, ENLCN with 64: hence NLA 16.0 vs 25.6 GFLOPs "
              "(2 L² (16 + 64) vs 2 L² (64 + 64)). NLSN's NLSA rows are not reproduced by any accounting of what "
              "the official code computes (see srlib/analysis/flops.py).", ""]
    return "\n".join(lines)


def merge_rows(old: list[dict], new: list[dict]) -> list[dict]:
    """``old`` rows with those re-measured in ``new`` (same case, mode and side) replaced, plus the rest of
    ``new``."""
    key = lambda r: (r["case"], r["mode"], int(r["side"]))  # noqa: E731
    fresh = {key(r) for r in new}
    return [r for r in old if key(r) not in fresh] + list(new)


def main(argv: list[str] | None = None) -> int:
    cases = bench_cases()
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", type=int, nargs="+", default=[50, 100, 150, 200], help="feature-map sides")
    ap.add_argument("--modes", nargs="+", default=list(MODES), choices=MODES)
    ap.add_argument("--cases", nargs="+", default=list(cases), choices=list(cases), metavar="CASE")
    ap.add_argument("--channels", type=int, default=64)
    ap.add_argument("--device", default="cpu", help="cpu or cuda[:i]")
    ap.add_argument("--repeats", type=int, default=3, help="timed blocks per size (about; median reported)")
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--threads", nargs="+", default=None,
                    help="torch threads in each child: one or several counts, or 'all' (default: torch's)")
    ap.add_argument("--max-mem-gib", type=float, default=6.0, help="skip sizes predicted above this peak")
    ap.add_argument("--max-seconds", type=float, default=40.0,
                    help="skip sizes whose warm-up + timed calls are predicted to take longer")
    ap.add_argument("--timeout", type=float, default=900.0, help="seconds per child process")
    ap.add_argument("--clock", default="wall", choices=["wall", "cpu"],
                    help="CPU timings: wall time (default) or the CPU time of the timing thread (needs --threads 1; "
                         "robust to other jobs on a shared machine)")
    ap.add_argument("--out", type=Path, default=HERE / "results")
    ap.add_argument("--label", help="file stem of the outputs (default: the machine label)")
    ap.add_argument("--merge", action="store_true",
                    help="keep the rows of an existing <label>.csv that this run does not re-measure (same case, "
                         "mode and size are replaced); the header then records both runs")
    ap.add_argument("--list", action="store_true", help="print the cases and exit")
    args = ap.parse_args(argv)

    if args.list:
        for c in cases.values():
            print(f"{c.name:12s} {c.mechanism:5s} {c.description}")
        return 0
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        ap.error("--device cuda requested but CUDA is not available")
    if min(args.sizes) < 1:
        ap.error("sizes must be positive")
    try:
        counts = thread_counts(args.threads)
    except ValueError as e:
        ap.error(str(e))
    if args.clock == "cpu" and (1 not in counts or args.device != "cpu"):
        ap.error("--clock cpu needs a 1-thread run (--threads 1 ...) on the CPU")
    if args.label and len(counts) > 1:
        ap.error("--label names one result file: give one thread count with it")
    done = {}
    for threads in counts:
        clock = args.clock if threads == 1 else "wall"
        done[threads] = run_threads(args, cases, threads, clock)
    if len(counts) > 1:
        path = write_scaling(done, args.out)
        print(f"wrote thread scaling: {path}")
    return 0


def thread_counts(spec: list[str] | None) -> list[int]:
    """``--threads`` values as sorted distinct counts (``all`` = ``os.cpu_count()``; default torch's count).

    Raises:
        ValueError: a value that is neither a positive integer nor ``all``.
    """
    if not spec:
        return [torch.get_num_threads()]
    out = set()
    for v in spec:
        if v == "all":
            out.add(os.cpu_count() or 1)
        elif v.isdigit() and int(v) >= 1:
            out.add(int(v))
        else:
            raise ValueError(f"--threads: {v!r} is not a positive integer or 'all'")
    return sorted(out)


def write_scaling(done: dict[int, tuple[list[dict], dict]], out: Path) -> Path:
    """``<machine>-threads.md``: speed-up of each case, mode and size at each thread count over 1 thread (or the
    smallest count measured)."""
    counts = sorted(done)
    base_t = counts[0]
    base_label = machine_label(done[base_t][1]).rsplit("-", 1)[0]
    by_key: dict[tuple, dict[int, float]] = {}
    for t, (rows, _) in done.items():
        for r in rows:
            if r["status"] == "ok":
                by_key.setdefault((r["mode"], r["case"], r["side"]), {})[t] = r["time_median_s"]
    lines = [f"# Thread scaling: {base_label}", ""]
    for t in counts:
        info = done[t][1]
        lines.append(f"* {t} thread(s): clock {info.get('clock', 'wall')}, load average at start "
                     f"{info.get('loadavg', '?')}, files `{machine_label(info)}.*`")
    lines += ["", f"Median time per call at each thread count, and the speed-up over {base_t} thread(s) "
              "(time at 1 / time at t; > 1 is faster).", "",
              "| mode | case | side | " + " | ".join(f"{t}t (s)" for t in counts) + " | "
              + " | ".join(f"speed-up {t}t" for t in counts[1:]) + " |",
              "|---|---|---:|" + "---:|" * (2 * len(counts) - 1)]
    for (mode, case, side), times in by_key.items():
        cells = [f"{times[t]:.3g}" if t in times else "–" for t in counts]
        ups = [f"{times[base_t] / times[t]:.2f}" if base_t in times and t in times else "–" for t in counts[1:]]
        lines.append(f"| {mode} | {case} | {side}² | " + " | ".join(cells) + " | " + " | ".join(ups) + " |")
    path = out / f"{base_label}-threads.md"
    out.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text("\n".join(lines) + "\n")
    os.replace(tmp, path)
    return path


def run_threads(args, cases, threads: int, clock: str) -> tuple[list[dict], dict]:
    """One harness run at ``threads`` intra-op threads: measure, write ``<label>.{csv,md,png}``; returns
    ``(rows, machine info)``."""
    info = machine_info(args.device, threads)
    if args.device == "cpu":
        info["clock"] = "thread CPU time" if clock == "cpu" else "wall"
    label = args.label or machine_label(info)
    print("machine:", "; ".join(f"{k} = {v}" for k, v in info.items()), flush=True)
    rows = []
    t_start = time.time()
    for name in args.cases:  # one child process per case, both modes
        t0 = time.time()
        got = run_isolated(name, args.sizes, args.modes, channels=args.channels, repeats=args.repeats,
                           warmup=args.warmup, device=args.device, threads=threads,
                           max_mem_gib=args.max_mem_gib, max_seconds=args.max_seconds, timeout=args.timeout,
                           clock=clock)
        rows += got
        print(f"{name} [{time.time() - t0:.1f} s]", flush=True)
        for mode in args.modes:
            cells = []
            for r in (r for r in got if r["mode"] == mode):
                if r["status"] == "ok":
                    cells.append(f"{r['side']}²: {r['time_median_s']:.3g} s {r['peak_mib']:.0f} MiB")
                else:
                    cells.append(f"{r['side']}²: {r['status']}")
            print(f"    {mode:17s} " + " | ".join(cells), flush=True)
    info["wall_time_s"] = f"{time.time() - t_start:.0f}"
    order = list(cases)
    if args.merge and (args.out / f"{label}.csv").is_file():
        rows = merge_rows(read_csv(args.out / f"{label}.csv"), rows)
        clock_name = info.get("clock", "cuda events")
        info["merged"] = (f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}: re-measured "
                          f"{', '.join(args.cases)} ({', '.join(args.modes)}; {threads} thread(s); "
                          f"clock: {clock_name}; load average {info.get('loadavg', '?')}); "
                          f"the other rows are from the earlier run")
        previous = _previous_merges(args.out / f"{label}.md")
        if previous:  # earlier --merge runs of the same file stay on record
            info["merged"] = f"{previous} | then {info['merged']}"
    rows.sort(key=lambda r: (MODES.index(r["mode"]), order.index(r["case"]) if r["case"] in order else len(order),
                             r["side"]))
    paths = write_results(rows, args.out, info, label, figure=plot_benchmark(rows, info, label))
    md = paths["md"]
    text = md.read_text()
    tmp = md.with_name(f".{md.name}.tmp")
    tmp.write_text(text + "\n" + _paper_section())
    os.replace(tmp, md)
    for kind, p in paths.items():
        print(f"wrote {kind}: {p}")
    return rows, info


def _previous_merges(md: Path) -> str:
    """The ``merged = ...`` note of an existing result file's machine line ('' if none)."""
    if not md.is_file():
        return ""
    for line in md.read_text().splitlines()[:6]:
        if line.startswith("Machine:") and "merged = " in line:
            return line.split("merged = ", 1)[1].split("; wall_time_s = ")[0].strip()
    return ""


if __name__ == "__main__":
    sys.exit(main())
