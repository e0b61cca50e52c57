"""Networks: EDSR-style blocks, EDSR, and the five attention networks, behind a small registry.

``build_model("nlsn", scale=2, preset="small")`` builds any registered network; ``list_models()`` lists them.
Importing this package imports every network module so that it registers itself. Every network derives from
:class:`srlib.models.common.SRNetwork` (``sub_mean -> head -> body + skip -> tail -> add_mean`` and
``attention_modules()``).
"""

from __future__ import annotations

from . import common, registry
from . import dlsn, edsr, enlcn, hspan, lcoan, nlsn  # noqa: F401  (each registers its network)
from .registry import build_model, get_config, list_models, list_presets, register_model

#: Network modules that register themselves on import.
NETWORK_MODULES = ("nlsn", "enlcn", "dlsn", "hspan", "lcoan")

__all__ = ["build_model", "get_config", "list_models", "list_presets", "register_model", "common", "registry", "edsr"]
