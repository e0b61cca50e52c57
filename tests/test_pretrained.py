"""Shipped weights (srlib.pretrained): every file loads, checksums are enforced, outputs are reproduced, and the
trained networks beat bicubic.

The stored outputs in ``tests/data/pretrained_outputs.json`` are regenerated (only after retraining and
re-exporting the weights) with ``python tests/test_pretrained.py --regenerate``.
"""

from __future__ import annotations

import dataclasses
import importlib
import json
import shutil
import sys
from pathlib import Path

import pytest
import torch

from srlib.checkpoint import CheckpointError, sha256_file
from srlib.data import BenchmarkDataset, imresize, load_sample, quantize
from srlib.metrics import psnr
from srlib.pretrained import (
    SMALL_CONFIGS,
    SMALL_RECIPE,
    SMALL_RECIPE_STAGE2,
    WEIGHTS_DIR,
    build_small,
    list_pretrained,
    pretrained,
    pretrained_spec,
    training_info,
    weights_path,
)

NAMES = list_pretrained()
OUTPUTS = Path(__file__).resolve().parent / "data" / "pretrained_outputs.json"


def _probe() -> tuple[torch.Tensor, torch.Tensor]:
    """A fixed, data-independent test pair: a 64x64 HR crop of scikit-image's astronaut and its x2 bicubic LR."""
    hr = load_sample("astronaut")[:, 96:160, 176:240].unsqueeze(0)
    return quantize(imresize(hr, 0.5)), hr


def _run(model: torch.nn.Module, lr: torch.Tensor) -> torch.Tensor:
    torch.manual_seed(0)  # NLSN / DLSN draw random hash rotations at every forward pass
    with torch.no_grad():
        return model(lr).clamp(0, 1)


def _summary(sr: torch.Tensor) -> dict:
    return {"mean": sr.mean().item(), "std": sr.std().item(), "pixels": sr[0, :, ::8, ::8].flatten().tolist()}


@pytest.fixture(scope="module")
def models() -> dict[str, torch.nn.Module]:
    return {name: pretrained(name) for name in NAMES}


def test_registry_lists_one_network_per_model():
    assert NAMES == sorted(f"{m}-small-x2" for m in SMALL_CONFIGS)
    assert {pretrained_spec(n).model for n in NAMES} == {"edsr", "nlsn", "enlcn", "dlsn", "hspan", "lcoan"}
    for name in NAMES:
        spec = pretrained_spec(name)
        assert spec.scale == 2 and len(spec.sha256) == 64
    assert pretrained_spec("HSPAN-small-x2").name == "hspan-small-x2"


def test_unknown_name_lists_the_available_ones():
    with pytest.raises(ValueError, match="hspan-small-x2"):
        pretrained("hspan-huge-x4")


def test_files_present_small_and_match_their_checksums():
    total = 0
    for name in NAMES:
        path = weights_path(name)
        assert path.is_file(), path
        assert path.parent == WEIGHTS_DIR
        size = path.stat().st_size
        assert 100_000 < size < 3_000_000, (name, size)
        assert sha256_file(path) == pretrained_spec(name).sha256, name
        total += size
    assert total < 15_000_000


def test_every_shipped_weight_loads_in_eval_mode(models):
    lr, _ = _probe()
    for name, model in models.items():
        spec = pretrained_spec(name)
        assert not model.training
        assert model.model_name == spec.model and model.pretrained_name == name
        assert model.config == build_small(spec.model, 2).config
        assert all(torch.isfinite(p).all() for p in model.parameters()), name
        assert _run(model, lr).shape == (1, 3, 64, 64)


def test_training_provenance_in_the_header():
    for name in NAMES:
        info = training_info(name)
        assert info["model"] == pretrained_spec(name).model and info["scale"] == "2"
        assert info["training"]["iterations"] == [SMALL_RECIPE["iterations"], SMALL_RECIPE_STAGE2["iterations"]]
        assert info["recipe"]["stage1"]["lr"] == SMALL_RECIPE["lr"]
        assert info["recipe"]["stage2"]["milestones"] == list(SMALL_RECIPE_STAGE2["milestones"])
        assert info["config"]["n_feats"] == 32


def test_corrupted_copy_is_rejected_naming_the_file(tmp_path):
    name = "hspan-small-x2"
    bad = tmp_path / "copy.safetensors"
    shutil.copyfile(weights_path(name), bad)
    assert isinstance(pretrained(name, path=bad), torch.nn.Module)  # an intact copy loads
    data = bytearray(bad.read_bytes())
    data[len(data) // 2] ^= 0x01  # one flipped bit inside the tensor data
    bad.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match=r"SHA-256 mismatch.*copy\.safetensors"):
        pretrained(name, path=bad)


def test_missing_file_names_it(tmp_path):
    with pytest.raises(FileNotFoundError, match="nowhere.safetensors"):
        pretrained("edsr-small-x2", path=tmp_path / "nowhere.safetensors")


def test_weights_of_another_network_are_rejected(tmp_path, monkeypatch):
    # The EDSR file, with its checksum registered for LCoAN, still does not fit: the header check names the file.
    other = tmp_path / "edsr.safetensors"
    shutil.copyfile(weights_path("edsr-small-x2"), other)
    module = importlib.import_module("srlib.pretrained")  # (srlib.pretrained may be re-exported as the function)
    spec = module.pretrained_spec("lcoan-small-x2")
    monkeypatch.setitem(module._REGISTRY, "lcoan-small-x2", dataclasses.replace(spec, sha256=sha256_file(other)))
    with pytest.raises(CheckpointError, match="edsr.safetensors"):
        pretrained("lcoan-small-x2", path=other)


def test_outputs_match_the_stored_ones(models):
    stored = json.loads(OUTPUTS.read_text())
    lr, _ = _probe()
    assert set(stored) == set(NAMES)
    for name, model in models.items():
        got = _summary(_run(model, lr))
        ref = stored[name]
        assert got["mean"] == pytest.approx(ref["mean"], abs=1e-4), name
        assert got["std"] == pytest.approx(ref["std"], abs=1e-4), name
        torch.testing.assert_close(torch.tensor(got["pixels"]), torch.tensor(ref["pixels"]), atol=5e-4, rtol=0,
                                   msg=lambda m, n=name: f"{n}: {m}")


def test_trained_networks_beat_bicubic_on_a_sample_photo(models):
    lr, hr = _probe()
    base = psnr(imresize(lr, 2).clamp(0, 1), hr, 2)
    for name, model in models.items():
        gain = psnr(_run(model, lr), hr, 2) - base
        assert gain > 0.5, (name, gain)


@pytest.mark.data
def test_trained_networks_beat_bicubic_on_set5(data_root, models):
    # Central 64x64 LR crops of the five Set5 images (the full images need minutes and, for HSPAN, GBs).
    pairs = []
    for item in BenchmarkDataset("Set5", 2):
        h, w = item["lr"].shape[-2:]
        y, x = (h - 64) // 2, (w - 64) // 2
        pairs.append((item["lr"][:, y:y + 64, x:x + 64][None], item["hr"][:, 2 * y:2 * y + 128, 2 * x:2 * x + 128][None]))
    base = sum(psnr(imresize(lr, 2).clamp(0, 1), hr, 2) for lr, hr in pairs) / len(pairs)
    for name, model in models.items():
        mean = sum(psnr(_run(model, lr), hr, 2) for lr, hr in pairs) / len(pairs)
        assert mean > base + 0.4, (name, mean, base)


def _regenerate() -> None:
    lr, _ = _probe()
    out = {name: _summary(_run(pretrained(name), lr)) for name in NAMES}
    OUTPUTS.parent.mkdir(parents=True, exist_ok=True)
    OUTPUTS.write_text(json.dumps(out, indent=1) + "\n")
    print(f"wrote {OUTPUTS}")


if __name__ == "__main__":
    if "--regenerate" in sys.argv:
        torch.set_num_threads(1)
        _regenerate()
