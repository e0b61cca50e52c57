"""Block budgets (srlib.attention.blocking): settable per device, read from the environment, and the blocked
inference paths equal the single pass whatever the budget (float64)."""

from __future__ import annotations

import pytest
import torch

import srlib.attention.blocking as blocking
from srlib.attention.blocking import (
    DEFAULT_BLOCK_BUDGETS,
    block_budget,
    get_block_budget,
    items_per_block,
    set_block_budget,
)


@pytest.fixture(autouse=True)
def _fresh_budgets(monkeypatch):
    monkeypatch.setattr(blocking, "_budgets", {})
    monkeypatch.delenv("SRLIB_BLOCK_BUDGET_CPU", raising=False)
    monkeypatch.delenv("SRLIB_BLOCK_BUDGET_CUDA", raising=False)


def test_defaults_per_device():
    assert get_block_budget("cpu") == DEFAULT_BLOCK_BUDGETS["cpu"] == 2**24
    assert get_block_budget("cuda") == get_block_budget("cuda:1") == DEFAULT_BLOCK_BUDGETS["cuda"] == 2**30
    assert get_block_budget(torch.device("cpu")) == 2**24
    assert get_block_budget("meta") == 2**30  # other accelerators: the cuda budget
    assert DEFAULT_BLOCK_BUDGETS["cuda"] > DEFAULT_BLOCK_BUDGETS["cpu"]


def test_set_reset_and_context():
    set_block_budget(1000, device="cpu")
    assert get_block_budget("cpu") == 1000 and get_block_budget("cuda") == 2**30
    with block_budget(7, "cpu"):
        assert get_block_budget("cpu") == 7
    assert get_block_budget("cpu") == 1000
    set_block_budget(None, "cpu")
    assert get_block_budget("cpu") == 2**24
    with block_budget(5, "cuda:0"):
        assert get_block_budget("cuda") == 5
    assert get_block_budget("cuda") == 2**30
    for bad in (0, -3, 1.5, True, "16M"):
        with pytest.raises(ValueError, match="positive number of bytes"):
            set_block_budget(bad)


def test_environment(monkeypatch):
    monkeypatch.setenv("SRLIB_BLOCK_BUDGET_CPU", "64M")
    monkeypatch.setenv("SRLIB_BLOCK_BUDGET_CUDA", "123")
    assert get_block_budget("cpu") == 64 * 2**20 and get_block_budget("cuda") == 123
    monkeypatch.setenv("SRLIB_BLOCK_BUDGET_CPU", "2GiB")
    assert get_block_budget("cpu") == 2 * 2**30
    set_block_budget(10)  # an explicit setting wins over the environment
    assert get_block_budget("cpu") == 10
    set_block_budget(None)
    monkeypatch.setenv("SRLIB_BLOCK_BUDGET_CPU", "lots")
    with pytest.raises(ValueError, match="SRLIB_BLOCK_BUDGET_CPU"):
        get_block_budget("cpu")


def test_items_per_block():
    set_block_budget(1000)
    assert items_per_block(10, 100) == 10  # everything fits: a single pass
    assert items_per_block(50, 100) == 10  # as many as fit
    assert items_per_block(50, 5000) == 1  # never less than one
    with pytest.raises(ValueError):
        items_per_block(0, 4)


def _calls_counting(monkeypatch, module, name):
    calls = []
    real = getattr(module, name)

    def counted(*a, **k):
        calls.append(1)
        return real(*a, **k)

    monkeypatch.setattr(module, name, counted)
    return calls


@pytest.mark.parametrize("budget", [None, 2**16, 1])
def test_enla_blocks_follow_the_budget(budget, monkeypatch):
    """Default budget: one pass at L = 10,000, m = 128 (5 MiB of features); small budgets: several blocks;
    the same result (float64) every time."""
    import srlib.attention.enla as enla_module
    from srlib.attention.enla import enla

    g = torch.Generator().manual_seed(0)
    q = torch.randn(1, 300, 8, generator=g, dtype=torch.float64) * 0.3
    k = torch.randn(1, 300, 8, generator=g, dtype=torch.float64) * 0.3
    v = torch.randn(1, 300, 4, generator=g, dtype=torch.float64)
    proj = torch.randn(128, 8, generator=g, dtype=torch.float64)
    with torch.no_grad():
        want = enla(q, k, v, proj)  # default budget: 300 x 128 x 8 bytes fits
        calls = _calls_counting(monkeypatch, enla_module, "_features_")
        with block_budget(budget):
            got = enla(q, k, v, proj)
    blocks = {None: 2, 2**16: 2 * 5, 1: 2 * 300}[budget]  # feature maps computed: keys + queries per block
    assert len(calls) == blocks
    torch.testing.assert_close(got, want, rtol=1e-13, atol=0)
    assert items_per_block(10_000, 128 * 4) == 10_000  # the benchmark's ENLA: one pass on the CPU by default
