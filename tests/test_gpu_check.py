"""``benchmarks/gpu_check.py --device cpu --quick``: every part of the GPU check runs on CPU (issue 24, item 6).

The CUDA run itself needs a GPU; this test keeps its code paths working: a harness row and an hspa_memory
measurement in their child processes, the training step of every paper network in fp32 and bf16 autocast
(CPU autocast in quick mode), and the DDP path with one Gloo process."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "gpu_check.py"


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""),
            "OMP_NUM_THREADS": "1"}


@pytest.mark.slow
def test_quick_mode_on_cpu(tmp_path):
    r = subprocess.run([sys.executable, str(SCRIPT), "--device", "cpu", "--quick", "--out", str(tmp_path)],
                       capture_output=True, text=True, env=_env(), timeout=900)
    assert r.returncode == 0, (r.stdout + r.stderr)[-3000:]
    report = json.loads((tmp_path / "cpu-check-quick.json").read_text())
    assert report["all_ok"] is True and report["quick"] is True
    assert {k: h["returncode"] for k, h in report["harness"].items()} == {"harness": 0, "hspa_memory": 0,
                                                                            "side_by_side": 0}
    assert (tmp_path / "cpu-check-quick-harness.csv").is_file()
    side = (tmp_path / "cpu-check-quick-side-by-side.md").read_text()
    assert "| NLSA | 12² | 1 |" in side and "| LCoA | 12² | 1 |" in side
    from srlib.train import PAPER_SCHEDULES

    rows = report["train"]
    assert [(row["network"], row["precision"]) for row in rows] == [
        (n, p) for n in PAPER_SCHEDULES for p in ("fp32", "bf16")]
    for row in rows:
        assert row["status"] == "ok" and row["iterations"] == 3 and row["losses_finite"] and row["weights_finite"]
        assert row["autocast"] == ("bfloat16" if row["precision"] == "bf16" else "off")
        assert row["iterations_per_s"] > 0
    ddp = report["ddp"]
    assert ddp["status"] == "ok" and ddp["ddp"] and ddp["backend"] == "gloo" and ddp["world_size"] == 1
    assert ddp["all_reduce_ok"] is True
    md = (tmp_path / "cpu-check-quick.md").read_text()
    assert "All parts ok: **True**" in md and "DDP, gloo, world 1" in md


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message shown when CUDA is missing")
def test_cuda_missing_is_one_line(tmp_path):
    r = subprocess.run([sys.executable, str(SCRIPT), "--out", str(tmp_path)], capture_output=True, text=True,
                       env=_env(), timeout=300)
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert "CUDA is not available" in r.stderr and "--device cpu --quick" in r.stderr
    assert not any(tmp_path.iterdir())


def test_help_has_text_for_every_option():
    sys.path.insert(0, str(SCRIPT.parent))
    try:
        import gpu_check
    finally:
        sys.path.remove(str(SCRIPT.parent))
    for action in gpu_check.build_parser()._actions:
        assert action.help, action.option_strings
