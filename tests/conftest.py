"""Shared pytest fixtures.

Data-dependent tests use ``data_root``; they are skipped when the benchmark data is absent (a fresh clone with
nothing downloaded) and run wherever ``SRLIB_DATA`` points at it (CI). The official-code reference cases ship
with the repository in ``tests/reference`` (``reference_root``); ``SRLIB_REFERENCE`` overrides that folder.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from srlib.config import data_dir
from srlib.reference import reference_dir as _reference_dir


def pytest_collection_modifyitems(config, items):
    """Every test that takes the ``data_root`` fixture is marked ``data``, so ``-m "not data"`` deselects it."""
    for item in items:
        if "data_root" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.data)


@pytest.fixture(autouse=True)
def _deterministic():
    """Every test starts from the same global RNG state and default dtype."""
    torch.manual_seed(0)
    old = torch.get_default_dtype()
    yield
    torch.set_default_dtype(old)


@pytest.fixture(scope="session")
def data_root() -> Path:
    root = data_dir()
    if not (root / "benchmark").is_dir():
        pytest.skip(f"benchmark data not found under {root} (set SRLIB_DATA)")
    return root


@pytest.fixture(scope="session")
def reference_root() -> Path:
    """The reference-case folder. The cases are part of the repository, so a missing folder is an error
    (a broken checkout or a wrong ``SRLIB_REFERENCE``), never a skip."""
    root = _reference_dir()
    for sub in ("modules", "networks", "state_dicts"):
        if not (root / sub).is_dir():
            raise FileNotFoundError(f"reference cases missing: no folder {root / sub} (check SRLIB_REFERENCE)")
    return root
