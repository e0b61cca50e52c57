"""Reference-case runners for the ENLCN paper: the ENLCA module and the ENLCN network.

Xia et al. *Efficient Non-local Contrastive Attention for Image Super-resolution*. AAAI 2022, arXiv:2201.03794.
Official code: Zj-BinXia/ENLCA (``src/model/attention.py`` ``ENLCA``, ``src/model/enlcn.py``). The cases store
the random-feature ``projection_matrix`` that the module uses.
"""

from __future__ import annotations

import torch

from srlib.attention.enla import ENLCA
from srlib.models.enlcn import ENLCN, ENLCNConfig
from srlib.reference import CaseError, load_state_dict_strict, register_case_runner

__all__ = ["config_from_case", "enlca_from_config", "run_enlca_case", "run_enlcn_case"]

#: Official ``ENLCA.__init__`` arguments that the official forward never reads.
_IGNORED_OFFICIAL_ARGS = {"ksize", "scale", "stride", "softmax_scale", "average"}


def enlca_from_config(cfg: dict, where: str = "ENLCA case") -> ENLCA:
    """:class:`~srlib.attention.enla.ENLCA` from official constructor arguments (official defaults
    ``channel=128, reduction=2, res_scale=0.1`` for missing keys).

    Raises:
        CaseError: an argument that changes the official computation and srlib does not model.
    """
    unknown = set(cfg) - {"channel", "reduction", "res_scale"} - _IGNORED_OFFICIAL_ARGS
    if unknown:
        raise CaseError(f"{where}: unsupported ENLCA constructor arguments {sorted(unknown)}")
    return ENLCA(
        channel=cfg.get("channel", 128), reduction=cfg.get("reduction", 2), res_scale=cfg.get("res_scale", 0.1)
    )


@register_case_runner("ENLCA")
def run_enlca_case(case: dict) -> dict[str, torch.Tensor]:
    """Runner for ``modules/enlca_case*.pt`` / ``enlca_train_case*.pt`` (see :func:`srlib.reference.run_case`).

    Builds :class:`~srlib.attention.enla.ENLCA` from the case ``config``, loads the state dict, uses the stored
    ``projection_matrix`` and runs in the case's ``mode``.

    Returns:
        ``{"output": (B, C, H, W)}`` plus ``"contrastive_loss"`` (0-dim) in training mode and
        ``"returned_loss"`` (0-dim zero, the official eval-mode ``loss = 0``) when the case stores it.
    """
    where = f"ENLCA case {case.get('_path', '')}"
    module = enlca_from_config(dict(case.get("config", {})), where)
    load_state_dict_strict(module, case["state_dict"], where)
    if "projection_matrix" in case:
        module.attn_fn.set_projection(case["projection_matrix"])
    module.train(case.get("mode", "eval") == "train")
    with torch.no_grad():
        out, loss = module(case["input"], return_loss=True)
    result = {"output": out}
    if loss is not None:
        result["contrastive_loss"] = loss
    elif "returned_loss" in case:
        result["returned_loss"] = torch.zeros((), dtype=out.dtype)
    return result


def config_from_case(cfg: dict, where: str = "ENLCN case") -> ENLCNConfig:
    """:class:`~srlib.models.enlcn.ENLCNConfig` from the ``config`` dict of an ENLCN case (official ``args``).

    Raises:
        CaseError: ``dilation`` is set (dilated convolutions are not implemented).
    """
    if cfg.get("dilation", False):
        raise CaseError(f"{where}: dilated convolutions (--dilation) are not supported")
    scale = cfg["scale"][0] if isinstance(cfg["scale"], (list, tuple)) else cfg["scale"]
    return ENLCNConfig(
        scale=int(scale), n_resblocks=cfg["n_resblocks"], n_feats=cfg["n_feats"], res_scale=cfg["res_scale"],
        rgb_range=cfg["rgb_range"], n_colors=cfg["n_colors"],
    )


@register_case_runner("enlcn")
def run_enlcn_case(case: dict) -> dict[str, torch.Tensor]:
    """Runner for ``networks/enlcn_case*.pt`` (see :func:`srlib.reference.run_case`).

    Returns:
        ``{"output": (B, 3, s*h, s*w)}``; for a training-mode case also ``"contrastive_loss"``, the mean
        of the modules' losses (what the official trainer weights by 1e-3).
    """
    where = f"ENLCN case {case.get('_path', '')}"
    net = ENLCN(config_from_case(case["config"], where))
    load_state_dict_strict(net, case["state_dict"], where)
    net.train(case.get("mode", "eval") == "train")
    with torch.no_grad():
        out = {"output": net(case["input"])}
    if net.training:
        out["contrastive_loss"] = net.contrastive_loss()
    return out
