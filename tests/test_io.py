"""Image I/O: round trips, clear errors naming the file, atomic writes, quantisation."""

from __future__ import annotations

import struct
import zlib

import numpy as np
import pytest
import torch
from PIL import Image

from srlib.data import (
    ImageModeError,
    ImageReadError,
    from_uint8,
    load_image,
    quantize,
    save_image,
    to_uint8,
)
from srlib.data.io import is_grayscale_file


def _rand_uint8(h=7, w=9, c=3, seed=0):
    rng = np.random.default_rng(seed)
    shape = (h, w, c) if c else (h, w)
    return rng.integers(0, 256, size=shape, dtype=np.uint8)


def _write_png(path, array, bit_depth, color_type):
    """Minimal PNG writer (Pillow cannot write 16-bit RGB PNGs)."""
    h, w = array.shape[:2]
    dtype = ">u2" if bit_depth == 16 else "u1"
    raw = b"".join(b"\x00" + array[i].astype(dtype).tobytes() for i in range(h))

    def chunk(tag, data):
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data) & 0xFFFFFFFF)

    header = struct.pack(">IIBBBBB", w, h, bit_depth, color_type, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))


def test_load_rgb_png(tmp_path):
    arr = _rand_uint8()
    Image.fromarray(arr).save(tmp_path / "a.png")
    x = load_image(tmp_path / "a.png")
    assert x.shape == (3, 7, 9) and x.dtype == torch.float32
    assert x.min() >= 0 and x.max() <= 1
    np.testing.assert_array_equal((x * 255).round().byte().permute(1, 2, 0).numpy(), arr)


def test_save_load_round_trip_exact(tmp_path):
    x = from_uint8(_rand_uint8(12, 5))
    save_image(x, tmp_path / "sub" / "b.png")  # parent folder created
    y = load_image(tmp_path / "sub" / "b.png")
    torch.testing.assert_close(y, x, atol=0, rtol=0)
    save_image(x.unsqueeze(0), tmp_path / "c.png")  # (1, 3, H, W) accepted
    torch.testing.assert_close(load_image(tmp_path / "c.png"), x, atol=0, rtol=0)
    assert Image.open(tmp_path / "c.png").mode == "RGB"


def test_save_quantises_and_clamps(tmp_path):
    x = torch.tensor([-0.2, 0.5 / 255, 1.6 / 255, 1.3]).view(1, 1, 4).expand(3, 1, 4).contiguous()
    save_image(x, tmp_path / "q.png")
    assert np.asarray(Image.open(tmp_path / "q.png"))[0, :, 0].tolist() == [0, 0, 2, 255]


def test_save_is_atomic_and_leaves_no_temp_files(tmp_path):
    good = from_uint8(_rand_uint8())
    target = tmp_path / "img.png"
    save_image(good, target)
    bad = good.clone()
    bad[0, 0, 0] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        save_image(bad, target)
    torch.testing.assert_close(load_image(target), good, atol=0, rtol=0)  # old file intact
    assert sorted(p.name for p in tmp_path.iterdir()) == ["img.png"]


@pytest.mark.parametrize(
    "x,name,match",
    [
        (torch.rand(3, 4, 4), "x.jpg", r"\.png"),
        (torch.rand(4, 4, 4), "x.png", "shape"),
        (torch.rand(2, 3, 4, 4), "x.png", "shape"),
        (torch.zeros(3, 4, 4, dtype=torch.uint8), "x.png", "floating"),
    ],
)
def test_save_rejects_bad_input(tmp_path, x, name, match):
    with pytest.raises(ValueError, match=match):
        save_image(x, tmp_path / name)
    assert list(tmp_path.iterdir()) == []


def test_grayscale_needs_allow_gray(tmp_path):
    arr = _rand_uint8(c=0)
    path = tmp_path / "gray.png"
    Image.fromarray(arr).save(path)
    with pytest.raises(ImageModeError, match="gray.png.*grayscale.*allow_gray"):
        load_image(path)
    x = load_image(path, allow_gray=True)
    assert x.shape == (3, 7, 9)
    torch.testing.assert_close(x[0], x[1], atol=0, rtol=0)
    torch.testing.assert_close(x[0], x[2], atol=0, rtol=0)
    np.testing.assert_array_equal((x[0] * 255).round().byte().numpy(), arr)
    assert is_grayscale_file(path) and issubclass(ImageModeError, ValueError)


def test_rgba_rejected_naming_file_and_mode(tmp_path):
    path = tmp_path / "alpha.png"
    Image.fromarray(_rand_uint8(c=4)).save(path)
    with pytest.raises(ImageModeError, match=r"alpha\.png.*'RGBA'"):
        load_image(path)


def test_palette(tmp_path):
    rgb = Image.fromarray(_rand_uint8(8, 8))
    pal = rgb.convert("P", palette=Image.Palette.ADAPTIVE, colors=16)
    pal.save(tmp_path / "pal.png")
    expected = from_uint8(np.asarray(pal.convert("RGB")))
    torch.testing.assert_close(load_image(tmp_path / "pal.png"), expected, atol=0, rtol=0)
    pal.info["transparency"] = 0
    pal.save(tmp_path / "palt.png", transparency=0)
    with pytest.raises(ImageModeError, match=r"palt\.png.*transparency"):
        load_image(tmp_path / "palt.png")


def test_16bit_rejected(tmp_path):
    _write_png(tmp_path / "rgb16.png", np.full((4, 5, 3), 40000), 16, 2)  # Pillow opens it as "RGB"!
    with pytest.raises(ImageModeError, match=r"rgb16\.png.*16-bit"):
        load_image(tmp_path / "rgb16.png")
    Image.fromarray(np.zeros((4, 4), np.uint16)).save(tmp_path / "g16.png")
    with pytest.raises(ImageModeError, match=r"g16\.png"):
        load_image(tmp_path / "g16.png", allow_gray=True)


def test_cmyk_rejected(tmp_path):
    Image.new("CMYK", (4, 4)).save(tmp_path / "c.jpg")
    with pytest.raises(ImageModeError, match=r"c\.jpg.*'CMYK'"):
        load_image(tmp_path / "c.jpg")


def test_not_an_image_and_truncated(tmp_path):
    (tmp_path / "notes.png").write_text("hello")
    with pytest.raises(ImageReadError, match=r"notes\.png"):
        load_image(tmp_path / "notes.png")
    Image.fromarray(_rand_uint8(64, 64)).save(tmp_path / "full.png")
    data = (tmp_path / "full.png").read_bytes()
    (tmp_path / "cut.png").write_bytes(data[: len(data) // 2])
    with pytest.raises(ImageReadError, match=r"cut\.png"):
        load_image(tmp_path / "cut.png")


def test_missing_file_and_folder(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"nope\.png"):
        load_image(tmp_path / "nope.png")
    with pytest.raises(FileNotFoundError, match="not a file"):
        load_image(tmp_path)


def test_quantize():
    x = torch.tensor([-0.1, 0.0, 0.4 / 255, 0.6 / 255, 100.5001 / 255, 1.0, 1.7])
    expected = torch.tensor([0, 0, 0, 1, 101, 255, 255]) / 255.0
    torch.testing.assert_close(quantize(x), expected, atol=1e-7, rtol=0)
    torch.testing.assert_close(quantize(x * 255, rgb_range=255), expected * 255, atol=1e-4, rtol=0)
    assert quantize(x.double()).dtype == torch.float64
    with pytest.raises(ValueError):
        quantize(torch.zeros(3, dtype=torch.uint8))


def test_uint8_helpers():
    arr = _rand_uint8()
    x = from_uint8(arr)
    np.testing.assert_array_equal(to_uint8(x), arr)
    with pytest.raises(ValueError, match="uint8"):
        from_uint8(arr.astype(np.float32))


def test_benchmark_grayscale_file(data_root):
    """Set14 img_003 ("bridge") is stored grayscale in the SelfExSR data: refused by default,
    loaded as three equal channels with allow_gray (as BenchmarkDataset does)."""
    path = data_root / "benchmark" / "Set14" / "image_SRF_2" / "img_003_SRF_2_HR.png"
    assert is_grayscale_file(path)
    with pytest.raises(ImageModeError, match="img_003_SRF_2_HR.png"):
        load_image(path)
    x = load_image(path, allow_gray=True)
    assert x.shape == (3, 512, 512)
    assert torch.equal(x[0], x[1]) and torch.equal(x[1], x[2])
    grays = sorted(p.name for p in (data_root / "benchmark").rglob("*.png") if is_grayscale_file(p))
    assert grays == [f"img_003_SRF_{s}_{k}.png" for s in (2, 3, 4) for k in ("HR", "LR")]
