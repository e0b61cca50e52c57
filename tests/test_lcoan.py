"""LCoAN network: official case, official parameter layout at paper configuration, seeded construction,
collaborative sharing, k-means initialisation / EMA through the network, registry and small preset."""

import json

import pytest
import torch

from srlib.models import build_model
from srlib.models.lcoan import LCoAN, LCoANConfig, config_from_official
from srlib.reference import load_case, run_case


@pytest.fixture(scope="module")
def net_case(reference_root):
    return load_case(reference_root / "networks" / "lcoan_case1.pt")


def test_network_case_output(net_case):
    got = run_case(net_case)
    torch.testing.assert_close(got["output"], net_case["output"], rtol=1e-10, atol=1e-10)


def test_seeded_construction_and_layout_match_the_official_network(net_case):
    torch.set_default_dtype(torch.float64)
    torch.manual_seed(net_case["seed"])
    net = LCoAN(config_from_official(net_case["config"]))
    sd = net.state_dict()
    assert list(sd) == list(net_case["state_dict"])
    for key, want in net_case["state_dict"].items():
        if key.endswith("initted"):  # set True by the case generator
            continue
        # MeanShift biases are computed in float32 by srlib.models.common (float64 officially)
        tol = 1e-7 if "mean." in key else 0.0
        torch.testing.assert_close(sd[key], want, rtol=0, atol=tol, msg=key)
    assert sum(p.numel() for p in net.parameters() if p.requires_grad) == net_case["n_parameters"]
    names = [n for n, _ in net.attention_modules()]
    assert names == net_case["attention_modules"]


@pytest.mark.parametrize("scale", [2, 3, 4])
def test_paper_config_matches_official_state_dict(reference_root, scale):
    listing = json.loads((reference_root / "state_dicts" / f"lcoan_x{scale}.json").read_text())
    with torch.device("meta"):
        net = build_model("lcoan", scale=scale)
    ours = [[k, list(v.shape), str(v.dtype)] for k, v in net.state_dict().items()]
    assert ours == listing["state_dict"]  # keys, shapes, dtypes (bool initted) and order
    assert sum(p.numel() for p in net.parameters() if p.requires_grad) == listing["n_parameters"]
    assert sum(p.numel() for p in net.parameters()) == listing["n_parameters_incl_frozen_meanshift"]
    assert sum(b.numel() for b in net.buffers()) == listing["n_buffer_elements"]
    attn = [m for _, m in net.attention_modules()]
    assert len(attn) == listing["n_attention_modules"] == 10
    assert sum(p.numel() for m in attn for p in m.parameters()) == listing["n_parameters_attention_modules"]


def test_paper_defaults_and_small_preset_shapes():
    cfg = LCoANConfig()
    assert (cfg.n_resgroups, cfg.n_resblocks, cfg.n_feats, cfg.n_clusters, cfg.window_size) == (10, 4, 128, 128, 384)
    assert (cfg.n_rounds, cfg.ema_decay, cfg.ema_update, cfg.res_scale, cfg.reduction) == (1, 0.999, False, 0.1, 1)
    torch.manual_seed(0)
    for scale in (2, 3, 4):
        net = build_model("lcoan", scale=scale, preset="small").eval()
        with torch.no_grad():
            assert net(torch.rand(1, 3, 10, 12)).shape == (1, 3, 10 * scale, 12 * scale)
    with pytest.raises(ValueError, match=r"LCoAN expects \(B, 3, h, w\) images"):
        net(torch.rand(3, 10, 12))
    with torch.no_grad():  # 20 positions < 48 / 2: the sorted rows repeat cyclically to fill one window
        assert net(torch.rand(1, 3, 4, 5)).shape == (1, 3, 4 * scale, 5 * scale)


def test_only_the_first_module_computes_and_initialises():
    torch.manual_seed(1)
    net = build_model("lcoan", preset="small", n_resgroups=3).eval()
    mods = [m for _, m in net.attention_modules()]
    for m in mods:
        m.keep_details = True
    mods[0].kmeans.generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        net(torch.rand(1, 3, 12, 12))
    assert [m.details["collaborative"] for m in mods] == [False, True, True]
    assert [bool(m.kmeans.initted) for m in mods] == [True, False, False]  # official: init on first call, eval too
    assert all(m.details["score"] is mods[0].details["score"] for m in mods)


def test_without_collaboration_every_module_has_its_own_pattern():
    torch.manual_seed(2)
    a = build_model("lcoan", preset="small").eval()
    b = build_model("lcoan", preset="small", collaborative=False).eval()
    b.load_state_dict(a.state_dict())
    x = torch.rand(1, 3, 12, 12)
    for net in (a, b):
        for _, m in net.attention_modules():
            m.kmeans.generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        ya, yb = a(x), b(x)
    assert all(bool(m.kmeans.initted) for _, m in b.attention_modules())
    assert not torch.allclose(ya, yb)


def test_ema_option_updates_the_computing_centroids_in_training_only():
    torch.manual_seed(3)
    frozen = build_model("lcoan", preset="small").train()
    ema = build_model("lcoan", preset="small", ema_update=True).train()
    ema.load_state_dict(frozen.state_dict())
    x = torch.rand(2, 3, 12, 12)
    for net in (frozen, ema):
        net.body[0].lcoa.kmeans.generator = torch.Generator().manual_seed(0)
        net(x)  # first call: initialisation (then the EMA step for `ema`)
    m_frozen, m_ema = frozen.body[0].lcoa.kmeans.means, ema.body[0].lcoa.kmeans.means
    assert not torch.equal(m_frozen, m_ema)
    before_f, before_e = m_frozen.clone(), m_ema.clone()
    for net in (frozen, ema):
        net(torch.rand(2, 3, 12, 12))
    assert torch.equal(m_frozen, before_f)  # official: frozen after the first batch
    step = (m_ema - before_e).norm(dim=-1)
    assert 0 < step.max() <= 2 * (1 - 0.999) + 1e-6  # |u - c| <= 2 for unit u, c; move is (1 - lambda)(c - u)
