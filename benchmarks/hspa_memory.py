"""HSPA memory and time: the dense path of the official code against srlib's blockwise path, in one run.

Usage::

    python benchmarks/hspa_memory.py                 # 1 x 64 x 100 x 100 (both paths) + 200 x 200 (blockwise)
    python benchmarks/hspa_memory.py --threads 1 --repeats 3
    python benchmarks/hspa_memory.py --device cuda   # on a GPU (memory: torch.cuda.max_memory_allocated)

The module is :class:`srlib.attention.hspa.HSPA` with the official settings (``channel = 64``, ``reduction =
2``, top-k 128, exact mode, float32, eval mode), once with ``block_size=None`` (the dense path, which mirrors
the official code: full ``L x L`` scores, top-k, soft thresholding) and once with the default blockwise path
(``block_size="auto"``). Each measurement runs in its own child process (``--child``) with
:func:`srlib.analysis.bench.measure`:

* **forward, tensor peak**: :func:`srlib.analysis.measure.peak_tensor_bytes`, the exact, deterministic peak of the
  tensors the forward pass holds (the allocator peak of Python-visible tensors);
* **forward / forward+backward, resident peak** (CPU): peak resident set of the child above its level before
  the call (``measure(memory="rss")``): everything, including the autograd engine's gradient buffers;
* **time**: median of ``--repeats`` calls after one warm-up call (one call, no warm-up, above the first size);
  ``--clock cpu`` times the CPU time of the timing thread (robust to other jobs on a shared machine).

Outputs (``--out``, default ``benchmarks/results``): ``hspa_memory[-<device>].json`` (the rows, the machine)
and ``hspa_memory[-<device>].md`` (the table and the blockwise / dense ratios). The CPU files carry no
device suffix.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent

#: (variant, block_size) measured at every size; the dense path is skipped above ``--dense-max-side``.
VARIANTS = {"dense": None, "blockwise": "auto"}
#: (mode, memory kind) pairs measured.
MEASURES = (("forward", "tensor"), ("forward", "rss"), ("forward+backward", "rss"))


def _case(block_size):
    from srlib.analysis.flops import hspa_flops
    from srlib.attention.hspa import HSPA
    from srlib.analysis.bench import BenchCase

    return BenchCase(
        name=f"HSPA-{'dense' if block_size is None else 'blockwise'}", mechanism="HSPA",
        description=f"official HSPA settings, block_size={block_size!r}",
        builder=lambda c, gen: HSPA(channel=c, reduction=2, topk=128, block_size=block_size),
        counter=lambda h, w, c, e: hspa_flops(h, w, c, 128, reduction=2, include_embeddings=e), quadratic=True)


def _child(variant: str, mode: str, side: int, memory: str, repeats: int, warmup: int, device: str,
           clock: str) -> None:
    from srlib.analysis.bench import measure

    if device.startswith("cuda") and memory == "rss":
        memory = "cuda"
    row = measure(_case(VARIANTS[variant]), side, mode, channels=64, repeats=repeats, warmup=warmup, device=device,
                  memory=memory, clock=clock if device == "cpu" else "wall")
    row["variant"] = variant
    print(json.dumps(row), flush=True)


def _run_child(args, variant, mode, side, memory, repeats, warmup) -> dict:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child", variant, mode, str(side), memory,
           "--repeats", str(repeats), "--warmup", str(warmup), "--device", args.device, "--clock", args.clock]
    if args.threads:
        cmd += ["--threads", str(args.threads)]
    env = dict(os.environ)
    if args.threads:
        env["OMP_NUM_THREADS"] = str(args.threads)
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=args.timeout)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    if proc.returncode or not lines:
        tail = proc.stderr.strip().splitlines()[-1:] if proc.stderr.strip() else [""]
        return {"variant": variant, "mode": mode, "side": side, "memory_kind": memory, "status": "error",
                "note": f"exit {proc.returncode}: {tail[0]}"}
    return json.loads(lines[-1])


def _ratio(rows, key, mode, memory, side):
    got = {r["variant"]: r for r in rows if r["mode"] == mode and r["memory_kind"] == memory
           and r["side"] == side and r["status"] == "ok"}
    if "dense" in got and "blockwise" in got and got["dense"].get(key):
        return got["blockwise"][key] / got["dense"][key]
    return None


def markdown(rows: list[dict], info: dict, base_side: int) -> str:
    lines = ["# HSPA: dense (official-style) vs blockwise", "",
             "Machine: " + "; ".join(f"{k} = {v}" for k, v in info.items()), "",
             "Module: `HSPA(channel=64, reduction=2, topk=128)`, exact mode, float32, eval, input `(1, 64, s, s)`; "
             "`dense` = `block_size=None` (full L x L scores, as the official code), `blockwise` = the default "
             "`block_size='auto'`. Memory: `tensor` = peak of the tensors the forward holds "
             "(`srlib.analysis.measure.peak_tensor_bytes`), `rss` = resident-set peak of the child process above its level "
             "before the call, `cuda` = `torch.cuda.max_memory_allocated` above the level before it.", "",
             "| size | variant | mode | memory kind | peak (MiB) | median time (s) | block (queries) |",
             "|---|---|---|---|---:|---:|---:|"]
    for r in rows:
        if r["status"] != "ok":
            lines.append(f"| {r['side']}² | {r['variant']} | {r['mode']} | {r['memory_kind']} | {r['status']}: "
                         f"{r.get('note', '')} | | |")
            continue
        lines.append(f"| {r['side']}² (L={r['side'] ** 2}) | {r['variant']} | {r['mode']} | {r['memory_kind']} | "
                     f"{r['peak_mib']:.1f} | {r['time_median_s']:.3g} | {r.get('block', '')} |")
    lines += ["", f"Ratios blockwise / dense at {base_side}² (targets of issue 16: forward peak ≤ 0.25, "
              "forward+backward peak ≤ 0.5, time ≤ 1.0):", "",
              "| mode | memory kind | peak ratio | time ratio |", "|---|---|---:|---:|"]
    for mode, memory in MEASURES:
        mem = "cuda" if info.get("device") == "cuda" and memory == "rss" else memory
        pr = _ratio(rows, "peak_mib", mode, mem, base_side)
        tr = _ratio(rows, "time_median_s", mode, mem, base_side)
        lines.append(f"| {mode} | {mem} | {'' if pr is None else f'{pr:.3f}'} | "
                     f"{'' if tr is None else f'{tr:.2f}'} |")
    lines += ["", "Time and resident memory depend on the machine and its load (this project's CPU is shared); the "
              "tensor peak is exact. Blockwise memory is O(B·L·block) in the forward and O(B·L·t) saved for the "
              "backward (t = largest support of a block), the dense path's O(B·L²); both forwards do "
              "O(B·L²·(D + Dv)) arithmetic, the blockwise backward only O(B·L·t·(D + Dv)).", ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--child", nargs=4, metavar=("VARIANT", "MODE", "SIDE", "MEMORY"), help=argparse.SUPPRESS)
    ap.add_argument("--sizes", type=int, nargs="+", default=[100, 200], help="map sides (first: the ratio size)")
    ap.add_argument("--dense-max-side", type=int, default=100, help="largest side the dense path is run at")
    ap.add_argument("--repeats", type=int, default=3,
                    help="timed calls (median) after one warm-up call; above the first size: 1, no warm-up")
    ap.add_argument("--warmup", type=int, default=1, help=argparse.SUPPRESS)
    ap.add_argument("--clock", default="wall", choices=["wall", "cpu"],
                    help="CPU timings: wall time or the timing thread's CPU time (needs --threads 1)")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--timeout", type=float, default=1800.0, help="seconds per child")
    ap.add_argument("--out", type=Path, default=HERE / "results")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.child:
        variant, mode, side, memory = args.child
        _child(variant, mode, int(side), memory, args.repeats, args.warmup, args.device, args.clock)
        return 0
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        ap.error("--device cuda requested but CUDA is not available")

    from srlib.attention.hspa import auto_block_size
    from srlib.analysis.bench import machine_info

    info = machine_info(args.device, args.threads or torch.get_num_threads())
    if args.device == "cpu":
        info["clock"] = "thread CPU time" if args.clock == "cpu" else "wall"
    suffix = "" if args.device == "cpu" else f"-{args.device.replace(':', '')}"
    args.out.mkdir(parents=True, exist_ok=True)

    def write() -> None:  # after every row, so that an interrupted run keeps what it measured
        (args.out / f"hspa_memory{suffix}.json").write_text(json.dumps({"machine": info, "rows": rows}, indent=1)
                                                           + "\n")
        (args.out / f"hspa_memory{suffix}.md").write_text(markdown(rows, info, args.sizes[0]))

    rows = []
    t0 = time.time()
    for i, side in enumerate(args.sizes):
        for variant, block_size in VARIANTS.items():
            if variant == "dense" and side > args.dense_max_side:
                continue
            for mode, memory in MEASURES:
                if args.device.startswith("cuda") and memory == "rss":
                    memory = "cuda"
                if args.device.startswith("cuda") and memory == "tensor":
                    continue  # the CUDA allocator peak replaces the tensor count
                r = _run_child(args, variant, mode, side, memory, args.repeats if i == 0 else 1, 1 if i == 0 else 0)
                r.pop("times", None)
                r["block"] = "L x L" if block_size is None else auto_block_size(side * side)
                rows.append(r)
                print(f"{side}² {variant:9s} {mode:16s} {memory:6s} "
                      + (f"{r['peak_mib']:8.1f} MiB {r['time_median_s']:.3g} s" if r["status"] == "ok"
                         else r["note"]), flush=True)
                write()
    info["wall_time_s"] = f"{time.time() - t0:.0f}"
    write()
    print(f"wrote {args.out / f'hspa_memory{suffix}.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
