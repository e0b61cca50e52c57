"""The self-checks of notebooks 00a, 00b and 01 accept the right answer and reject wrong ones."""

from __future__ import annotations

import math

import pytest
import torch

from srlib.exercises import check, get, list_exercises


def _unshuffle(y, s):
    b, f, hh, ww = y.shape
    return y.view(b, f, hh // s, s, ww // s, s).permute(0, 1, 3, 5, 2, 4).reshape(b, f * s * s, hh // s, ww // s)


RIGHT_AND_WRONG = {
    "00a.1": (20 * math.log10(255), 10 * math.log10(255)),
    "00a.2": (18_496, 2 * 32 * 32 * 9),               # forgetting the biases
    "00a.3": (_unshuffle, lambda y, s: torch.nn.functional.pixel_unshuffle(y, s).flip(1)),
    "00b.1": (3136, 56),
    "00b.3": (math.log(400) - 2, math.log(400) - 0.5),  # the sigma = 1 limit
    "00b.4": ((30.8, 33.1), (30.8, 29.0)),              # filtering must help
    "01.1": ((16, 1728), (16, 4 * 2 * 144)),           # two chunks per round instead of three
    "01.2": (0.973, 0.596),                            # one round instead of four
}


@pytest.mark.parametrize("key", sorted(RIGHT_AND_WRONG))
def test_check_accepts_the_answer_and_rejects_a_wrong_one(key):
    right, wrong = RIGHT_AND_WRONG[key]
    assert check(key, right, quiet=True)
    assert not check(key, wrong, quiet=True)
    assert not check(key, None, quiet=True)


def test_malformed_answers_are_wrong_not_errors():
    assert not check("00a.3", 42, quiet=True)
    assert not check("01.1", "sixteen", quiet=True)
    assert not check("00b.4", 30.0, quiet=True)


@pytest.mark.parametrize("nb", ["00a", "00b", "01"])
def test_every_exercise_has_a_difficulty_and_open_ones_refuse_a_check(nb):
    exercises = list_exercises(nb)
    assert len(exercises) >= 4
    for ex in exercises:
        if ex.checker is None:
            with pytest.raises(ValueError, match="open question"):
                check(ex.key, 1)
    assert get(f"{nb}.1").difficulty.startswith("★")
