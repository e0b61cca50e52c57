"""``python -m srlib.evaluate``: the papers' protocol on the benchmark sets from the command line (issue 24,
item 2). The reproduction tests need the benchmark data (marker ``data`` through the ``data_root`` fixture)."""

from __future__ import annotations

import csv
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from srlib import evaluate as cli
from srlib.data import load_image

ROOT = Path(__file__).resolve().parents[1]


def run_main(argv: list[str], capsys) -> tuple[int, str, str]:
    try:
        code = cli.main(argv)
    except SystemExit as exc:
        code = exc.code
    out = capsys.readouterr()
    return code, out.out, out.err


def expect_error(argv: list[str], capsys, *words: str) -> None:
    code, _, err = run_main(argv, capsys)
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert code == 2 and len(lines) == 1 and lines[0].startswith("srlib-evaluate: error: "), err
    assert "Traceback" not in err
    for w in words:
        assert w in lines[0], (w, lines[0])


def row_of(stdout: str, model: str) -> list[str]:
    """The ``PSNR / SSIM`` cells of the table row of ``model``."""
    for line in stdout.splitlines():
        cells = re.findall(r"\d+\.\d+ / \d\.\d{4}", line)
        if line.split() and line.split()[0] == model and cells:
            return cells
    raise AssertionError(f"no row {model!r} in:\n{stdout}")


def test_format_table_papers_row_format():
    results = {"Set5": {"psnr": 33.6789, "ssim": 0.93041}, "Set14": {"psnr": 30.2349, "ssim": 0.86918}}
    table = cli.format_table("bicubic", results, 2)
    head, row = table.splitlines()
    assert head.split() == ["model", "Set5", "x2", "Set14", "x2"]
    assert row.split() == ["bicubic", "33.68", "/", "0.9304", "30.23", "/", "0.8692"]
    no_ssim = cli.format_table("m", {"Set5": {"psnr": 30.0, "ssim": None}}, 3)
    assert no_ssim.splitlines()[1].split() == ["m", "30.00"]


@pytest.mark.parametrize("scale, want", [(2, "33.68"), (3, "30.41"), (4, "28.43")])
def test_bicubic_row_set5(data_root, capsys, scale, want):
    """The papers' Bicubic row, Set5 x2/x3/x4 (the SelfExSR files): 33.68 / 30.41 / 28.43 dB."""
    code, out, err = run_main(["--model", "bicubic", "--scale", str(scale), "--sets", "Set5", "--no-progress"], capsys)
    assert code == 0, err
    (cell,) = row_of(out, "bicubic")
    assert cell.split(" / ")[0] == want


def test_bicubic_per_image_csv_json_and_save_sr(data_root, tmp_path, capsys):
    csv_path, json_path, sr_dir = tmp_path / "r.csv", tmp_path / "r.json", tmp_path / "sr"
    argv = ["--model", "bicubic", "--scale", "2", "--sets", "Set5", "--no-progress"]
    assert run_main(argv + ["--per-image", str(csv_path), "--save-sr", str(sr_dir)], capsys)[0] == 0
    rows = list(csv.DictReader(csv_path.open()))
    assert [r["image"] for r in rows] == [f"img_00{i}" for i in range(1, 6)]
    assert abs(sum(float(r["psnr"]) for r in rows) / 5 - 33.68) < 0.005
    saved = sorted((sr_dir / "Set5_x2").iterdir())
    assert [p.name for p in saved] == [f"img_00{i}.png" for i in range(1, 6)]
    hr = load_image(data_root / "benchmark" / "Set5" / "image_SRF_2" / "img_001_SRF_2_HR.png")
    assert load_image(saved[0]).shape == hr.shape
    # refuses to overwrite the CSV or the SR images without --overwrite
    expect_error(argv + ["--per-image", str(csv_path)], capsys, "--overwrite")
    expect_error(argv + ["--save-sr", str(sr_dir)], capsys, "exist already", "--overwrite")
    assert run_main(argv + ["--per-image", str(json_path)], capsys)[0] == 0
    data = json.loads(json_path.read_text())
    assert data["model"] == "bicubic" and data["scale"] == 2 and data["sets"]["Set5"]["n_images"] == 5
    assert round(data["sets"]["Set5"]["psnr"], 2) == 33.68 and len(data["sets"]["Set5"]["per_image"]) == 5


def test_bad_input_one_line(data_root, tmp_path, capsys):
    expect_error(["--model", "bicubic", "--sets", "Set6"], capsys, "Set6", "available")
    expect_error(["--model", "bicubic", "--scale", "3", "--sets", "B100"], capsys, "B100", "x3")
    expect_error(["--model", "bicubic", "--per-image", str(tmp_path / "r.txt")], capsys, ".csv or .json")
    expect_error(["--model", "bicubic", "--data-root", str(tmp_path / "none")], capsys, "not found")
    (tmp_path / "empty").mkdir()
    expect_error(["--model", "bicubic", "--data-root", str(tmp_path / "empty")], capsys, "SRLIB_DATA")
    expect_error(["--model", "nosuch"], capsys, "unknown --model")


def test_help_has_text_for_every_option():
    parser = cli.build_parser()
    for action in parser._actions:
        assert action.help, f"{action.option_strings or action.dest} has no help text"
    assert "(default: (default" not in parser.format_help()


@pytest.mark.slow
@pytest.mark.parametrize("name, row", [
    ("nlsn-small-x2", "34.43 / 0.9380"),   # whole images, seed 0 (random hashing at every forward)
    ("hspan-small-x2", "34.60 / 0.9400"),  # default tiling: 32 x 32 LR tiles, overlap 8 (about 35 s of CPU)
])
def test_shipped_network_row_subprocess(data_root, tmp_path, name, row):
    """The README's Set5 x2 rows of shipped networks from the command line, end to end."""
    env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""),
           "OMP_NUM_THREADS": "1", "SRLIB_DATA": str(data_root)}
    out = tmp_path / "r.json"
    r = subprocess.run([sys.executable, "-m", "srlib.evaluate", "--model", name, "--sets", "Set5",
                        "--per-image", str(out)], capture_output=True, text=True, env=env, timeout=900)
    assert r.returncode == 0, r.stderr
    assert row_of(r.stdout, name) == [row]
    assert json.loads(out.read_text())["sets"]["Set5"]["n_images"] == 5
