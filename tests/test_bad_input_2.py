"""Bad input and faults, second round (issue 22): locked run folders, stale temporaries, honest seeds, checked
metrics, images, weights and command line. Every case asserts the exception (or exit status) and that the
message names the offending argument, field, file or process; cases that fail check that nothing is left
behind. The run lock is tested with real processes (``subprocess``), not threads."""

from __future__ import annotations

import json
import os
import platform
import signal
import struct
import subprocess
import sys
import time
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import srlib.data.io as sio
from srlib.checkpoint import CheckpointError, load_checkpoint, load_weights
from srlib.data.io import ImageModeError, ImageReadError, ImageTooLargeError, load_image, save_image
from srlib.inference import evaluate, forward_chop, super_resolve
from srlib.metrics import calc_psnr_ssim, psnr, ssim
from srlib.models import build_model
from srlib.train import LOCK_NAME, ResumeConfigError, RunLockedError, TrainConfig, main, train

REPO = Path(__file__).resolve().parents[1]


# ------------------------------------------------------------------------------------------- helpers
def _files(root: Path) -> list[str]:
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*"))


def _write_images(folder: Path, n: int = 3, size: int = 40) -> Path:
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for i in range(n):
        Image.fromarray(rng.integers(0, 256, (size, size + 4, 3), dtype=np.uint8)).save(folder / f"im{i}.png")
    return folder


def _cli(out, *extra) -> list[str]:
    return ["--model", "edsr", "--preset", "small", "--scale", "2", "--model-arg", "n_feats=8",
            "--model-arg", "n_resblocks=1", "--batch-size", "2", "--patch-size", "16", "--ckpt-every", "2",
            "--log-every", "1", "--device", "cpu", "--no-progress", "--val-set", "none", "--out", str(out), *extra]


def _usage_error(capsys, argv, *needles) -> str:
    """``main(argv)`` exits with status 2 and one line on stderr holding every needle (no traceback)."""
    with pytest.raises(SystemExit) as info:
        main(argv)
    err = capsys.readouterr().err
    assert info.value.code == 2, err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
    for needle in needles:
        assert needle in err, (needle, err)
    return err


def _tiny_net(seed: int = 0):
    torch.manual_seed(seed)
    return build_model("edsr", scale=2, preset="small", n_resblocks=1, n_feats=8)


class _Patches(torch.utils.data.Dataset):
    def __init__(self, n=4):
        g = torch.Generator().manual_seed(1)
        self.hr = [torch.rand(3, 16, 16, generator=g) for _ in range(n)]

    def __len__(self):
        return len(self.hr)

    def __getitem__(self, i):
        hr = self.hr[i]
        return {"lr": torch.nn.functional.avg_pool2d(hr[None], 2)[0], "hr": hr, "name": str(i)}


def _cfg(**kw):
    base = dict(iterations=2, batch_size=2, milestones=(), val_every=0, ckpt_every=1, log_every=1, seed=3)
    base.update(kw)
    return TrainConfig(**base)


# ------------------------------------------------------------------ 1. the run folder lock (real processes)
def _env():
    return {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}


def test_run_lock_refuses_a_second_live_writer_and_takes_over_a_dead_ones(tmp_path, capsys):
    hr = _write_images(tmp_path / "hr")
    out = tmp_path / "run"
    first = subprocess.Popen(
        [sys.executable, "-m", "srlib.train", *_cli(out, "--train-dir", str(hr), "--iterations", "10000000",
                                                     "--ckpt-every", "0")],
        env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
    try:
        lock = out / LOCK_NAME
        deadline = time.monotonic() + 180
        while not (lock.is_file() and lock.read_text().strip()):
            assert first.poll() is None, first.stderr.read().decode()
            assert time.monotonic() < deadline, "the first training never took the lock"
            time.sleep(0.2)
        holder = json.loads(lock.read_text())
        assert holder["pid"] == first.pid and holder["host"] == platform.node()
        # a second process, resuming into the same folder while the first lives: refused, naming folder and PID
        second = subprocess.run(
            [sys.executable, "-m", "srlib.train", *_cli(out, "--train-dir", str(hr), "--iterations", "3",
                                                         "--resume")],
            env=_env(), capture_output=True, text=True, timeout=300)
        assert second.returncode == 2, second.stderr
        err = second.stderr.strip()
        assert len(err.splitlines()) == 1 and "Traceback" not in err, err
        assert f"run folder {out} is in use" in err and f"PID {first.pid} on host {platform.node()}" in err
        assert first.poll() is None  # the first run is untouched
    finally:
        if first.poll() is None:
            os.killpg(first.pid, signal.SIGKILL)  # kill -9: its lock file stays behind, stale
        first.wait()
        first.stderr.close()
    assert (out / LOCK_NAME).is_file() and not (out / "last.pt").exists()
    # a new run takes the stale lock over, says so, and releases it on exit
    assert main(_cli(out, "--train-dir", str(hr), "--iterations", "2")) == 0
    err = capsys.readouterr().err
    assert f"took over the stale lock of {out} left by PID {first.pid}" in err and "no longer running" in err
    assert _files(out) == ["history.json", "last.pt"]  # lock released (removed) on exit


def test_run_lock_in_the_api_names_the_holder_and_is_released_after_a_failure(tmp_path):
    out = tmp_path / "run"
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time; from pathlib import Path; from srlib.train.runlock import _RunLock; "
         "_RunLock(Path(sys.argv[1])).acquire(); print('locked', flush=True); time.sleep(600)", str(out)],
        env=_env(), stdout=subprocess.PIPE, text=True, start_new_session=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(RunLockedError, match=rf"in use by another training \(PID {holder.pid} on host "):
            train(_tiny_net(), _Patches(), None, _cfg(), out, progress=False)
        assert _files(out) == [LOCK_NAME]  # nothing of ours written
    finally:
        os.killpg(holder.pid, signal.SIGKILL)
        holder.wait()
        holder.stdout.close()
    train(_tiny_net(), _Patches(), None, _cfg(), out, progress=False)
    # a failing resume (changed config) leaves the folder as it was, lock released
    before = {p: (out / p).read_bytes() for p in _files(out)}
    with pytest.raises(ResumeConfigError):
        train(_tiny_net(), _Patches(), None, _cfg(iterations=3, lr=1e-3), out, progress=False)
    assert {p: (out / p).read_bytes() for p in _files(out)} == before
    # a failure in a fresh folder leaves no folder behind
    with pytest.raises(ResumeConfigError):
        (tmp_path / "fresh").mkdir()
        (tmp_path / "fresh" / "last.pt").write_bytes((out / "last.pt").read_bytes())
        train(_tiny_net(), _Patches(), None, _cfg(seed=4), tmp_path / "fresh", progress=False)
    assert _files(tmp_path / "fresh") == ["last.pt"]
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="device 'cuda': CUDA is not available"):
            train(_tiny_net(), _Patches(), None, _cfg(), tmp_path / "new", progress=False, device="cuda")
        assert not (tmp_path / "new").exists()


# ------------------------------------------------------------------ 2. stale temporaries of a killed write
def test_stale_checkpoint_temporaries_are_removed_at_start_with_their_size(tmp_path, capsys):
    out = tmp_path / "run"
    train(_tiny_net(), _Patches(), None, _cfg(), out, progress=False)
    (out / ".last.pt.k3j2h1.tmp").write_bytes(b"x" * 1000)
    (out / ".history.json.a9b8.tmp").write_bytes(b"y" * 24)
    (out / ".best.pt.zz.tmp").write_bytes(b"")
    (out / "notes.tmp").write_bytes(b"mine")  # not ours: kept
    capsys.readouterr()
    train(_tiny_net(), _Patches(), None, _cfg(iterations=3), out, progress=False)
    err = capsys.readouterr().err
    assert f"removed 3 stale temporary file(s) of an interrupted checkpoint write from {out} (1,024 bytes)" in err
    assert _files(out) == ["history.json", "last.pt", "notes.tmp"]
    assert load_checkpoint(out / "last.pt")["iteration"] == 3


# ------------------------------------------------------------------ 3. --seed fixes the initialisation
def test_same_seed_gives_bitwise_equal_runs_from_scratch(tmp_path):
    hr = _write_images(tmp_path / "hr")

    def run(name, seed):
        torch.rand(7)  # whatever ran before must not matter
        assert main(_cli(tmp_path / name, "--train-dir", str(hr), "--iterations", "1", "--seed", str(seed))) == 0
        return load_checkpoint(tmp_path / name / "last.pt")["model"]

    a, b, c = run("a", 11), run("b", 11), run("c", 12)
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    assert not all(torch.equal(a[k], c[k]) for k in a)


# ------------------------------------------------------------------ 4. psnr / ssim check their inputs
@pytest.mark.parametrize("metric", [psnr, ssim, lambda *a, **k: calc_psnr_ssim(*a, **k)])
def test_metrics_refuse_uint8_0_255_floats_and_nan(metric):
    g = torch.Generator().manual_seed(0)
    hr = torch.rand(3, 24, 24, generator=g)
    sr = (hr + 0.05 * torch.rand(3, 24, 24, generator=g)).clamp(0, 1)
    with pytest.raises(ValueError, match=r"sr must be a floating point image .*torch\.uint8"):
        metric((sr * 255).round().to(torch.uint8), hr, 2)
    with pytest.raises(ValueError, match=r"hr has values in \[0\.\d+, 25\d\.?\d*\], outside \[0, 1\].*0-255"):
        metric(sr, hr * 255, 2)
    bad = sr.clone()
    bad[0, 3, 3] = float("nan")
    with pytest.raises(ValueError, match=r"sr has 1 non-finite values"):
        metric(bad, hr, 2)
    with pytest.raises(ValueError, match=r"rgb_range must be a positive number"):
        metric(sr, hr, 2, rgb_range=0)


def test_metrics_on_the_0_255_scale_need_rgb_range_255():
    g = torch.Generator().manual_seed(1)
    hr = torch.rand(3, 24, 24, generator=g)
    sr = (hr + 0.05 * torch.rand(3, 24, 24, generator=g)).clamp(0, 1)
    assert psnr(sr * 255, hr * 255, 2, rgb_range=255) == pytest.approx(psnr(sr, hr, 2), abs=1e-9)


# ------------------------------------------------------------------ 5. resume with changed settings
def test_resume_with_a_changed_patch_size_or_model_arg_is_refused_unless_overridden(tmp_path, capsys):
    hr = _write_images(tmp_path / "hr")
    out = tmp_path / "run"
    base = _cli(out, "--train-dir", str(hr))
    assert main([*base, "--iterations", "2"]) == 0
    saved = (out / "last.pt").read_bytes()
    capsys.readouterr()
    _usage_error(capsys, [*base, "--iterations", "3", "--resume", "--patch-size", "20"],
                 "patch_size: 16 -> 20", "--allow-config-change")
    _usage_error(capsys, [*base, "--iterations", "3", "--resume", "--model-arg", "res_scale=0.5"],
                 "model res_scale: 1.0 -> 0.5")
    assert (out / "last.pt").read_bytes() == saved and _files(out) == ["history.json", "last.pt"]
    with pytest.warns(UserWarning, match="patch_size: 16 -> 20"):
        assert main([*base, "--iterations", "3", "--resume", "--patch-size", "20", "--allow-config-change"]) == 0
    assert "--allow-config-change" in capsys.readouterr().err  # the override is printed
    assert load_checkpoint(out / "last.pt")["iteration"] == 3


# ------------------------------------------------------------------ 6. TrainConfig validates every field
@pytest.mark.parametrize("field, value", [
    ("gamma", -1), ("gamma", 0), ("iterations", 2.7), ("iterations", True), ("batch_size", 0), ("patch_size", 9.0),
    ("lr", 0.0), ("lr", float("nan")), ("eps", -1e-8), ("weight_decay", -0.1), ("betas", (0.9, 1.0)),
    ("betas", (0.9,)), ("milestones", (1.5,)), ("milestones", (0,)), ("val_every", -1), ("ckpt_every", 0.5),
    ("log_every", -2), ("seed", -1), ("seed", 1.5), ("num_workers", -1), ("grad_clip", 0.0), ("scale", 2.0),
    ("loss", "l3"), ("amp", "fp8"), ("val_chop", 1), ("tensorboard", "yes"),
])
def test_train_config_names_every_bad_field(field, value):
    with pytest.raises(ValueError, match=rf"TrainConfig\.{field}"):
        TrainConfig(**{field: value})


# ------------------------------------------------------------------ 7. load_image
def test_load_image_applies_the_exif_orientation(tmp_path):
    rng = np.random.default_rng(2)
    a = rng.integers(0, 256, (4, 6, 3), dtype=np.uint8)  # H=4, W=6
    plain = tmp_path / "plain.png"
    Image.fromarray(a).save(plain)
    for orientation, expect in [(6, np.rot90(a, -1)), (8, np.rot90(a, 1)), (3, a[::-1, ::-1]), (2, a[:, ::-1])]:
        exif = Image.Exif()
        exif[0x0112] = orientation
        path = tmp_path / f"o{orientation}.png"
        Image.fromarray(a).save(path, exif=exif)
        got = (load_image(path) * 255).round().to(torch.uint8).permute(1, 2, 0).numpy()
        assert np.array_equal(got, expect), orientation
    assert np.array_equal((load_image(plain) * 255).round().byte().permute(1, 2, 0).numpy(), a)


def test_load_image_refuses_multi_frame_files_naming_the_frame_count(tmp_path):
    path = tmp_path / "anim.gif"
    frames = [Image.new("RGB", (8, 8), c) for c in ((255, 0, 0), (0, 255, 0), (0, 0, 255))]
    frames[0].save(path, save_all=True, append_images=frames[1:], duration=50)
    with pytest.raises(ImageModeError, match=rf"{path.name}: the file holds 3 frames"):
        load_image(path)


def test_load_image_refuses_images_above_the_pixel_limit_from_the_header(tmp_path, monkeypatch):
    big = tmp_path / "big.png"
    Image.new("1", (10000, 9000)).save(big)  # a small file that decodes to 90 megapixels
    assert big.stat().st_size < 2_000_000
    with pytest.raises(ImageTooLargeError, match=r"big\.png: 10000 x 9000 = 90,000,000 pixels is more than the "
                                                   r"limit of 50,000,000.*MAX_PIXELS"):
        load_image(big, allow_gray=True)
    small = tmp_path / "small.png"
    Image.new("RGB", (20, 10)).save(small)
    monkeypatch.setattr(sio, "MAX_PIXELS", 199)
    with pytest.raises(ImageTooLargeError, match="200 pixels"):
        load_image(small)
    monkeypatch.setattr(sio, "MAX_PIXELS", 200)
    assert load_image(small).shape == (3, 10, 20)


def test_pixel_limit_can_be_set_by_environment_variable(tmp_path):
    path = tmp_path / "small.png"
    Image.new("RGB", (20, 10)).save(path)
    code = ("import sys; from srlib.data.io import load_image, MAX_PIXELS; assert MAX_PIXELS == 150\n"
            "try:\n    load_image(sys.argv[1])\nexcept ValueError as e:\n    print(type(e).__name__)")
    r = subprocess.run([sys.executable, "-c", code, str(path)], env={**_env(), "SRLIB_MAX_PIXELS": "150"},
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and r.stdout.strip() == "ImageTooLargeError", r.stderr


def _png_header(width: int, height: int) -> bytes:
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
            + chunk(b"IEND", b""))


def test_decompression_bomb_header_is_a_clear_image_error(tmp_path, monkeypatch):
    bomb = tmp_path / "bomb.png"
    bomb.write_bytes(_png_header(30000, 30000))
    monkeypatch.setattr(sio, "MAX_PIXELS", None)  # Pillow's own limit is what answers here
    with pytest.raises(ImageTooLargeError, match=r"bomb\.png: refused as a decompression bomb"):
        load_image(bomb)
    monkeypatch.setattr(sio, "MAX_PIXELS", 50_000_000)
    with pytest.raises(ImageTooLargeError, match=r"bomb\.png"):
        load_image(bomb)


def test_symlink_loop_is_not_reported_as_missing(tmp_path):
    loop = tmp_path / "loop.png"
    os.symlink(loop.name, loop)
    with pytest.raises(ImageReadError, match=r"loop\.png: cannot open: symbolic link loop"):
        load_image(loop)
    broken = tmp_path / "broken.png"
    os.symlink("nowhere.png", broken)
    with pytest.raises(FileNotFoundError, match=r"broken\.png \(a broken symbolic link\)"):
        load_image(broken)


# ------------------------------------------------------------------ 8. save_image and the umask
@pytest.mark.parametrize("umask, mode", [(0o022, 0o644), (0o027, 0o640), (0o002, 0o664)])
def test_save_image_honours_the_umask(tmp_path, umask, mode):
    old = os.umask(umask)
    try:
        path = save_image(torch.rand(3, 5, 5), tmp_path / "a.png")
    finally:
        os.umask(old)
    assert path.stat().st_mode & 0o777 == mode
    assert _files(tmp_path) == ["a.png"]


# ------------------------------------------------------------------ 9. load_weights: dtype and finiteness
def test_load_weights_refuses_integer_and_nan_tensors_by_name(tmp_path):
    net = _tiny_net()
    before = {k: v.clone() for k, v in net.state_dict().items()}
    key = "head.0.weight" if "head.0.weight" in before else next(k for k, v in before.items() if v.dim() == 4)
    as_int = {k: (v.to(torch.int32) if k == key else v) for k, v in before.items()}
    with pytest.raises(CheckpointError, match=rf"wrong kind.*{key}: file torch\.int32 vs model torch\.float32"):
        load_weights(net, as_int)
    with_nan = {k: v.clone() for k, v in before.items()}
    with_nan[key].view(-1)[:3] = float("nan")
    with pytest.raises(CheckpointError, match=rf"NaN/Inf values: {key} \(3 of "):
        load_weights(net, with_nan)
    torch.save({"model": with_nan}, tmp_path / "nan.pt")
    with pytest.raises(CheckpointError, match=r"nan\.pt"):
        load_weights(net, tmp_path / "nan.pt")
    for k, v in net.state_dict().items():  # all or nothing: the model is unchanged
        assert torch.equal(v, before[k]), k


# ------------------------------------------------------------------ 10. the explorer's picture
@pytest.mark.parametrize("make, match", [
    (lambda x: x.index_put_((torch.tensor([0]),), torch.tensor(float("nan"))), r"non-finite"),
    (lambda x: x * 255, r"a 0-255 image\? divide it by 255"),
    (lambda x: x * 0.45 + 1.0, r"% of its values lie outside"),
])
def test_explorer_refuses_nan_and_0_255_pictures(make, match):
    pytest.importorskip("ipywidgets")
    from srlib.viz.explorer import AttentionExplorer

    image = make(torch.rand(3, 16, 16))
    with pytest.raises(ValueError, match=rf"AttentionExplorer image.*{match}|{match}"):
        AttentionExplorer(image, mechanisms=("NLA",))


# ------------------------------------------------------------------ 11. super_resolve and friends
@pytest.fixture(scope="module")
def net():
    return _tiny_net().eval()


@pytest.mark.parametrize("lo, hi", [(-0.45, 0.0), (1.0, 1.45)])
def test_super_resolve_checks_the_bulk_of_the_values(net, lo, hi):
    x = lo + (hi - lo) * torch.rand(3, 12, 12)
    with pytest.raises(ValueError, match=r"super_resolve: lr expects values in \[0, 1\].*% of its values lie outside"):
        super_resolve(net, x)


def test_super_resolve_accepts_bicubic_overshoot(net):
    from srlib.data import imresize, load_sample

    lr = imresize(load_sample("astronaut"), scale=1 / 4)[:, :40, :40]
    assert float(lr.min()) < 0 or float(lr.max()) > 1  # a real overshoot
    assert super_resolve(net, lr).shape == (3, 80, 80)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float64])
def test_super_resolve_converts_other_float_dtypes_with_a_note(net, dtype):
    x = torch.rand(3, 10, 10).to(dtype)
    ref = super_resolve(net, x.float())  # what the float32 network computes from the same values
    with pytest.warns(UserWarning, match=rf"lr is {dtype} but EDSR computes in torch\.float32"):
        y = super_resolve(net, x)
    assert y.dtype == dtype and torch.equal(y, ref.to(dtype))


def test_super_resolve_names_numpy_and_meta_inputs(net):
    with pytest.raises(ValueError, match=r"lr must be a torch\.Tensor .* got ndarray \(a NumPy array"):
        super_resolve(net, np.zeros((12, 12, 3), dtype=np.uint8))
    with pytest.raises(ValueError, match=r"lr is a meta tensor"):
        super_resolve(net, torch.empty(3, 12, 12, device="meta"))


@pytest.mark.parametrize("kw, name", [(dict(tile=2.5), "tile"), (dict(overlap=-1), "overlap"),
                                      (dict(tile_batch=0), "tile_batch"), (dict(scale=2.0), "scale")])
def test_forward_chop_names_its_bad_argument(net, kw, name):
    with pytest.raises(ValueError, match=rf"forward_chop\.{name} must be an integer"):
        forward_chop(net, torch.rand(1, 3, 12, 12), **kw)


def test_evaluate_names_an_item_without_hr(net):
    items = [{"lr": torch.rand(3, 12, 12), "name": "a"}]
    with pytest.raises(ValueError, match=r"item 0 .*'lr' and 'hr'.*\['lr', 'name'\]"):
        evaluate(net, items, 2)


# ------------------------------------------------------------------ 12. the command line
def test_cli_usage_errors_are_one_line_with_status_2_and_leave_nothing(tmp_path, capsys):
    hr = _write_images(tmp_path / "hr")
    a_file = tmp_path / "a_file"
    a_file.write_text("mine")
    before = _files(tmp_path)
    out = tmp_path / "o"
    cases = [
        (_cli(out, "--milestones", "a,b"), ["--milestones", "'a,b'"]),
        (["--model", "nope", "--out", str(out)], ["unknown model", "nope"]),
        (_cli(out, "--model-arg", "n_feets=3"), ["--model-arg", "n_feets"]),
        (_cli(out, "--model-arg", "n_feats=abc"), ["n_feats", "'abc'"]),
        (_cli(out, "--model-arg", "novalue"), ["--model-arg expects KEY=VALUE"]),
        (_cli(out, "--scale", "5"), ["--scale 5", "supported: 2, 3, 4, 8"]),
        (_cli(out, "--train-dir", str(hr), "--patch-size", "15"), ["--patch-size 15 (--scale 2)"]),
        (_cli(out, "--patch-size", "0"), ["--patch-size must be an integer >= 1, got 0"]),
        (_cli(out, "--gamma", "-1"), ["--gamma must be a finite number > 0, got -1"]),
        (_cli(a_file), [f"--out {a_file} is a file"]),
        (_cli(a_file / "sub"), [f"{a_file} is a file"]),
    ]
    if not torch.cuda.is_available():
        cases.append(([*_cli(out), "--device", "cuda"], ["--device: device 'cuda'", "CUDA is not available"]))
    for argv, needles in cases:
        _usage_error(capsys, argv, *needles)
        assert _files(tmp_path) == before, argv


def test_cli_usage_error_through_the_real_entry_point_has_no_traceback(tmp_path):
    r = subprocess.run([sys.executable, "-m", "srlib.train", "--model", "nope", "--out", str(tmp_path / "o")],
                       env=_env(), capture_output=True, text=True, timeout=300)
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert r.stderr.strip().splitlines() == [r.stderr.strip()] and "unknown model" in r.stderr
    assert _files(tmp_path) == []


def test_cli_finds_an_unwritable_out_before_training(tmp_path, capsys):
    if os.geteuid() == 0:  # root writes through permissions: use a file system nobody can write in
        target = Path("/sys/srlib-issue22-out")
        if not Path("/sys").is_dir():
            pytest.skip("no unwritable folder available")
    else:
        locked = tmp_path / "locked"
        locked.mkdir()
        locked.chmod(0o555)
        target = locked / "run"
    hr = _write_images(tmp_path / "hr")
    try:
        with pytest.raises(SystemExit) as info:
            main(_cli(target, "--train-dir", str(hr), "--iterations", "50"))
    finally:
        if os.geteuid() != 0:
            (tmp_path / "locked").chmod(0o755)
    captured = capsys.readouterr()
    assert info.value.code == 2 and f"--out {target}: cannot write there" in captured.err
    assert "training on" not in captured.out  # found before anything else
    assert not target.exists()


def test_cli_checks_every_training_image_up_front(tmp_path, capsys):
    hr = _write_images(tmp_path / "hr", n=3)
    good = (hr / "im0.png").read_bytes()
    (hr / "truncated.png").write_bytes(good[: len(good) // 2])
    (hr / "garbage.png").write_bytes(b"not an image at all")
    Image.new("RGB", (10, 10)).save(hr / "tiny.png")
    out = tmp_path / "run"
    with pytest.raises(SystemExit) as info:
        main(_cli(out, "--train-dir", str(hr), "--iterations", "2"))
    err = capsys.readouterr().err.strip().splitlines()
    assert info.value.code == 2
    bad = [line for line in err if line.startswith("bad training image: ")]
    assert len(bad) == 3 and len(err) == 4, err
    for name in ("truncated.png", "garbage.png", "tiny.png"):
        assert sum(name in line for line in bad) == 1, name
    assert "3 of 6 training images cannot be used" in err[-1] and "--skip-bad-images" in err[-1]
    assert not out.exists()
    assert main(_cli(out, "--train-dir", str(hr), "--iterations", "2", "--skip-bad-images")) == 0
    assert "--skip-bad-images: leaving out 3 bad training image(s)" in capsys.readouterr().out
    assert load_checkpoint(out / "last.pt")["iteration"] == 2
