"""srlib.analysis.measure: exact tensor-memory tracking, the log-log slope fit, and the structure of a cost
measurement (never its timings)."""

import pytest
import torch

from srlib.attention.nla import NonLocalAttention, non_local_attention, softmax_last
from srlib.analysis.measure import (
    cuda_peak_bytes,
    loglog_slope,
    measure_attention_cost,
    peak_tensor_bytes,
    time_calls,
)


def test_peak_tensor_bytes_counts_live_intermediates():
    x = torch.ones(1000)  # allocated before the call: not counted

    def two_temporaries(t):
        a = t * 2  # 4000 bytes
        b = a + 1  # 4000 bytes, a still alive -> peak 8000
        del a
        c = b * 3  # b alive, a freed -> 8000 again
        return c

    assert peak_tensor_bytes(two_temporaries, x) == 8000
    assert peak_tensor_bytes(lambda t: t.view(10, 100).transpose(0, 1), x) == 0  # views allocate nothing
    assert peak_tensor_bytes(lambda: torch.empty(250, dtype=torch.float64)) == 2000


def test_peak_tensor_bytes_sees_the_quadratic_matrices():
    L, d = 64, 8
    q = torch.randn(1, L, d)
    peak = peak_tensor_bytes(lambda: non_local_attention(q, q, q, softmax_last))
    assert 2 * 4 * L * L <= peak <= 2 * 4 * L * L + 4 * 4 * L * d  # scores + weights, plus O(L d)


def test_peak_tensor_bytes_fused_attention_stores_no_matrix():
    L, d = 256, 8
    q = torch.randn(1, L, d)
    fused = peak_tensor_bytes(lambda: non_local_attention(q, q, q))  # scaled_dot_product_attention
    assert fused == 4 * L * d  # only the output is handed back to Python
    assert peak_tensor_bytes(lambda: non_local_attention(q, q, q, softmax_last)) >= 2 * 4 * L * L


def test_loglog_slope_exact_and_errors():
    assert loglog_slope([1, 2, 4, 8], [3, 12, 48, 192]) == pytest.approx(2.0, abs=1e-12)
    assert loglog_slope([10, 100], [5, 5]) == pytest.approx(0.0, abs=1e-12)
    with pytest.raises(ValueError, match="positive"):
        loglog_slope([1, 2], [0, 1])
    with pytest.raises(ValueError, match="equal"):
        loglog_slope([2, 2], [1, 3])
    with pytest.raises(ValueError, match=">= 2"):
        loglog_slope([1], [1])


def test_measure_attention_cost_structure():
    torch.manual_seed(0)
    m = NonLocalAttention(channel=8, reduction=2)
    m.keep_map = True  # store the L x L map: memory grows like L^2
    calls = []

    def fn(x):
        calls.append(tuple(x.shape))
        return m(x)

    r = measure_attention_cost(fn, [4, 8], repeats=2, channels=8, generator=torch.Generator().manual_seed(0))
    assert r["size"] == [4, 8] and r["length"] == [16, 64]
    assert len(r["seconds"]) == 2 and all(t > 0 for t in r["seconds"])
    assert all(len(t) >= 1 for t in r["seconds_all"])
    assert r["seconds_min"] == [min(t) for t in r["seconds_all"]]
    # per size: 1 warm-up, blocked_autorange's block-size call(s) and >= 1 timed block, 1 memory run; sizes in order
    n4 = calls.count((1, 8, 4, 4))
    assert n4 >= 4 and calls[:n4] == [(1, 8, 4, 4)] * n4 and set(calls[n4:]) == {(1, 8, 8, 8)}
    assert len(calls) - n4 >= 4
    assert r["peak_bytes"][1] >= 4 * 64 * 64 > r["peak_bytes"][0]
    assert r["cuda_peak_bytes"] == [None, None]
    no_mem = measure_attention_cost(fn, [4], repeats=1, channels=8, memory=False)
    assert no_mem["peak_bytes"] == [None]


def test_measure_attention_cost_cpu_clock():
    r = measure_attention_cost(lambda x: x @ x.transpose(-1, -2), [8], repeats=2, channels=4, clock="cpu",
                               memory=False)
    assert len(r["seconds_all"][0]) >= 1 and all(t >= 0 for t in r["seconds_all"][0])


@pytest.mark.parametrize(
    "kwargs",
    [{"sizes": []}, {"sizes": [0]}, {"sizes": [4], "repeats": 0}, {"sizes": [4], "clock": "gpu"},
     {"sizes": [4], "clock": "cpu", "device": "meta"}],
)
def test_measure_attention_cost_errors(kwargs):
    with pytest.raises(ValueError):
        measure_attention_cost(lambda x: x, **kwargs)


def test_plot_loglog_cost_returns_fitted_slopes():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from srlib.viz import plot_loglog_cost

    lengths = [16, 64, 256, 1024]
    fig, slopes = plot_loglog_cost(lengths, {"quadratic": [n * n for n in lengths], "linear": lengths},
                                   ylabel="cost", fit_from=1)
    assert slopes["quadratic"] == pytest.approx(2.0) and slopes["linear"] == pytest.approx(1.0)
    assert [t.get_text() for t in fig.axes[0].get_xticklabels()] == ["16", "64", "256", "1024"]
    plt.close(fig)


def test_plot_loss_history_draws_each_run():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from srlib.viz.plots import plot_loss_history

    log = {"train": [{"iteration": 10, "loss": 0.5}, {"iteration": 20, "loss": 0.25}]}
    fig = plot_loss_history(log, "one run")
    (line,) = fig.axes[0].get_lines()
    assert list(line.get_xdata()) == [10, 20] and list(line.get_ydata()) == [0.5, 0.25]
    assert fig.axes[0].get_title() == "one run" and fig.axes[0].get_legend() is None
    fig = plot_loss_history({"a": log, "b": log["train"][:1]})
    assert [ln.get_label() for ln in fig.axes[0].get_lines()] == ["a", "b"] and fig.axes[0].get_legend() is not None
    with pytest.raises(ValueError, match="training log"):
        plot_loss_history({"train": []})
    plt.close("all")


def test_time_calls_uses_torch_benchmark_and_counts_calls():
    calls = []
    # no warm-up: blocked_autorange's block-size call is the only warm-up and min_run_time is 0, so exactly one
    # timed block of one call follows it
    m = time_calls(lambda: calls.append(1), repeats=3, warmup=0, label="append")
    assert isinstance(m, torch.utils.benchmark.Measurement)
    assert m.label == "append" and m.task_spec.num_threads == torch.get_num_threads()
    assert m.number_per_run == 1 and len(m.times) == 1 and len(calls) == 2
    # with warm-up calls: those, then the block-size call(s), then >= 1 timed block
    calls.clear()
    m = time_calls(lambda: calls.append(1), repeats=3, warmup=2)
    assert len(m.times) >= 1 and len(calls) >= 2 + 1 + len(m.times) * m.number_per_run
    assert m.median == sorted(m.times)[len(m.times) // 2] or len(m.times) % 2 == 0


def test_time_calls_sets_the_thread_count():
    seen = []
    m = time_calls(lambda: seen.append(torch.get_num_threads()), repeats=1, warmup=0, threads=1)
    assert m.task_spec.num_threads == 1 and seen and set(seen) == {1}


@pytest.mark.parametrize("kwargs, match", [
    ({"repeats": 0}, "repeats >= 1"), ({"warmup": -1}, "warmup >= 0"), ({"threads": 0}, "threads must be >= 1"),
    ({"clock": "gpu"}, "clock must be one of"), ({"clock": "cpu", "device": "meta"}, "clock='cpu'"),
])
def test_time_calls_errors(kwargs, match):
    with pytest.raises(ValueError, match=match):
        time_calls(lambda: None, **kwargs)


def test_cuda_peak_bytes_needs_cuda():
    with pytest.raises(ValueError, match="needs a CUDA device, got cpu"):
        cuda_peak_bytes(lambda: None, "cpu")
