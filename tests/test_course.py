"""srlib.course (tiny recipe, quality table), srlib.course.exercises (checks) and srlib.viz.compare."""

from __future__ import annotations

import pytest
import torch

from srlib import course
from srlib.course import exercises as ex


@pytest.fixture(autouse=True)
def _restore_exercise_registry():
    """Toy exercises (keys 99.N) registered by these tests must not leak into other tests (the site lists all)."""
    ex._load()
    saved = dict(ex._REGISTRY)
    yield
    ex._REGISTRY.clear()
    ex._REGISTRY.update(saved)


def test_tiny_config_is_the_recipe_and_rejects_unknown_fields():
    cfg = course.tiny_config()
    for k, v in course.TINY_RECIPE.items():
        assert getattr(cfg, k) == v
    assert course.tiny_config(iterations=7).iterations == 7
    with pytest.raises(TypeError, match="iteratons"):
        course.tiny_config(iteratons=7)


def _pairs(n=2, size=16, scale=2):
    from srlib.data import imresize

    g = torch.Generator().manual_seed(0)
    items = []
    for i in range(n):
        hr = torch.rand(3, size, size, generator=g)
        items.append({"hr": hr, "lr": imresize(hr, 1 / scale).clamp(0, 1), "name": f"im{i}"})
    return items


def test_quality_table_puts_bicubic_first_and_measures_gain():
    data = _pairs()
    queue = [d["hr"] for d in data]  # evaluate goes through the set in order: an oracle returns the HR image

    def oracle(lr):
        return queue.pop(0).reshape(lr.shape[:-3] + (3, 2 * lr.shape[-2], 2 * lr.shape[-1]))

    rows = course.quality_table({"oracle": oracle}, data, 2)
    assert [r["name"] for r in rows] == ["bicubic", "oracle"]
    assert rows[0]["gain_db"] == 0
    assert rows[1]["psnr"] == float("inf") or rows[1]["psnr"] > 80
    text = course.format_quality_table(rows, "toy")
    assert text.splitlines()[0] == "toy" and "bicubic" in text and "+0.00 dB" in text


def test_tiny_train_runs_the_recipe(tmp_path):
    from srlib.models import build_model

    torch.manual_seed(0)
    net = build_model("edsr", scale=2, preset="small")
    r = course.tiny_train(net, iterations=3, log_every=1, batch_size=2)
    assert r["iteration"] == 3 and len(r["losses"]) == 3 and all(l == l for l in r["losses"])


def test_check_reports_right_wrong_and_missing(capsys):
    key = "99.1"
    if key not in ex._REGISTRY:
        ex.exercise(key, "toy", ex.DIFFICULTIES[0], hint="think")(lambda a: (a == 42, f"got {a}"))
    assert ex.check(key, 42) == True  # noqa: E712
    assert ex.check(key, 41) == False  # noqa: E712
    assert ex.check(key, None) == False  # noqa: E712
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("exercise 99.1: correct")
    assert "not yet" in out[1] and "Hint: think" in out[1]
    assert "not answered yet" in out[2]


def test_check_errors_are_named():
    with pytest.raises(KeyError, match="no exercise '42.9'"):
        ex.check("42.9", 1)
    with pytest.raises(ValueError, match="difficulty"):
        ex.exercise("98.1", "x", "easy")
    with pytest.raises(ValueError, match="key"):
        ex.exercise("1.1", "x", ex.DIFFICULTIES[0])


def test_a_checker_that_raises_is_a_wrong_answer(capsys):
    key = "99.2"
    if key not in ex._REGISTRY:
        ex.exercise(key, "shape", ex.DIFFICULTIES[1])(lambda a: (a.shape == (2,), ""))
    assert ex.check(key, 3) == False  # noqa: E712
    assert "AttributeError" in capsys.readouterr().out


def test_plot_sr_crops_validates():
    from srlib.viz.compare import plot_sr_crops

    a = torch.rand(3, 32, 32)
    fig = plot_sr_crops({"a": a, "b": a}, top=0, left=0, size=16, psnr={"a": 30.0})
    assert len(fig.axes) == 2 and "30.00 dB" in fig.axes[0].get_title()
    with pytest.raises(ValueError, match="'b'"):
        plot_sr_crops({"a": a, "b": torch.rand(3, 16, 16)}, top=0, left=0, size=8)
    with pytest.raises(ValueError, match="crop"):
        plot_sr_crops({"a": a}, top=20, left=0, size=16)


def test_spread_band_and_assert(tmp_path, monkeypatch):
    import json

    from srlib import course
    from srlib.course import spread

    monkeypatch.setattr(spread, "SPREAD_DIR", tmp_path)  # the module that reads it (re-exported by srlib.course)
    s = course.summarise([1.0, 2.0, 3.0])
    assert s["mean"] == 2.0 and s["std"] == 1.0 and s["min"] == 1.0 and s["max"] == 3.0 and s["n"] == 3
    (tmp_path / "99.json").write_text(json.dumps({"data": {"run": {"psnr": s}}}))
    assert course.spread_band("99", "run", "psnr", setting="data") == (-1.0, 5.0)  # mean ± 3 std
    assert course.spread_band("99", "run", "psnr", setting="data", k=0.1) == (0.0, 4.0)  # range wins
    assert course.assert_in_spread("99", "run", "psnr", 4.9, setting="data") == (-1.0, 5.0)
    with pytest.raises(AssertionError, match="outside its measured band"):
        course.assert_in_spread("99", "run", "psnr", 5.1, setting="data")
    with pytest.raises(KeyError, match="offline"):
        course.spread_band("99", "run", "psnr", setting="offline")
    with pytest.raises(FileNotFoundError, match="tiny_spread.py 98"):
        course.load_spread("98")


def test_data_setting(monkeypatch, tmp_path):
    from srlib import course

    monkeypatch.setenv("SRLIB_DATA", str(tmp_path))
    assert course.data_setting() == "offline"
    (tmp_path / "benchmark" / "Set5").mkdir(parents=True)
    (tmp_path / "train" / "photos").mkdir(parents=True)
    from PIL import Image
    Image.new("RGB", (8, 8)).save(tmp_path / "train" / "photos" / "a.png")
    assert course.data_setting() == "data"


def test_check_result_hint_solution_score(capsys):
    from srlib.course.exercises import CheckResult, exercise, hint, score, solution

    exercise("99.7", "toy", "★ warm-up", hint="think of 4", solution="2 + 2 = 4", points=3)(lambda a: a == 4)
    try:
        right, wrong, empty = ex.check("99.7", 4), ex.check("99.7", 5), ex.check("99.7")
        assert bool(right) and not wrong and not empty and right == True and wrong == False  # noqa: E712
        assert isinstance(right, CheckResult) and right._ipython_display_() is None
        assert score([right, wrong, empty]) == (3, 9)
        with pytest.raises(TypeError, match="CheckResult"):
            score([True])
        assert hint("99.7") == "think of 4" and solution("99.7") == "2 + 2 = 4"
        out = capsys.readouterr().out
        assert "exercise 99.7: correct" in out and "Hint: think of 4" in out and "solution: 2 + 2 = 4" in out
        with pytest.raises(ValueError, match="points"):
            exercise("99.2", "toy", "★ warm-up", points=0)
    finally:
        ex._REGISTRY.pop("99.7", None)


def test_exercise_texts_and_checks_are_joined_and_mismatches_refused():
    from srlib.course.exercises import _texts

    ex._load()
    # every check is registered with its text; the open questions have a text and no check
    assert all(_texts._CHECKS[k] is ex.get(k).checker.__defaults__[0] for k in _texts._CHECKS)
    assert ex.get("01.3").checker is None and ex.get("01.3").solution
    # a second check for one key, and a check whose notebook TOML has no text for it, are refused
    with pytest.raises(ValueError, match="two checks"):
        _texts.checks("01.2")(lambda a: True)
    _texts._CHECKS["01.99"] = lambda a: True
    try:
        with pytest.raises(ValueError, match=r"no text for the checked exercise\(s\) \['01.99'\]"):
            _texts.notebook_exercises("nb01")
    finally:
        del _texts._CHECKS["01.99"]


def test_sr_crops_scores_what_the_notebook_cells_computed_by_hand():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from torch import nn

    from srlib import data as sdata
    from srlib import metrics
    from srlib.course import sr_crops

    g = torch.Generator().manual_seed(0)
    hr = torch.rand(3, 40, 48, generator=g)
    lr = sdata.imresize(hr, 0.5).clamp(0, 1)
    net = nn.Sequential(nn.Conv2d(3, 12, 3, padding=1), nn.PixelShuffle(2), nn.Sigmoid()).eval()
    noisy = lambda x: (sdata.imresize(x, 2) + 0.05 * torch.rand(x.shape[:-2] + (40, 48))).clamp(0, 1)  # noqa: E731
    fig, got = sr_crops(lr, hr, {"net": net, "noisy": noisy}, size=16, seed=3)
    assert list(got) == ["bicubic", "net", "noisy"] and len(fig.axes) == 4
    q = lambda x: (x.clamp(0, 1) * 255).round() / 255  # noqa: E731  (8 bits, as notebooks 04 and 05 did by hand)
    with torch.no_grad():
        want_net = metrics.psnr(q(net(lr[None])[0]), hr, 2)
        torch.manual_seed(3)
        want_noisy = metrics.psnr(q(noisy(lr[None])[0]), hr, 2)
    assert got["bicubic"] == metrics.psnr(q(sdata.imresize(lr, 2)), hr, 2)
    assert got["net"] == want_net and got["noisy"] == want_noisy
    # as notebooks 00a to 03 did: the crops drawn unrounded, the PSNR the same (srlib.metrics.psnr rounds to 8 bits)
    _, raw = sr_crops(lr, hr, {"net": net}, size=16, quantise=False)
    assert raw["net"] == metrics.psnr(net(lr[None])[0].clamp(0, 1).detach(), hr, 2) == got["net"]
    with pytest.raises(ValueError, match="crop"):
        sr_crops(lr, hr, {}, size=16, top=30)
    plt.close("all")


def test_paper_training_prints_and_runs_only_when_asked(monkeypatch, capsys):
    from srlib.course import cells
    from srlib.train import paper_command

    ran = []
    monkeypatch.setattr(cells.subprocess, "run", lambda args, check: ran.append(args))
    monkeypatch.delenv("SRLIB_RUN_FULL", raising=False)
    cmd = cells.paper_training("nlsn", 2, also_print=["echo variant"])
    assert cmd == paper_command("nlsn", scale=2) and capsys.readouterr().out == cmd + "\necho variant\n"
    assert ran == []
    monkeypatch.setenv("SRLIB_RUN_FULL", "1")
    monkeypatch.setattr(cells.torch.cuda, "is_available", lambda: False)
    cells.paper_training("nlsn", 2)
    assert ran == []  # no GPU: printed only
    monkeypatch.setattr(cells.torch.cuda, "is_available", lambda: True)
    cells.paper_training("nlsn", 2)
    assert ran == [cmd.split()]


def test_evaluation_table_prints_and_asserts_what_the_cells_asserted(tmp_path, monkeypatch, capsys):
    import json

    from srlib import data as sdata
    from srlib.course import cells, spread

    g = torch.Generator().manual_seed(1)
    hrs = [torch.rand(3, 32, 32, generator=g) for _ in range(2)]
    dataset = [{"lr": sdata.imresize(h, 0.5).clamp(0, 1), "hr": h, "name": f"im{i}"} for i, h in enumerate(hrs)]

    def near_hr(lr):  # a "shipped" network far above bicubic: the HR image, slightly off
        x = lr.reshape(-1, *lr.shape[-3:])
        hr = torch.stack([next(d["hr"] for d in dataset if torch.equal(d["lr"], xi)) for xi in x])
        return (hr + 0.01).clamp(0, 1).reshape(*lr.shape[:-2], *hr.shape[-2:])

    def blurred(lr):  # a "tiny" run below bicubic
        return sdata.imresize(sdata.imresize(sdata.imresize(lr, 2), 0.5), 2).clamp(0, 1)

    monkeypatch.setattr(spread, "SPREAD_DIR", tmp_path)
    monkeypatch.setattr(spread, "data_setting", lambda: "offline")
    entries = {"tiny": blurred, "shipped": near_hr}
    tiny_psnr = course.quality_table({"tiny": blurred}, dataset, 2)[1]["psnr"]
    ex_row = spread.summarise([tiny_psnr - 0.1, tiny_psnr + 0.1])
    (tmp_path / "99.json").write_text(json.dumps({"offline": {"run": {"psnr": ex_row}}}))
    rows = cells.evaluation_table(entries, dataset, "toy", notebook="99", stored={"shipped": 99.0},
                                  tiny={"tiny": ("run", "psnr")})
    out = capsys.readouterr().out
    assert list(rows) == ["bicubic", "tiny", "shipped"] and out.startswith("toy\nnetwork")
    assert f"tiny: {tiny_psnr:.2f} dB, inside the measured band" in out
    with pytest.raises(AssertionError, match="does not beat bicubic"):
        cells.evaluation_table(entries, dataset, "toy", notebook="99", stored={"tiny": 30.0}, tiny={})
    with pytest.raises(KeyError, match="not among the entries"):
        cells.evaluation_table(entries, dataset, "toy", notebook="99", stored={"EDSR": 34.75}, tiny={})
    monkeypatch.setattr(spread, "data_setting", lambda: "data")  # with the data: Set5 x2 and the stored values
    with pytest.raises(AssertionError, match="the table is on toy"):
        cells.evaluation_table(entries, dataset, "toy", notebook="99", stored={"shipped": 99.0}, tiny={})
    # with the data, bicubic and each shipped network must be within 0.01 dB of the stored values (unrounded)
    base, shipped_psnr = rows["bicubic"]["psnr"], rows["shipped"]["psnr"]
    monkeypatch.setattr(cells, "SET5_X2_BICUBIC", base + 0.009)
    cells.evaluation_table(entries, dataset, "Set5 x2", notebook="99", stored={"shipped": shipped_psnr - 0.009}, tiny={})
    with pytest.raises(AssertionError, match="shipped"):
        cells.evaluation_table(entries, dataset, "Set5 x2", notebook="99", stored={"shipped": shipped_psnr - 0.011},
                               tiny={})
    monkeypatch.setattr(cells, "SET5_X2_BICUBIC", base + 0.011)
    with pytest.raises(AssertionError, match="bicubic"):
        cells.evaluation_table(entries, dataset, "Set5 x2", notebook="99", stored={"shipped": shipped_psnr}, tiny={})
