"""Degradations: scale checks, modcrop, bicubic downsampling, blur, noise, composition and the
crop-exactness guarantee (``margin``) that on-the-fly patch datasets rely on."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import ndimage

from srlib.data import (
    SUPPORTED_SCALES,
    AddGaussianNoise,
    BicubicDownsample,
    Compose,
    Degradation,
    GaussianBlur,
    Quantize,
    check_scale,
    imresize,
    modcrop,
)
from srlib.data.degradations import gaussian_kernel2d


def test_supported_scales():
    assert SUPPORTED_SCALES == (2, 3, 4)
    assert [check_scale(s) for s in (2, 3, 4)] == [2, 3, 4]
    assert check_scale(np.int64(3)) == 3


@pytest.mark.parametrize("bad", [1, 5, 8, 0, -2, 2.5, 2.0, "2", None, True])
def test_unsupported_scale_names_value(bad):
    with pytest.raises(ValueError, match=f"unsupported scale {bad!r}".replace(".", r"\.")):
        check_scale(bad)
    with pytest.raises(ValueError, match="unsupported scale"):
        BicubicDownsample(bad)


def test_modcrop():
    x = torch.arange(2 * 3 * 11 * 7).reshape(2, 3, 11, 7)
    y = modcrop(x, 3)
    assert y.shape == (2, 3, 9, 6)
    assert torch.equal(y, x[..., :9, :6])
    assert modcrop(x[0], 1).shape == (3, 11, 7)
    with pytest.raises(ValueError, match="smaller than the scale"):
        modcrop(torch.zeros(3, 2, 8), 3)
    with pytest.raises(ValueError):
        modcrop(x, 0)


def test_bicubic_downsample_is_imresize():
    x = torch.rand(3, 24, 36, dtype=torch.float64)
    for s in SUPPORTED_SCALES:
        d = BicubicDownsample(s)
        assert d.scale == s and isinstance(d, Degradation)
        torch.testing.assert_close(d(x), imresize(x, 1 / s), atol=0, rtol=0)
        assert d(x).shape == (3, 24 // s, 36 // s)
        assert d(x.unsqueeze(0)).shape == (1, 3, 24 // s, 36 // s)
    assert BicubicDownsample(2, matlab_uint8=True)(x).mul(255).sub(BicubicDownsample(2, matlab_uint8=True)(x).mul(255).round()).abs().max() < 1e-9


def test_bicubic_downsample_needs_multiple_of_scale():
    with pytest.raises(ValueError, match="25x36 is not a multiple of scale 2; modcrop"):
        BicubicDownsample(2)(torch.rand(3, 25, 36))
    with pytest.raises(ValueError, match=r"\(C, H, W\)"):
        BicubicDownsample(2)(torch.rand(24, 36))


def test_gaussian_kernel_matches_fspecial_formula():
    k = gaussian_kernel2d(1.6, 7)
    assert k.shape == (7, 7)
    torch.testing.assert_close(k.sum(), torch.tensor(1.0, dtype=torch.float64))
    t = torch.arange(7, dtype=torch.float64) - 3
    g = torch.exp(-(t[:, None] ** 2 + t[None, :] ** 2) / (2 * 1.6**2))
    torch.testing.assert_close(k, g / g.sum(), atol=1e-15, rtol=0)
    with pytest.raises(ValueError):
        gaussian_kernel2d(1.0, 4)
    with pytest.raises(ValueError):
        GaussianBlur(0.0)


def test_gaussian_blur_matches_scipy_replicate():
    """Independent implementation: scipy.ndimage with 'nearest' (= replicate) borders and a
    radius-3 window (truncate = 3 / sigma) is the same 7x7 filter."""
    x = torch.rand(3, 20, 17, dtype=torch.float64)
    blur = GaussianBlur(1.6, 7)
    assert blur.margin == 3 and blur.scale == 1
    ref = np.stack([ndimage.gaussian_filter(c, 1.6, mode="nearest", truncate=3 / 1.6) for c in x.numpy()])
    np.testing.assert_allclose(blur(x).numpy(), ref, atol=1e-12, rtol=0)
    assert GaussianBlur(1.0).kernel_size == 7  # default 2 * ceil(3 sigma) + 1
    c = torch.full((2, 3, 9, 9), 0.25)
    torch.testing.assert_close(blur(c), c)


def test_noise_reproducible_and_scaled():
    x = torch.full((3, 200, 200), 0.5, dtype=torch.float64)
    noise = AddGaussianNoise(25)
    a = noise(x, generator=torch.Generator().manual_seed(3))
    b = noise(x, generator=torch.Generator().manual_seed(3))
    c = noise(x, generator=torch.Generator().manual_seed(4))
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert abs((a - x).std().item() * 255 - 25) < 0.5  # 120k samples: std error ~0.05 levels
    own = AddGaussianNoise(25, torch.Generator().manual_seed(3))
    assert torch.equal(own(x), a)  # constructor generator used when the call gives none
    clipped = AddGaussianNoise(255)(x, generator=torch.Generator().manual_seed(0))
    assert clipped.min() == 0 and clipped.max() == 1
    assert torch.equal(AddGaussianNoise(0)(x), x)
    with pytest.raises(ValueError):
        AddGaussianNoise(-1)


def test_quantize_degradation():
    x = torch.rand(3, 8, 8)
    y = Quantize()(x)
    torch.testing.assert_close(y * 255, (y * 255).round())


def test_compose_scale_margin_and_order():
    blur, down = GaussianBlur(1.6, 7), BicubicDownsample(3)
    bd = Compose([blur, down, AddGaussianNoise(10), Quantize()])
    assert bd.scale == 3
    assert bd.margin == 3 + 6  # blur margin + bicubic margin (both on the HR grid), noise adds 0
    x = torch.rand(3, 30, 24, dtype=torch.float64)
    g1, g2 = torch.Generator().manual_seed(7), torch.Generator().manual_seed(7)
    out = bd(x, generator=g1)
    expected = Quantize()(AddGaussianNoise(10)(down(blur(x)), generator=g2))
    torch.testing.assert_close(out, expected, atol=0, rtol=0)
    assert out.shape == (3, 10, 8)
    assert Compose([down, GaussianBlur(1.0, 5)]).margin == 6 + 2 * 3  # LR-side margin x scale
    assert Compose([down, lambda t: t]).margin is None  # unknown margin propagates
    with pytest.raises(ValueError):
        Compose([])


@pytest.mark.parametrize(
    "make",
    [
        lambda: BicubicDownsample(2),
        lambda: BicubicDownsample(3),
        lambda: BicubicDownsample(4, matlab_uint8=True),
        lambda: Compose([GaussianBlur(1.6, 7), BicubicDownsample(3)]),
        lambda: Compose([BicubicDownsample(2), GaussianBlur(1.0, 5)]),
    ],
)
def test_margin_makes_crops_exact(make):
    """Degrading a crop enlarged by ``margin`` (on the scale grid) equals cropping the degraded
    full image: the guarantee HRFolderDataset uses for patches."""
    d = make()
    s = d.scale
    x = torch.rand(3, 96, 84, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    full = d(x)
    m = -(-d.margin // s) * s
    for (y0, x0, p) in [(24, 12, 24), (0, 0, 24), (96 - 24, 84 - 24, 24), (36, 48, 12)]:
        ry0, rx0 = max(0, y0 - m), max(0, x0 - m)
        ry1, rx1 = min(96, y0 + p + m), min(84, x0 + p + m)
        region = d(x[:, ry0:ry1, rx0:rx1])
        oy, ox = (y0 - ry0) // s, (x0 - rx0) // s
        crop = region[:, oy : oy + p // s, ox : ox + p // s]
        torch.testing.assert_close(crop, full[:, y0 // s : (y0 + p) // s, x0 // s : (x0 + p) // s], atol=1e-12, rtol=0)
