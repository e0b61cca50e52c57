"""Reference-case runners for the NLSN paper: the NLSA module and the NLSN network.

Mei, Fan, Zhou. *Image Super-Resolution with Non-Local Sparse Attention*. CVPR 2021. Official code:
HarukiYqM/Non-Local-Sparse-Attention (``src/model/attention.py`` ``NonLocalSparseAttention``,
``src/model/nlsn.py``). The cases replay the stored hash ``rotations`` and were made with a stable sort of the
hash codes (``docs/official_code.md``, "Sort ties").
"""

from __future__ import annotations

import torch

from srlib.attention.nlsa import NonLocalSparseAttention
from srlib.models.nlsn import NLSN, NLSNConfig
from srlib.reference import load_state_dict_strict, register_case_runner, run_network_with_projections

__all__ = ["config_from_case", "run_nlsa_case", "run_nlsn_case"]


@register_case_runner("NonLocalSparseAttention")
def run_nlsa_case(case: dict) -> dict[str, torch.Tensor]:
    """Runner for ``modules/nlsa_case*.pt``: rebuild from ``config``, load strictly, replay ``rotations``
    (``(C', n_hashes, n_buckets/2)``), return ``{"output": (B, C, H, W)}``."""
    m = NonLocalSparseAttention(**case["config"])
    load_state_dict_strict(m, case["state_dict"], "NonLocalSparseAttention")
    m.eval()
    with torch.no_grad():
        return {"output": m(case["input"], rotations=case["rotations"])}


def config_from_case(cfg: dict) -> NLSNConfig:
    """:class:`~srlib.models.nlsn.NLSNConfig` from the ``config`` dict of an NLSN case (official ``args``)."""
    scale = cfg["scale"][0] if isinstance(cfg["scale"], (list, tuple)) else cfg["scale"]
    return NLSNConfig(
        scale=scale, n_resblocks=cfg["n_resblocks"], n_feats=cfg["n_feats"], res_scale=cfg["res_scale"],
        chunk_size=cfg["chunk_size"], n_hashes=cfg["n_hashes"], rgb_range=cfg["rgb_range"],
        n_colors=cfg["n_colors"],
    )


@register_case_runner("nlsn")
def run_nlsn_case(case: dict) -> dict[str, torch.Tensor]:
    """Runner for ``networks/nlsn_case*.pt``: rebuild, load strictly, give each NLSA its stored rotations
    (``rotations[i]`` for module ``hash_modules[i]``), return ``{"output": (B, 3, s·h, s·w)}``."""
    net = NLSN(config_from_case(case["config"]))
    return run_network_with_projections(net, case, "NLSN")
