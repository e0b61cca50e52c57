"""The self-checks of notebooks 00a, 00b and 01 accept the right answer and reject wrong ones."""

from __future__ import annotations

import math

import pytest
import torch

from srlib.course.exercises import check, get, list_exercises


def _unshuffle(y, s):
    b, f, hh, ww = y.shape
    return y.view(b, f, hh // s, s, ww // s, s).permute(0, 1, 3, 5, 2, 4).reshape(b, f * s * s, hh // s, ww // s)


def _brick():
    from srlib.course.exercises import nb00b

    return nb00b.scenes()["brick"]


def _support_00b_1():
    from srlib.course.exercises import nb00b

    image, yx = _brick()
    return nb00b.flat_query_support(image, yx, 0.2)


def _nlm_00b_4():
    from srlib.course.exercises import nb00b

    return nb00b.nlm_psnr(_brick()[0])


RIGHT_AND_WRONG = {
    "00a.1": (20 * math.log10(255), 10 * math.log10(255)),
    "00a.2": (18_496, 2 * 32 * 32 * 9),               # forgetting the biases
    "00a.3": (_unshuffle, lambda y, s: torch.nn.functional.pixel_unshuffle(y, s).flip(1)),
    "00b.1": (_support_00b_1, lambda: 56 * 56),        # the uniform limit is printed above: not the question
    "00b.3": (math.log(400) - 2, math.log(400) - 0.5),  # the sigma = 1 limit
    # the old checker took any noisy PSNR in 28-33 dB with filtered > noisy: both wrong pairs passed it
    "00b.4": (_nlm_00b_4, lambda: (_nlm_00b_4()[0], _nlm_00b_4()[0] + 0.7)),
    "01.1": ((28, 1296), (28, 4 * 3 * 144)),           # four rounds instead of three
    "01.2": (0.973, 0.596),                            # one round instead of four
}
#: answers computed from the reference data (called once per test)
_COMPUTED = {"00b.1", "00b.4"}


@pytest.mark.parametrize("key", sorted(RIGHT_AND_WRONG))
def test_check_accepts_the_answer_and_rejects_a_wrong_one(key):
    right, wrong = RIGHT_AND_WRONG[key]
    if key in _COMPUTED:
        right, wrong = right(), wrong()
    assert check(key, right, quiet=True)
    assert not check(key, wrong, quiet=True)
    assert not check(key, None, quiet=True)


def test_malformed_answers_are_wrong_not_errors():
    assert not check("00a.3", 42, quiet=True)
    assert not check("01.1", "sixteen", quiet=True)
    assert not check("00b.4", 30.0, quiet=True)


def test_00b_4_refuses_near_misses_the_old_checker_accepted():
    """Noisy right but filtered off by 0.1 dB, or a pair inside the old 28-33 dB window with filtered > noisy."""
    noisy, filtered = _nlm_00b_4()
    assert check("00b.4", (noisy + 0.01, filtered - 0.01), quiet=True)  # rounding to 2 decimals is fine
    assert not check("00b.4", (noisy, filtered - 0.1), quiet=True)
    assert not check("00b.4", (30.0, 32.0), quiet=True)
    assert not check("00b.1", 1.05 * _support_00b_1(), quiet=True)


def test_every_exercise_has_points_and_a_worked_solution():
    for nb in ("00a", "00b", "01"):
        for ex in list_exercises(nb):
            assert 1 <= ex.points <= 3, ex.key
            assert len(ex.solution) > 20, f"{ex.key}: no worked solution text"


@pytest.mark.parametrize("nb", ["00a", "00b", "01"])
def test_every_exercise_has_a_difficulty_and_open_ones_refuse_a_check(nb):
    exercises = list_exercises(nb)
    assert len(exercises) >= 4
    for ex in exercises:
        if ex.checker is None:
            with pytest.raises(ValueError, match="open question"):
                check(ex.key, 1)
    assert get(f"{nb}.1").difficulty.startswith("★")


def _printed_above(stem: str, key: str) -> list[float]:
    """Every number printed (outputs) or written (prose) in notebook ``stem`` above exercise ``key``."""
    import re

    from tests import notebook_text as nt

    found = []
    for cell in nt.load(nt.NOTEBOOKS / f"{stem}.ipynb"):
        src = nt.text(cell)
        if cell["cell_type"] == "markdown" and f"**{key}**" in src:
            src = src[:src.index(f"**{key}**")]
            found += [float(x) for x in re.findall(r"\d+(?:\.\d+)?", src.replace(",", ""))]
            break
        body = src if cell["cell_type"] == "markdown" else nt.output_text(cell)
        found += [float(x) for x in re.findall(r"\d+(?:\.\d+)?", body.replace(",", ""))]
    return found


def test_checked_answers_are_not_printed_above_their_exercise():
    """Issue 23: 00b.1's old answer (L = 3136) was printed above it; 01.1's bucket count too (48 x 48 -> 16)."""
    from srlib.course.exercises import nb00b

    printed = _printed_above("00b_non_local_attention", "00b.1")
    assert printed, "the notebook text could not be read"
    for name, (image, yx) in nb00b.scenes().items():
        ref = nb00b.flat_query_support(image, yx, 0.2)
        assert not [v for v in printed if abs(v - ref) <= 0.01 * ref], f"00b.1's answer on {name} is printed above"
    printed = _printed_above("00b_non_local_attention", "00b.4")
    for name, (image, _) in nb00b.scenes().items():
        noisy, filtered = nb00b.nlm_psnr(image)
        assert not [v for v in printed if abs(v - noisy) < 0.02 or abs(v - filtered) < 0.02], name
    assert 1296 not in _printed_above("01_nlsn", "01.1")
