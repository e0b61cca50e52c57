"""ENLCN network (EDSR backbone + ENLCA): official layout, reference case, training-mode contrastive term."""

from __future__ import annotations

import json

import pytest
import torch

from srlib.attention.enla import ENLCA, contrastive_loss
from srlib.models import build_model, list_models
from srlib.models.enlcn import ENLCN, ContrastiveTerm, ENLCNConfig
from srlib.reference import load_case, run_case


@pytest.fixture(scope="module")
def net_case(reference_root):
    return load_case(reference_root / "networks" / "enlcn_case1.pt")


def test_network_case_output(net_case):
    got = run_case(net_case)
    torch.testing.assert_close(got["output"], net_case["output"], rtol=0, atol=1e-10)


def test_network_case_layout_and_init(net_case):
    """Same config and seed -> official key order, parameter count and (except the mean shift) weights."""
    torch.set_default_dtype(torch.float64)
    torch.manual_seed(net_case["seed"])
    net = ENLCN(ENLCNConfig(n_resblocks=8, n_feats=32, res_scale=0.1))
    sd = net.state_dict()
    assert list(sd) == list(net_case["state_dict"])
    assert sum(p.numel() for p in net.parameters() if p.requires_grad) == net_case["n_parameters"]
    assert [n for n, _ in net.attention_modules()] == net_case["attention_modules"]
    for key, value in net_case["state_dict"].items():
        if key.endswith("_mean.bias"):  # DIV2K mean literal, float32-rounded in srlib's MeanShift
            torch.testing.assert_close(sd[key], value, rtol=0, atol=1e-7)
        else:
            assert torch.equal(sd[key], value), key


@pytest.mark.parametrize("scale", [2, 3, 4])
def test_paper_config_matches_official_state_dict(reference_root, scale):
    listing = json.loads((reference_root / "state_dicts" / f"enlcn_x{scale}.json").read_text())
    with torch.device("meta"):  # shapes only: no 41M-parameter allocation
        net = build_model("enlcn", scale=scale)
    got = [[k, list(v.shape), str(v.dtype)] for k, v in net.state_dict().items()]
    assert got == listing["state_dict"]
    assert sum(p.numel() for p in net.parameters() if p.requires_grad) == listing["n_parameters"]
    assert sum(p.numel() for p in net.parameters()) == listing["n_parameters_incl_frozen_meanshift"]
    assert sum(b.numel() for b in net.buffers()) == listing["n_buffer_elements"]
    attn = net.attention_modules()
    assert len(attn) == listing["n_attention_modules"] == 5
    assert [n for n, _ in attn] == ["body.0", "body.9", "body.18", "body.27", "body.36"]
    assert sum(p.numel() for _, m in attn for p in m.parameters()) == listing["n_parameters_attention_modules"]


def test_registry_and_small_preset_shapes():
    assert "enlcn" in list_models()
    cfg = ENLCNConfig()
    assert (cfg.n_resblocks, cfg.n_feats, cfg.n_features, cfg.amplification, cfg.contrastive_weight) == (
        32, 256, 128, 6.0, 1e-3,
    )
    assert cfg.n_feats // cfg.reduction == 64
    for scale in (2, 3, 4):
        net = build_model("enlcn", scale=scale, preset="small").eval()
        assert net.config.scale == scale and len(net.attention_modules()) == 2
        with torch.no_grad():
            assert net(torch.rand(1, 3, 6, 7)).shape == (1, 3, 6 * scale, 7 * scale)
        assert net.contrastive_losses == [] and net.contrastive_loss() is None
    with pytest.raises(ValueError):
        build_model("enlcn", scale=5, preset="small")


def test_train_mode_collects_module_losses():
    torch.manual_seed(0)
    net = build_model("enlcn", preset="small", n_resblocks=8, n_feats=16)
    x = torch.rand(2, 3, 9, 9)  # L = 81 >= 65
    sr = net.train()(x)
    losses = net.contrastive_losses
    assert len(losses) == 2 and all(t.dim() == 0 for t in losses)
    torch.testing.assert_close(net.contrastive_loss(), (losses[0] + losses[1]) / 2)
    # the first module sees the head features: recompute its loss directly
    first = net.body[0]
    q, k, _ = first.embed(net.head(net.sub_mean(x)))
    torch.testing.assert_close(losses[0], contrastive_loss(q, k))
    with torch.no_grad():
        torch.testing.assert_close(net.eval()(x), sr.detach())  # loss does not alter the output


def test_contrastive_term_warmup_and_redraw():
    torch.manual_seed(0)
    net = build_model("enlcn", preset="small", n_feats=16).train()
    term = ContrastiveTerm(net, weight=1e-3, warmup_iters=5, redraw_every=4,
                           generator=torch.Generator().manual_seed(1))
    x = torch.rand(1, 3, 9, 9)
    sr = net(x)
    assert term(sr, {"iteration": 4}).item() == 0.0  # warm-up: reconstruction loss only
    extra = term(sr, {"iteration": 5})
    torch.testing.assert_close(extra, 1e-3 * net.contrastive_loss())
    before = net.body[9].attn_fn.projection_matrix.clone()
    term(sr, {"iteration": 6})
    assert torch.equal(net.body[9].attn_fn.projection_matrix, before)
    term(sr, {"iteration": 7})  # (7 + 1) % 4 == 0: redraw after this step's forward ...
    assert not torch.equal(net.body[9].attn_fn.projection_matrix, before)
    (sr.mean() + extra).backward()  # ... which must not break this step's backward
    assert net.body[0].conv_match1[0].weight.grad is not None
    # official-style output (sr, [losses]) is understood too
    a, b = torch.tensor(0.5), torch.tensor(1.5)
    torch.testing.assert_close(term((sr, [a, b]), {"iteration": 10}), torch.tensor(1e-3))
    assert ContrastiveTerm.from_model(build_model("enlcn", preset="small")).warmup_iters == 100
    assert ContrastiveTerm.from_model(net).redraw_every == ENLCNConfig.small().redraw_every
    assert ENLCNConfig().warmup_iters == 150_000
    with pytest.raises(ValueError, match="ENLCN"):
        ContrastiveTerm(torch.nn.Conv2d(3, 3, 1))
    with pytest.raises(ValueError, match="iteration"):
        term(sr, {})


def test_training_loop_with_contrastive_term(tmp_path):
    from srlib.train import TrainConfig, train

    torch.manual_seed(0)
    net = build_model("enlcn", preset="small", n_feats=16, warmup_iters=1, redraw_every=2)
    gen = torch.Generator().manual_seed(0)
    data = [{"lr": torch.rand(3, 9, 9, generator=gen), "hr": torch.rand(3, 18, 18, generator=gen), "name": str(i)}
            for i in range(4)]
    before = net.body[0].attn_fn.projection_matrix.clone()
    cfg = TrainConfig(iterations=3, batch_size=2, val_every=0, ckpt_every=0, log_every=1, milestones=())
    result = train(net, data, None, cfg, tmp_path, resume=False, extra_loss=net.make_extra_loss(), progress=False)
    losses = [h["loss"] for h in result["history"]["train"]]
    assert len(losses) == 3 and all(torch.isfinite(torch.tensor(losses)))
    assert not torch.equal(net.body[0].attn_fn.projection_matrix.cpu(), before)  # redrawn after step 1


def test_paper_loss_variant_through_config():
    net = build_model("enlcn", preset="small", n_feats=16, loss_variant="paper")
    assert all(m.loss_variant == "paper" for _, m in net.attention_modules())
    assert all(isinstance(m, ENLCA) for _, m in net.attention_modules())
