"""Measure the spread of a notebook's tiny runs over seeds and CPU thread counts.

A notebook's training results depend on the seed, the thread count and the CPU's floating-point kernels, so
the notebook does not compare them as text: it asserts that its value lies in the band measured here
(:func:`srlib.course.assert_in_spread`). Each notebook's cases live in ``benchmarks/spread_cases/nbNN.py`` as

    CASES = {"case name": run}   # run(seed: int) -> {"metric": float, ...}, e.g. {"psnr": 32.4, "loss": 0.03}

where ``run`` repeats exactly what the notebook computes, with ``seed`` in place of the notebook's seed (which
must be one of the seeds measured). This script runs every case for each seed and thread count in the current
data setting (benchmark data present, or offline: run it once with SRLIB_DATA set and once without) and merges
the summaries into ``srlib/spread/NOTEBOOK.json`` under ``"data"`` or ``"offline"``.

Usage:
    python benchmarks/tiny_spread.py 01 [--seeds 0 1 2] [--threads 1 2] [--case NAME ...]
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from srlib.course import SPREAD_DIR, data_setting, summarise  # noqa: E402


def load_cases(notebook: str) -> dict:
    path = Path(__file__).with_name("spread_cases") / f"nb{notebook}.py"
    if not path.is_file():
        raise SystemExit(f"tiny_spread: no cases for notebook {notebook!r} ({path} is missing)")
    spec = importlib.util.spec_from_file_location(f"spread_cases_nb{notebook}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.CASES


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("notebook", help="notebook prefix, e.g. 00a, 01, 02")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="seeds to run (default: 0 1 2)")
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2], help="CPU thread counts (default: 1 2)")
    ap.add_argument("--case", nargs="*", default=None, help="only these cases (default: all)")
    args = ap.parse_args(argv)

    cases = load_cases(args.notebook)
    names = args.case or list(cases)
    setting = data_setting()
    out = SPREAD_DIR / f"{args.notebook}.json"
    table = json.loads(out.read_text()) if out.is_file() else {}
    for name in names:
        runs: dict[str, list[float]] = {}
        detail = []
        for threads in args.threads:
            for seed in args.seeds:
                torch.set_num_threads(threads)
                t0 = time.perf_counter()
                values = cases[name](seed)
                detail.append({"seed": seed, "threads": threads, **{k: float(v) for k, v in values.items()}})
                for k, v in values.items():
                    runs.setdefault(k, []).append(float(v))
                print(f"[{setting}] {name}: seed {seed}, {threads} thread(s): "
                      + ", ".join(f"{k}={v:.4f}" for k, v in values.items())
                      + f"  ({time.perf_counter() - t0:.0f} s)", flush=True)
        entry = {k: summarise(v) for k, v in runs.items()}
        entry["_runs"] = detail
        table.setdefault(setting, {})[name] = entry
        SPREAD_DIR.mkdir(exist_ok=True)
        out.write_text(json.dumps(table, indent=1, sort_keys=True) + "\n")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
