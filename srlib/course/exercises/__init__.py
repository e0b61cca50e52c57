"""Self-checking exercises of the notebooks.

Each notebook ends with exercises. Those with a numeric or code answer have a check that a student calls from
the notebook::

    from srlib.course.exercises import check
    answer = ...                      # your answer
    check("01.3", answer)             # prints whether it is right, with a hint if not

``check`` never raises for a wrong or missing answer (a handed-out notebook must run top to bottom); it
returns a :class:`CheckResult`, true when the answer is right, that shows nothing more in a notebook (so no
stray ``True``/``False`` under an exercise cell). Two more levels of help, as in Kaggle's learntools:
``hint("01.3")`` prints the hint, ``solution("01.3")`` prints the worked answer. Every exercise carries points
(``points``) so that a teacher can grade a notebook; :func:`score` adds them up. The worked solutions live in ``notebooks/solutions/`` (a teacher can hand out the
notebooks without that folder); they call ``assert check(...)``.

The exercises of notebook ``NN`` (or ``00a``) are written in two files: their texts (title, difficulty, points,
hint, solution) in ``srlib/course/exercises/nbNN.toml`` and their checks in ``nbNN.py``, each marked
``@checks("NN.M")`` (see :mod:`srlib.course.exercises._texts`); :func:`exercise` registers one by hand.
"""

from __future__ import annotations

import pkgutil
import re
from dataclasses import dataclass
from typing import Any, Callable

__all__ = ["Exercise", "CheckResult", "exercise", "check", "hint", "solution", "score", "get", "list_exercises",
           "DIFFICULTIES"]

#: Difficulty labels, easiest first.
DIFFICULTIES = ("★ warm-up", "★★ practice", "★★★ challenge")


@dataclass(frozen=True)
class Exercise:
    """One exercise: ``key`` like ``"01.3"`` (notebook 01, exercise 3), a title, a difficulty from
    :data:`DIFFICULTIES`, and ``checker(answer) -> (ok, message)`` (``None`` for open questions)."""

    key: str
    title: str
    difficulty: str
    checker: Callable[[Any], tuple[bool, str]] | None = None
    hint: str = ""
    solution: str = ""
    points: int = 1


_REGISTRY: dict[str, Exercise] = {}
_LOADED = False


def exercise(key: str, title: str, difficulty: str, *, hint: str = "", solution: str = "", points: int = 1):
    """Decorator registering ``checker(answer) -> (ok, message)`` (or ``-> bool``) as exercise ``key``.

    Args:
        key: ``"NN.M"`` (notebook NN, exercise M), e.g. ``"01.3"`` or ``"00a.2"``.
        title, difficulty: shown to the student; difficulty one of :data:`DIFFICULTIES`.
        hint: the first level of help (:func:`hint`); solution: the worked answer in words (:func:`solution`).
        points: what the exercise is worth when graded (an integer >= 1).

    Raises:
        ValueError: a malformed key (``"NN.M"``), an unknown difficulty, points < 1, or a key registered twice.
    """
    if isinstance(points, bool) or not isinstance(points, int) or points < 1:
        raise ValueError(f"exercise {key}: points must be an integer >= 1, got {points!r}")
    nb, _, number = key.partition(".")
    if not (re.fullmatch(r"\d\d[a-z]?", nb) and number.isdigit()):
        raise ValueError(f"exercise key must look like '01.3' or '00a.2', got {key!r}")
    if difficulty not in DIFFICULTIES:
        raise ValueError(f"exercise {key}: difficulty must be one of {DIFFICULTIES}, got {difficulty!r}")

    def register(fn: Callable[[Any], Any] | None):
        if key in _REGISTRY:
            raise ValueError(f"exercise {key} is registered twice")
        checker = None
        if fn is not None:
            def checker(answer: Any, _fn=fn) -> tuple[bool, str]:
                out = _fn(answer)
                return (bool(out[0]), str(out[1])) if isinstance(out, tuple) else (bool(out), "")
        _REGISTRY[key] = Exercise(key, title, difficulty, checker, hint, solution, points)
        return fn

    return register


def _load() -> None:
    global _LOADED
    if _LOADED:
        return
    _LOADED = True
    from ._texts import notebook_exercises

    for mod in pkgutil.iter_modules(__path__):
        if mod.name.startswith("nb"):
            for key, text, checker in notebook_exercises(mod.name):
                exercise(key, text["title"], text["difficulty"], hint=text.get("hint", ""),
                         solution=text.get("solution", ""), points=text.get("points", 1))(checker)


def get(key: str) -> Exercise:
    """The registered exercise ``key``.

    Raises:
        KeyError: unknown key (the message lists the known keys of the same notebook).
    """
    _load()
    if key not in _REGISTRY:
        same = sorted(k for k in _REGISTRY if k.split(".")[0] == key.split(".")[0])
        raise KeyError(f"no exercise {key!r}; known for this notebook: {same or sorted(_REGISTRY)}")
    return _REGISTRY[key]


def list_exercises(notebook: str | None = None) -> list[Exercise]:
    """All registered exercises (of one notebook, e.g. ``"01"``), in key order."""
    _load()
    keys = sorted(_REGISTRY, key=lambda k: (k.split(".")[0], int(k.split(".")[1])))
    return [_REGISTRY[k] for k in keys if notebook is None or k.split(".")[0] == notebook]


class CheckResult:
    """What :func:`check` returns: true when the answer is right (``assert check(...)`` in the solutions), with
    the exercise ``key``, its ``points`` (earned when ``ok``) and the checker's ``message``. In a notebook it displays nothing
    (the printed line already said it), so no stray ``True``/``False`` appears under an exercise cell."""

    __slots__ = ("key", "ok", "points", "message")

    def __init__(self, key: str, ok: bool, points: int, message: str):
        self.key, self.ok, self.points, self.message = key, bool(ok), int(points), message

    def __bool__(self) -> bool:
        return self.ok

    def __eq__(self, other: object) -> bool:
        return self.ok == other if isinstance(other, bool) else NotImplemented

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"CheckResult({self.key!r}, ok={self.ok}, points={self.points})"

    def _ipython_display_(self) -> None:  # IPython: show nothing (check already printed its line)
        return None


def _help(key: str, level: str) -> str:
    ex = get(key)
    text = getattr(ex, level) or _NO_HELP[level]
    print(f"exercise {key} {level}: {text}")
    return text


_NO_HELP = {"hint": "no hint for this exercise: re-read the section above it",
            "solution": "see the worked solution in notebooks/solutions/"}


def hint(key: str) -> str:
    """Print (and return) the hint of exercise ``key`` (the first level of help).

    Raises:
        KeyError: unknown exercise key.
    """
    return _help(key, "hint")


def solution(key: str) -> str:
    """Print (and return) the worked answer of exercise ``key`` in words (the last level of help; the full
    worked code is in ``notebooks/solutions/``).

    Raises:
        KeyError: unknown exercise key.
    """
    return _help(key, "solution")


def score(results: Any) -> tuple[int, int]:
    """Points earned and points possible for a list of :class:`CheckResult` (one per checked exercise).

    Raises:
        TypeError: an item that is not a :class:`CheckResult`.
    """
    earned = possible = 0
    for r in results:
        if not isinstance(r, CheckResult):
            raise TypeError(f"score: expected CheckResult items (what check() returns), got {type(r).__name__}")
        possible += r.points
        earned += r.points if r.ok else 0
    return earned, possible


def check(key: str, answer: Any = None, *, quiet: bool = False) -> CheckResult:
    """Check an answer to exercise ``key``; prints one line (unless ``quiet``) and returns a
    :class:`CheckResult`, true when the answer is right.

    ``None`` (the placeholder of a handed-out notebook) counts as "not answered yet". A checker that raises
    on a malformed answer (wrong shape or type) is reported as a wrong answer with the checker's message.

    Raises:
        KeyError: unknown exercise key.
        ValueError: the exercise is an open question (no check).
    """
    ex = get(key)
    if ex.checker is None:
        raise ValueError(f"exercise {key} ({ex.title}) is an open question: it has no check; see the solutions")
    if answer is None:
        ok, msg = False, "not answered yet: replace None with your answer"
    else:
        try:
            ok, msg = ex.checker(answer)
        except Exception as err:  # a malformed answer is a wrong answer, said clearly
            ok, msg = False, f"{type(err).__name__}: {err}"
    if not quiet:
        if ok:
            print(f"exercise {key}: correct" + (f" ({msg})" if msg else ""))
        else:
            hint_ = f" Hint: {ex.hint}" if ex.hint else ""
            print(f"exercise {key}: not yet. {msg}{hint_}".rstrip())
    return CheckResult(key, ok, ex.points, msg)
