"""HSPA module and HSPAN network: official reference cases, state-dict layout, top-k behaviour, variants."""

from __future__ import annotations

import json

import pytest
import torch
from torch.testing import assert_close

from torch.autograd import gradcheck

import srlib.attention.hspa as hspa_module
from srlib.attention.hspa import HSPA, auto_block_size, hspa_attention
from srlib.attention.nla import NonLocalAttention
from srlib.attention.softthreshold import SoftThreshold, soft_threshold, threshold_and_support
from srlib.models import build_model
from srlib.models.hspan import HSPAN, HSPANConfig, HSPANSConfig, attention_indices
from srlib.reference import load_case, run_case

TOL = dict(atol=1e-10, rtol=0)


@pytest.fixture(scope="module")
def hspa_case(reference_root):
    return load_case(reference_root / "modules" / "hspa_case1.pt")


@pytest.fixture(scope="module")
def hspan_case(reference_root):
    return load_case(reference_root / "networks" / "hspan_case1.pt")


def _hspa_from_case(case, **kwargs) -> HSPA:
    cfg = case["config"]
    m = HSPA(channel=cfg["channel"], reduction=cfg["reduction"], res_scale=cfg["res_scale"], **kwargs).double()
    m.load_state_dict(case["state_dict"])  # float64 weights into float64 parameters
    return m.eval()


# ---------------------------------------------------------------------------------------------------------------
# HSPA module
# ---------------------------------------------------------------------------------------------------------------
def test_hspa_case_through_runner(hspa_case):
    got = run_case(hspa_case)
    for key in ("output", "grad_input", "st_output", "st_grad_scores"):
        assert_close(got[key], hspa_case[key], **TOL, msg=key)
    assert set(got["grad_params"]) == set(hspa_case["grad_params"])
    for name, g in hspa_case["grad_params"].items():
        assert_close(got["grad_params"][name], g, **TOL, msg=name)


def test_hspa_state_dict_layout(hspa_case):
    m = HSPA(channel=32, reduction=2)
    assert [(k, tuple(v.shape)) for k, v in m.state_dict().items()] == [
        (k, tuple(v.shape)) for k, v in hspa_case["state_dict"].items()
    ]


def test_hspa_fallback_calls_match_official(hspa_case):
    m = _hspa_from_case(hspa_case, topk=hspa_case["config"]["topk"])
    with torch.no_grad():
        scores = m.similarity(hspa_case["input"])
    assert scores.shape == (1, 342, 342)
    trace: list = []
    threshold_and_support(scores, dim=-1, topk=m.topk, trace=trace)
    official = hspa_case["tau_support_calls_module"]
    assert [(t["rows"], t["topk"]) for t in trace] == [(342, 32)] + [(c["shape"][0], c["topk"]) for c in official[1:]]


def test_hspa_exact_output_bit_identical_over_topk(hspa_case):
    m = _hspa_from_case(hspa_case, topk=32)
    outs = []
    with torch.no_grad():
        for k in (1, 2, 8, 32, 128, None):
            m.topk = k
            outs.append(m(hspa_case["input"]))
    assert all(torch.equal(o, outs[0]) for o in outs[1:])
    assert_close(outs[0], hspa_case["output"], **TOL)


def test_hspa_truncated_mode_differs_below_support(hspa_case):
    m = _hspa_from_case(hspa_case, topk=8, mode="truncated")
    x = hspa_case["input"]
    with torch.no_grad():
        _, support = threshold_and_support(m.similarity(x))
        assert int(support.max()) > 8  # some queries have more than 8 non-zero weights
        m.keep_map = True
        y = m(x)
        weights = m.last_map
    assert not torch.allclose(y, hspa_case["output"], atol=1e-6)
    assert ((weights > 0).sum(-1) <= 8).all()
    assert_close(weights.sum(-1), torch.ones(1, 342, dtype=torch.float64), atol=1e-12, rtol=0)
    # with k >= the largest support the truncated module equals the exact one
    m.topk = int(support.max())
    with torch.no_grad():
        assert_close(m(x), hspa_case["output"], **TOL)


def test_hspa_softmax_normalizer_is_official_nla(reference_root):
    """ST and softmax are interchangeable: HSPA(normalizer='softmax') reproduces the official dense NLA case."""
    case = load_case(reference_root / "modules" / "nla_case1.pt")
    m = _hspa_from_case(case, normalizer="softmax")
    nla = NonLocalAttention(case["config"]["channel"], case["config"]["reduction"], case["config"]["res_scale"])
    nla.double().load_state_dict(case["state_dict"])
    nla.eval()
    with torch.no_grad():
        assert_close(m(case["input"]), case["output"], **TOL)
        # and the other way round: the dense NLA with ST as normaliser is HSPA
        nla.normalizer = SoftThreshold(dim=-1, topk=16)
        m_st = _hspa_from_case(case, topk=16)
        assert_close(nla(case["input"]), m_st(case["input"]), atol=0, rtol=0)


def test_hspa_attention_map_and_errors():
    torch.manual_seed(0)
    m = HSPA(channel=8, reduction=2, res_scale=1.0, topk=4)
    x = torch.randn(2, 8, 5, 6)
    m.keep_map = True
    y = m(x)
    assert y.shape == x.shape and m.last_map.shape == (2, 30, 30)
    assert_close(m.last_map, soft_threshold(m.similarity(x), topk=4), atol=1e-6, rtol=0)
    y.sum().backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in m.parameters())
    with pytest.raises(ValueError, match="divisible"):
        HSPA(channel=9, reduction=2)
    with pytest.raises(ValueError, match="topk"):
        HSPA(channel=8, topk=0)
    with pytest.raises(ValueError, match="mode"):
        HSPA(channel=8, mode="approx")
    with pytest.raises(ValueError, match="B, C, H, W"):
        m(torch.randn(8, 5, 6))
    with pytest.raises(ValueError, match="no top-k"):
        HSPA(channel=8, normalizer="softmax").topk = 3


# ---------------------------------------------------------------------------------------------------------------
# Blockwise HSPA: no L x L matrix, same output and gradients as the dense (official) path
# ---------------------------------------------------------------------------------------------------------------
def _qkv(B=2, L=53, D=4, Dv=5, seed=0, scale=1.5):
    g = torch.Generator().manual_seed(seed)
    q, k, v = (torch.randn(B, L, d, generator=g, dtype=torch.float64) for d in (D, D, Dv))
    return q * scale, k, v


@pytest.mark.parametrize("backward", ["sparse", "recompute"])
@pytest.mark.parametrize("mode,topk", [("exact", 4), ("exact", None), ("exact", 64), ("truncated", 3)])
@pytest.mark.parametrize("block", [1, 7, 53, "auto"])
def test_blockwise_equals_dense_output_and_gradients(mode, topk, block, backward, monkeypatch):
    """Both backward paths: on the saved support, and (support above the limit) recomputing the block."""
    if backward == "recompute":
        monkeypatch.setattr(hspa_module, "SPARSE_MAX_SUPPORT", 0)
    q, k, v = _qkv()
    g = torch.randn(2, 53, 5, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    results = []
    for bs in (None, block):
        leaves = [t.clone().requires_grad_() for t in (q, k, v)]
        y = hspa_attention(*leaves, topk=topk, mode=mode, block_size=bs)
        results.append((y.detach(), torch.autograd.grad(y, leaves, g)))
        with torch.no_grad():  # the inference loop (no saved thresholds) gives the same output
            assert_close(hspa_attention(q, k, v, topk=topk, mode=mode, block_size=bs), y.detach(), atol=0, rtol=0)
    (y_dense, g_dense), (y_block, g_block) = results
    assert_close(y_block, y_dense, atol=1e-13, rtol=0)
    for a, b, name in zip(g_block, g_dense, "qkv"):
        assert_close(a, b, atol=1e-12, rtol=0, msg=f"grad {name}")
    if mode == "exact" and topk == 4:  # some rows needed the fallback beyond the first top-k
        scores = torch.bmm(q, k.transpose(1, 2))
        assert int(threshold_and_support(scores, topk=4)[1].max()) > 4


@pytest.mark.parametrize("limit", [512, 0])
@pytest.mark.parametrize("mode,topk", [("exact", 2), ("truncated", 3)])
def test_blockwise_gradcheck_float64(mode, topk, limit, monkeypatch):
    monkeypatch.setattr(hspa_module, "SPARSE_MAX_SUPPORT", limit)
    q, k, v = (t[:1, :11].clone().requires_grad_() for t in _qkv(seed=3, scale=0.8))
    fn = lambda a, b, c: hspa_attention(a, b, c, topk=topk, mode=mode, block_size=4)  # noqa: E731
    assert gradcheck(fn, (q, k, v), eps=1e-6, atol=1e-8)


def test_blockwise_module_matches_official_case_with_small_blocks(hspa_case):
    """The official case (342 queries) through blocks of 5 and 64 queries: output and all gradients."""
    x = hspa_case["input"]
    for bs in (5, 64):
        m = _hspa_from_case(hspa_case, topk=hspa_case["config"]["topk"], block_size=bs)
        xg = x.clone().requires_grad_()
        y = m(xg)
        assert_close(y.detach(), hspa_case["output"], **TOL)
        grads = torch.autograd.grad(y, [xg, *m.parameters()], hspa_case["grad_output"])
        assert_close(grads[0], hspa_case["grad_input"], **TOL)
        for (name, _), gp in zip(m.named_parameters(), grads[1:]):
            assert_close(gp, hspa_case["grad_params"][name], **TOL, msg=name)


def test_blockwise_memory_is_a_fraction_of_dense():
    """Tensor-allocation peak (deterministic): blocks of 30 queries on L = 900 hold far less than L x L."""
    from srlib.analysis.measure import peak_tensor_bytes

    torch.manual_seed(0)
    m = HSPA(channel=8, reduction=2, topk=16).eval()
    x = torch.randn(1, 8, 30, 30)
    peaks = {}
    for bs in (None, 30):
        m.block_size = bs
        with torch.no_grad():
            peaks[bs] = peak_tensor_bytes(lambda: m(x))  # noqa: B023
    assert peaks[None] >= 2 * 900 * 900 * 4  # scores and weights, float32
    assert peaks[30] < 0.1 * peaks[None]


def test_block_size_choice_and_errors():
    assert auto_block_size(342) == 342  # small maps: one block, exactly the dense computation
    assert auto_block_size(10_000) == 2**22 // 10_000
    assert auto_block_size(40_000, batch=4) == 2**22 // 160_000
    assert auto_block_size(10**8) == 1
    m = HSPA(channel=8, reduction=2)
    assert m.block_size == "auto"
    for bad in (0, -3, 2.5, "big", True):
        with pytest.raises(ValueError, match="block_size"):
            m.block_size = bad
    with pytest.raises(ValueError, match="block_size"):
        HSPA(channel=8, block_size=0)
    with pytest.raises(ValueError, match="B, L, D"):
        hspa_attention(torch.randn(2, 3), torch.randn(2, 3), torch.randn(2, 3))
    with pytest.raises(ValueError, match="floating"):
        hspa_attention(*(torch.ones(1, 3, 2, dtype=torch.long),) * 3)


# ---------------------------------------------------------------------------------------------------------------
# HSPAN network
# ---------------------------------------------------------------------------------------------------------------
def test_hspan_case_through_runner(hspan_case):
    assert_close(run_case(hspan_case)["output"], hspan_case["output"], **TOL)


def test_hspan_small_config_is_the_case_config(hspan_case):
    net = build_model("hspan", scale=2, preset="small")
    assert [(k, tuple(v.shape)) for k, v in net.state_dict().items()] == [
        (k, tuple(v.shape)) for k, v in hspan_case["state_dict"].items()
    ]
    assert sum(p.numel() for p in net.parameters() if p.requires_grad) == hspan_case["n_parameters"]
    assert [n for n, _ in net.attention_modules()] == hspan_case["attention_modules"]


def test_hspan_output_independent_of_topk_in_exact_mode(hspan_case):
    net = HSPAN(HSPANConfig.small()).double()
    net.load_state_dict(hspan_case["state_dict"])  # float64 into float64
    net.eval()
    with torch.no_grad():
        ref = net(hspan_case["input"])
        net.set_topk(1)
        assert torch.equal(net(hspan_case["input"]), ref)
        net.set_topk(2, mode="truncated")
        assert all(m.mode == "truncated" and m.topk == 2 for _, m in net.attention_modules())
        assert not torch.equal(net(hspan_case["input"]), ref)


@pytest.mark.parametrize("scale", [2, 3, 4])
def test_paper_state_dict_matches_official_listing(reference_root, scale):
    listing = json.loads((reference_root / "state_dicts" / f"hspan_x{scale}.json").read_text())
    with torch.device("meta"):  # shapes only: no 33M-parameter allocation
        net = build_model("hspan", scale=scale)
    assert [[k, list(v.shape)] for k, v in net.state_dict().items()] == [[k, s] for k, s, _ in listing["state_dict"]]
    n_train = sum(p.numel() for p in net.parameters() if p.requires_grad)
    assert n_train == listing["n_parameters"]
    assert sum(p.numel() for p in net.parameters()) == listing["n_parameters_incl_frozen_meanshift"]
    attn = net.attention_modules()
    assert len(attn) == listing["n_attention_modules"] == 10
    assert sum(p.numel() for _, m in attn for p in m.parameters()) == listing["n_parameters_attention_modules"]
    assert {m.topk for _, m in attn} == {128}


def test_hspan_s_and_backbone_variants():
    with torch.device("meta"):
        full = build_model("hspan")
        small_variant = build_model("hspan_s")
        backbone = build_model("hspan", attention_at="none")
    assert [n for n, _ in small_variant.attention_modules()] == ["body.4.body.4"]  # after 20 of the 40 blocks
    assert backbone.attention_modules() == []
    count = lambda net: sum(p.numel() for p in net.parameters() if p.requires_grad)  # noqa: E731
    per_hspa = count(full.body[0].attention)
    assert count(full) - count(small_variant) == 9 * per_hspa
    assert count(full) - count(backbone) == 10 * per_hspa
    assert attention_indices(HSPANSConfig(n_resgroups=3)) == (1,)
    assert attention_indices(HSPANConfig(n_resgroups=4, attention_at=(3, 0))) == (0, 3)


@pytest.mark.parametrize("name,scale", [("hspan", 3), ("hspan_s", 4)])
def test_small_networks_forward_backward(name, scale):
    torch.manual_seed(0)
    net = build_model(name, scale=scale, preset="small")
    x = torch.rand(1, 3, 9, 10)
    y = net(x)
    assert y.shape == (1, 3, 9 * scale, 10 * scale)
    y.mean().backward()
    grads = [p.grad for p in net.parameters() if p.requires_grad and p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads)
    assert net.a.grad is None  # the official unused parameter gets no gradient


def test_softmax_network_variant_runs():
    net = build_model("hspan", preset="small", normalizer="softmax")
    assert all(not isinstance(m.normalizer, SoftThreshold) for _, m in net.attention_modules())
    assert net(torch.rand(1, 3, 6, 6)).shape == (1, 3, 12, 12)


def test_hspan_bad_config_and_input():
    with pytest.raises(ValueError, match="attention_at"):
        HSPAN(HSPANConfig.small(attention_at="some"))
    with pytest.raises(ValueError, match="outside"):
        HSPAN(HSPANConfig.small(attention_at=(5,)))
    with pytest.raises(ValueError, match="st_mode"):
        HSPAN(HSPANConfig.small(st_mode="approx"))
    with pytest.raises(ValueError, match="topk"):
        HSPAN(HSPANConfig.small(topk=0))
    with pytest.raises(ValueError, match="scale"):
        build_model("hspan", scale=5, preset="small")
    net = build_model("hspan", preset="small")
    with pytest.raises(ValueError, match="expects"):
        net(torch.rand(1, 1, 8, 8))
