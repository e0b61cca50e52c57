"""Training loop: exact resume, data order, hooks, errors, DDP on CPU, and the command line."""

from __future__ import annotations

import os
import random
import socket
import warnings

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import Dataset

from srlib.checkpoint import load_checkpoint
from srlib.models import build_model
from srlib.train import CHECKPOINT_FORMAT, InfiniteSampler, SeededDataset, TrainConfig, main, train


# ------------------------------------------------------------------------------------------------ fixtures
class NoisyNet(nn.Module):
    """Tiny x2 network that draws from the global torch RNG in train mode (as NLSA's random rotations do)."""

    def __init__(self, noise: float = 0.01):
        super().__init__()
        self.conv = nn.Conv2d(3, 12, 3, padding=1)
        self.noise = noise

    def forward(self, x):
        if self.training and self.noise:
            x = x + self.noise * torch.randn_like(x)
        return F.pixel_shuffle(self.conv(x), 2) + F.interpolate(x, scale_factor=2, mode="nearest")


class RandomPatches(Dataset):
    """HR/LR patches whose crop uses torch's RNG, whose flip uses Python's and whose jitter uses NumPy's."""

    def __init__(self, n: int = 5, size: int = 24, patch: int = 8):
        g = torch.Generator().manual_seed(123)
        self.images = [torch.rand(3, size, size, generator=g) for _ in range(n)]
        self.size, self.patch = size, patch

    def __len__(self):
        return len(self.images)

    def __getitem__(self, i):
        y, x = torch.randint(0, self.size - self.patch + 1, (2,)).tolist()
        hr = self.images[i][:, y:y + self.patch, x:x + self.patch]
        if random.random() < 0.5:
            hr = hr.flip(-1)
        hr = (hr + float(np.random.uniform(-0.01, 0.01))).clamp(0, 1)
        lr = F.avg_pool2d(hr[None], 2)[0]
        return {"lr": lr, "hr": hr, "name": f"img{i}"}


class FullImages(Dataset):
    def __init__(self, n: int = 2, size: int = 24):
        g = torch.Generator().manual_seed(7)
        self.hr = [torch.rand(3, size, size, generator=g) for _ in range(n)]

    def __len__(self):
        return len(self.hr)

    def __getitem__(self, i):
        return {"lr": F.avg_pool2d(self.hr[i][None], 2)[0], "hr": self.hr[i], "name": f"val{i}"}


def _cfg(**kw):
    base = dict(iterations=8, batch_size=2, milestones=(4,), val_every=0, ckpt_every=3, log_every=2, seed=5)
    base.update(kw)
    return TrainConfig(**base)


def _net(seed=0, **kw):
    torch.manual_seed(seed)
    return NoisyNet(**kw)


def _assert_same_weights(a: nn.Module, b: nn.Module):
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    for k in sa:
        assert torch.equal(sa[k], sb[k]), k


def _zero_extra(out, batch):
    return 0.0


class _Crash(Exception):
    pass


# ------------------------------------------------------------------------------------------------ config
def test_train_config_defaults_and_validation():
    cfg = TrainConfig()
    assert (cfg.lr, cfg.betas, cfg.eps, cfg.gamma, cfg.loss) == (1e-4, (0.9, 0.999), 1e-8, 0.5, "l1")
    assert cfg.milestones == (200_000, 400_000, 600_000, 800_000) and cfg.batch_size == 16
    assert TrainConfig(milestones=[3, 5]).milestones == (3, 5)
    with pytest.raises(ValueError, match="iterations"):
        TrainConfig(iterations=0)
    with pytest.raises(ValueError, match="amp"):
        TrainConfig(amp="fp8")
    with pytest.raises(ValueError, match="milestones"):
        TrainConfig(milestones=(5, 3))
    with pytest.raises(ValueError, match="loss"):
        TrainConfig(loss="l3")
    assert TrainConfig.small(seed=3).seed == 3


# ------------------------------------------------------------------------------------------------ data order
def test_infinite_sampler_epochs_are_permutations_and_resume_anywhere():
    s = InfiniteSampler(5, 3, seed=11)
    it = iter(s)
    stream = [next(it) for _ in range(30)]
    idx = [i for i, _ in stream]
    for e in range(6):
        assert sorted(idx[5 * e:5 * e + 5]) == list(range(5))
    assert idx[:5] != idx[5:10] or idx[5:10] != idx[10:15]  # epochs are reshuffled
    assert len({seed for _, seed in stream}) == 30  # every sample position has its own seed
    resumed = iter(InfiniteSampler(5, 3, seed=11, start_iteration=4))
    assert [next(resumed) for _ in range(9)] == stream[12:21]
    other = iter(InfiniteSampler(5, 3, seed=12))
    assert [next(other) for _ in range(5)] != stream[:5]
    g1, g2 = torch.Generator().manual_seed(0), torch.Generator().manual_seed(0)
    assert InfiniteSampler(5, 1, generator=g1).seed == InfiniteSampler(5, 1, generator=g2).seed


def test_infinite_sampler_ranks_split_the_global_batch():
    single = iter(InfiniteSampler(7, 4, seed=3))
    ranks = [iter(InfiniteSampler(7, 2, seed=3, rank=r, world_size=2)) for r in range(2)]
    for _ in range(5):  # iterations
        expect = [next(single) for _ in range(4)]
        got = [next(ranks[0]) for _ in range(2)] + [next(ranks[1]) for _ in range(2)]
        assert got == expect
    with pytest.raises(ValueError, match="empty"):
        InfiniteSampler(0, 2)


def test_seeded_dataset_is_a_function_of_the_seed_and_restores_rngs():
    ds = SeededDataset(RandomPatches())
    torch.manual_seed(99)
    random.seed(99)
    np.random.seed(99)
    before = (torch.get_rng_state(), random.getstate(), np.random.get_state()[1].copy())
    a, b, c = ds[(1, 1234)], ds[(1, 1234)], ds[(1, 4321)]
    assert torch.equal(a["hr"], b["hr"]) and not torch.equal(a["hr"], c["hr"])
    assert torch.equal(torch.get_rng_state(), before[0]) and random.getstate() == before[1]
    assert np.array_equal(np.random.get_state()[1], before[2])

    class WithGenerator(RandomPatches):
        def __init__(self):
            super().__init__()
            self.generator = torch.Generator().manual_seed(0)

        def __getitem__(self, i):
            y = int(torch.randint(0, 10, (1,), generator=self.generator))
            return {"y": y}

    wg = SeededDataset(WithGenerator())
    state = wg.base.generator.get_state()
    assert wg[(0, 5)] == wg[(0, 5)] and torch.equal(wg.base.generator.get_state(), state)


# ------------------------------------------------------------------------------------------------ exact resume
def test_resume_is_bit_exact_on_cpu(tmp_path):
    data, val = RandomPatches(), FullImages()
    ref = _net()
    r_ref = train(ref, data, val, _cfg(val_every=4), tmp_path / "ref", extra_loss=_zero_extra, progress=False)

    # k = 5 steps, stop, then a *new* process-like start: fresh model object with other weights, other global RNG
    part = _net()
    train(part, data, val, _cfg(iterations=5, val_every=4), tmp_path / "run", extra_loss=_zero_extra,
          progress=False)
    torch.manual_seed(1234)
    resumed = _net(seed=77)
    r = train(resumed, data, val, _cfg(val_every=4), tmp_path / "run", extra_loss=_zero_extra, progress=False)
    assert r["resumed_from"] == 5 and r["iteration"] == 8
    _assert_same_weights(resumed, ref)
    # the planned stop at 5 adds a log/validation entry at 5 (and the log window at 6 covers step 6 only);
    # every entry at an iteration both runs logged is identical
    ref_val = {v["iteration"]: v["psnr"] for v in r_ref["history"]["val"]}
    val = {v["iteration"]: v["psnr"] for v in r["history"]["val"]}
    assert list(ref_val) == [4, 8] and list(val) == [4, 5, 8]
    assert val[4] == ref_val[4] and val[8] == ref_val[8]
    ref_train = {h["iteration"]: h for h in r_ref["history"]["train"]}
    train_log = {h["iteration"]: h for h in r["history"]["train"]}
    assert all(train_log[i] == ref_train[i] for i in (2, 4, 8))


def test_resume_after_a_crash_is_bit_exact(tmp_path):
    data = RandomPatches()
    ref = _net()
    train(ref, data, None, _cfg(), tmp_path / "ref", extra_loss=_zero_extra, progress=False)

    def crash_at_7(out, batch):
        if batch["iteration"] == 6:  # the 7th step; last checkpoint was written after step 6
            raise _Crash
        return 0.0

    with pytest.raises(_Crash):
        train(_net(), data, None, _cfg(), tmp_path / "run", extra_loss=crash_at_7, progress=False)
    assert load_checkpoint(tmp_path / "run" / "last.pt")["iteration"] == 6
    resumed = _net(seed=3)
    r = train(resumed, data, None, _cfg(), tmp_path / "run", extra_loss=_zero_extra, progress=False)
    assert r["resumed_from"] == 6
    _assert_same_weights(resumed, ref)
    assert r["history"] == load_checkpoint(tmp_path / "ref" / "last.pt")["history"]


def test_workers_do_not_change_the_result(tmp_path):
    data = RandomPatches()
    a, b = _net(), _net()
    train(a, data, None, _cfg(iterations=4, num_workers=0), tmp_path / "a", progress=False)
    train(b, data, None, _cfg(iterations=4, num_workers=2), tmp_path / "b", progress=False)
    _assert_same_weights(a, b)


def test_resume_false_restarts_and_different_seeds_differ(tmp_path):
    data = RandomPatches()
    a = _net()
    train(a, data, None, _cfg(iterations=3), tmp_path / "a", progress=False)
    b = _net()
    r = train(b, data, None, _cfg(iterations=3), tmp_path / "a", resume=False, progress=False)
    assert r["resumed_from"] is None
    _assert_same_weights(a, b)
    c = _net()
    train(c, data, None, _cfg(iterations=3, seed=6), tmp_path / "c", progress=False)
    assert not torch.equal(a.conv.weight, c.conv.weight)


def test_resume_with_changed_seed_is_refused_unless_allowed(tmp_path):
    from srlib.train import ResumeConfigError

    data = RandomPatches()
    train(_net(), data, None, _cfg(iterations=2), tmp_path, progress=False)
    with pytest.raises(ResumeConfigError, match=r"seed: 5 -> 9"):
        train(_net(), data, None, _cfg(iterations=3, seed=9), tmp_path, progress=False)
    with pytest.warns(UserWarning, match="seed"):
        train(_net(), data, None, _cfg(iterations=3, seed=9), tmp_path, progress=False, allow_config_change=True)


# ------------------------------------------------------------------------------------------------ contents
def test_checkpoint_contents_and_schedule(tmp_path):
    model = build_model("edsr", scale=2, preset="small", n_resblocks=1, n_feats=8)
    r = train(model, RandomPatches(), FullImages(), _cfg(iterations=6, val_every=3, milestones=(2, 4)), tmp_path,
              progress=False)
    ck = load_checkpoint(tmp_path / "last.pt")
    assert ck["format"] == CHECKPOINT_FORMAT and ck["iteration"] == 6
    assert {"model", "optimizer", "scheduler", "scaler", "rng", "sampler", "config", "history", "best"} <= set(ck)
    assert ck["model_name"] == "edsr" and ck["model_config"]["n_feats"] == 8
    assert ck["config"]["milestones"] == (2, 4) and ck["sampler"]["seed"] == 5
    assert len(ck["rng"]) == 1 and set(ck["rng"][0]) == {"torch", "cuda", "python", "numpy"}
    assert ck["scheduler"]["last_epoch"] == 6
    assert ck["optimizer"]["param_groups"][0]["lr"] == pytest.approx(1e-4 * 0.25)
    assert [h["lr"] for h in r["history"]["train"]] == pytest.approx([1e-4 * 0.5, 1e-4 * 0.25, 1e-4 * 0.25])
    assert [v["iteration"] for v in r["history"]["val"]] == [3, 6]
    best = load_checkpoint(tmp_path / "best.pt")
    assert best["iteration"] == r["best_iteration"] and best["best"]["psnr"] == r["best_psnr"]
    assert r["best_psnr"] == max(v["psnr"] for v in r["history"]["val"])
    assert (tmp_path / "history.json").is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["best.pt", "history.json", "last.pt"]


class TupleNet(NoisyNet):
    """Returns (sr, aux) in train mode like ENLCN."""

    def forward(self, x):
        sr = super().forward(x)
        return (sr, [self.conv.weight.square().sum()]) if self.training else sr


def test_extra_loss_receives_the_model_output_and_changes_training(tmp_path):
    seen = []

    def extra(out, batch):
        sr, aux = out
        seen.append((batch["iteration"], tuple(sr.shape), batch["lr"].device.type, tuple(batch["hr"].shape)))
        return 0.5 * torch.stack(aux).mean()

    a = TupleNet(noise=0.0)
    a.load_state_dict(_net(noise=0.0).state_dict())
    train(a, RandomPatches(), FullImages(), _cfg(iterations=3, val_every=3), tmp_path / "a", extra_loss=extra,
          progress=False)
    assert [s[0] for s in seen] == [0, 1, 2]
    assert seen[0][1:] == ((2, 3, 8, 8), "cpu", (2, 3, 8, 8))
    b = TupleNet(noise=0.0)
    b.load_state_dict(_net(noise=0.0).state_dict())
    train(b, RandomPatches(), None, _cfg(iterations=3), tmp_path / "b", progress=False)  # aux ignored
    assert not torch.equal(a.conv.weight, b.conv.weight)


# ------------------------------------------------------------------------------------------------ errors
def test_training_errors_are_clear(tmp_path):
    with pytest.raises(ValueError, match="does not match the HR batch"):
        train(build_model("edsr", scale=3, preset="small"), RandomPatches(), None, _cfg(), tmp_path / "a",
              progress=False)
    with pytest.raises(FloatingPointError, match="iteration 1"):
        train(_net(), RandomPatches(), None, _cfg(log_every=1), tmp_path / "b",
              extra_loss=lambda out, batch: float("nan"), progress=False)
    train(_net(), RandomPatches(), None, _cfg(iterations=1), tmp_path / "c", progress=False)
    from srlib.checkpoint import CheckpointError

    with pytest.raises(CheckpointError, match="last.pt"):  # a run of another network in that folder
        train(build_model("edsr", scale=2, preset="small"), RandomPatches(), None, _cfg(iterations=2),
              tmp_path / "c", progress=False)


def test_amp_on_cpu_warns_and_trains_in_float32(tmp_path):
    a, b = _net(), _net()
    train(a, RandomPatches(), None, _cfg(iterations=2), tmp_path / "a", progress=False)
    with pytest.warns(UserWarning, match="needs CUDA"):
        train(b, RandomPatches(), None, _cfg(iterations=2, amp="bf16"), tmp_path / "b", progress=False)
    _assert_same_weights(a, b)


# ------------------------------------------------------------------------------------------------ the pieces
def _run(tmp_path, model=None, **cfg_kw):
    from srlib.train.distributed import _DistContext
    from srlib.train.loop import _build_run

    return _build_run(model if model is not None else _net(noise=0.0), _cfg(**cfg_kw), tmp_path,
                      torch.device("cpu"), _DistContext())


def _batch(seed=0, n=2):
    g = torch.Generator().manual_seed(seed)
    hr = torch.rand(n, 3, 8, 8, generator=g)
    return {"lr": F.avg_pool2d(hr, 2), "hr": hr, "name": ["a"] * n}


def test_build_run_sets_up_adam_step_decay_and_the_loss(tmp_path):
    run = _run(tmp_path, lr=3e-4, betas=(0.8, 0.9), eps=1e-6, milestones=(2, 5), gamma=0.1, loss="mse")
    group = run.optimizer.param_groups[0]
    assert isinstance(run.optimizer, torch.optim.Adam) and run.step_module is run.model
    assert (group["lr"], group["betas"], group["eps"]) == (3e-4, (0.8, 0.9), 1e-6)
    assert run.scheduler.milestones == {2: 1, 5: 1} and run.scheduler.gamma == 0.1
    assert isinstance(run.loss_fn, nn.MSELoss) and not run.use_amp and not run.scaler.is_enabled()
    assert run.params == list(run.model.parameters()) and run.history == {"train": [], "val": []}
    assert (run.start, run.resumed_from, run.best_iter, run.best_psnr) == (0, None, None, -float("inf"))


def test_optimisation_step_is_one_adam_step_on_the_l1_loss(tmp_path):
    from srlib.train.loop import _optimisation_step

    run = _run(tmp_path, milestones=(1,))
    twin = _net(noise=0.0)
    twin.load_state_dict(run.model.state_dict())
    opt = torch.optim.Adam(twin.parameters(), lr=1e-4, betas=(0.9, 0.999), eps=1e-8)
    batch = _batch()
    loss = _optimisation_step(run, batch, 0, None)
    ref = F.l1_loss(twin(batch["lr"]), batch["hr"])
    ref.backward()
    opt.step()
    assert loss.dtype == torch.float32 and loss.dim() == 0 and not loss.requires_grad
    assert torch.equal(loss, ref.detach())
    _assert_same_weights(run.model, twin)
    assert run.lr == pytest.approx(0.5e-4)  # the scheduler stepped past the milestone at 1
    seen = []
    _optimisation_step(run, batch, 7, lambda out, b: seen.append(b["iteration"]) or 0.0)
    assert seen == [7]
    with pytest.raises(ValueError, match=r"model output \(2, 3, 8, 8\) does not match the HR batch \(2, 3, 4, 4\)"):
        _optimisation_step(run, {"lr": batch["lr"], "hr": batch["lr"]}, 0, None)


def test_optimisation_step_clips_the_gradient(tmp_path):
    from srlib.train.loop import _optimisation_step

    clipped, free = _run(tmp_path, grad_clip=1e-6), _run(tmp_path)
    _optimisation_step(clipped, _batch(), 0, None)
    _optimisation_step(free, _batch(), 0, None)
    assert float(torch.nn.utils.get_total_norm([p.grad for p in free.params])) > 1e-3
    assert float(torch.nn.utils.get_total_norm([p.grad for p in clipped.params])) <= 1e-6 * 1.0001


def test_log_records_the_mean_loss_and_the_learning_rate(tmp_path):
    from srlib.train.loop import _log

    class Bar:
        def set_postfix(self, **kw):
            self.kw = kw

    run, bar = _run(tmp_path), Bar()
    assert _log(run, 4, torch.tensor(3.0), 2, bar) == 1.5
    assert run.history["train"] == [{"iteration": 4, "loss": 1.5, "lr": 1e-4}]
    assert bar.kw == {"loss": "1.5000", "lr": "1.0e-04"}
    with pytest.raises(FloatingPointError, match="non-finite training loss nan at iteration 6; last checkpoint: none"):
        _log(run, 6, torch.tensor(float("nan")), 1)


def test_validation_records_psnr_and_the_best(tmp_path):
    from srlib.train.loop import _validate, _validation

    run = _run(tmp_path)
    run.model.eval()
    val = FullImages()
    psnr = _validate(run.model, val, 2, run.cfg, run.device)
    assert _validation(run, val, 2, 3) is True and run.model.training
    assert run.history["val"] == [{"iteration": 3, "psnr": psnr}] and (run.best_psnr, run.best_iter) == (psnr, 3)
    assert _validation(run, val, 2, 6) is False  # same weights, same PSNR: not a new best
    assert run.best_iter == 3 and [v["iteration"] for v in run.history["val"]] == [3, 6]


def test_save_checkpoint_then_resume_restores_the_run(tmp_path):
    from srlib.train.loop import _batches, _optimisation_step, _resume, _save_checkpoint

    run = _run(tmp_path, milestones=(1,))
    _batches(run, RandomPatches())
    _optimisation_step(run, _batch(), 0, None)
    run.history["train"].append({"iteration": 1, "loss": 0.5, "lr": run.lr})
    run.best_psnr, run.best_iter = 20.0, 1
    torch.manual_seed(99)
    _save_checkpoint(run, 1, [tmp_path / "last.pt"])
    expected_draw = torch.rand(3)
    assert (tmp_path / "history.json").is_file()

    other = _run(tmp_path, model=_net(seed=5, noise=0.0), milestones=(1,))
    torch.manual_seed(0)
    _resume(other)
    assert torch.equal(torch.rand(3), expected_draw)  # the RNG state continues where the checkpoint was taken
    _assert_same_weights(other.model, run.model)
    assert other.optimizer.state_dict()["state"][0]["step"] == 1 and other.lr == run.lr
    assert (other.start, other.resumed_from, other.best_psnr, other.best_iter) == (1, 1, 20.0, 1)
    assert other.history == run.history


def test_due_marks_periods_and_the_last_iteration():
    from srlib.train.loop import _due

    assert [n for n in range(1, 11) if _due(3, n, 10)] == [3, 6, 9, 10]
    assert [n for n in range(1, 11) if _due(0, n, 10)] == [10]


# ------------------------------------------------------------------------------------------------ TensorBoard
def test_tensorboard_logs_loss_psnr_lr_and_an_sr_crop(tmp_path):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    plain, logged = _net(), _net()
    train(plain, RandomPatches(), FullImages(), _cfg(val_every=4), tmp_path / "a", progress=False)
    r = train(logged, RandomPatches(), FullImages(), _cfg(val_every=4, tensorboard=True), tmp_path / "b",
              progress=False)
    _assert_same_weights(plain, logged)  # logging does not change the training
    events = EventAccumulator(str(tmp_path / "b" / "tensorboard"), size_guidance={"images": 0})
    events.Reload()
    assert set(events.Tags()["scalars"]) == {"train/loss", "train/lr", "val/psnr"}
    loss = [(e.step, e.value) for e in events.Scalars("train/loss")]
    assert loss == [(h["iteration"], pytest.approx(h["loss"], rel=1e-6)) for h in r["history"]["train"]]
    assert [e.value for e in events.Scalars("train/lr")] == pytest.approx([h["lr"] for h in r["history"]["train"]])
    assert [(e.step, pytest.approx(e.value, rel=1e-6)) for e in events.Scalars("val/psnr")] == [
        (v["iteration"], v["psnr"]) for v in r["history"]["val"]]
    images = events.Images("val/sr")
    assert [e.step for e in images] == [4, 8] and (images[0].height, images[0].width) == (24, 24)


def test_tensorboard_missing_is_a_clear_error(tmp_path, monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "tensorboard" else real(name, *a))
    with pytest.raises(ImportError, match=r"needs the tensorboard package, which is not installed: pip install"):
        train(_net(), RandomPatches(), None, _cfg(tensorboard=True), tmp_path, progress=False)
    assert not tmp_path.joinpath("last.pt").exists()


# ------------------------------------------------------------------------------------------------ DDP (gloo)
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _ddp_worker(rank: int, world: int, port: int, root: str) -> None:
    torch.set_num_threads(1)
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), WORLD_SIZE=str(world), RANK=str(rank),
                      LOCAL_RANK=str(rank))
    model = _net(noise=0.0)
    result = train(model, RandomPatches(), FullImages(), _cfg(iterations=3, val_every=3, batch_size=2),
                   os.path.join(root, f"rank{rank}"), progress=False)
    torch.save({"model": model.state_dict(), "result": result}, os.path.join(root, f"final{rank}.pt"))


@pytest.mark.slow
def test_ddp_on_cpu_equals_a_single_process_with_the_global_batch(tmp_path):
    import torch.multiprocessing as mp

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        mp.spawn(_ddp_worker, args=(2, _free_port(), str(tmp_path)), nprocs=2, join=True)
    r0 = torch.load(tmp_path / "final0.pt", weights_only=True)
    r1 = torch.load(tmp_path / "final1.pt", weights_only=True)
    for k in r0["model"]:
        assert torch.equal(r0["model"][k], r1["model"][k]), k  # replicas stay identical
    assert (tmp_path / "rank0" / "last.pt").is_file()
    assert not (tmp_path / "rank1").exists()  # only rank 0 writes
    assert r0["result"]["history"]["val"] and not r1["result"]["history"]["val"]

    single = _net(noise=0.0)
    train(single, RandomPatches(), None, _cfg(iterations=3, batch_size=4), tmp_path / "single", progress=False)
    for k, v in single.state_dict().items():
        torch.testing.assert_close(r0["model"][k], v, rtol=0, atol=1e-6)
    ck = load_checkpoint(tmp_path / "rank0" / "last.pt")
    assert len(ck["rng"]) == 2 and ck["sampler"]["world_size"] == 2


# ------------------------------------------------------------------------------------------------ CLI
def _needs_data_api():
    sdata = pytest.importorskip("srlib.data")
    for name in ("HRFolderDataset", "BenchmarkDataset", "SampleImagesDataset", "available_benchmarks",
                 "default_train_folder"):
        if not hasattr(sdata, name):
            pytest.skip(f"srlib.data.{name} not available yet")
    return sdata


def _write_images(folder, n=3, size=40):
    from PIL import Image

    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for i in range(n):
        Image.fromarray(rng.integers(0, 256, (size, size + 4, 3), dtype=np.uint8)).save(folder / f"im{i}.png")


def _cli(out, *extra):
    return ["--model", "edsr", "--preset", "small", "--scale", "2", "--model-arg", "n_feats=8",
            "--model-arg", "n_resblocks=1", "--batch-size", "2", "--patch-size", "16", "--ckpt-every", "2",
            "--log-every", "1", "--device", "cpu", "--no-progress", "--out", str(out), *extra]


def test_cli_trains_and_resumes(tmp_path, capsys):
    _needs_data_api()
    _write_images(tmp_path / "hr")
    out = tmp_path / "run"
    args = _cli(out, "--train-dir", str(tmp_path / "hr"), "--val-set", "none")
    assert main([*args, "--iterations", "3"]) == 0
    ck = load_checkpoint(out / "last.pt")
    assert ck["iteration"] == 3 and ck["model_config"]["n_feats"] == 8 and ck["config"]["patch_size"] == 16
    with pytest.raises(SystemExit) as info:
        main([*args, "--iterations", "5"])
    assert info.value.code == 2 and "--resume" in capsys.readouterr().err
    assert main([*args, "--iterations", "5", "--resume"]) == 0
    ck = load_checkpoint(out / "last.pt")
    assert ck["iteration"] == 5 and [h["iteration"] for h in ck["history"]["train"]] == [1, 2, 3, 4, 5]
    assert "training on 3 images" in capsys.readouterr().out


def test_cli_errors(tmp_path, capsys):
    _needs_data_api()
    cases = [
        (_cli(tmp_path / "o", "--train-dir", str(tmp_path / "nowhere"), "--iterations", "1"), "nowhere"),
        (["--model", "nope", "--out", str(tmp_path / "o")], "unknown model"),
        (["--model", "edsr", "--model-arg", "n_feets=3", "--out", str(tmp_path / "o")], "n_feets"),
        (["--model", "edsr", "--betas", "0.9", "--out", str(tmp_path / "o")], "--betas"),
    ]
    for argv, match in cases:  # one line on stderr, status 2, no traceback (issue 22)
        with pytest.raises(SystemExit) as info:
            main(argv)
        err = capsys.readouterr().err
        assert info.value.code == 2 and match in err and len(err.strip().splitlines()) == 1, (argv, err)
    with pytest.raises(SystemExit):
        main(["--model", "edsr"])  # --out is required
    assert not (tmp_path / "o").exists()  # nothing half-written


def test_cli_passes_adam_settings(tmp_path):
    _needs_data_api()
    _write_images(tmp_path / "hr")
    out = tmp_path / "run"
    args = _cli(out, "--train-dir", str(tmp_path / "hr"), "--val-set", "none", "--iterations", "1",
                "--betas", "0.5,0.99", "--eps", "1e-7", "--weight-decay", "0.01")
    assert main(args) == 0
    ck = load_checkpoint(out / "last.pt")
    assert tuple(ck["config"]["betas"]) == (0.5, 0.99) and ck["config"]["eps"] == 1e-7
    assert ck["config"]["weight_decay"] == 0.01
    group = ck["optimizer"]["param_groups"][0]
    assert tuple(group["betas"]) == (0.5, 0.99) and group["eps"] == 1e-7 and group["weight_decay"] == 0.01


@pytest.mark.data
def test_cli_validates_on_set5(tmp_path, data_root, monkeypatch, capsys):
    _needs_data_api()
    monkeypatch.setenv("SRLIB_DATA", str(data_root))
    _write_images(tmp_path / "hr")
    out = tmp_path / "run"
    main(_cli(out, "--train-dir", str(tmp_path / "hr"), "--val-set", "Set5", "--iterations", "2"))
    ck = load_checkpoint(out / "best.pt")
    assert len(ck["history"]["val"]) == 1 and 10 < ck["history"]["val"][0]["psnr"] < 40
    with pytest.raises(SystemExit) as info:  # a usage error: one line on stderr, status 2 (issue 22)
        main(_cli(tmp_path / "o2", "--train-dir", str(tmp_path / "hr"), "--val-set", "Set99", "--iterations", "1"))
    assert info.value.code == 2 and "Set99" in capsys.readouterr().err


def test_cli_falls_back_to_sample_images_without_data(tmp_path, monkeypatch, capsys):
    _needs_data_api()
    monkeypatch.setenv("SRLIB_DATA", str(tmp_path / "empty"))
    out = tmp_path / "run"
    main(_cli(out, "--iterations", "1", "--val-set", "none"))
    assert load_checkpoint(out / "last.pt")["iteration"] == 1
    assert "bundled sample images" in capsys.readouterr().out


def test_paper_command_is_a_valid_cli_line_with_the_papers_schedule():
    import shlex

    from srlib.train import PAPER_SCHEDULES, paper_command
    from srlib.train.cli import _parser

    assert paper_command("nlsn") == (
        "python -m srlib.train --model nlsn --scale 2 --preset paper --train-dir data/DIV2K/DIV2K_train_HR"
        " --val-set Set5 --batch-size 16 --patch-size 96 --lr 1e-4 --iterations 1000000"
        " --milestones 200000,400000,600000,800000 --val-every 1000 --ckpt-every 1000 --out runs/nlsn_x2")
    for model, sched in PAPER_SCHEDULES.items():
        for scale in (2, 3, 4):
            argv = shlex.split(paper_command(model, scale))
            assert argv[:3] == ["python", "-m", "srlib.train"]
            args = _parser().parse_args(argv[3:])
            assert (args.model, args.scale, args.preset, args.patch_size) == (model, scale, "paper", 48 * scale)
            assert args.iterations == sched["iterations"] and args.val_chop == (model == "hspan")
            assert tuple(int(m) for m in args.milestones.split(",")) == sched["milestones"]
            assert args.out == f"runs/{model}_x{scale}"
    assert PAPER_SCHEDULES["dlsn"]["iterations"] == 1_500_000  # DLSN Sec. 4.2: 1500 epochs
    with pytest.raises(ValueError, match="known"):
        paper_command("edsr")
    with pytest.raises(ValueError, match="scale"):
        paper_command("nlsn", 8)
