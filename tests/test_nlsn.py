"""NLSN network: official parameter layout at paper configuration, registry, small config, errors."""

import json

import pytest
import torch

from srlib.models import build_model
from srlib.models.nlsn import NLSN, NLSNConfig
from srlib.attention.nlsa import NonLocalSparseAttention


@pytest.mark.parametrize("scale", [2, 3, 4])
def test_paper_config_matches_official_state_dict_layout(reference_root, scale):
    listing = json.loads((reference_root / "state_dicts" / f"nlsn_x{scale}.json").read_text())
    with torch.device("meta"):  # no memory for 42M parameters
        net = build_model("nlsn", scale=scale)
    ours = [[k, list(v.shape)] for k, v in net.state_dict().items()]
    theirs = [[k, shape] for k, shape, _ in listing["state_dict"]]
    assert ours == theirs  # same keys, same shapes, same order
    n_trainable = sum(p.numel() for p in net.parameters() if p.requires_grad)
    assert n_trainable == listing["n_parameters"]
    assert sum(p.numel() for p in net.parameters()) == listing["n_parameters_incl_frozen_meanshift"]
    attn = [m for m in net.modules() if isinstance(m, NonLocalSparseAttention)]
    assert len(attn) == listing["n_attention_modules"] == 5
    assert sum(p.numel() for m in attn for p in m.parameters()) == listing["n_parameters_attention_modules"]


def test_paper_defaults():
    cfg = NLSNConfig()
    assert (cfg.n_resblocks, cfg.n_feats, cfg.chunk_size, cfg.n_hashes, cfg.res_scale) == (32, 256, 144, 4, 0.1)
    names = [n for n, _ in NLSN(NLSNConfig.small()).attention_modules()]
    assert names == ["body.0", "body.9"]


def test_small_network_upscales_and_is_reproducible_with_a_generator():
    torch.manual_seed(0)
    net = build_model("nlsn", scale=3, preset="small").eval()
    x = torch.rand(1, 3, 12, 12)
    for _, m in net.attention_modules():
        m.generator = torch.Generator().manual_seed(5)
    with torch.no_grad():
        a = net(x)
        for _, m in net.attention_modules():
            m.generator = torch.Generator().manual_seed(5)
        b = net(x)
    assert a.shape == (1, 3, 36, 36)
    assert torch.equal(a, b)


def test_errors():
    with pytest.raises(ValueError, match="5"):
        build_model("nlsn", scale=5, preset="small")
    net = build_model("nlsn", scale=2, preset="small")
    assert net(torch.rand(1, 3, 6, 6)).shape == (1, 3, 12, 12)  # 36 positions < one chunk: one padded chunk
