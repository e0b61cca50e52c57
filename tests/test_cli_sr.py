"""``python -m srlib.sr``: files/folders/globs in, PNGs out, no overwrite, every weights layout, one-line errors
(issue 24, item 1). Small images and the small shipped networks keep every test to a few seconds."""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from srlib import sr as cli
from srlib.data import load_image, load_sample, save_image
from srlib.inference import super_resolve
from srlib.models import build_model
from srlib.pretrained import pretrained

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def photos(tmp_path: Path) -> Path:
    """A folder of two small RGB PNGs (crops of the bundled chelsea photo) and one JPEG-named copy elsewhere."""
    img = load_sample("chelsea")
    folder = tmp_path / "in"
    save_image(img[:, 100:124, 150:180], folder / "a.png")
    save_image(img[:, 40:60, 200:216], folder / "b.png")
    return folder


def run_main(argv: list[str], capsys) -> tuple[int, str, str]:
    """Call ``srlib.sr.main``; the exit status (0, or argparse's 2) and captured stdout/stderr."""
    try:
        code = cli.main(argv)
    except SystemExit as exc:
        code = exc.code
    out = capsys.readouterr()
    return code, out.out, out.err


def expect_error(argv: list[str], capsys, *words: str) -> str:
    """The command must exit 2 with one ``srlib-sr: error: ...`` line naming ``words``, and no traceback."""
    code, _, err = run_main(argv, capsys)
    assert code == 2, err
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("srlib-sr: error: "), err
    assert "Traceback" not in err
    for w in words:
        assert w in lines[0], (w, lines[0])
    return lines[0]


def test_folder_in_files_out_equal_to_python_api(photos, tmp_path, capsys):
    out = tmp_path / "out"
    code, stdout, _ = run_main([str(photos), "--out", str(out), "--model", "edsr-small-x2", "--no-progress"], capsys)
    assert code == 0
    assert sorted(p.name for p in out.iterdir()) == ["a.png", "b.png"]
    net = pretrained("edsr-small-x2")
    for name in ("a", "b"):
        lr = load_image(photos / f"{name}.png")
        got = load_image(out / f"{name}.png")
        want = super_resolve(net, lr).clamp(0, 1)  # what the README's Python recipe gives
        assert got.shape == (3, 2 * lr.shape[1], 2 * lr.shape[2])
        assert torch.equal(got, torch.round(want * 255) / 255)
    assert "2 image(s)" in stdout and "edsr-small-x2 x2" in stdout


def test_single_file_glob_and_other_extension(photos, tmp_path, capsys):
    jpg_dir = tmp_path / "jpg"
    jpg_dir.mkdir()
    from PIL import Image

    Image.open(photos / "a.png").save(jpg_dir / "photo.jpg", quality=95)
    out = tmp_path / "out"
    assert run_main([str(jpg_dir / "photo.jpg"), "-o", str(out), "--model", "bicubic", "--scale", "3",
                     "--no-progress"], capsys)[0] == 0
    assert [p.name for p in out.iterdir()] == ["photo.png"]  # the stem is kept, the result is a PNG
    assert load_image(out / "photo.png").shape == (3, 72, 90)
    out2 = tmp_path / "out2"
    assert run_main([str(photos / "*.png"), "-o", str(out2), "--model", "bicubic", "--no-progress"], capsys)[0] == 0
    assert sorted(p.name for p in out2.iterdir()) == ["a.png", "b.png"]


def test_no_overwrite_without_flag_and_nothing_written(photos, tmp_path, capsys):
    out = tmp_path / "out"
    out.mkdir()
    sentinel = b"not an image, must survive"
    (out / "b.png").write_bytes(sentinel)
    expect_error([str(photos), "-o", str(out), "--model", "bicubic"], capsys, "exist already", "--overwrite")
    assert sorted(p.name for p in out.iterdir()) == ["b.png"]  # a.png was not written either
    assert (out / "b.png").read_bytes() == sentinel
    assert run_main([str(photos), "-o", str(out), "--model", "bicubic", "--overwrite", "--no-progress"], capsys)[0] == 0
    assert load_image(out / "b.png").shape == (3, 40, 32)


@pytest.mark.parametrize("argv_tail, words", [
    (["--model", "nosuchnet"], ["unknown --model", "hspan-small-x2"]),
    (["--model", "nlsn"], ["--weights"]),
    (["--model", "hspan-small-x2", "--scale", "4"], ["--scale 4", "x2"]),
    (["--model", "edsr-small-x2", "--precision", "bf16", "--device", "cpu"], ["--precision bf16", "CUDA"]),
    (["--model", "edsr", "--weights", "missing.pt"], ["missing.pt", "not found"]),
    (["--model", "bicubic", "--tile", "-1"], ["--tile"]),
    (["--model", "bicubic", "--scale", "5"], ["--scale"]),
    (["--model", "missing_run/last.pt"], ["missing_run/last.pt", "not found"]),
    (["--model", "bicubic", "--weights", "x.pt"], ["bicubic", "--weights"]),
    (["--model", "edsr-small-x2", "--model-arg", "n_feats"], ["KEY=VALUE"]),
])
def test_bad_options_one_line(photos, tmp_path, capsys, argv_tail, words):
    out = tmp_path / "out"
    expect_error([str(photos), "-o", str(out)] + argv_tail, capsys, *words)
    assert not out.exists()


def test_bad_inputs_one_line(photos, tmp_path, capsys):
    out = tmp_path / "out"
    expect_error([str(tmp_path / "nope.png"), "-o", str(out), "--model", "bicubic"], capsys, "nope.png")
    expect_error([str(tmp_path / "*.tif"), "-o", str(out), "--model", "bicubic"], capsys, "matches no image")
    empty = tmp_path / "empty"
    empty.mkdir()
    expect_error([str(empty), "-o", str(out), "--model", "bicubic"], capsys, "no image files", "empty")
    (photos / "c.png").write_text("this is text")  # an image name, not an image: found before anything is written
    expect_error([str(photos), "-o", str(out), "--model", "bicubic"], capsys, "c.png")
    (photos / "c.png").unlink()
    other = tmp_path / "other"
    save_image(load_image(photos / "a.png"), other / "a.png")
    expect_error([str(photos), str(other), "-o", str(out), "--model", "bicubic"], capsys, "both be written")
    expect_error([str(photos), "-o", str(photos), "--model", "bicubic"], capsys, "own input")
    assert not out.exists()


def test_gray_input_is_accepted(tmp_path, capsys):
    from PIL import Image

    gray = tmp_path / "g.png"
    Image.fromarray((load_sample("chelsea")[0, :20, :20] * 255).round().byte().numpy(), mode="L").save(gray)
    assert run_main([str(gray), "-o", str(tmp_path / "o"), "--model", "bicubic", "--no-progress"], capsys)[0] == 0
    sr = load_image(tmp_path / "o" / "g.png")
    assert torch.equal(sr[0], sr[1]) and torch.equal(sr[1], sr[2])


def _args(**kw) -> argparse.Namespace:
    base = dict(model="bicubic", weights=None, scale=None, preset="paper", model_arg=[], tile=None,
                tile_overlap=None, self_ensemble=False, device="cpu", precision="fp32", seed=0)
    base.update(kw)
    return argparse.Namespace(**base)


def test_default_tiling_hspan_only():
    h = cli.load_super_resolver(_args(model="hspan-small-x2"))
    assert (h.tile, h.overlap) == cli.DEFAULT_TILES["hspan"] == (32, 8)
    from srlib.course import DENSE_OVERLAP, DENSE_TILE

    assert (DENSE_TILE, DENSE_OVERLAP) == (32, 8)  # the README table's tiling
    assert cli.load_super_resolver(_args(model="hspan-small-x2", tile=0)).tile is None
    t = cli.load_super_resolver(_args(model="hspan-small-x2", tile=48, tile_overlap=4))
    assert (t.tile, t.overlap) == (48, 4)
    n = cli.load_super_resolver(_args(model="nlsn-small-x2"))
    assert n.tile is None
    n = cli.load_super_resolver(_args(model="nlsn-small-x2", tile=40))
    assert (n.tile, n.overlap) == (40, cli.DEFAULT_OVERLAP)


def test_tiled_edsr_equals_whole_image():
    """EDSR-small's receptive field (2 + 2*8 convs = 18 px at most) fits in 20 px of overlap: tiling is exact."""
    lr = load_sample("chelsea")[:, :50, :70][None]
    whole = cli.load_super_resolver(_args(model="edsr-small-x2", tile=0))
    tiled = cli.load_super_resolver(_args(model="edsr-small-x2", tile=24, tile_overlap=20))
    torch.testing.assert_close(tiled(lr), whole(lr), atol=1e-5, rtol=0)


def _edsr_small_state():
    torch.manual_seed(3)
    net = build_model("edsr", scale=2, preset="small")
    return net, net.state_dict()


@pytest.mark.parametrize("layout", ["raw", "model_prefix", "module_prefix", "state_dict_key", "safetensors"])
def test_weights_layouts(tmp_path, layout):
    """Our formats and the authors' released layout (a raw EDSR-style state_dict, possibly 'model.'/'module.'
    prefixed or under 'state_dict') all load into --model ARCH --preset ... --weights FILE."""
    net, sd = _edsr_small_state()
    if layout == "safetensors":
        from srlib.checkpoint import save_safetensors

        path = tmp_path / "w.safetensors"
        save_safetensors(path, sd)
    else:
        obj = {"raw": sd, "model_prefix": {f"model.{k}": v for k, v in sd.items()},
               "module_prefix": {f"module.{k}": v for k, v in sd.items()}, "state_dict_key": {"state_dict": sd}}[layout]
        path = tmp_path / "model_x2.pt"
        torch.save(obj, path)
    s = cli.load_super_resolver(_args(model="edsr", preset="small", weights=str(path)))
    lr = torch.rand(1, 3, 12, 14)
    with torch.no_grad():
        torch.testing.assert_close(s(lr), net.eval()(lr), atol=0, rtol=0)


def test_weights_wrong_network_is_one_line(tmp_path, capsys, photos):
    _, sd = _edsr_small_state()
    path = tmp_path / "w.pt"
    torch.save(sd, path)
    # the paper preset of EDSR has other shapes: refused, naming the file
    expect_error([str(photos), "-o", str(tmp_path / "o"), "--model", "edsr", "--weights", str(path)], capsys,
                 str(path), "does not fit")


def test_training_checkpoint_and_shipped_name_as_weights(tmp_path):
    from srlib.data import SampleImagesDataset
    from srlib.train import TrainConfig, train

    net = build_model("edsr", scale=2, preset="small", n_resblocks=2, n_feats=8)
    ds = SampleImagesDataset(2, patch_size=16, augment=True, names=("chelsea",))
    res = train(net, ds, None, TrainConfig(iterations=1, batch_size=1, patch_size=16, log_every=1, ckpt_every=1),
                tmp_path / "run", device="cpu", progress=False)
    s = cli.load_super_resolver(_args(model=res["checkpoint"]))  # the checkpoint records its network
    lr = torch.rand(1, 3, 10, 10)
    with torch.no_grad():
        torch.testing.assert_close(s(lr), net.eval()(lr), atol=0, rtol=0)
    s2 = cli.load_super_resolver(_args(model="edsr", weights=res["checkpoint"]))
    torch.testing.assert_close(s2(lr), s(lr), atol=0, rtol=0)
    s3 = cli.load_super_resolver(_args(model="nlsn", weights="nlsn-small-x2"))
    assert s3.name == "nlsn-small-x2" and s3.scale == 2
    with pytest.raises(cli.CLIError, match="not hspan"):
        cli.load_super_resolver(_args(model="hspan", weights="nlsn-small-x2"))


def test_self_ensemble_option(photos, tmp_path, capsys):
    out = tmp_path / "out"
    assert run_main([str(photos / "b.png"), "-o", str(out), "--model", "edsr-small-x2", "--self-ensemble",
                     "--no-progress"], capsys)[0] == 0
    from srlib.inference import self_ensemble

    lr = load_image(photos / "b.png")
    want = self_ensemble(pretrained("edsr-small-x2"), lr[None])[0].clamp(0, 1)
    got = load_image(out / "b.png")
    assert (got - want).abs().max() <= 1 / 255 + 1e-6


def _parsers():
    from srlib import evaluate
    from srlib.train.cli import _parser as train_parser

    return [cli.build_parser(), evaluate.build_parser(), train_parser()]


def test_help_has_text_for_every_option():
    """srlib-sr, srlib-evaluate and srlib-train: every option explains itself, each default is stated once."""
    for parser in _parsers():
        for action in parser._actions:
            assert action.help, f"{parser.prog}: {action.option_strings or action.dest} has no help text"
            assert action.help.count("(default:") <= 1, f"{parser.prog}: {action.option_strings}: {action.help}"
        text = " ".join(parser.format_help().split())
        assert "(default: None)" not in text and "(default: (default" not in text, parser.prog
        assert not re.search(r"\(default: [^)]*\) \(default:", text), parser.prog


def test_subprocess_end_to_end(photos, tmp_path):
    """``python -m srlib.sr`` as a user runs it: a folder in, files out; then a bad call gives one line."""
    env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""),
           "OMP_NUM_THREADS": "1"}
    out = tmp_path / "out"
    r = subprocess.run([sys.executable, "-m", "srlib.sr", str(photos), "--out", str(out), "--model", "edsr-small-x2"],
                       capture_output=True, text=True, env=env, timeout=300)
    assert r.returncode == 0, r.stderr
    assert sorted(p.name for p in out.iterdir()) == ["a.png", "b.png"]
    assert "srlib-sr" in r.stderr and "2/2" in r.stderr  # the tqdm bar over files
    r = subprocess.run([sys.executable, "-m", "srlib.sr", str(photos), "--out", str(out), "--model", "edsr-small-x2"],
                       capture_output=True, text=True, env=env, timeout=300)
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert r.stderr.strip().count("\n") == 0 and "--overwrite" in r.stderr
