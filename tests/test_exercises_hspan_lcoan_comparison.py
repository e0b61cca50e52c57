"""The self-checks of notebooks 04, 05 and 06 accept the right answer and reject wrong ones."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from srlib.attention.softthreshold import threshold_and_support
from srlib.course.exercises import check, get, list_exercises


def test_every_exercise_is_labelled():
    keys = [e.key for nb in ("04", "05", "06") for e in list_exercises(nb)]
    assert keys == [f"04.{i}" for i in range(1, 8)] + [f"05.{i}" for i in range(1, 8)] + [f"06.{i}" for i in range(1, 7)]


@pytest.mark.parametrize("key, right, wrong", [
    ("04.1", [0.75, 0.0, 0.25, 0.0], [0.5, 0.0, 0.5, 0.0]),
    ("04.2", 23.778, 23.5),
    ("05.1", 693, 692),
    ("05.2", 0.7, 0.3),
    ("05.3", 16_258_820, 15_668_484),
    ("06.3", 43, 42),
])
def test_numeric_checks(key, right, wrong):
    assert check(key, right, quiet=True)
    assert not check(key, wrong, quiet=True)
    assert not check(key, None, quiet=True)  # not answered yet: never raises


def test_bisection_check_takes_a_function():
    assert check("04.3", lambda s: threshold_and_support(s, dim=-1)[0], quiet=True)
    assert not check("04.3", lambda s: s.amax(-1, keepdim=True) - 0.5, quiet=True)
    assert not check("04.3", 1.0, quiet=True)  # not a function: a clear "no", no exception


def test_lcoa_limit_check():
    from srlib.analysis.flops import attention_flops_table

    want = attention_flops_table(100, 100, 64)["LCoA-CoA"].total / 1e9
    assert check("06.5", want, quiet=True) and not check("06.5", 1.1 * want, quiet=True)


def test_open_questions_have_no_check():
    assert get("04.4").checker is None
    with pytest.raises(ValueError, match="open question"):
        check("06.6", 1)


def test_half_way_rejects_a_fraction():
    assert not check("05.1", math.log(0.5) / math.log(0.999), quiet=True)


def test_points_and_solutions():
    for nb in ("04", "05", "06"):
        for e in list_exercises(nb):
            assert 1 <= e.points <= 3, e.key
            assert e.solution and len(e.solution) > 40, e.key
    assert get("04.1").points == 1 and get("06.5").points == 3


def test_wrong_answers_of_other_kinds_are_refused():
    assert not check("04.1", [0.75, 0.0, 0.25], quiet=True)  # three weights for four scores
    assert not check("04.2", 3.6, quiet=True)  # the support at scale 1, not at scale 0.1
    assert not check("05.3", 16_406_404, quiet=True)  # the x3 count
    assert not check("06.5", 0.74, quiet=True)  # the LSP row, not the CoA limit


NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"


@pytest.mark.parametrize("notebook, key, forbidden", [
    ("05_lcoan.py", "05.3", ("16,258,820", "16258820", "16_258_820")),
    ("04_hspan.py", "04.1", ("0.75, 0, 0.25", "[0.75, 0.0, 0.25")),
    ("06_comparison.py", "06.3", ("side 43", "s = 43")),
])
def test_no_answer_above_its_exercise(notebook, key, forbidden):
    text = (NOTEBOOKS / notebook).read_text()
    above = text[: text.index(f"**{key}**")]
    for f in forbidden:
        assert f not in above, f"{notebook}: the answer of {key} ({f}) appears above the exercise"


@pytest.mark.parametrize("notebook", ["04_hspan.py", "05_lcoan.py", "06_comparison.py"])
def test_core_and_deep_dive_sections(notebook):
    import re

    heads = re.findall(r"^# ###? (.+)$", (NOTEBOOKS / notebook).read_text(), flags=re.M)
    deep = [h for h in heads if h.endswith(" *(deep dive)*")]
    assert deep and len(deep) < len(heads), heads
    assert not any("deep dive" in h and not h.endswith(" *(deep dive)*") for h in heads)
