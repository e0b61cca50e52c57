"""An exercise is two things kept apart: its text (``nbNN.toml``) and its check (a function in ``nbNN.py``).

The texts (title, difficulty, points, hint, worked answer in words) are prose a teacher edits; they live in one
TOML table per exercise, ``["01.2"]``, next to the notebook's module. A check is a function
``answer -> (ok, message)`` (or ``-> bool``) that the module marks with ``@checks("01.2")``. An exercise with a
text and no check is an open question (its worked answer is in ``notebooks/solutions/``).
:func:`notebook_exercises` pairs the two; ``srlib.course.exercises`` registers them with its :func:`exercise`.
"""

from __future__ import annotations

import importlib
import tomllib
from pathlib import Path
from typing import Any, Callable

__all__ = ["checks", "notebook_exercises"]

_CHECKS: dict[str, Callable[[Any], Any]] = {}


def checks(key: str):
    """Decorator marking ``fn(answer)`` as the check of exercise ``key`` (its text is in the notebook's TOML).

    Raises:
        ValueError: a second check for the same key.
    """

    def mark(fn: Callable[[Any], Any]) -> Callable[[Any], Any]:
        if _CHECKS.get(key, fn) is not fn:
            raise ValueError(f"exercise {key} has two checks: {_CHECKS[key].__name__} and {fn.__name__}")
        _CHECKS[key] = fn
        return fn

    return mark


def notebook_exercises(module: str) -> list[tuple[str, dict[str, Any], Callable[[Any], Any] | None]]:
    """Import ``srlib.course.exercises.<module>`` (e.g. ``"nb01"``, which marks its checks) and pair every exercise
    of ``<module>.toml`` with its check: ``[(key, text, check or None)]``, in the order of the TOML file.
    (:func:`srlib.course.exercises.exercise` registers them.)

    Raises:
        FileNotFoundError: no ``<module>.toml`` next to the module.
        ValueError: a table of another notebook, or a check without a text.
    """
    importlib.import_module(f"srlib.course.exercises.{module}")
    notebook = module.removeprefix("nb")
    path = Path(__file__).with_name(f"{module}.toml")
    texts = tomllib.loads(path.read_text(encoding="utf-8"))
    for key in texts:
        if key.split(".")[0] != notebook:
            raise ValueError(f"{path.name}: exercise {key} belongs to notebook {key.split('.')[0]}, not {notebook}")
    orphans = sorted(k for k in _CHECKS if k.split(".")[0] == notebook and k not in texts)
    if orphans:
        raise ValueError(f"{path.name}: no text for the checked exercise(s) {orphans}")
    return [(key, text, _CHECKS.get(key)) for key, text in texts.items()]
