"""Forward time and peak memory of dense non-local attention (NLA) vs NLSA.

Usage::

    python benchmarks/attention.py                     # CPU, 64 channels, 50^2 ... 200^2 positions
    python benchmarks/attention.py --sizes 50 100 --device cuda --repeats 10

Each (mechanism, size) runs in a fresh subprocess so that the peak resident memory it reports belongs to it
alone (CPU: ``ru_maxrss`` growth over the idle process; CUDA: ``torch.cuda.max_memory_allocated``). Times are
the median of ``--repeats`` forward passes after one warm-up (CUDA: synchronised). Numbers depend on the
machine: compare ratios within one run. Dense NLA is run twice: through PyTorch's fused
``scaled_dot_product_attention`` (never stores the L x L matrix) and with the explicit attention map kept (what
visualisation needs).
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time

MECHANISMS = ("nla-fused", "nla-map", "nlsa")


def _measure(mechanism: str, side: int, channels: int, repeats: int, device: str) -> dict:
    import torch

    from srlib.attention.nla import NonLocalAttention
    from srlib.attention.nlsa import NonLocalSparseAttention

    torch.manual_seed(0)
    if mechanism.startswith("nla"):
        module = NonLocalAttention(channel=channels, reduction=2)
        module.keep_map = mechanism == "nla-map"
    else:
        module = NonLocalSparseAttention(channels=channels, chunk_size=144, n_hashes=4, reduction=4)
        module.generator = torch.Generator(device=device).manual_seed(0)
    module = module.to(device).eval()
    x = torch.randn(1, channels, side, side, device=device)
    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
    times = []
    with torch.no_grad():
        for i in range(repeats + 1):
            sync()
            t0 = time.perf_counter()
            module(x)
            sync()
            if i:  # first pass is the warm-up
                times.append(time.perf_counter() - t0)
    if device.startswith("cuda"):
        peak_mib = torch.cuda.max_memory_allocated() / 2**20
    else:
        peak_mib = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - base) / 1024  # KiB on Linux
    return {"mechanism": mechanism, "side": side, "L": side * side, "time_s": statistics.median(times), "peak_mib": peak_mib}


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", type=int, nargs="+", default=[50, 100, 150, 200], help="feature map side")
    ap.add_argument("--channels", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--mechanisms", nargs="+", default=list(MECHANISMS), choices=MECHANISMS)
    ap.add_argument("--json", help="also write the rows to this JSON file")
    ap.add_argument("--_one", nargs=2, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)

    if args._one:  # child process: one measurement, printed as JSON
        print(json.dumps(_measure(args._one[0], int(args._one[1]), args.channels, args.repeats, args.device)))
        return

    rows = []
    for side in args.sizes:
        for mech in args.mechanisms:
            cmd = [sys.executable, __file__, "--_one", mech, str(side), "--channels", str(args.channels),
                   "--repeats", str(args.repeats), "--device", args.device]
            proc = subprocess.run(cmd, capture_output=True, text=True)
            if proc.returncode:
                rows.append({"mechanism": mech, "side": side, "L": side * side, "error": proc.stderr.strip().splitlines()[-1]})
            else:
                rows.append(json.loads(proc.stdout.strip().splitlines()[-1]))
            print(_format(rows[-1]), flush=True)
    print()
    print(f"| mechanism | H x W | L | forward time (s) | peak memory (MiB) |  [{args.device}, {args.channels} channels]")
    print("|---|---|---|---|---|")
    for r in rows:
        print(_format(r))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=1)


def _format(r: dict) -> str:
    if "error" in r:
        return f"| {r['mechanism']} | {r['side']}x{r['side']} | {r['L']} | failed: {r['error']} | |"
    return f"| {r['mechanism']} | {r['side']}x{r['side']} | {r['L']} | {r['time_s']:.4f} | {r['peak_mib']:.0f} |"


if __name__ == "__main__":
    main()
