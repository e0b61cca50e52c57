"""The GPU commands, run on CPU (issue 24, item 4).

* a bfloat16 autocast training step (``torch.autocast("cpu", dtype=torch.bfloat16)``) for every registered
  network: the layers really run in bf16, the loss and every gradient are finite;
* exact resume after mixed-precision steps: ``srlib.train`` applies ``--amp`` only on CUDA (on CPU it warns and
  trains in float32), so the test switches the loop's own autocast path on for CPU bf16 (the ``use_amp`` /
  ``amp_dtype`` fields that ``_build_run`` sets on CUDA) and checks that 2 steps + kill + resume to 4 give the
  same weights as 4 steps in one go. What stays untested without a GPU: fp16 with a live ``GradScaler`` state;
* (slow) every network at its paper preset through 2 training iterations of ``python -m srlib.train`` on small
  patches, one subprocess per network.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
import torch

import srlib.train.loop as train_loop
from srlib.data import HRFolderDataset, load_sample, save_image
from srlib.models import build_model, list_models
from srlib.train import TrainConfig, train

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("name", list_models())
def test_bf16_autocast_training_step_cpu(name):
    torch.manual_seed(0)
    net = build_model(name, scale=2, preset="small")
    opt = torch.optim.Adam(net.parameters(), lr=1e-4)
    lr, hr = torch.rand(2, 3, 24, 24), torch.rand(2, 3, 48, 48)
    dtypes: list[torch.dtype] = []
    hook = net.tail.register_forward_hook(lambda m, i, o: dtypes.append(o.dtype))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = net(lr)
        sr = out[0] if isinstance(out, (tuple, list)) else out
        loss = torch.nn.functional.l1_loss(sr.float(), hr)
    hook.remove()
    assert dtypes == [torch.bfloat16]  # the convolutions ran in bf16
    assert sr.shape == hr.shape
    value = float(loss.detach())
    assert math.isfinite(value) and 0.05 < value < 1.0
    loss.backward()
    grads = [p.grad for p in net.parameters() if p.grad is not None]
    assert grads and all(bool(torch.isfinite(g).all()) for g in grads)
    before = [p.detach().clone() for p in net.parameters()]
    opt.step()
    assert any(not torch.equal(b, p) for b, p in zip(before, net.parameters()))
    assert all(bool(torch.isfinite(p).all()) for p in net.parameters())


@pytest.fixture
def cpu_bf16_amp(monkeypatch):
    """Make ``train`` take its autocast path on CPU with bfloat16 (on CUDA ``_build_run`` does this for
    ``amp="bf16"``); records the dtype the network's tail saw at each step."""
    seen: list[torch.dtype] = []
    original = train_loop._build_run

    def build_run(*args, **kwargs):
        run = original(*args, **kwargs)
        run.use_amp, run.amp_dtype = True, torch.bfloat16
        run.model.tail.register_forward_hook(lambda m, i, o: seen.append(o.dtype) if m.training else None)
        return run

    monkeypatch.setattr(train_loop, "_build_run", build_run)
    return seen


def _patches(tmp_path: Path) -> HRFolderDataset:
    folder = tmp_path / "hr"
    img = load_sample("chelsea")
    save_image(img[:, 60:124, 100:164], folder / "a.png")
    save_image(img[:, 150:214, 200:264], folder / "b.png")
    return HRFolderDataset(folder, 2, patch_size=32, augment=True)


def _net():
    torch.manual_seed(1)
    return build_model("nlsn", scale=2, preset="small", n_resblocks=2, n_feats=16)


def test_resume_after_bf16_autocast_steps_is_exact(tmp_path, cpu_bf16_amp):
    ds = _patches(tmp_path)
    cfg = dict(batch_size=2, patch_size=32, log_every=1, ckpt_every=2, val_every=0, amp="bf16", seed=3)
    with pytest.warns(UserWarning, match="needs CUDA"):  # train's own CPU rule, overridden by the fixture
        whole = _net()
        train(whole, ds, None, TrainConfig(iterations=4, **cfg), tmp_path / "whole", device="cpu", progress=False)
    assert cpu_bf16_amp == [torch.bfloat16] * 4
    with pytest.warns(UserWarning, match="needs CUDA"):
        part = _net()
        train(part, ds, None, TrainConfig(iterations=2, **cfg), tmp_path / "part", device="cpu", progress=False)
    ckpt = torch.load(tmp_path / "part" / "last.pt", weights_only=True)
    assert ckpt["iteration"] == 2 and ckpt["config"]["amp"] == "bf16"
    with pytest.warns(UserWarning, match="needs CUDA"):
        resumed = _net()  # fresh weights: everything must come from last.pt
        res = train(resumed, ds, None, TrainConfig(iterations=4, **cfg), tmp_path / "part", device="cpu",
                    progress=False, resume=True)
    assert res["resumed_from"] == 2 and cpu_bf16_amp == [torch.bfloat16] * 8
    for (k, a), b in zip(whole.state_dict().items(), resumed.state_dict().values()):
        assert torch.equal(a, b), k
    losses = [h["loss"] for h in res["history"]["train"]]
    assert len(losses) == 4 and all(math.isfinite(x) for x in losses)


@pytest.mark.slow
@pytest.mark.parametrize("name", list_models())
def test_paper_preset_two_iterations_cli(name, tmp_path):
    """``python -m srlib.train --preset paper`` (the papers' full networks: 42M parameters for NLSN, 70M for
    DLSN) for 2 iterations of one 32 x 32 HR patch on CPU; about a minute per network on a busy 2-core machine."""
    hr = tmp_path / "hr"
    save_image(load_sample("chelsea")[:, 100:164, 150:214], hr / "a.png")
    env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""),
           "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
    # the checkpoint of a paper network with its Adam state is 0.5-0.9 GB: a folder removed at once, not
    # left in pytest's kept tmp_path folders
    with tempfile.TemporaryDirectory(prefix="srlib-paper-smoke-") as out:
        r = subprocess.run([sys.executable, "-m", "srlib.train", "--model", name, "--preset", "paper", "--scale", "2",
                            "--train-dir", str(hr), "--val-set", "none", "--patch-size", "32", "--batch-size", "1",
                            "--iterations", "2", "--log-every", "1", "--device", "cpu", "--no-progress",
                            "--out", out], capture_output=True, text=True, env=env, timeout=900)
        assert r.returncode == 0, r.stderr[-2000:]
        assert "(paper)" in r.stdout and "done: 2 iterations" in r.stdout
        history = json.loads((Path(out) / "history.json").read_text())["history"]
        assert [h["iteration"] for h in history["train"]] == [1, 2]
        assert all(math.isfinite(h["loss"]) and 0 < h["loss"] < 1 for h in history["train"])
        assert (Path(out) / "last.pt").stat().st_size > 1_000_000
