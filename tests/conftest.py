"""Shared pytest fixtures.

Data-dependent tests use ``data_root`` / ``reference_root``; they are skipped when the data is absent
(a fresh clone with nothing downloaded) and run in CI, where ``SRLIB_DATA`` and ``SRLIB_REFERENCE`` point
at the shared read-only copies.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from srlib.config import data_dir


def _reference_dir() -> Path:
    env = os.environ.get("SRLIB_REFERENCE")
    if env:
        return Path(env).expanduser().resolve()
    return data_dir().parent / "reference"


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
    root = _reference_dir()
    if not (root / "modules").is_dir():
        pytest.skip(f"reference cases not found under {root} (set SRLIB_REFERENCE)")
    return root
