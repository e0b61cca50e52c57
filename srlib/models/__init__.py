"""Networks: EDSR-style blocks, EDSR, and the five attention networks, behind a small registry.

``build_model("nlsn", scale=2, preset="small")`` builds any registered network; ``list_models()`` lists them.
Importing this package imports every network module so that it registers itself. The attention networks
are imported only if their file exists, so the package still imports while one is being written; any other
import error inside a network module is raised as usual.
"""

from __future__ import annotations

import importlib

from . import common, registry
from . import edsr as edsr  # registers "edsr"
from .registry import build_model, get_config, list_models, list_presets, register_model

#: Network modules that register themselves on import (optional while under construction).
NETWORK_MODULES = ("nlsn", "enlcn", "dlsn", "hspan", "lcoan")


def _import_optional(module: str) -> bool:
    """Import ``module``; return False if *that module itself* does not exist.

    A ``ModuleNotFoundError`` for anything else (a missing dependency inside the module) is re-raised.
    """
    try:
        importlib.import_module(module)
    except ModuleNotFoundError as err:
        if err.name != module:
            raise
        return False
    return True


for _name in NETWORK_MODULES:
    _import_optional(f"{__name__}.{_name}")
del _name

__all__ = ["build_model", "get_config", "list_models", "list_presets", "register_model", "common", "registry", "edsr"]
