"""EDSR building blocks, EDSR itself and the model registry."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from srlib.models import build_model, get_config, list_models, list_presets, register_model
from srlib.models.common import DIV2K_MEAN, MeanShift, ResBlock, Upsampler, default_conv
from srlib.models.edsr import EDSR, EDSRConfig


# ------------------------------------------------------------------------------------------------ blocks
def test_default_conv_keeps_size_and_has_bias():
    conv = default_conv(4, 6, 5)
    assert conv.padding == (2, 2) and conv.bias is not None
    assert conv(torch.rand(2, 4, 9, 7)).shape == (2, 6, 9, 7)
    assert default_conv(4, 6, 3, bias=False).bias is None


@pytest.mark.parametrize("rgb_range", [1.0, 255.0])
def test_meanshift_subtracts_and_adds_the_div2k_mean(rgb_range):
    x = torch.rand(2, 3, 5, 4) * rgb_range
    sub, add = MeanShift(rgb_range, sign=-1), MeanShift(rgb_range, sign=1)
    mean = torch.tensor(DIV2K_MEAN).view(1, 3, 1, 1) * rgb_range
    torch.testing.assert_close(sub(x), x - mean)
    torch.testing.assert_close(add(sub(x)), x)
    assert list(sub.state_dict()) == ["weight", "bias"]
    assert sub.weight.shape == (3, 3, 1, 1)
    assert not any(p.requires_grad for p in sub.parameters())


def test_meanshift_with_std_and_bad_arguments():
    std = (0.5, 0.25, 2.0)
    x = torch.rand(1, 3, 2, 2)
    y = MeanShift(1.0, rgb_std=std, sign=-1)(x)
    expect = (x - torch.tensor(DIV2K_MEAN).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1)
    torch.testing.assert_close(y, expect)
    with pytest.raises(ValueError, match="rgb_std"):
        MeanShift(1.0, rgb_std=(1.0, 0.0, 1.0))
    with pytest.raises(ValueError, match="sign"):
        MeanShift(1.0, sign=0)


def test_resblock_keys_and_forward():
    block = ResBlock(default_conv, 8, 3, res_scale=0.1)
    assert [k for k in block.state_dict()] == ["body.0.weight", "body.0.bias", "body.2.weight", "body.2.bias"]
    x = torch.randn(2, 8, 6, 5)
    c1, c2 = block.body[0], block.body[2]
    expect = x + 0.1 * c2(F.relu(c1(x)))
    torch.testing.assert_close(block(x), expect)


@pytest.mark.parametrize(
    "scale, keys, first_out",
    [(2, ["0.weight", "0.bias"], 32), (3, ["0.weight", "0.bias"], 72),
     (4, ["0.weight", "0.bias", "2.weight", "2.bias"], 32)],
)
def test_upsampler_layout_and_shape(scale, keys, first_out):
    up = Upsampler(default_conv, scale, 8)
    assert list(up.state_dict()) == keys
    assert up[0].weight.shape == (first_out, 8, 3, 3)
    assert up(torch.rand(1, 8, 5, 7)).shape == (1, 8, 5 * scale, 7 * scale)


@pytest.mark.parametrize("scale", [1, 5, 6, 2.0, True])
def test_upsampler_rejects_unsupported_scale(scale):
    with pytest.raises(ValueError, match=f"scale={scale!r}"):
        Upsampler(default_conv, scale, 8)


# ------------------------------------------------------------------------------------------------ EDSR
@pytest.mark.parametrize("scale", [2, 3, 4])
def test_edsr_forward_shape(scale):
    model = build_model("edsr", scale=scale, preset="small")
    assert isinstance(model, EDSR)
    assert model(torch.rand(2, 3, 6, 5)).shape == (2, 3, 6 * scale, 5 * scale)


def test_edsr_key_layout_and_order():
    model = build_model("edsr", scale=4, preset="small", n_resblocks=2)
    keys = list(model.state_dict())
    assert keys[:6] == ["sub_mean.weight", "sub_mean.bias", "add_mean.weight", "add_mean.bias",
                        "head.0.weight", "head.0.bias"]
    assert "body.1.body.2.weight" in keys and "body.2.weight" in keys and "body.3.weight" not in keys
    assert keys[-6:] == ["tail.0.0.weight", "tail.0.0.bias", "tail.0.2.weight", "tail.0.2.bias",
                         "tail.1.weight", "tail.1.bias"]


def test_edsr_global_skip_and_zero_body():
    """With a zero body and a zero-bias identity-like tail the network is a pure function of head and tail."""
    model = build_model("edsr", scale=2, preset="small").double()
    for block in list(model.body)[:-1]:
        nn.init.zeros_(block.body[2].weight), nn.init.zeros_(block.body[2].bias)
    nn.init.zeros_(model.body[-1].weight), nn.init.zeros_(model.body[-1].bias)
    x = torch.rand(1, 3, 5, 5, dtype=torch.float64)
    # body(x) == 0 -> res = head(x) (global skip); check against the parts
    expect = model.add_mean(model.tail(model.head(model.sub_mean(x))))
    torch.testing.assert_close(model(x), expect)


def test_edsr_presets_parameter_counts():
    def n_trainable(m):
        return sum(p.numel() for p in m.parameters() if p.requires_grad)

    with torch.device("meta"):
        baseline = build_model("edsr", scale=2, preset="baseline")
        paper = build_model("edsr", scale=2)
    assert baseline.config.n_resblocks == 16 and baseline.config.n_feats == 64 and baseline.config.res_scale == 1.0
    assert paper.config.n_resblocks == 32 and paper.config.n_feats == 256 and paper.config.res_scale == 0.1
    assert n_trainable(baseline) == 1_369_859  # EDSR baseline x2, "1.37M"
    assert n_trainable(paper) == 40_729_603  # EDSR x2, "40.7M"
    assert sum(p.numel() for p in paper.parameters()) - n_trainable(paper) == 24  # two frozen MeanShifts


@pytest.mark.parametrize("scale", [2, 3, 4])
def test_edsr_matches_official_nlsn_listing_outside_attention(reference_root, scale):
    """NLSN = EDSR + 5 attention modules: head/tail/MeanShift keys and shapes must equal the official listing,
    and EDSR's parameter count must equal NLSN's minus its attention parameters."""
    listing = json.loads((reference_root / "state_dicts" / f"nlsn_x{scale}.json").read_text())
    official = {k: tuple(shape) for k, shape, _ in listing["state_dict"]
                if k.split(".")[0] in ("sub_mean", "add_mean", "head", "tail")}
    with torch.device("meta"):
        model = build_model("edsr", scale=scale)
    ours = {k: tuple(v.shape) for k, v in model.state_dict().items() if k.split(".")[0] != "body"}
    assert ours == official
    n_trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    assert n_trainable == listing["n_parameters"] - listing["n_parameters_attention_modules"]


# ------------------------------------------------------------------------------------------------ registry
def test_registry_lists_and_builds_with_overrides():
    assert "edsr" in list_models()
    assert list_presets("edsr") == ["paper", "small", "baseline"]
    model = build_model("EDSR", scale=3, preset="small", n_feats=12, res_scale=0.5)
    assert model.model_name == "edsr"
    assert isinstance(model.config, EDSRConfig)
    assert (model.config.scale, model.config.n_feats, model.config.res_scale) == (3, 12, 0.5)
    assert model.head[0].weight.shape == (12, 3, 3, 3)
    assert get_config("edsr", scale=4, preset="baseline") == EDSRConfig(scale=4, n_resblocks=16, n_feats=64,
                                                                           res_scale=1.0)


def test_registry_errors_are_clear():
    with pytest.raises(ValueError, match=r"unknown model 'nope'.*edsr"):
        build_model("nope")
    with pytest.raises(TypeError, match="n_feets"):
        build_model("edsr", preset="small", n_feets=3)
    with pytest.raises(ValueError, match=r"unknown preset 'huge'.*paper, small, baseline"):
        build_model("edsr", preset="huge")
    with pytest.raises(ValueError, match="scale=5"):
        build_model("edsr", scale=5, preset="small")


def test_register_model_validates_config_class():
    class NotADataclass:
        scale = 2

    with pytest.raises(TypeError, match="dataclass"):
        register_model("bad", NotADataclass)

    from dataclasses import dataclass

    @dataclass
    class NoScale:
        n: int = 1

    with pytest.raises(TypeError, match="scale"):
        register_model("bad", NoScale)
    assert "bad" not in list_models()


def test_register_and_build_a_custom_model():
    from dataclasses import dataclass

    from srlib.models import registry

    @dataclass
    class ToyConfig:
        scale: int = 2
        width: int = 4

        @classmethod
        def small(cls):
            return cls(width=2)

    try:
        @register_model("toy_test_model", ToyConfig)
        def build_toy(cfg):
            return nn.Sequential(nn.Conv2d(3, cfg.width, 1), nn.Upsample(scale_factor=cfg.scale))

        model = build_model("toy_test_model", scale=3, preset="small")
        assert model[0].out_channels == 2 and model.config.scale == 3
        with pytest.raises(ValueError, match="already registered"):
            register_model("toy_test_model", ToyConfig)(lambda cfg: None)
    finally:
        registry._REGISTRY.pop("toy_test_model", None)


def test_every_network_derives_from_the_base_and_lists_its_attention():
    from srlib.models import build_model, list_models
    from srlib.models.common import SRNetwork

    expected = {"edsr": 0, "nlsn": 2, "enlcn": 2, "dlsn": 2, "hspan": 2, "lcoan": 2}
    for name in list_models():
        net = build_model(name, scale=2, preset="small")
        assert isinstance(net, SRNetwork), name
        mods = net.attention_modules()
        assert all(isinstance(m, net.attention_class) for _, m in mods), name
        if name in expected:
            assert (len(mods) > 0) == (expected[name] > 0), name
        names = [n for n, _ in mods]
        assert names == [n for n, m in net.named_modules() if any(m is mm for _, mm in mods)], name  # forward order
