"""srlib.analysis.bench: structure of the benchmark harness (cases, rows, skipping, files). Nothing here asserts a time."""

from __future__ import annotations

import re

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from srlib.analysis.bench import (
    CSV_FIELDS,
    MODES,
    CoAStack,
    _run_sizes,
    bench_cases,
    fit_slopes,
    machine_info,
    machine_label,
    markdown_table,
    measure,
    peak_memory,
    predict_next,
    read_csv,
    run_isolated,
    time_calls,
    write_csv,
    write_results,
)
from srlib.viz.plots import plot_benchmark

C = 16  # small channel count: every case accepts it (embeddings C // 4 = 4)


def test_cases_cover_the_six_mechanisms():
    cases = bench_cases()
    assert {c.mechanism for c in cases.values()} == {"NLA", "NLSA", "ENLA", "GLA", "HSPA", "LCoA"}
    assert [n for n in cases if n.startswith("NLSA")] == ["NLSA-r1", "NLSA-r2", "NLSA-r4", "NLSA-r8"]
    assert [n for n in cases if n.startswith("ENLA")] == [f"ENLA-m{m}" for m in (16, 32, 64, 128, 256)]
    assert {n for n, c in cases.items() if c.quadratic} == {"NLA-map", "NLA-sdpa", "HSPA-k128"}
    for name, case in cases.items():
        assert case.name == name and case.description


@pytest.mark.parametrize("name", list(bench_cases()))
def test_case_builds_a_shape_preserving_module_deterministically(name):
    case = bench_cases()[name]
    x = torch.randn(1, C, 13, 14, generator=torch.Generator().manual_seed(0))  # L = 182 >= one chunk of 144
    state = torch.get_rng_state()
    a, b = case.build(C, seed=3), case.build(C, seed=3)
    assert torch.equal(torch.get_rng_state(), state)  # the caller's RNG is left alone
    assert not a.training
    with torch.no_grad():
        ya, yb = a(x), b(x)
    assert ya.shape == x.shape
    torch.testing.assert_close(ya, yb, rtol=0, atol=0)


@pytest.mark.parametrize("name", [n for n in bench_cases() if n != "NLA-sdpa"])
def test_case_flops_match_flop_counter(name):
    # include_embeddings=True counts what the module computes; FlopCounterMode counts matmuls and convolutions.
    case = bench_cases()[name]
    m = case.build(C, seed=0)
    x = torch.randn(1, C, 13, 14, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        m(x)  # LCoA: the one-off k-means initialisation happens here
        with FlopCounterMode(display=False) as fc:
            m(x)
    terms = case.counter(13, 14, C, True).terms
    expected = sum(v for k, v in terms.items() if k != "normaliser")  # ENLA's D is a product + sum there
    assert fc.get_total_flops() == expected


def test_flops_convention_excludes_embeddings():
    case = bench_cases()["NLA-map"]
    assert case.flops(100, 64).gflops == pytest.approx(16.0)
    assert case.flops(100, 64, include_embeddings=True).total > case.flops(100, 64).total


def test_coa_stack_shares_the_first_layers_attention():
    with pytest.raises(ValueError, match="n_layers"):
        CoAStack(0, C)
    stack = CoAStack(3, C, generator=torch.Generator().manual_seed(0)).eval()
    x = torch.randn(1, C, 13, 14)
    with torch.no_grad():
        y = stack(x)
    assert y.shape == x.shape
    assert bool(stack.layers[0].kmeans.initted) and not bool(stack.layers[1].kmeans.initted)


def test_measure_row_structure():
    row = measure("ENLA-m16", 12, "forward", channels=C, repeats=2, warmup=1, memory="tensor")
    assert set(CSV_FIELDS) <= set(row) and len(row["times"]) >= 1  # blocks of torch.utils.benchmark
    assert row["status"] == "ok" and row["L"] == 144 and row["memory_kind"] == "tensor"
    assert row["time_min_s"] <= row["time_median_s"]
    assert row["peak_mib"] > 0 and row["gflops"] < row["gflops_module"]
    row = measure("NLSA-r1", 12, "forward+backward", channels=C, repeats=1, warmup=0, memory=None)
    assert row["peak_mib"] is None and row["mode"] == "forward+backward"


def test_measure_tensor_memory_sees_the_dense_map():
    row = measure("NLA-map", 24, "forward", channels=C, repeats=1, memory="tensor")
    assert row["peak_mib"] * 2**20 >= 2 * 4 * (24 * 24) ** 2  # scores and weights, L x L float32 each


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(mode="backward"), "mode"),
        (dict(memory="heap"), "memory"),
        (dict(mode="forward+backward", memory="tensor"), "forward"),
        (dict(memory="cuda"), "CUDA"),
    ],
)
def test_measure_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        measure("ENLA-m16", 12, channels=C, **kwargs)
    with pytest.raises(KeyError):
        measure("NLA-fast", 12)


def test_predict_next_scales_time_by_flops_and_memory_by_length():
    cases = bench_cases()
    prev = {"side": 50, "time_median_s": 1.0, "peak_mib": 10.0}
    sec, mem = predict_next(cases["NLA-map"], prev, 100)
    assert mem == pytest.approx(16 * 10 * 2**20)  # L x 4, squared
    f = cases["NLA-map"].flops
    assert sec == pytest.approx(f(100, 64, include_embeddings=True).total / f(50, 64, include_embeddings=True).total)
    _, mem = predict_next(cases["ENLA-m16"], prev, 100)
    assert mem == pytest.approx(4 * 10 * 2**20)


def test_run_sizes_skips_what_would_exceed_the_budget():
    rows = []
    _run_sizes(bench_cases()["ENLA-m16"], [16, 12, 20], "forward", channels=C, repeats=1, warmup=0,
               device="cpu", max_bytes=2**40, max_seconds=0.0, emit=rows.append)
    assert [r["side"] for r in rows] == [12, 16, 20]  # ascending
    assert rows[0]["status"] == "ok"  # nothing to extrapolate from: measured
    assert [r["status"] for r in rows[1:]] == ["skipped", "skipped"]
    assert "predicted" in rows[1]["note"] and rows[2]["note"] == rows[1]["note"]
    rows = []
    _run_sizes(bench_cases()["NLA-map"], [200], "forward", channels=C, repeats=1, warmup=0, device="cpu",
               max_bytes=2**30, max_seconds=1e9, emit=rows.append)  # 2 x 6.4 GB of L x L matrices
    assert rows[0]["status"] == "skipped" and "GiB" in rows[0]["note"] and rows[0]["gflops"] > 0


def test_run_isolated_in_a_child_process():
    rows = run_isolated("ENLA-m16", [12, 14], list(MODES), channels=C, repeats=1, warmup=0, threads=1,
                        timeout=300)
    assert [(r["mode"], r["side"]) for r in rows] == [(m, s) for m in MODES for s in (12, 14)]
    assert all(r["status"] == "ok" and r["memory_kind"] == "rss" and r["threads"] == 1 for r in rows)
    with pytest.raises(ValueError, match="unknown case"):
        run_isolated("NLA-fast", [12])
    with pytest.raises(ValueError, match="modes"):
        run_isolated("ENLA-m16", [12], "backward")


def _row(case, side, t, mem, status="ok", mode="forward"):
    return {"case": case, "mechanism": case.split("-")[0], "mode": mode, "side": side, "L": side * side,
            "status": status, "time_median_s": t, "time_min_s": t, "peak_mib": mem, "memory_kind": "rss",
            "gflops": 1.0, "gflops_module": 1.5, "device": "cpu", "threads": 2,
            "note": "" if status == "ok" else "skipped: predicted peak 9.0 GiB > budget 6.0 GiB"}


def test_fit_slopes_and_markdown_table():
    rows = [_row("NLA-map", s, 1e-6 * (s * s) ** 2, 1e-3 * (s * s) ** 2) for s in (10, 20, 40)]
    rows += [_row("ENLA-m16", s, 1e-3 * s * s, 1e-2 * s * s) for s in (10, 20, 40)]
    rows += [_row("NLA-map", 80, None, None, status="skipped")]
    t = fit_slopes(rows)
    assert t[("NLA-map", "forward")] == pytest.approx(2.0) and t[("ENLA-m16", "forward")] == pytest.approx(1.0)
    assert fit_slopes(rows, "peak_mib")[("NLA-map", "forward")] == pytest.approx(2.0)
    text = markdown_table(rows, {"cpu": "test cpu", "threads": "2"})
    assert text.startswith("Machine: cpu = test cpu; threads = 2")
    assert "| NLA-map |" in text and "| ENLA-m16 |" in text
    assert "skipped¹" in text and "¹ NLA-map, forward, 80²: skipped: predicted peak" in text
    assert "| 2.00 | 2.00 |" in text  # the fitted slopes of the NLA row


def test_csv_round_trip_and_errors(tmp_path):
    rows = [_row("NLA-map", 10, 0.5, 3.0), _row("NLA-map", 20, None, None, status="skipped")]
    path = write_csv(rows, tmp_path / "sub" / "r.csv")
    back = read_csv(path)
    assert back[0]["side"] == 10 and back[0]["time_median_s"] == 0.5 and back[1]["time_median_s"] is None
    assert back[1]["status"] == "skipped" and back[1]["note"].startswith("skipped")
    assert not list(tmp_path.glob("sub/.*tmp"))  # atomic write leaves no temp file
    with pytest.raises(FileNotFoundError, match="missing.csv"):
        read_csv(tmp_path / "missing.csv")
    (tmp_path / "bad.csv").write_text("a,b\n1,2\n")
    with pytest.raises(ValueError, match="bad.csv"):
        read_csv(tmp_path / "bad.csv")


def test_write_results_files(tmp_path):
    rows = [_row("NLA-map", s, 1e-6 * s**4, 1e-3 * s**4) for s in (10, 20)]
    rows += [_row("NLA-map", s, 3e-6 * s**4, 3e-3 * s**4, mode="forward+backward") for s in (10, 20)]
    info = {"device": "cpu", "cpu": "Test CPU 9000", "threads": "2", "torch": "x"}
    paths = write_results(rows, tmp_path, info, figure=plot_benchmark(rows, info, "cpu-test-cpu-9000-2t"))
    assert sorted(paths) == ["csv", "md", "png"]
    assert {p.name for p in paths.values()} == {"cpu-test-cpu-9000-2t.csv", "cpu-test-cpu-9000-2t.md",
                                               "cpu-test-cpu-9000-2t.png"}
    assert paths["png"].read_bytes()[:4] == b"\x89PNG"
    md = paths["md"].read_text()
    assert "### forward:" in md and "### forward+backward:" in md


def test_machine_info_and_label():
    info = machine_info("cpu", threads=3)
    assert info["device"] == "cpu" and info["threads"] == "3" and info["torch"] == torch.__version__
    assert {"uname", "cpu", "logical_cpus"} <= set(info)
    assert re.fullmatch(r"cpu-[a-z0-9-]+-3t", machine_label(info))
    assert machine_label({"device": "cuda", "gpu": "NVIDIA H100 80GB HBM3", "threads": "1"}) == \
        "cuda-nvidia-h100-80gb-hbm3-1t"


# ----------------------------------------------------------------------------------------------- CUDA runs
class _FakeCuda:
    """Stands in for torch.cuda on a CPU-only machine: records the calls, simulates events and the allocator."""

    def __init__(self):
        self.calls: list[str] = []
        self.allocated = 100
        self.peak = 100
        self.clock = 0.0

    def synchronize(self, device=None):
        self.calls.append("synchronize")

    def reset_peak_memory_stats(self, device=None):
        self.calls.append("reset_peak")
        self.peak = self.allocated

    def memory_allocated(self, device=None):
        return self.allocated

    def max_memory_allocated(self, device=None):
        self.calls.append("max_memory_allocated")
        return self.peak

    def Event(self, enable_timing=False):  # noqa: N802 (torch's name)
        fake = self

        class _Event:
            def record(self):
                fake.calls.append("record")
                self.t = fake.clock

            def elapsed_time(self, other):  # milliseconds, as torch.cuda.Event
                return (other.t - self.t) * 1e3

        return _Event()


def test_cuda_timing_and_memory_are_synchronised(monkeypatch):
    fake = _FakeCuda()
    for name in ("synchronize", "reset_peak_memory_stats", "memory_allocated", "max_memory_allocated", "Event"):
        monkeypatch.setattr(torch.cuda, name, getattr(fake, name))

    def step():  # a "kernel" of 0.25 s that allocates 64 bytes at its peak and frees them
        fake.calls.append("step")
        fake.clock += 0.25
        fake.peak = max(fake.peak, fake.allocated + 64)

    timing = time_calls(step, repeats=2, warmup=1, device="cuda")
    assert len(timing.times) >= 1 and all(t >= 0 for t in timing.times)
    # the clock synchronises at every reading: the warm-up call is bracketed, every timed block ends with a sync
    calls = fake.calls
    assert calls[:3] == ["synchronize", "step", "synchronize"]
    assert calls[-1] == "synchronize" and calls.count("step") >= 3
    assert "record" not in calls  # no events: the synchronising clock brackets whole blocks
    fake.calls.clear()
    assert peak_memory(step, "cuda", "cuda") == 64  # above the allocated level before the call
    assert fake.calls == ["synchronize", "reset_peak", "step", "synchronize", "max_memory_allocated"]
    with pytest.raises(ValueError, match="memory"):
        peak_memory(step, "disk")


def test_cuda_results_go_to_their_own_files(tmp_path):
    """A CUDA run writes the same CSV / table / slopes under a device label and leaves the CPU files alone."""
    cpu_rows = [_row("ENLA-m16", s, 1e-3 * s * s, 1e-2 * s * s) for s in (10, 20, 40)]
    cpu = write_results(cpu_rows, tmp_path, {"device": "cpu", "cpu": "AMD EPYC", "threads": "1", "torch": "x"})
    before = {k: p.read_bytes() for k, p in cpu.items()}
    gpu_rows = [dict(r, device="cuda", memory_kind="cuda", time_median_s=r["time_median_s"] / 50,
                     time_min_s=r["time_min_s"] / 50) for r in cpu_rows]
    info = {"device": "cuda", "cpu": "AMD EPYC", "gpu": "NVIDIA H200", "cuda": "12.8", "threads": "1", "torch": "x"}
    gpu = write_results(gpu_rows, tmp_path, info)
    assert {p.name for p in gpu.values()} == {"cuda-nvidia-h200-1t.csv", "cuda-nvidia-h200-1t.md"}
    assert {k: p.read_bytes() for k, p in cpu.items()} == before
    back = read_csv(gpu["csv"])
    assert [r["device"] for r in back] == ["cuda"] * 3 and {r["memory_kind"] for r in back} == {"cuda"}
    md = gpu["md"].read_text()
    assert "gpu = NVIDIA H200" in md and "peak memory (MiB, cuda)" in md
    row = next(line for line in md.splitlines() if line.startswith("| ENLA-m16 |"))
    assert row.endswith("| 1.00 | 1.00 |")  # time and memory slopes, as for the CPU table


def test_harness_merge_replaces_only_the_re_measured_rows():
    import importlib.util
    from pathlib import Path

    spec = importlib.util.spec_from_file_location("harness", Path(__file__).parents[1] / "benchmarks" / "harness.py")
    harness = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(harness)
    old = [_row("ENLA-m16", s, 1.0, 1.0) for s in (10, 20)] + [_row("GLA-r3", 10, 2.0, 2.0)]
    old += [_row("ENLA-m16", 10, 5.0, 5.0, mode="forward+backward")]
    new = [_row("ENLA-m16", s, 0.5, 0.5) for s in (20, 40)]
    merged = harness.merge_rows(old, new)
    got = {(r["case"], r["mode"], r["side"]): r["time_median_s"] for r in merged}
    assert got == {("ENLA-m16", "forward", 10): 1.0, ("ENLA-m16", "forward", 20): 0.5,
                   ("ENLA-m16", "forward", 40): 0.5, ("GLA-r3", "forward", 10): 2.0,
                   ("ENLA-m16", "forward+backward", 10): 5.0}


def test_harness_keeps_the_notes_of_earlier_merges(tmp_path):
    import importlib.util
    from pathlib import Path

    spec = importlib.util.spec_from_file_location("harness", Path(__file__).parents[1] / "benchmarks" / "harness.py")
    harness = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(harness)
    md = tmp_path / "m.md"
    assert harness._previous_merges(md) == ""
    md.write_text("# t\n\nMachine: cpu = x; clock = wall; wall_time_s = 3\n")
    assert harness._previous_merges(md) == ""
    md.write_text("# t\n\nMachine: cpu = x; wall_time_s = 3; merged = 10:00 UTC: re-measured A (forward)\n")
    assert harness._previous_merges(md) == "10:00 UTC: re-measured A (forward)"


def test_cpu_clock_counts_work_not_waiting():
    import time

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        wall = time_calls(lambda: time.sleep(0.05), repeats=1, warmup=0)
        cpu = time_calls(lambda: time.sleep(0.05), repeats=1, warmup=0, clock="cpu")
        assert wall.times[0] >= 0.05 and cpu.times[0] < 0.02  # sleeping (like a preempted job) costs no CPU time
        assert measure("ENLA-m16", 12, repeats=1, warmup=0, memory=None, clock="cpu")["time_min_s"] > 0
        with pytest.raises(ValueError, match="clock"):
            time_calls(lambda: None, clock="gpu")
        with pytest.raises(ValueError, match="clock='cpu' measures host CPU time"):
            time_calls(lambda: None, clock="cpu", device="cuda")
    finally:
        torch.set_num_threads(threads)


def _load_script(name):
    import importlib.util
    from pathlib import Path

    spec = importlib.util.spec_from_file_location(name, Path(__file__).parents[1] / "benchmarks" / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_harness_thread_counts_and_scaling_table(tmp_path):
    import os

    harness = _load_script("harness")
    assert harness.thread_counts(["2", "1", "all", "1"]) == sorted({1, 2, os.cpu_count()})
    assert harness.thread_counts(None) == [torch.get_num_threads()]
    with pytest.raises(ValueError, match="'x'"):
        harness.thread_counts(["x"])
    info = {"device": "cpu", "cpu": "Test CPU", "loadavg": "1.00 1.00 1.00"}
    row = {"mode": "forward", "case": "ENLA-m16", "side": 50, "status": "ok"}
    done = {1: ([dict(row, time_median_s=0.4)], dict(info, threads="1", clock="thread CPU time")),
            4: ([dict(row, time_median_s=0.1)], dict(info, threads="4", clock="wall"))}
    path = harness.write_scaling(done, tmp_path)
    text = path.read_text()
    assert path.name == "cpu-test-cpu-threads.md"
    assert "| forward | ENLA-m16 | 50² | 0.4 | 0.1 | 4.00 |" in text
    assert "files `cpu-test-cpu-4t.*`" in text and "clock thread CPU time" in text


def test_side_by_side_rows_are_equal_computations():
    """The benchmark's baseline is the single pass of the same algorithm: same output, at least the memory."""
    sbs = _load_script("side_by_side")
    for name in ("ENLCA", "NLSA", "HSPA"):
        r = sbs.measure_row(name, 24, 1, repeats=1, warmup=0)
        assert r["threads"] == 1 and r["srlib_s"] > 0 and r["base_s"] > 0
        assert r["max_abs_diff"] < 1e-4, name
        assert r["srlib_mib"] <= r["base_mib"] * 1.05, name
