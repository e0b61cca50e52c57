"""Run the official-implementation reference cases.

A *case file* (``modules/*.pt`` or ``networks/*.pt`` under :func:`reference_dir`, by default the
``tests/reference`` folder of this repository; ``tests/reference/README.md`` describes every case) records one
run of the authors' code: constructor ``config``, ``state_dict``, ``input``, the random tensors the forward pass
drew (hash ``rotations``, ENLA ``projection_matrix``, LCoA ``randperm``, ...) and the expected values
(``output`` and, where present, ``contrastive_loss``, ``grad_input``, ``st_output``, ``st_grad_scores``,
``coa_output``, ``means_after_init``).

:func:`run_case` rebuilds the described srlib module or network for *any* case in that format (any size,
seed, batch or configuration), loads the stored weights, replays the stored random draws, runs it and returns
tensors keyed like the file's expected values, so that tests can compare them with
``torch.testing.assert_close``.

The runners live in this package, one file per paper (each registers itself with
:func:`register_case_runner`): :mod:`srlib.reference.nlsn` (NLSA, NLSN), :mod:`srlib.reference.enlcn`
(ENLCA, ENLCN), :mod:`srlib.reference.dlsn` (GLA, DLSN), :mod:`srlib.reference.hspan` (the dense
``NonLocalAttention`` of the HSPAN repository, HSPA, HSPAN) and :mod:`srlib.reference.lcoan` (LCoA, LCoAN).
The attention and model modules themselves do not depend on this package. How the official code departs
from the papers is summarised in ``docs/official_code.md``.
"""

from __future__ import annotations

import importlib
import os
from pathlib import Path
from typing import Any, Callable

import torch

from srlib.config import REPO_ROOT

__all__ = [
    "BUNDLED_REFERENCE_DIR",
    "CASE_RUNNERS",
    "EXPECTED_KEYS",
    "CaseError",
    "expected_outputs",
    "load_case",
    "load_state_dict_strict",
    "reference_dir",
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

# Modules that define runners, one per paper; imported on first use so that ``import srlib.reference`` stays
# cheap (it does not build any network).
_RUNNER_MODULES = (
    "srlib.reference.nlsn",
    "srlib.reference.enlcn",
    "srlib.reference.dlsn",
    "srlib.reference.hspan",
    "srlib.reference.lcoan",
)

#: The reference cases shipped with the repository (``modules/``, ``networks/``, ``state_dicts/``).
BUNDLED_REFERENCE_DIR = REPO_ROOT / "tests" / "reference"


def reference_dir() -> Path:
    """Folder holding the reference cases: ``$SRLIB_REFERENCE`` if set, else the bundled ``tests/reference``.

    ``SRLIB_REFERENCE`` is an override for cases made elsewhere (e.g. a new configuration or seed of the
    same generator); the folder need not exist, callers that read it raise ``FileNotFoundError`` naming it.
    """
    env = os.environ.get("SRLIB_REFERENCE")
    return Path(env).expanduser().resolve() if env else BUNDLED_REFERENCE_DIR


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
        importlib.import_module(mod)


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
    """``load_state_dict(strict=True)`` with an error that names the case and the offending keys.

    Raises:
        CaseError: keys missing from or unexpected in ``state_dict``, or tensors of another shape (the first
            five of each are listed, with ``where`` naming the case).
    """
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


def run_network_with_projections(net: torch.nn.Module, case: dict, where: str) -> dict[str, torch.Tensor]:
    """Load a network case strictly, give module ``case["hash_modules"][i]`` the stored projections
    ``case["rotations"][i]`` (NLSN's rotations, DLSN's super-bit directions), and run it in eval mode.

    Returns:
        ``{"output": net(case["input"])}``, ``(B, 3, s·h, s·w)``.
    Raises:
        CaseError: a state dict that does not match (:func:`load_state_dict_strict`); ValueError: as many
            projections as hashing modules are needed.
    """
    load_state_dict_strict(net, case["state_dict"], where)
    modules = dict(net.named_modules())
    for name, rot in zip(case["hash_modules"], case["rotations"], strict=True):
        modules[name].projections = rot
    net.eval()
    with torch.no_grad():
        return {"output": net(case["input"])}

