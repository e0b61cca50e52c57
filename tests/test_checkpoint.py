"""Checkpoint saving/loading: atomic writes, weights_only loading, official layouts, clear mismatch errors."""

from __future__ import annotations

import hashlib
import os

import pytest
import torch
from torch import nn

from srlib.checkpoint import (
    CheckpointError,
    extract_state_dict,
    load_checkpoint,
    load_safetensors,
    load_weights,
    save_checkpoint,
    save_safetensors,
    sha256_file,
)
from srlib.models import build_model


def _small(scale=2, **kw):
    return build_model("edsr", scale=scale, preset="small", **kw)


def _params(model):
    return {k: v.clone() for k, v in model.state_dict().items()}


def _assert_same(a, b):
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


def test_save_and_load_round_trip(tmp_path):
    state = {"model": _small().state_dict(), "iteration": 7, "cfg": {"milestones": (1, 2), "amp": None}}
    path = save_checkpoint(tmp_path / "sub" / "ck.pt", state)
    assert path.is_file()
    assert os.listdir(path.parent) == ["ck.pt"]  # no temporary file left behind
    umask = os.umask(0)
    os.umask(umask)
    assert path.stat().st_mode & 0o777 == 0o666 & ~umask  # not mkstemp's private 0o600
    back = load_checkpoint(path)
    assert back["iteration"] == 7 and back["cfg"] == {"milestones": (1, 2), "amp": None}
    _assert_same(back["model"], state["model"])


def test_failed_save_keeps_the_previous_file(tmp_path):
    path = tmp_path / "ck.pt"
    save_checkpoint(path, {"x": torch.ones(2)})
    with pytest.raises(Exception):
        save_checkpoint(path, {"x": lambda: 0})  # cannot be pickled
    assert os.listdir(tmp_path) == ["ck.pt"]
    assert torch.equal(load_checkpoint(path)["x"], torch.ones(2))


class _Custom:
    pass


def test_load_checkpoint_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="missing.pt"):
        load_checkpoint(tmp_path / "missing.pt")
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"not a checkpoint at all")
    with pytest.raises(CheckpointError, match="garbage.pt"):
        load_checkpoint(garbage)
    unsafe = tmp_path / "unsafe.pt"
    torch.save({"obj": _Custom()}, unsafe)  # weights_only=True refuses arbitrary classes
    with pytest.raises(CheckpointError, match="unsafe.pt"):
        load_checkpoint(unsafe)
    not_dict = tmp_path / "list.pt"
    torch.save([torch.ones(1)], not_dict)
    with pytest.raises(CheckpointError, match="list.pt"):
        load_checkpoint(not_dict)


@pytest.mark.parametrize("wrap", ["raw", "model", "state_dict", "module_prefix", "model_prefix"])
def test_load_weights_accepts_official_and_wrapped_layouts(tmp_path, wrap):
    src = _small()
    sd = src.state_dict()
    obj = {
        "raw": sd,
        "model": {"model": sd, "iteration": 3},
        "state_dict": {"state_dict": sd, "epoch": 1},
        "module_prefix": {f"module.{k}": v for k, v in sd.items()},
        "model_prefix": {f"model.{k}": v for k, v in sd.items()},
    }[wrap]
    torch.save(obj, tmp_path / "w.pt")
    dst = _small()
    assert not torch.equal(dst.head[0].weight, src.head[0].weight)
    result = load_weights(dst, tmp_path / "w.pt")
    assert result.missing_keys == [] and result.unexpected_keys == []
    _assert_same(dst.state_dict(), sd)


def test_load_weights_from_an_in_memory_dict_and_into_a_wrapper():
    src, dst = _small(), _small()
    wrapper = nn.DataParallel(dst)
    load_weights(wrapper, {"model": src.state_dict()})
    _assert_same(dst.state_dict(), src.state_dict())


def test_wrong_scale_is_rejected_without_touching_the_model(tmp_path):
    path = tmp_path / "x3.pt"
    torch.save(_small(scale=3).state_dict(), path)
    dst = _small(scale=2)
    before = _params(dst)
    with pytest.raises(CheckpointError) as info:
        load_weights(dst, path)
    msg = str(info.value)
    assert "x3.pt" in msg and "tail.0.0.weight" in msg and "(144, 16, 3, 3)" in msg and "(64, 16, 3, 3)" in msg
    _assert_same(dst.state_dict(), before)


def test_missing_and_unexpected_keys(tmp_path):
    sd = _small(n_resblocks=3).state_dict()  # one block more than the target
    path = tmp_path / "deeper.pt"
    torch.save(sd, path)
    dst = _small(n_resblocks=2)
    before = _params(dst)
    with pytest.raises(CheckpointError) as info:
        load_weights(dst, path)
    msg = str(info.value)
    # small EDSR: body.0, body.1 ResBlocks + body.2 conv; the deeper file has a ResBlock at body.2, conv at body.3
    assert "deeper.pt" in msg and "missing key(s): body.2.weight" in msg and "unexpected key(s)" in msg
    assert "body.2.body.0.weight" in msg
    _assert_same(dst.state_dict(), before)

    # strict=False: shape-compatible keys load, the rest are reported
    partial = {k: v for k, v in _small(n_resblocks=2).state_dict().items() if not k.startswith("tail")}
    partial["extra.weight"] = torch.zeros(1)
    result = load_weights(dst, partial, strict=False)
    assert result.unexpected_keys == ["extra.weight"]
    assert result.missing_keys == ["tail.0.0.weight", "tail.0.0.bias", "tail.1.weight", "tail.1.bias"]
    assert torch.equal(dst.head[0].weight, partial["head.0.weight"])
    assert torch.equal(dst.tail[1].weight, before["tail.1.weight"])


def test_shape_mismatch_is_an_error_even_when_not_strict():
    dst = _small(n_feats=16)
    with pytest.raises(CheckpointError, match="shape mismatch"):
        load_weights(dst, _small(n_feats=8).state_dict(), strict=False)


def test_extract_state_dict_rejects_non_state_dicts():
    with pytest.raises(CheckpointError, match="no state_dict"):
        extract_state_dict({"epoch": 3, "lr": 0.1}, source="x.pt")
    with pytest.raises(CheckpointError, match="expected a dict"):
        extract_state_dict([1, 2])  # type: ignore[arg-type]


def test_error_lists_only_the_first_keys():
    dst = _small()
    sd = {f"junk.{i}": torch.zeros(1) for i in range(20)}
    sd.update(dst.state_dict())
    with pytest.raises(CheckpointError, match=r"20 unexpected key\(s\): junk.0, .*\(15 more\)"):
        load_weights(dst, sd)


def test_safetensors_round_trip_with_sha256(tmp_path):
    src = _small()
    path = tmp_path / "edsr.safetensors"
    digest = save_safetensors(path, src, metadata={"model": "edsr", "scale": "2"})
    assert digest == hashlib.sha256(path.read_bytes()).hexdigest() == sha256_file(path)
    assert os.listdir(tmp_path) == ["edsr.safetensors"]
    sd = load_safetensors(path, sha256=digest)
    _assert_same(sd, src.state_dict())
    dst = _small()
    load_weights(dst, path, sha256=digest.upper())
    _assert_same(dst.state_dict(), src.state_dict())


def test_safetensors_errors(tmp_path):
    path = tmp_path / "w.safetensors"
    save_safetensors(path, _small().state_dict())
    with pytest.raises(CheckpointError, match=r"SHA-256 mismatch for .*w.safetensors"):
        load_safetensors(path, sha256="0" * 64)
    with pytest.raises(FileNotFoundError, match="nothere.safetensors"):
        load_safetensors(tmp_path / "nothere.safetensors")
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"\x00" * 16)
    with pytest.raises(CheckpointError, match="bad.safetensors"):
        load_safetensors(bad)
    with pytest.raises(ValueError, match="metadata"):
        save_safetensors(tmp_path / "m.safetensors", _small(), metadata={"scale": 2})  # type: ignore[dict-item]
