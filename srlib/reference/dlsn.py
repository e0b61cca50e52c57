"""Reference-case runners for the DLSN paper: the GLA module and the DLSN network.

Su et al. *Global Learnable Attention for Single Image Super-Resolution*. IEEE TPAMI 2023, arXiv:2212.01057.
Official code: laoyangui/DLSN (``src/model/attention.py`` ``GLA``, ``src/model/dlsn.py``). The cases replay the
stored orthogonal projections (``rotations``) and were made with a stable sort of the hash codes
(``docs/official_code.md``, "Sort ties").
"""

from __future__ import annotations

import torch

from srlib.attention.gla import GlobalLearnableAttention
from srlib.models.dlsn import DLSN, config_from_official
from srlib.reference import load_state_dict_strict, register_case_runner, run_network_with_projections

__all__ = ["run_dlsn_case", "run_gla_case"]


@register_case_runner("GLA")
def run_gla_case(case: dict) -> dict[str, torch.Tensor]:
    """Runner for ``modules/gla_case*.pt``: rebuild from ``config``, load strictly, replay ``rotations``
    (``(C', n_hashes, n_buckets)``), return ``{"output": (B, C, H, W)}``."""
    m = GlobalLearnableAttention(**case["config"])
    load_state_dict_strict(m, case["state_dict"], "GLA")
    m.eval()
    with torch.no_grad():
        return {"output": m(case["input"], projections=case["rotations"])}


@register_case_runner("dlsn")
def run_dlsn_case(case: dict) -> dict[str, torch.Tensor]:
    """Runner for ``networks/dlsn_case*.pt``: rebuild, load strictly, replay each GLA's stored projections
    (``rotations[i]`` for module ``hash_modules[i]``), return ``{"output": (B, 3, s·h, s·w)}``."""
    net = DLSN(config_from_official(case["config"]))
    return run_network_with_projections(net, case, "DLSN")
