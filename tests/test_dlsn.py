"""DLSN network: official parameter layout at paper configuration, parameter counts, reference case, registry."""

import json

import pytest
import torch

from srlib.attention.gla import GlobalLearnableAttention
from srlib.attention.hashing import with_round_offsets
from srlib.models import build_model, get_config
from srlib.models.dlsn import DLSN, GLAFFM, LFFB, DLSNConfig, config_from_official
from srlib.reference.dlsn import run_dlsn_case
from srlib.reference import load_case


def _n_trainable(net):
    return sum(p.numel() for p in net.parameters() if p.requires_grad)


@pytest.mark.parametrize("scale", [2, 3, 4])
def test_paper_config_matches_official_state_dict_layout(reference_root, scale):
    listing = json.loads((reference_root / "state_dicts" / f"dlsn_x{scale}.json").read_text())
    assert config_from_official(listing["config"]) == get_config("dlsn", scale=scale)
    with torch.device("meta"):  # no memory for 70M parameters
        net = build_model("dlsn", scale=scale)
    ours = [[k, list(v.shape)] for k, v in net.state_dict().items()]
    theirs = [[k, shape] for k, shape, _ in listing["state_dict"]]
    assert ours == theirs  # same keys, same shapes, same order
    assert _n_trainable(net) == listing["n_parameters"]
    assert sum(p.numel() for p in net.parameters()) == listing["n_parameters_incl_frozen_meanshift"]
    attn = [m for _, m in net.attention_modules()]
    assert len(attn) == listing["n_attention_modules"] == 10
    assert sum(p.numel() for m in attn for p in m.parameters()) == listing["n_parameters_attention_modules"]


def test_c128_variant_parameter_counts():
    # reference README §4: the paper's "about 18.27M" model is the n_feats=128 variant
    expected = {2: 17_678_404, 3: 18_416_324, 4: 18_268_740}
    for scale, n in expected.items():
        with torch.device("meta"):
            net = build_model("dlsn", scale=scale, n_feats=128)
        assert _n_trainable(net) == n


def test_paper_defaults_and_structure():
    cfg = DLSNConfig()
    assert (cfg.n_resgroups, cfg.n_resblocks, cfg.n_feats, cfg.n_feats // cfg.reduction) == (10, 4, 256, 64)
    assert (cfg.chunk_size, cfg.n_hashes, cfg.res_scale, cfg.gla_res_scale) == (128, 3, 0.1, 1.0)
    with torch.device("meta"):
        net = DLSN(cfg)
    names = [n for n, _ in net.attention_modules()]
    assert names == [f"body.{i}.body.4" for i in range(10)]
    module = net.body[0]
    assert isinstance(module, GLAFFM) and len(module.lffb) == 4
    assert isinstance(module.attention, GlobalLearnableAttention)
    assert module.attention.res_scale == 1.0 and module.res_scale == 0.1
    assert len(LFFB(8, 3)) == 3


def test_reference_network_case_and_codes(reference_root):
    case = load_case(reference_root / "networks" / "dlsn_case1.pt")
    assert config_from_official(case["config"]) == DLSNConfig.small()  # the small preset is the case config
    torch.set_default_dtype(torch.float64)
    torch.testing.assert_close(run_dlsn_case(case)["output"], case["output"], rtol=1e-10, atol=1e-10)
    net = DLSN(config_from_official(case["config"]))
    net.load_state_dict(case["state_dict"])
    assert _n_trainable(net) == case["n_parameters"]
    modules = dict(net.named_modules())
    for name, rot in zip(case["hash_modules"], case["rotations"]):
        modules[name].projections = rot
        modules[name].keep_details = True
    with torch.no_grad():
        net(case["input"])
    for name, codes in zip(case["hash_modules"], case["hash_codes"]):
        d = modules[name].details
        assert d["n_buckets"] == case["n_buckets"]
        assert torch.equal(with_round_offsets(d["codes"], d["n_buckets"]), codes)


def test_small_network_upscales_and_is_reproducible_with_a_generator():
    torch.manual_seed(0)
    net = build_model("dlsn", scale=3, preset="small").eval()
    x = torch.rand(1, 3, 10, 10)
    outs = []
    for _ in range(2):
        for _, m in net.attention_modules():
            m.generator = torch.Generator().manual_seed(5)
        with torch.no_grad():
            outs.append(net(x))
    assert outs[0].shape == (1, 3, 30, 30)
    assert torch.equal(outs[0], outs[1])


def test_paper_variants_build_and_run():
    torch.manual_seed(0)
    net = build_model("dlsn", scale=2, preset="small", lss_variant="paper", round_weights="paper").eval()
    gla = net.attention_modules()[0][1]
    assert gla.fc[0].weight.shape == (3 * 48, 32) and gla.round_weights == "paper"
    with torch.no_grad():
        y = net(torch.rand(1, 3, 8, 8))
    assert y.shape == (1, 3, 16, 16) and torch.isfinite(y).all()
    assert not any("fc" in k for k in build_model("dlsn", preset="small", lss_variant="none").state_dict())


def test_errors():
    with pytest.raises(ValueError, match="5"):
        build_model("dlsn", scale=5, preset="small")
    with pytest.raises(ValueError, match="lss_variant"):
        build_model("dlsn", preset="small", lss_variant="bogus")
    with pytest.raises(ValueError, match="round_weights"):
        build_model("dlsn", preset="small", round_weights="bogus")
    net = build_model("dlsn", scale=2, preset="small")
    assert net(torch.rand(1, 3, 6, 6)).shape == (1, 3, 12, 12)  # 36 positions < one chunk: one padded chunk
    with pytest.raises(ValueError, match=r"\(B, 3, h, w\)"):
        net(torch.rand(3, 8, 8))
