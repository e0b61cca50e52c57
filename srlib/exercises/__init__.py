"""Self-checking exercises of the notebooks.

Each notebook ends with exercises. Those with a numeric or code answer have a check that a student calls from
the notebook::

    from srlib.exercises import check
    answer = ...                      # your answer
    check("01.3", answer)             # prints whether it is right, with a hint if not

``check`` never raises for a wrong or missing answer (a handed-out notebook must run top to bottom); it
returns ``True``/``False``. The worked solutions live in ``notebooks/solutions/`` (a teacher can hand out the
notebooks without that folder); they call ``assert check(...)``.

The exercises of notebook ``NN`` (or ``00a``) are registered in ``srlib/exercises/nbNN.py`` with :func:`exercise`.
"""

from __future__ import annotations

import importlib
import re
import pkgutil
from dataclasses import dataclass
from typing import Any, Callable

__all__ = ["Exercise", "exercise", "check", "get", "list_exercises", "DIFFICULTIES"]

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


_REGISTRY: dict[str, Exercise] = {}
_LOADED = False


def exercise(key: str, title: str, difficulty: str, *, hint: str = ""):
    """Decorator registering ``checker(answer) -> (ok, message)`` (or ``-> bool``) as exercise ``key``.

    Raises:
        ValueError: a malformed key (``"NN.M"``), an unknown difficulty, or a key registered twice.
    """
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
        _REGISTRY[key] = Exercise(key, title, difficulty, checker, hint)
        return fn

    return register


def _load() -> None:
    global _LOADED
    if _LOADED:
        return
    _LOADED = True
    for mod in pkgutil.iter_modules(__path__):
        if mod.name.startswith("nb"):
            importlib.import_module(f"{__name__}.{mod.name}")


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


def check(key: str, answer: Any = None, *, quiet: bool = False) -> bool:
    """Check an answer to exercise ``key``; prints one line (unless ``quiet``) and returns whether it is right.

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
            hint = f" Hint: {ex.hint}" if ex.hint else ""
            print(f"exercise {key}: not yet. {msg}{hint}".rstrip())
    return ok
