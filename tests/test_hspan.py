"""HSPA module and HSPAN network: official reference cases, state-dict layout, top-k behaviour, variants."""

from __future__ import annotations

import json

import pytest
import torch
from torch.testing import assert_close

from srlib.attention.hspa import HSPA
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
