"""Reference-case runners for the LCoAN paper: the LCoA module (LSP then CoA, k-means init) and LCoAN.

Zhao et al. *Efficient Learnable Collaborative Attention for Single Image Super-Resolution*. arXiv:2404.04922.
Official code: YigangZhao/LCoAN (``src/model/kmeans_attention.py`` ``RecurrentNonLocalKmeansAttention``,
``Kmeans``; ``src/model/lcoan.py``). The k-means initialisation case stores the ``randperm`` the official init
drew; the outputs were made with a stable sort of the cluster codes (``docs/official_code.md``, "Sort ties").
"""

from __future__ import annotations

import torch

from srlib.attention.lcoa import LearnableCollaborativeAttention
from srlib.models.lcoan import LCoAN, config_from_official
from srlib.reference import CaseError, load_state_dict_strict, register_case_runner

__all__ = ["run_lcoa_case", "run_lcoan_case"]


def _module_from_case(cfg: dict, state_dict: dict) -> LearnableCollaborativeAttention:
    m = LearnableCollaborativeAttention(**cfg)
    load_state_dict_strict(m, state_dict, "RecurrentNonLocalKmeansAttention")
    return m


@register_case_runner("RecurrentNonLocalKmeansAttention")
def run_lcoa_case(case: dict) -> dict[str, torch.Tensor]:
    """Run an ``lcoa_case`` (LSP then CoA: ``output``, ``coa_output``, both ``(B, C, H, W)``) or an
    ``lcoa_init_case`` (k-means initialisation with the stored ``randperm``: ``output``, ``means_after_init``
    ``(n_rounds, n_clusters, C')``); any case of that format.

    Raises:
        CaseError: the case's k-means is not initialised and it stores no ``randperm``/``init_indices``.
    """
    cfg = dict(case["config"])
    cfg.pop("conv", None)
    m = _module_from_case(cfg, case["state_dict"])
    m.train(case.get("mode", "eval") == "train")
    init_indices = case.get("randperm", case.get("init_indices"))
    if not bool(m.kmeans.initted) and init_indices is None:
        raise CaseError(f"{case.get('_path', 'case')}: k-means not initialised and no 'randperm' stored")
    out: dict[str, torch.Tensor] = {}
    with torch.no_grad():
        out["output"], shared = m(case["input"], init_indices=init_indices)
        if "means_after_init" in case:
            out["means_after_init"] = m.kmeans.means.clone()
        if "coa_input" in case:
            coa = _module_from_case(cfg, case["coa_state_dict"])
            coa.train(m.training)
            out["coa_output"], _ = coa(case["coa_input"], shared)
    return out


@register_case_runner("lcoan")
def run_lcoan_case(case: dict) -> dict[str, torch.Tensor]:
    """Runner for ``networks/lcoan_case*.pt``: rebuild, load strictly, return ``{"output": (B, 3, s·h, s·w)}``."""
    net = LCoAN(config_from_official(case["config"]))
    load_state_dict_strict(net, case["state_dict"], "LCoAN")
    net.train(case.get("mode", "eval") == "train")
    with torch.no_grad():
        return {"output": net(case["input"])}
