"""MATLAB-compatible bicubic imresize: hand-computed cases, an independent reference
implementation, properties, and reproduction of the stored benchmark LR images."""

from __future__ import annotations

import math
import sys

import numpy as np
import pytest
import torch

from srlib.data import BenchmarkDataset, imresize, quantize
from srlib.data.imresize import cubic_kernel, resize_weights


# ----------------------------------------------------------------------------- reference
def _keys(x: float) -> float:
    """Keys' cubic, a = -0.5, written out from the formula."""
    x = abs(x)
    if x <= 1:
        return 1.5 * x**3 - 2.5 * x**2 + 1
    if x <= 2:
        return -0.5 * x**3 + 2.5 * x**2 - 4 * x + 2
    return 0.0


def _reference_matrix(n_in: int, n_out: int, scale: float, antialias: bool = True) -> np.ndarray:
    """Dense (n_out, n_in) resize matrix built pixel by pixel with Python loops (1-based,
    as MATLAB's documentation describes it): an independent check of the vectorised code."""
    m = np.zeros((n_out, n_in))
    shrink = scale < 1 and antialias
    width = 4.0 / scale if shrink else 4.0
    for x in range(1, n_out + 1):
        u = x / scale + 0.5 * (1 - 1 / scale)
        left = math.floor(u - width / 2)
        row = {}
        for j in range(left, left + math.ceil(width) + 2):
            w = scale * _keys(scale * (u - j)) if shrink else _keys(u - j)
            # mirror with the edge repeated: ... 2 1 | 1 2 ... n | n n-1 ...
            k = (j - 1) % (2 * n_in)
            k = k if k < n_in else 2 * n_in - 1 - k
            row[k] = row.get(k, 0.0) + w
        total = sum(row.values())
        for k, w in row.items():
            m[x - 1, k] += w / total
    return m


def _reference_resize(img: np.ndarray, out_hw, scales) -> np.ndarray:
    a = _reference_matrix(img.shape[-2], out_hw[0], scales[0])
    b = _reference_matrix(img.shape[-1], out_hw[1], scales[1])
    return np.einsum("oh,chw,pw->cop", a, img, b)


# ----------------------------------------------------------------------------- hand-computed
def test_upscale_hand_computed():
    # 1x2 image [0, 1] -> 1x4. Output pixel 1 sits at u = 0.75; taps at distances 1.75, 0.75,
    # -0.25, -1.25 have Keys weights -0.0234375, 0.2265625, 0.8671875, -0.0703125 on pixels
    # (mirrored) 2, 1, 1, 2 -> -0.09375. Pixel 2 (u = 1.25): 0.2265625 - 0.0234375 = 0.203125.
    x = torch.tensor([[[0.0, 1.0]]], dtype=torch.float64)
    out = imresize(x, (1, 2))
    expected = torch.tensor([[[-0.09375, 0.203125, 0.796875, 1.09375]]], dtype=torch.float64)
    torch.testing.assert_close(out, expected, atol=1e-15, rtol=0)


def test_downscale_hand_computed():
    # 1x4 [1, 2, 3, 4] -> 1x2 with antialiasing: kernel 0.5 k(x / 2); output 1 sits at u = 1.5,
    # eight taps on (mirrored) pixels 3, 2, 1, 1, 2, 3, 4, 4 with weights 0.5 * (-0.0234375,
    # -0.0703125, 0.2265625, 0.8671875, 0.8671875, 0.2265625, -0.0703125, -0.0234375)
    # -> 1.4609375; output 2 = 5 - 1.4609375 by symmetry.
    x = torch.tensor([[[1.0, 2.0, 3.0, 4.0]]], dtype=torch.float64)
    out = imresize(x, (1, 0.5))
    torch.testing.assert_close(out, torch.tensor([[[1.4609375, 3.5390625]]], dtype=torch.float64), atol=1e-15, rtol=0)


def test_cubic_kernel_values():
    x = torch.tensor([0.0, 0.25, 0.75, 1.0, 1.25, 1.75, 2.0, 2.5, -0.75], dtype=torch.float64)
    expected = torch.tensor([1.0, 0.8671875, 0.2265625, 0.0, -0.0703125, -0.0234375, 0.0, 0.0, 0.2265625],
                            dtype=torch.float64)
    torch.testing.assert_close(cubic_kernel(x), expected, atol=1e-15, rtol=0)


def test_resize_weights_rows_sum_to_one_and_indices_in_range():
    for n_in, n_out, s in [(10, 5, 0.5), (9, 3, 1 / 3), (7, 28, 4.0), (5, 7, 1.4)]:
        w, idx = resize_weights(n_in, n_out, s)
        torch.testing.assert_close(w.sum(1), torch.ones(n_out, dtype=torch.float64))
        assert idx.min() >= 0 and idx.max() < n_in
        assert (w != 0).any(dim=0).all()  # all-zero taps were trimmed


# ----------------------------------------------------------------------------- reference agreement
@pytest.mark.parametrize(
    "size,kwargs",
    [
        ((12, 18), dict(scale=0.5)),
        ((12, 18), dict(scale=1 / 3)),
        ((16, 12), dict(scale=0.25)),
        ((7, 9), dict(scale=2)),
        ((6, 5), dict(scale=3)),
        ((5, 6), dict(scale=4)),
        ((13, 11), dict(scale=0.7)),
        ((13, 11), dict(output_size=(20, 4))),
        ((10, 10), dict(scale=(0.5, 2.0))),
    ],
)
@pytest.mark.parametrize("dense", [True, False])
def test_matches_loop_reference(size, kwargs, dense, monkeypatch):
    """Both code paths (dense matrix product; sum over gathered taps) equal the loop reference."""
    # the module (not the function that srlib.data re-exports under the same name)
    monkeypatch.setattr(sys.modules["srlib.data.imresize"], "_DENSE_LIMIT", 1 << 30 if dense else 0)
    g = torch.Generator().manual_seed(1)
    x = torch.rand(3, *size, generator=g, dtype=torch.float64)
    out = imresize(x, **kwargs)
    if "output_size" in kwargs:
        out_hw = kwargs["output_size"]
        scales = (out_hw[0] / size[0], out_hw[1] / size[1])
    else:
        s = kwargs["scale"]
        scales = s if isinstance(s, tuple) else (s, s)
        out_hw = tuple(math.ceil(sc * n - 1e-9) for sc, n in zip(scales, size))
    ref = _reference_resize(x.numpy(), out_hw, scales)
    assert out.shape == (3, *out_hw)
    np.testing.assert_allclose(out.numpy(), ref, atol=1e-12, rtol=0)


# ----------------------------------------------------------------------------- properties
@pytest.mark.parametrize("scale", [0.5, 1 / 3, 0.25, 2, 3, 4, 1.5])
def test_constant_image_stays_constant(scale):
    x = torch.full((3, 24, 36), 0.3712, dtype=torch.float64)
    out = imresize(x, scale)
    torch.testing.assert_close(out, torch.full_like(out, 0.3712), atol=1e-13, rtol=0)


def test_output_sizes_and_dtypes():
    x = torch.rand(2, 3, 17, 10)
    assert imresize(x, 2).shape == (2, 3, 34, 20)
    assert imresize(x, 0.5).shape == (2, 3, 9, 5)  # ceil, as MATLAB
    assert imresize(x[0], 1 / 3).shape == (3, 6, 4)
    assert imresize(torch.rand(3, 510, 9), 1 / 3).shape == (3, 170, 3)  # no float round-off to 171
    assert imresize(x, output_size=(5, 40)).shape == (2, 3, 5, 40)
    assert imresize(x, 2).dtype == torch.float32
    assert imresize(x.double(), 2).dtype == torch.float64


def test_batch_equals_per_image():
    x = torch.rand(3, 3, 12, 16, dtype=torch.float64)
    batched = imresize(x, 0.5)
    for i in range(3):
        torch.testing.assert_close(batched[i], imresize(x[i], 0.5), atol=0, rtol=0)


def test_identity_scale_one():
    x = torch.rand(3, 9, 7, dtype=torch.float64)
    torch.testing.assert_close(imresize(x, 1), x, atol=0, rtol=0)


def test_antialias_only_matters_when_shrinking():
    x = torch.rand(3, 16, 16, dtype=torch.float64)
    torch.testing.assert_close(imresize(x, 2, antialias=False), imresize(x, 2), atol=0, rtol=0)
    assert (imresize(x, 0.5, antialias=False) - imresize(x, 0.5)).abs().max() > 1e-3


def test_gradcheck():
    x = torch.rand(1, 1, 6, 4, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda t: imresize(t, 0.5), (x,))
    assert torch.autograd.gradcheck(lambda t: imresize(t, 3), (x,), fast_mode=True)


def test_matlab_uint8_output_on_grid():
    x = torch.rand(3, 20, 20, dtype=torch.float64)
    out = imresize(x, 0.5, matlab_uint8=True)
    torch.testing.assert_close(out * 255, (out * 255).round(), atol=1e-9, rtol=0)
    assert out.min() >= 0 and out.max() <= 1


@pytest.mark.parametrize(
    "kwargs,match",
    [
        (dict(), "exactly one"),
        (dict(scale=2, output_size=(4, 4)), "exactly one"),
        (dict(scale=0), "positive"),
        (dict(scale=-2), "positive"),
        (dict(scale=float("nan")), "positive"),
        (dict(output_size=(0, 4)), "positive"),
        (dict(scale=(1, 2, 3)), "pair"),
    ],
)
def test_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        imresize(torch.rand(3, 8, 8), **kwargs)


def test_bad_inputs():
    with pytest.raises(ValueError, match="floating-point"):
        imresize(torch.zeros(3, 8, 8, dtype=torch.uint8), 2)
    with pytest.raises(ValueError, match="at least 2 dims"):
        imresize(torch.zeros(8), 2)


# ----------------------------------------------------------------------------- benchmark LR files
def _lr_error(hr, lr, scale, border, **kw):
    out = quantize(imresize(hr.double(), 1 / scale, **kw))
    d = ((out - lr.double()) * 255).round().abs()
    return d[:, border:-border, border:-border]


@pytest.mark.parametrize("scale", [2, 3, 4])
def test_reproduces_set5_lr(data_root, scale):
    """README: away from the 2-pixel border, no Set5 pixel differs by more than 2 grey levels,
    mean absolute difference about 0.1-0.15."""
    ds = BenchmarkDataset("Set5", scale, root=data_root / "benchmark")
    means = []
    for item in ds:
        d = _lr_error(item["hr"], item["lr"], scale, border=2)
        assert d.max() <= 2, item["name"]
        means.append(d.mean().item())
    assert np.mean(means) <= 0.2
    assert max(means) <= 0.2


def test_reproduces_set14_lr_mean(data_root):
    for scale, names in [(2, ("img_001", "img_005", "img_013")), (3, ("img_003", "img_010")), (4, ("img_007",))]:
        ds = BenchmarkDataset("Set14", scale, root=data_root / "benchmark")
        for i, name in enumerate(ds.names):
            if name in names:
                item = ds[i]
                assert _lr_error(item["hr"], item["lr"], scale, border=2).mean() <= 0.2, (scale, name)


@pytest.mark.parametrize("setname,scale", [("Set5", 2), ("Set5", 3), ("Set5", 4), ("Set14", 2), ("Set14", 3)])
def test_matlab_uint8_reproduces_lr_exactly(data_root, setname, scale):
    """With MATLAB's per-pass uint8 rounding the stored LR files are reproduced exactly except
    the outermost pixel ring (x4: a handful of pixels off by one level from rounding ties)."""
    ds = BenchmarkDataset(setname, scale, root=data_root / "benchmark")
    for item in ds:
        d = _lr_error(item["hr"], item["lr"], scale, border=1, matlab_uint8=True)
        if scale == 4:
            assert d.max() <= 1 and d.mean() < 0.002, item["name"]
        else:
            assert d.max() == 0, item["name"]
