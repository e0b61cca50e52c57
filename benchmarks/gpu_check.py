"""One GPU check, ready for the day a GPU is lent: every CUDA path of srlib in under 8 minutes on one GPU.

Usage::

    python benchmarks/gpu_check.py                        # CUDA: the whole check (about 5-8 min on one GPU)
    python benchmarks/gpu_check.py --device cpu --quick   # the same code paths on CPU in seconds (tests run it)

What it runs, in order (each part is timed and its outcome recorded, a failing part does not stop the others):

1. **harness**: ``benchmarks/harness.py --device cuda`` (all six mechanisms, time and peak memory against
   ``L``; its own files ``<machine>.{csv,md,png}``, e.g. ``cuda-nvidia-h100-...``) and
   ``benchmarks/hspa_memory.py --device cuda`` (dense against blockwise HSPA; ``hspa_memory-cuda.{json,md}``)
   and ``benchmarks/side_by_side.py --device cuda`` (srlib's default block choice against the single pass of
   every mechanism at 100² and 150², ``cuda-side-by-side.md``: on CUDA the default must never be slower).
2. **train**: every network of :data:`srlib.train.PAPER_SCHEDULES` at its paper preset, 200 iterations in
   float32 and 200 with ``--amp bf16`` (the step ``srlib.train`` takes: :func:`srlib.train.loop._build_run` and
   :func:`srlib.train.loop._optimisation_step`, with ENLCN's contrastive term), batch 16 of 96 x 96 HR patches (48 x 48
   LR at x2, the papers' setting) cut from the bundled sample photographs: iterations/s after 5 warm-up steps,
   peak CUDA memory, and whether every loss was finite. ``--max-seconds`` caps each run (the iterations done are
   recorded), so the whole check stays under 8 minutes.
3. **ddp**: the DistributedDataParallel path with one process: ``torch.distributed`` initialised with NCCL
   (Gloo on CPU) and world size 1, the network wrapped as :func:`srlib.train.loop._build_run` wraps it under
   ``torchrun`` (``find_unused_parameters=True``), a few steps with gradients all-reduced through the backend,
   the loss all-reduced, a barrier, and the group destroyed. (``srlib.train`` itself only wraps when
   ``WORLD_SIZE > 1``; with one GPU this is the closest honest check of that path.)

Writes ``--out/<device>-check[-quick].json`` and ``.md`` (default ``benchmarks/results``; e.g.
``cuda-check.json``), with the machine, torch/CUDA versions and every number. ``--quick`` uses the small
presets, 3 iterations of 32 x 32 patches, one harness row (HSPA, 12 x 12) and one ``hspa_memory``
measurement (its ``--child`` mode), and writes into ``--out`` (the tests pass a temporary folder).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import subprocess
import sys
import tempfile
import time
import traceback
import warnings
from pathlib import Path
from typing import Any, Callable

import torch

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


# ----------------------------------------------------------------------------------------------------------
# 1. harness rows and hspa_memory (their own scripts, in child processes)
# ----------------------------------------------------------------------------------------------------------
def run_harness(args: argparse.Namespace) -> dict[str, Any]:
    """``benchmarks/harness.py`` and ``benchmarks/hspa_memory.py`` on ``args.device``; returns their exit
    statuses, wall times and the last lines of their output."""
    if args.quick:
        # one child process each: one harness row, and one hspa_memory measurement (its --child mode, which
        # prints the row as JSON) -- the full scripts start 6-12 children, each importing torch
        harness = ["--sizes", "12", "--cases", "HSPA-k128", "--modes", "forward", "--repeats", "1", "--warmup", "0",
                   "--label", f"{args.device_type}-check-quick-harness"]
        hspa = ["--child", "blockwise", "forward", "12", "tensor", "--repeats", "1"]
        side = ["--sizes", "12", "--cases", "NLSA", "LCoA", "--threads", "1", "--repeats", "1", "--warmup", "0",
                "--out", str(args.out / f"{args.device_type}-check-quick-side-by-side.md")]
    else:
        harness = ["--repeats", "5", "--max-seconds", "10", "--max-mem-gib", "40"]
        hspa = []
        side = ["--sizes", "100", "150", "--threads", "1", "--repeats", "10", "--warmup", "2",
                "--out", str(args.out / f"{args.device_type}-side-by-side.md")]
    out = {}
    for name, script, extra in (("harness", "harness.py", harness), ("hspa_memory", "hspa_memory.py", hspa),
                                ("side_by_side", "side_by_side.py", side)):
        out_arg = [] if name == "side_by_side" else ["--out", str(args.out)]  # side_by_side: --out is a file
        cmd = [sys.executable, str(HERE / script), "--device", args.device, *out_arg, *extra]
        t0 = time.time()
        try:
            r = subprocess.run(cmd, capture_output=True, text=True, env=_env(), timeout=args.harness_timeout)
            out[name] = {"returncode": r.returncode, "seconds": round(time.time() - t0, 1),
                         "tail": (r.stdout + r.stderr).strip().splitlines()[-6:], "command": " ".join(cmd[1:])}
        except subprocess.TimeoutExpired:
            out[name] = {"returncode": None, "seconds": round(time.time() - t0, 1),
                         "tail": [f"timed out after {args.harness_timeout} s"], "command": " ".join(cmd[1:])}
        print(f"[{name}] exit {out[name]['returncode']} in {out[name]['seconds']} s", flush=True)
    return out


# ----------------------------------------------------------------------------------------------------------
# 2. paper-preset training steps
# ----------------------------------------------------------------------------------------------------------
def patch_pool(scale: int, patch: int, n: int, device: torch.device, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` random HR patches ``(n, 3, patch, patch)`` from the bundled sample photographs and their
    MATLAB-bicubic LR ``(n, 3, patch/scale, patch/scale)``, on ``device`` (no dataset needed)."""
    from srlib.data import DEFAULT_SAMPLE_NAMES, imresize, load_sample

    g = torch.Generator().manual_seed(seed)
    images = [load_sample(name) for name in DEFAULT_SAMPLE_NAMES]
    hr = []
    for i in range(n):
        img = images[i % len(images)]
        top = int(torch.randint(0, img.shape[1] - patch + 1, (), generator=g))
        left = int(torch.randint(0, img.shape[2] - patch + 1, (), generator=g))
        hr.append(img[:, top:top + patch, left:left + patch])
    hr_t = torch.stack(hr)
    lr_t = imresize(hr_t, 1 / scale).clamp(0, 1)
    return lr_t.to(device), hr_t.to(device)


def _make_run(model, cfg, device, *, cpu_bf16: bool, ddp: bool = False):
    """A training run as :func:`srlib.train.train` builds it (optionally DDP-wrapped like under torchrun)."""
    from torch import nn

    import srlib.train as T

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="amp=.*needs CUDA")
        run = T.loop._build_run(model, cfg, Path(tempfile.gettempdir()), device, T.distributed._DistContext())
    if cpu_bf16 and device.type == "cpu" and cfg.amp == "bf16":
        run.use_amp, run.amp_dtype = True, torch.bfloat16  # CPU autocast, so that --quick runs the AMP branch
    if ddp:
        run.step_module = nn.parallel.DistributedDataParallel(
            run.model, device_ids=[device.index] if device.type == "cuda" else None, find_unused_parameters=True)
    return run


def train_steps(name: str, precision: str, args: argparse.Namespace, pool, *, ddp: bool = False) -> dict[str, Any]:
    """``args.iterations`` steps of network ``name`` (preset ``args.preset``) in ``precision``; a dict of
    iterations done, iterations/s (after ``args.warmup`` untimed steps), peak memory and loss checks."""
    import srlib.train as T
    from srlib.models import build_model

    device = torch.device(args.device)
    torch.manual_seed(0)
    model = build_model(name, scale=2, preset=args.preset)
    n_params = sum(p.numel() for p in model.parameters())
    cfg = T.TrainConfig(iterations=args.iterations, batch_size=args.batch_size, patch_size=args.patch_size,
                        amp=None if precision == "fp32" else precision, val_every=0, ckpt_every=0, log_every=0)
    run = _make_run(model, cfg, device, cpu_bf16=True, ddp=ddp)
    extra = model.make_extra_loss() if hasattr(model, "make_extra_loss") else None
    lr_pool, hr_pool = pool
    g = torch.Generator().manual_seed(1)
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
    losses: list[torch.Tensor] = []
    run.step_module.train()
    t0 = time.perf_counter()
    timed_from, done = None, 0
    for it in range(args.iterations):
        idx = torch.randint(0, lr_pool.shape[0], (args.batch_size,), generator=g)
        batch = {"lr": lr_pool[idx.to(lr_pool.device)], "hr": hr_pool[idx.to(hr_pool.device)]}
        loss = T.loop._optimisation_step(run, batch, it, extra)
        if ddp:
            import torch.distributed as dist

            dist.all_reduce(loss)  # what srlib.train.loop._log does with the running loss under DDP
        losses.append(loss)
        done = it + 1
        if done == args.warmup:
            _sync(device)
            timed_from = (time.perf_counter(), done)
        if time.perf_counter() - t0 > args.max_seconds:
            break
    _sync(device)
    t1 = time.perf_counter()
    loss_values = torch.stack(losses).float().cpu()
    if timed_from is not None and done > timed_from[1]:
        its = (done - timed_from[1]) / (t1 - timed_from[0])
    else:
        its = done / (t1 - t0)
    weights_finite = all(bool(torch.isfinite(p).all()) for p in run.model.parameters())
    row = {"network": name, "preset": args.preset, "precision": precision, "ddp": ddp, "parameters": n_params,
           "batch": args.batch_size, "hr_patch": args.patch_size, "iterations": done,
           "iterations_per_s": round(its, 3), "seconds": round(t1 - t0, 1),
           "peak_memory_gib": (round(torch.cuda.max_memory_allocated(device) / 2**30, 2)
                               if device.type == "cuda" else None),
           "autocast": f"{run.amp_dtype}".replace("torch.", "") if run.use_amp else "off",
           "loss_first": float(loss_values[0]), "loss_last": float(loss_values[-1]),
           "losses_finite": bool(torch.isfinite(loss_values).all()), "weights_finite": weights_finite}
    del run, model
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return row


def _guard(rows: list, what: str, fn: Callable[[], dict]) -> None:
    """Run one measurement; a failure is recorded (one line + the error) instead of stopping the check."""
    try:
        row = fn()
        row["status"] = "ok" if row.get("losses_finite", True) and row.get("weights_finite", True) else "non-finite"
    except Exception as err:  # noqa: BLE001 - the check records every failure and goes on
        row = {"what": what, "status": "error", "error": f"{type(err).__name__}: {err}"[:500],
               "traceback": traceback.format_exc().splitlines()[-4:]}
    rows.append(row)
    print(f"[{what}] " + ", ".join(f"{k}={row[k]}" for k in ("status", "iterations", "iterations_per_s",
                                                             "peak_memory_gib", "loss_last", "error") if k in row),
          flush=True)


# ----------------------------------------------------------------------------------------------------------
# 3. DDP with one process
# ----------------------------------------------------------------------------------------------------------
def ddp_check(args: argparse.Namespace, pool) -> dict[str, Any]:
    """Initialise ``torch.distributed`` (NCCL on CUDA, Gloo on CPU) with world size 1 and train a few DDP steps."""
    import torch.distributed as dist

    device = torch.device(args.device)
    backend = "nccl" if device.type == "cuda" else "gloo"
    if device.type == "cuda":
        torch.cuda.set_device(device)
    with tempfile.TemporaryDirectory() as tmp:
        dist.init_process_group(backend, init_method=f"file://{tmp}/store", rank=0, world_size=1)
        try:
            it_args = argparse.Namespace(**{**vars(args), "iterations": args.ddp_iterations,
                                            "warmup": min(args.warmup, args.ddp_iterations - 1)})
            row = train_steps(args.ddp_network, "fp32", it_args, pool, ddp=True)
            t = torch.ones((), device=device)
            dist.all_reduce(t)
            dist.barrier()
            row.update(backend=backend, world_size=dist.get_world_size(), all_reduce_ok=float(t) == 1.0)
        finally:
            dist.destroy_process_group()
    return row


# ----------------------------------------------------------------------------------------------------------
# Report
# ----------------------------------------------------------------------------------------------------------
def machine(device: torch.device) -> dict[str, Any]:
    info = {"device": str(device), "torch": torch.__version__, "python": platform.python_version(),
            "platform": platform.platform(), "date_utc": time.strftime("%Y-%m-%d %H:%M", time.gmtime())}
    if device.type == "cuda":
        p = torch.cuda.get_device_properties(device)
        info.update(gpu=p.name, gpu_memory_gib=round(p.total_memory / 2**30, 1), cuda=torch.version.cuda,
                    cudnn=torch.backends.cudnn.version(), tf32_matmul=torch.backends.cuda.matmul.allow_tf32,
                    tf32_cudnn=torch.backends.cudnn.allow_tf32)
    else:
        info.update(cpu=platform.processor() or platform.machine(), threads=torch.get_num_threads())
    return info


def markdown(report: dict[str, Any]) -> str:
    m = report["machine"]
    lines = [f"# GPU check ({'quick, ' if report['quick'] else ''}{m.get('gpu', m['device'])})", "",
             "Machine: " + "; ".join(f"{k} = {v}" for k, v in m.items()), "",
             f"Total wall time: {report['total_seconds']:.0f} s. Written by `benchmarks/gpu_check.py "
             f"{' '.join(report['argv'])}`.", "", "## Harness, HSPA memory, side by side", ""]
    for name, h in report["harness"].items():
        lines.append(f"* `{name}`: exit {h['returncode']} in {h['seconds']} s (`{h['command']}`)")
    lines += ["", "## Training steps (paper presets)" if report["preset"] == "paper" else "## Training steps", "",
              "| network | precision | autocast | params | batch x HR patch | iterations | it/s | peak GiB | "
              "loss first -> last | status |", "|---|---|---|---:|---|---:|---:|---:|---|---|"]
    for r in report["train"] + [report["ddp"]]:
        if "network" not in r:
            lines.append(f"| {r.get('what')} | | | | | | | | | {r['status']}: {r.get('error', '')} |")
            continue
        name = r["network"] + (f" (DDP, {r.get('backend')}, world {r.get('world_size')})" if r["ddp"] else "")
        peak = "" if r["peak_memory_gib"] is None else f"{r['peak_memory_gib']:.2f}"
        lines.append(f"| {name} | {r['precision']} | {r['autocast']} | {r['parameters'] / 1e6:.1f}M | "
                     f"{r['batch']} x {r['hr_patch']}² | {r['iterations']} | {r['iterations_per_s']:.2f} | {peak} | "
                     f"{r['loss_first']:.4f} -> {r['loss_last']:.4f} | {r['status']} |")
    lines += ["", f"All parts ok: **{report['all_ok']}**", ""]
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="benchmarks/gpu_check.py", description=__doc__.split("\n\n")[0])
    ap.add_argument("--device", default="cuda", help="cuda, cuda:1 or cpu (default: %(default)s)")
    ap.add_argument("--quick", action="store_true",
                    help="small presets, 3 iterations of 32 x 32 patches, tiny harness sizes (seconds on CPU)")
    ap.add_argument("--out", type=Path, default=HERE / "results",
                    help="folder of the result files (default: benchmarks/results)")
    ap.add_argument("--networks", nargs="+", default=None,
                    help="networks to train (default: those of srlib.train.PAPER_SCHEDULES)")
    ap.add_argument("--precisions", nargs="+", default=["fp32", "bf16"], choices=["fp32", "bf16", "fp16"],
                    help="training precisions (default: fp32 bf16)")
    ap.add_argument("--iterations", type=int, default=None, help="steps per run (default: 200; --quick: 3)")
    ap.add_argument("--batch-size", type=int, default=None, help="patches per step (default: 16; --quick: 1)")
    ap.add_argument("--patch-size", type=int, default=None, help="HR patch side (default: 96; --quick: 32)")
    ap.add_argument("--max-seconds", type=float, default=None,
                    help="stop a training run after this many seconds (default: 15; --quick: 60)")
    ap.add_argument("--budget", type=float, default=450.0,
                    help="seconds after which the remaining training runs are skipped, so that the whole check "
                         "stays under 8 minutes (default: %(default)s)")
    ap.add_argument("--skip", nargs="+", default=[], choices=["harness", "train", "ddp"], help="parts to leave out")
    ap.add_argument("--harness-timeout", type=float, default=200.0,
                    help="seconds allowed to each benchmark script (default: %(default)s)")
    return ap


def main(argv: list[str] | None = None) -> int:
    """Run the check; returns 0 when every part passed, 1 otherwise (2: bad options)."""
    from srlib.train import PAPER_SCHEDULES

    ap = build_parser()
    args = ap.parse_args(argv)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        ap.error(f"--device {args.device}: CUDA is not available (torch {torch.__version__}); use --device cpu --quick")
    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda", torch.cuda.current_device())  # DDP's device_ids need an index
    args.device = str(device)
    q = args.quick
    args.device_type = device.type
    args.preset = "small" if q else "paper"
    args.iterations = args.iterations or (3 if q else 200)
    args.batch_size = args.batch_size or (1 if q else 16)
    args.patch_size = args.patch_size or (32 if q else 96)
    args.max_seconds = args.max_seconds or (60.0 if q else 15.0)
    args.warmup = min(5, args.iterations - 1) if not q else 1
    args.ddp_network, args.ddp_iterations = ("edsr" if q else "nlsn"), (3 if q else 20)
    networks = args.networks or list(PAPER_SCHEDULES)
    args.out.mkdir(parents=True, exist_ok=True)
    t_start = time.time()

    report: dict[str, Any] = {"machine": machine(device), "quick": q, "preset": args.preset,
                              "argv": list(argv if argv is not None else sys.argv[1:]),
                              "harness": {}, "train": [], "ddp": {"what": "ddp", "status": "skipped"}}
    print("machine:", report["machine"], flush=True)
    if "harness" not in args.skip:
        report["harness"] = run_harness(args)
    pool = patch_pool(2, args.patch_size, 64 if not q else 4, device)
    if "train" not in args.skip:
        for name in networks:
            for precision in args.precisions:
                if time.time() - t_start > args.budget:
                    report["train"].append({"what": f"{name} {precision}", "status": "skipped",
                                            "error": f"time budget of {args.budget:.0f} s used up"})
                    print(f"[{name} {precision}] skipped: time budget used up", flush=True)
                    continue
                _guard(report["train"], f"{name} {precision}", lambda: train_steps(name, precision, args, pool))
    if "ddp" not in args.skip:
        rows: list = []
        _guard(rows, "ddp", lambda: ddp_check(args, pool))
        report["ddp"] = rows[0]
    report["total_seconds"] = time.time() - t_start
    report["all_ok"] = (all(h["returncode"] == 0 for h in report["harness"].values())
                        and all(r["status"] == "ok" for r in report["train"])
                        and report["ddp"]["status"] in ("ok", "skipped"))
    stem = f"{device.type}-check" + ("-quick" if q else "")
    (args.out / f"{stem}.json").write_text(json.dumps(report, indent=1, default=str))
    (args.out / f"{stem}.md").write_text(markdown(report))
    print(f"wrote {args.out / (stem + '.json')} and .md in {report['total_seconds']:.0f} s; all ok: {report['all_ok']}",
          flush=True)
    return 0 if report["all_ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
