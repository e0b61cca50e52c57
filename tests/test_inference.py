"""Tiled inference, x8 self-ensemble and evaluation."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from srlib.inference import dihedral, evaluate, forward_chop, inverse_dihedral, self_ensemble, super_resolve
from srlib.models import build_model


def _conv_net(scale=2, n_resblocks=1):
    """EDSR with 1 block: 5 LR-space 3x3 convs + 1 HR-space conv -> receptive radius <= 6 LR pixels."""
    torch.manual_seed(0)
    return build_model("edsr", scale=scale, preset="small", n_resblocks=n_resblocks, n_feats=8).double().eval()


def _nearest(scale):
    return lambda x: F.interpolate(x, scale_factor=scale, mode="nearest")


# ------------------------------------------------------------------------------------------------ chop
@pytest.mark.parametrize("scale", [2, 3])
def test_forward_chop_equals_full_forward_when_the_overlap_covers_the_receptive_field(scale):
    model = _conv_net(scale)
    lr = torch.rand(2, 3, 26, 21, dtype=torch.float64)  # 4 x 3 tiles, the last row/column shifted inwards
    with torch.no_grad():
        full = model(lr)
    tiled = forward_chop(model, lr, scale, tile=8, overlap=7, tile_batch=5)
    assert tiled.shape == full.shape
    assert torch.equal(tiled, full)
    assert torch.equal(forward_chop(model, lr, None, tile=8, overlap=7), full)  # scale inferred


def test_forward_chop_without_enough_overlap_differs():
    model = _conv_net()
    lr = torch.rand(1, 3, 20, 20, dtype=torch.float64)
    with torch.no_grad():
        full = model(lr)
    tiled = forward_chop(model, lr, 2, tile=8, overlap=0)
    assert (tiled - full).abs().max() > 1e-4


def test_forward_chop_small_image_is_one_tile_and_exact():
    model = _conv_net()
    lr = torch.rand(1, 3, 6, 9, dtype=torch.float64)
    with torch.no_grad():
        assert torch.equal(forward_chop(model, lr, 2, tile=16, overlap=4), model(lr))


def test_forward_chop_errors():
    with pytest.raises(ValueError, match="not scale=3"):
        forward_chop(_nearest(2), torch.rand(1, 3, 8, 8), 3, tile=4, overlap=2)
    with pytest.raises(ValueError, match="tile"):
        forward_chop(_nearest(2), torch.rand(1, 3, 8, 8), 2, tile=0)
    with pytest.raises(ValueError, match=r"\(B, C, h, w\)"):
        forward_chop(_nearest(2), torch.rand(3, 8, 8), 2)


def test_forward_chop_uses_the_first_element_of_tuple_outputs():
    net = _nearest(2)
    lr = torch.rand(1, 3, 10, 12)
    out = forward_chop(lambda x: (net(x), "aux"), lr, 2, tile=4, overlap=1)
    assert torch.equal(out, net(lr))


# ------------------------------------------------------------------------------------------------ ensemble
def test_dihedral_transforms_are_the_8_distinct_symmetries_and_invert():
    x = torch.arange(12.0).view(1, 1, 3, 4)
    outs = [dihedral(x, k) for k in range(8)]
    assert len({tuple(o.flatten().tolist()) + tuple(o.shape) for o in outs}) == 8
    for k in range(8):
        assert torch.equal(inverse_dihedral(dihedral(x, k), k), x)
    assert torch.equal(dihedral(x, 1), x.transpose(-1, -2).flip(-2))  # a quarter turn counter-clockwise
    assert torch.equal(dihedral(x, 4), x.flip(-1))


def test_self_ensemble_of_an_equivariant_model_equals_the_plain_forward():
    net = _nearest(3)
    lr = torch.rand(2, 3, 5, 7)
    assert torch.equal(self_ensemble(net, lr), net(lr))
    identity = lambda x: x  # noqa: E731
    assert torch.equal(self_ensemble(identity, lr), lr)


def test_self_ensemble_matches_a_hand_written_average():
    model = _conv_net()
    lr = torch.rand(1, 3, 6, 9, dtype=torch.float64)
    with torch.no_grad():
        outs = []
        for flip in (False, True):
            x = lr.flip(-1) if flip else lr
            for k in range(4):
                y = model(torch.rot90(x, k, (2, 3)))
                y = torch.rot90(y, -k, (2, 3))
                outs.append(y.flip(-1) if flip else y)
        expect = torch.stack(outs).mean(0)
        plain = model(lr)
    got = self_ensemble(model, lr)
    torch.testing.assert_close(got, expect, rtol=0, atol=1e-12)
    assert (got - plain).abs().max() > 1e-6  # a random conv net is not equivariant


def test_self_ensemble_with_chop():
    model = _conv_net()
    lr = torch.rand(1, 3, 12, 9, dtype=torch.float64)
    a = self_ensemble(model, lr)
    b = self_ensemble(model, lr, fn=lambda x: forward_chop(model, x, 2, tile=6, overlap=7))
    assert torch.equal(a, b)


# ------------------------------------------------------------------------------------------------ super_resolve
def test_super_resolve_shapes_modes_and_clamping():
    model = build_model("edsr", scale=2, preset="small")
    model.train()
    lr = torch.rand(3, 8, 6)
    sr = super_resolve(model, lr)
    assert sr.shape == (3, 16, 12) and model.training  # mode restored
    assert sr.min() >= 0 and sr.max() <= 1
    with torch.no_grad():
        model.eval()
        raw = model(lr[None])[0]
        model.train()
    torch.testing.assert_close(sr, raw.clamp(0, 1))
    both = super_resolve(model, lr[None], chop=True, ensemble=True, tile=4, overlap=8)
    assert both.shape == (1, 3, 16, 12)
    with pytest.raises(ValueError, match="lr must be"):
        super_resolve(model, torch.rand(8, 6))


class _TupleInTrain(nn.Module):
    """Returns (sr, aux) in train mode like ENLCN; only sr in eval mode."""

    def forward(self, x):
        sr = F.interpolate(x, scale_factor=2, mode="nearest")
        return (sr, torch.zeros(())) if self.training else sr


def test_super_resolve_handles_tuple_outputs():
    lr = torch.rand(1, 3, 4, 4)
    assert torch.equal(super_resolve(_TupleInTrain(), lr), _nearest(2)(lr))


# ------------------------------------------------------------------------------------------------ evaluate
class _PairSet(torch.utils.data.Dataset):
    def __init__(self, scale, sizes=((16, 20), (18, 24))):
        g = torch.Generator().manual_seed(1)
        self.items = []
        for i, (h, w) in enumerate(sizes):
            hr = torch.rand(3, h, w, generator=g)
            lr = F.avg_pool2d(hr[None], scale)[0]
            self.items.append({"lr": lr, "hr": hr, "name": f"img{i}"})

    def __len__(self):
        return len(self.items)

    def __getitem__(self, i):
        return self.items[i]


def test_evaluate_reports_per_image_and_mean_metrics(tmp_path):
    metrics = pytest.importorskip("srlib.metrics")
    data = _PairSet(2)
    net = _nearest(2)
    result = evaluate(net, data, 2)
    assert result["n_images"] == 2 and result["scale"] == 2
    names = [r["name"] for r in result["per_image"]]
    assert names == ["img0", "img1"]
    for row, item in zip(result["per_image"], data.items):
        sr = net(item["lr"][None])[0].clamp(0, 1)
        assert row["psnr"] == pytest.approx(metrics.psnr(sr, item["hr"], 2))
        assert row["ssim"] == pytest.approx(metrics.ssim(sr, item["hr"], 2))
    assert result["psnr"] == pytest.approx(sum(r["psnr"] for r in result["per_image"]) / 2)
    assert 5 < result["psnr"] < 40
    ens = evaluate(net, data, 2, ensemble=True, chop=True, tile=4, overlap=2, ssim=False)
    assert ens["psnr"] == pytest.approx(result["psnr"]) and ens["ssim"] is None


def test_evaluate_saves_images(tmp_path):
    pytest.importorskip("srlib.metrics")
    from srlib.data import load_image

    data = _PairSet(2)
    result = evaluate(_nearest(2), data, 2, ssim=False, save_dir=tmp_path / "sr", device="cpu")
    assert sorted(p.name for p in (tmp_path / "sr").iterdir()) == ["img0.png", "img1.png"]
    saved = load_image(tmp_path / "sr" / "img0.png")
    expect = _nearest(2)(data.items[0]["lr"][None])[0]
    assert saved.shape == expect.shape and (saved - expect).abs().max() <= 0.5 / 255 + 1e-6
    assert result["per_image"][0]["ssim"] is None


def test_evaluate_errors():
    pytest.importorskip("srlib.metrics")
    with pytest.raises(ValueError, match="img0"):
        evaluate(_nearest(3), _PairSet(2), 2)  # wrong scale -> SR size != HR size
    with pytest.raises(ValueError, match="empty"):
        evaluate(_nearest(2), [], 2)


@pytest.mark.data
def test_evaluate_on_set5_nearest_neighbour_baseline(data_root):
    data = pytest.importorskip("srlib.data")
    if not hasattr(data, "BenchmarkDataset"):
        pytest.skip("srlib.data.BenchmarkDataset not available yet")
    ds = data.BenchmarkDataset("Set5", 4, root=data_root / "benchmark")
    result = evaluate(_nearest(4), ds, 4, ssim=False)
    assert result["n_images"] == 5
    assert 20 < result["psnr"] < 30  # nearest-neighbour x4 on Set5 (bicubic is about 28.4 dB)
