"""Datasets: both benchmark layouts, paired folders, DIV2K layout, on-the-fly LR with exact
aligned patches, augmentation, generators, sample images, and the error messages."""

from __future__ import annotations

import pytest
import torch
from torch.utils.data import DataLoader

from srlib.data import (
    BenchmarkDataset,
    BicubicDownsample,
    Compose,
    DIV2KDataset,
    GaussianBlur,
    AddGaussianNoise,
    HRFolderDataset,
    PairedFolderDataset,
    SampleImagesDataset,
    available_benchmarks,
    benchmark_scales,
    default_eval_set,
    default_train_folder,
    default_train_set,
    dihedral,
    imresize,
    load_image,
    load_sample,
    quantize,
    save_image,
    seed_worker,
)


def _img(h, w, seed=0):
    return torch.rand(3, h, w, generator=torch.Generator().manual_seed(seed))


def _save(x, path):
    save_image(x, path)
    return load_image(path)


# ----------------------------------------------------------------------------- shared benchmark data
def test_available_benchmarks(data_root):
    bench = data_root / "benchmark"
    assert available_benchmarks(bench) == ["Set5", "Set14", "B100", "Urban100"]
    assert available_benchmarks(bench, scale=3) == ["Set5", "Set14"]
    assert available_benchmarks() == ["Set5", "Set14", "B100", "Urban100"]  # SRLIB_DATA default
    assert benchmark_scales("Set5", bench) == [2, 3, 4]
    assert benchmark_scales("Urban100", bench) == [4]
    assert available_benchmarks(data_root / "nowhere") == []


@pytest.mark.parametrize("name,scale,n", [("Set5", 2, 5), ("Set5", 4, 5), ("Set14", 3, 14), ("B100", 2, 100), ("Urban100", 4, 30)])
def test_benchmark_selfexsr_layout(data_root, name, scale, n):
    ds = BenchmarkDataset(name, scale)
    assert len(ds) == n
    assert ds.names[0] == "img_001" and ds.names[-1] == f"img_{n:03d}"
    item = ds[0]
    assert set(item) == {"lr", "hr", "name", "gray"}
    lr, hr = item["lr"], item["hr"]
    assert lr.dtype == hr.dtype == torch.float32 and lr.shape[0] == 3
    assert hr.shape[-2:] == (lr.shape[-2] * scale, lr.shape[-1] * scale)
    assert 0 <= lr.min() and hr.max() <= 1


def test_benchmark_gray_flag(data_root):
    ds = BenchmarkDataset("Set14", 2)
    items = [ds[i] for i in range(len(ds))]
    assert [it["name"] for it in items if it["gray"]] == ["img_003"]  # img_010: gray content stored as RGB
    item = items[2]
    assert torch.equal(item["hr"][0], item["hr"][1]) and torch.equal(item["lr"][0], item["lr"][2])


def test_benchmark_errors(data_root):
    with pytest.raises(ValueError, match="unsupported scale 8"):
        BenchmarkDataset("Set5", 8)
    with pytest.raises(FileNotFoundError, match="Set6"):
        BenchmarkDataset("Set6", 2)
    with pytest.raises(FileNotFoundError, match="no data for scale 3.*image_SRF_3"):
        BenchmarkDataset("B100", 3)


def test_benchmark_edsr_layout(tmp_path):
    root = tmp_path / "benchmark"
    hr_dir, lr_dir = root / "Mini" / "HR", root / "Mini" / "LR_bicubic" / "X2"
    hr_a = _save(_img(13, 10, 1), hr_dir / "baby.png")  # odd height: cropped to 12 (EDSR HR is not modcropped)
    hr_b = _save(_img(8, 8, 2), hr_dir / "bird.png")
    _save(quantize(imresize(hr_a[:, :12], 0.5)), lr_dir / "babyx2.png")
    _save(quantize(imresize(hr_b, 0.5)), lr_dir / "birdx2.png")
    assert available_benchmarks(root) == ["Mini"]
    ds = BenchmarkDataset("Mini", 2, root=root)
    assert ds.names == ["baby", "bird"]
    item = ds[0]
    assert item["hr"].shape == (3, 12, 10) and item["lr"].shape == (3, 6, 5)
    assert torch.equal(item["hr"], hr_a[:, :12])
    assert item["gray"] is False


def test_size_mismatch_names_both_files(tmp_path):
    hr_dir, lr_dir = tmp_path / "HR", tmp_path / "LR"
    _save(_img(16, 16), hr_dir / "a.png")
    _save(_img(7, 8), lr_dir / "a.png")
    with pytest.raises(ValueError, match=r"HR/LR size mismatch.*HR[/\\]a\.png is 16x16.*LR[/\\]a\.png is 7x8"):
        PairedFolderDataset(hr_dir, lr_dir, 2)


def test_paired_folder(tmp_path):
    hr_dir, lr_dir = tmp_path / "HR", tmp_path / "LR"
    for i in range(3):
        hr = _save(_img(16, 24, i), hr_dir / f"im{i}.png")
        name = f"im{i}.png" if i else f"im{i}x4.png"  # both naming styles
        _save(quantize(imresize(hr, 0.25)), lr_dir / name)
    ds = PairedFolderDataset(hr_dir, lr_dir, 4)
    assert len(ds) == 3 and ds.names == ["im0", "im1", "im2"]
    assert ds[1]["lr"].shape == (3, 4, 6) and ds[1]["hr"].shape == (3, 16, 24)
    # patches: aligned crops of the stored pair
    pds = PairedFolderDataset(hr_dir, lr_dir, 4, patch_size=8, augment=True, repeat=4,
                              generator=torch.Generator().manual_seed(0))
    assert len(pds) == 12
    full = ds[0]
    for i in range(0, 12, 3):
        it = pds[i]
        assert it["lr"].shape == (3, 2, 2) and it["hr"].shape == (3, 8, 8)
        found = any(
            torch.equal(dihedral(it["lr"], k), full["lr"][:, y : y + 2, x : x + 2])
            and torch.equal(dihedral(it["hr"], k), full["hr"][:, 4 * y : 4 * y + 8, 4 * x : 4 * x + 8])
            for y in range(3) for x in range(5) for k in range(8)
        )
        assert found
    with pytest.raises(FileNotFoundError, match="no LR image for"):
        (lr_dir / "im2.png").unlink()
        PairedFolderDataset(hr_dir, lr_dir, 4)


def test_missing_and_empty_folders(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="missing"):
        HRFolderDataset(tmp_path / "missing", 2)
    with pytest.raises(ValueError, match="no image files.*empty"):
        HRFolderDataset(tmp_path / "empty", 2)
    with pytest.raises(ValueError, match="no image files"):
        PairedFolderDataset(tmp_path / "empty", tmp_path / "empty", 2)


def test_div2k_layout(tmp_path):
    root = tmp_path / "DIV2K"
    for split, nums in (("train", (1, 2, 3)), ("valid", (801,))):
        for n in nums:
            hr = _save(_img(12, 18, n), root / f"DIV2K_{split}_HR" / f"{n:04d}.png")
            _save(quantize(imresize(hr, 1 / 3)), root / f"DIV2K_{split}_LR_bicubic" / "X3" / f"{n:04d}x3.png")
    ds = DIV2KDataset(root, 3)
    assert ds.names == ["0001", "0002", "0003"] and ds[2]["lr"].shape == (3, 4, 6)
    assert DIV2KDataset(tmp_path, 3, "valid").names == ["0801"]  # parent of DIV2K works too
    assert DIV2KDataset(root, 3, image_range=(2, 3)).names == ["0002", "0003"]
    item = DIV2KDataset(root, 3, patch_size=6, generator=torch.Generator().manual_seed(0))[0]
    assert item["hr"].shape == (3, 6, 6) and item["lr"].shape == (3, 2, 2)
    with pytest.raises(FileNotFoundError, match=r"DIV2K_train_LR_bicubic[/\\]X2"):
        DIV2KDataset(root, 2)
    with pytest.raises(ValueError, match="split"):
        DIV2KDataset(root, 3, "test")
    with pytest.raises(ValueError, match="unsupported scale 5"):
        DIV2KDataset(root, 5)


# ----------------------------------------------------------------------------- LR on the fly
@pytest.fixture
def hr_folder(tmp_path):
    folder = tmp_path / "train"
    for i, (h, w) in enumerate([(50, 61), (64, 48), (37, 80)]):
        _save(_img(h, w, 10 + i), folder / f"p{i}.png")
    return folder


def test_hr_folder_full_images(hr_folder):
    ds = HRFolderDataset(hr_folder, 3)
    assert len(ds) == 3 and ds.names == ["p0", "p1", "p2"]
    it = ds[0]
    assert it["hr"].shape == (3, 48, 60) and it["lr"].shape == (3, 16, 20)  # modcropped
    hr = load_image(hr_folder / "p0.png")[:, :48, :60]
    torch.testing.assert_close(it["lr"], quantize(imresize(hr, 1 / 3)), atol=0, rtol=0)
    raw = HRFolderDataset(hr_folder, 3, quantize_lr=False)[0]["lr"]
    torch.testing.assert_close(raw, imresize(hr, 1 / 3), atol=1e-6, rtol=0)


@pytest.mark.parametrize("scale", [2, 3, 4])
def test_hr_folder_patches_equal_crops_of_full_lr(hr_folder, scale):
    """The LR patch is exactly the aligned crop of the LR made from the whole image."""
    P = 8 * scale
    ds = HRFolderDataset(hr_folder, scale, patch_size=P, repeat=6, generator=torch.Generator().manual_seed(scale),
                         quantize_lr=False)
    full = [HRFolderDataset(hr_folder, scale, quantize_lr=False)[i] for i in range(3)]
    for idx in range(len(ds)):
        it = ds[idx]
        f = full[idx % 3]
        assert it["hr"].shape == (3, P, P) and it["lr"].shape == (3, 8, 8)
        hits = [
            (y, x)
            for y in range(0, f["hr"].shape[1] - P + 1, scale)
            for x in range(0, f["hr"].shape[2] - P + 1, scale)
            if torch.equal(f["hr"][:, y : y + P, x : x + P], it["hr"])
        ]
        assert len(hits) == 1
        y, x = hits[0]
        torch.testing.assert_close(it["lr"], f["lr"][:, y // scale : y // scale + 8, x // scale : x // scale + 8],
                                   atol=1e-6, rtol=0)


def test_hr_folder_generator_reproducible(hr_folder):
    def items(seed):
        ds = HRFolderDataset(hr_folder, 2, patch_size=16, augment=True, generator=torch.Generator().manual_seed(seed))
        return [ds[i] for i in range(3)]

    a, b, c = items(1), items(1), items(2)
    assert all(torch.equal(x["lr"], y["lr"]) and torch.equal(x["hr"], y["hr"]) for x, y in zip(a, b))
    assert not all(torch.equal(x["hr"], y["hr"]) for x, y in zip(a, c))


def test_augmentation_keeps_lr_and_hr_aligned(hr_folder):
    ds = HRFolderDataset(hr_folder, 2, augment=True, quantize_lr=False, generator=torch.Generator().manual_seed(0))
    shapes = set()
    for i in range(12):
        it = ds[i % 3]
        shapes.add((i % 3, tuple(it["hr"].shape)))
        # bicubic commutes with flips/rotations (symmetric kernel, exact multiples)
        torch.testing.assert_close(it["lr"], imresize(it["hr"], 0.5), atol=1e-5, rtol=0)
    assert any((i, (c, w, h)) in shapes for i, (c, h, w) in shapes)  # both orientations of an image seen


def test_dihedral_group():
    x = torch.arange(6.0).view(1, 2, 3)
    outs = [dihedral(x, k) for k in range(8)]
    assert torch.equal(outs[0], x)
    assert len({tuple(o.flatten().tolist()) + tuple(o.shape) for o in outs}) == 8
    with pytest.raises(ValueError):
        dihedral(x, 8)


def test_custom_degradation(hr_folder):
    deg = Compose([GaussianBlur(1.6, 7), BicubicDownsample(2), AddGaussianNoise(10)])
    ds = HRFolderDataset(hr_folder, 2, deg, patch_size=16, generator=torch.Generator().manual_seed(5))
    a = ds[0]
    ds2 = HRFolderDataset(hr_folder, 2, deg, patch_size=16, generator=torch.Generator().manual_seed(5))
    assert torch.equal(ds2[0]["lr"], a["lr"]) and a["lr"].shape == (3, 8, 8)
    with pytest.raises(ValueError, match="has scale 2, dataset scale is 3"):
        HRFolderDataset(hr_folder, 3, BicubicDownsample(2))


def test_hr_folder_bad_options(hr_folder):
    with pytest.raises(ValueError, match="multiple of scale 3"):
        HRFolderDataset(hr_folder, 3, patch_size=16)
    with pytest.raises(ValueError, match="repeat"):
        HRFolderDataset(hr_folder, 2, repeat=0)
    with pytest.raises(ValueError, match="unsupported scale 1"):
        HRFolderDataset(hr_folder, 1)
    with pytest.raises(ValueError, match="'p2'.*smaller than the patch"):
        HRFolderDataset(hr_folder, 2, patch_size=40)[2]
    with pytest.raises(IndexError):
        HRFolderDataset(hr_folder, 2)[3]


def test_dataloader_and_seed_worker(hr_folder, tmp_path):
    ds = HRFolderDataset(hr_folder, 2, patch_size=8, repeat=4, generator=torch.Generator().manual_seed(0))
    batch = next(iter(DataLoader(ds, batch_size=4)))
    assert batch["lr"].shape == (4, 3, 4, 4) and batch["hr"].shape == (4, 3, 8, 8) and len(batch["name"]) == 4
    assert batch["gray"].tolist() == [False] * 4
    # One image, two workers: item 0 goes to worker 0 and item 1 to worker 1, both the first draw
    # of their worker. Copies of one generator give the same crop; seed_worker makes them differ.
    single = tmp_path / "single"
    _save(_img(64, 64, 3), single / "a.png")
    one = HRFolderDataset(single, 2, patch_size=8, repeat=2, generator=torch.Generator().manual_seed(0))

    def first_two(init):
        loader = DataLoader(one, batch_size=1, num_workers=2, worker_init_fn=init,
                            generator=torch.Generator().manual_seed(0))
        return [b["hr"] for b in loader]

    same = first_two(None)
    assert torch.equal(same[0], same[1])
    seeded = first_two(seed_worker)
    assert not torch.equal(seeded[0], seeded[1])


def test_default_train_folder(tmp_path, monkeypatch):
    monkeypatch.setenv("SRLIB_DATA", str(tmp_path))
    assert default_train_folder() is None
    div2k = tmp_path / "DIV2K" / "DIV2K_train_HR"
    _save(_img(8, 8), div2k / "0001.png")
    assert default_train_folder() == div2k
    (tmp_path / "train" / "aaa_empty").mkdir(parents=True)
    _save(_img(8, 8), tmp_path / "train" / "zzz" / "a.png")
    _save(_img(8, 8), tmp_path / "train" / "mmm" / "a.png")
    assert default_train_folder() == tmp_path / "train" / "mmm"


def test_default_train_folder_shared(data_root):
    folder = default_train_folder()
    assert folder == data_root / "train" / "SunHays80"
    ds = HRFolderDataset(folder, 4, patch_size=96, generator=torch.Generator().manual_seed(0))
    assert len(ds) == 30
    it = ds[0]
    assert it["lr"].shape == (3, 24, 24) and it["hr"].shape == (3, 96, 96)


def test_default_train_set_folder_then_offline_fallback(tmp_path, monkeypatch):
    monkeypatch.setenv("SRLIB_DATA", str(tmp_path))
    ds, source = default_train_set(2, 16, generator=torch.Generator().manual_seed(0))
    assert source == "skimage.data (offline fallback)" and isinstance(ds, SampleImagesDataset)
    assert ds[0]["hr"].shape == (3, 16, 16) and ds[0]["lr"].shape == (3, 8, 8)
    ds, _ = default_train_set(2, 16, fallback_names=("coffee",))
    assert ds.names == ["coffee"]
    folder = tmp_path / "train" / "photos"
    for name in ("c", "a", "b"):
        _save(_img(20, 24), folder / f"{name}.png")
    ds, source = default_train_set(2, 16, max_images=2, generator=torch.Generator().manual_seed(0))
    assert source == str(folder) and len(ds) == 2 and ds.names == ["a", "b"]  # the first photos by name
    # the same patches as the folder dataset built by hand with the same generator seed
    ref = HRFolderDataset(folder, 2, patch_size=16, augment=True, generator=torch.Generator().manual_seed(0))
    assert torch.equal(ds[1]["hr"], ref[1]["hr"]) and torch.equal(ds[1]["lr"], ref[1]["lr"])
    with pytest.raises(ValueError, match="max_images"):
        default_train_set(2, 16, max_images=0)


def test_default_eval_set_offline_and_shared(tmp_path, monkeypatch):
    monkeypatch.setenv("SRLIB_DATA", str(tmp_path))
    ds, label = default_eval_set(2)
    assert label == "sample photographs x2 (offline fallback)" and ds.names == ["chelsea", "coffee", "astronaut"]
    assert ds[0]["lr"].shape[-1] * 2 == ds[0]["hr"].shape[-1]  # whole images, no patches


def test_default_eval_set_shared(data_root):
    ds, label = default_eval_set(2, "Set14")
    assert label == "Set14 x2" and isinstance(ds, BenchmarkDataset) and len(ds) == 14


# ----------------------------------------------------------------------------- sample images
def test_sample_images():
    x = load_sample("astronaut")
    assert x.shape == (3, 512, 512) and x.dtype == torch.float32
    assert (x[0] - x[1]).abs().max() > 0.1  # colour
    ds = SampleImagesDataset(2)
    assert ds.names == ["astronaut", "chelsea", "coffee", "rocket", "motorcycle"]
    it = ds[1]
    assert it["hr"].shape == (3, 300, 450) and it["lr"].shape == (3, 150, 225)
    pds = SampleImagesDataset(4, names=["coffee"], patch_size=48, augment=True, repeat=3,
                              generator=torch.Generator().manual_seed(0))
    assert len(pds) == 3 and pds[2]["lr"].shape == (3, 12, 12)
    with pytest.raises(ValueError, match="unknown sample image 'lena'"):
        SampleImagesDataset(2, names=["lena"])
    with pytest.raises(ValueError, match="unknown sample image"):
        load_sample("camera")  # grayscale: not offered
