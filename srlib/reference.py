"""Run the official-implementation reference cases.

A *case file* (``../shared/reference/modules/*.pt`` or ``networks/*.pt`` in the project's reference data)
records one run of the authors' code: constructor ``config``, ``state_dict``, ``input``, the random tensors the
forward pass drew (hash ``rotations``, ENLA ``projection_matrix``, LCoA ``randperm``, ...) and the expected
values (``output`` and, where present, ``contrastive_loss``, ``grad_input``, ``st_output``, ``st_grad_scores``,
``coa_output``, ``means_after_init``).

:func:`run_case` rebuilds the described srlib module or network for *any* case in that format (any size,
seed, batch or configuration), loads the stored weights, replays the stored random draws, runs it and returns
tensors keyed like the file's expected values, so that tests can compare them with
``torch.testing.assert_close``.

Each mechanism registers its own runner with :func:`register_case_runner`, next to its implementation.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any, Callable

import torch

__all__ = [
    "CASE_RUNNERS",
    "EXPECTED_KEYS",
    "CaseError",
    "expected_outputs",
    "load_case",
    "register_case_runner",
    "run_case",
]

#: Keys of a case file that hold expected results (compared by the tests when present).
EXPECTED_KEYS = (
    "output",
    "contrastive_loss",
    "grad_input",
    "st_output",
    "st_grad_scores",
    "coa_output",
    "means_after_init",
)

#: ``module`` class name or ``model`` name of a case -> runner ``fn(case) -> dict[str, Tensor]``.
CASE_RUNNERS: dict[str, Callable[[dict[str, Any]], dict[str, torch.Tensor]]] = {}

# Modules that define runners; imported on first use so that ``import srlib.reference`` stays cheap and
# so that a paper whose implementation is not written yet does not break the others.
_RUNNER_MODULES = (
    "srlib.attention.nla",
    "srlib.attention.nlsa",
    "srlib.models.nlsn",
    "srlib.attention.enla",
    "srlib.models.enlcn",
    "srlib.attention.gla",
    "srlib.models.dlsn",
    "srlib.attention.hspa",
    "srlib.models.hspan",
    "srlib.attention.lcoa",
    "srlib.models.lcoan",
)


class CaseError(ValueError):
    """A case file that cannot be run: unreadable, of an unknown kind, or inconsistent."""


def register_case_runner(*names: str) -> Callable:
    """Decorator registering ``fn(case) -> dict`` as the runner for the given ``module``/``model`` names."""

    def deco(fn: Callable) -> Callable:
        for name in names:
            CASE_RUNNERS[name] = fn
        return fn

    return deco


def _load_runners() -> None:
    for mod in _RUNNER_MODULES:
        try:
            importlib.import_module(mod)
        except ModuleNotFoundError as err:  # that paper's implementation is not in this checkout
            if err.name != mod:
                raise


def load_case(path: str | Path) -> dict[str, Any]:
    """Load a case file with ``weights_only=True``.

    Raises:
        FileNotFoundError: the file does not exist (message names it).
        CaseError: the file is not a torch-saved dict with a ``module`` or ``model`` field.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"reference case not found: {path}")
    try:
        case = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # pickle / zip errors: say which file
        raise CaseError(f"cannot read reference case {path}: {err}") from err
    if not isinstance(case, dict) or not ("module" in case or "model" in case):
        raise CaseError(f"{path} is not a reference case (no 'module' or 'model' field)")
    case.setdefault("_path", str(path))
    return case


def expected_outputs(case: dict[str, Any]) -> dict[str, torch.Tensor]:
    """The expected values stored in ``case`` (those of :data:`EXPECTED_KEYS` it has)."""
    return {k: case[k] for k in EXPECTED_KEYS if k in case and torch.is_tensor(case[k])}


def case_dtype(case: dict[str, Any]) -> torch.dtype:
    """The floating dtype the case was computed in (``"torch.float64"`` -> ``torch.float64``)."""
    name = str(case.get("dtype", "torch.float32")).replace("torch.", "")
    dtype = getattr(torch, name, None)
    if not isinstance(dtype, torch.dtype):
        raise CaseError(f"unknown dtype {case.get('dtype')!r} in case {case.get('_path', '')}")
    return dtype


def run_case(case: str | Path | dict[str, Any]) -> dict[str, torch.Tensor]:
    """Rebuild, load and run the module or network a reference case describes.

    Args:
        case: path of a case file, or an already loaded case dict.

    Returns:
        dict of tensors keyed like the file's expected values (``output``, and where the file has them
        ``contrastive_loss``, ``grad_input``, ``st_output``, ``st_grad_scores``, ``coa_output``,
        ``means_after_init``), in the case's dtype, on CPU.

    Raises:
        CaseError: no runner for the case's ``module``/``model`` (message lists the known ones).
    """
    if not isinstance(case, dict):
        case = load_case(case)
    _load_runners()
    name = case.get("module", case.get("model"))
    runner = CASE_RUNNERS.get(name)
    if runner is None:
        raise CaseError(
            f"no srlib runner for reference case {name!r} ({case.get('_path', 'dict')}); "
            f"known: {sorted(CASE_RUNNERS)}"
        )
    old = torch.get_default_dtype()
    torch.set_default_dtype(case_dtype(case))  # parameters are created in the case's precision
    try:
        return runner(case)
    finally:
        torch.set_default_dtype(old)


def load_state_dict_strict(module: torch.nn.Module, state_dict: dict[str, torch.Tensor], where: str = "") -> None:
    """``load_state_dict(strict=True)`` with an error that names the case and the offending keys."""
    own = module.state_dict()
    missing = [k for k in own if k not in state_dict]
    unexpected = [k for k in state_dict if k not in own]
    shapes = [
        f"{k}: case {tuple(state_dict[k].shape)} vs srlib {tuple(own[k].shape)}"
        for k in own
        if k in state_dict and tuple(own[k].shape) != tuple(state_dict[k].shape)
    ]
    if missing or unexpected or shapes:
        raise CaseError(
            f"state_dict of {where or type(module).__name__} does not match: missing {missing[:5]}, "
            f"unexpected {unexpected[:5]}, shape mismatches {shapes[:5]}"
        )
    module.load_state_dict(state_dict, strict=True)
