"""Reference-case runners for the HSPAN paper: the dense NLA and HSPA modules and the HSPAN network.

Su et al. *High-Similarity-Pass Attention for Single Image Super-Resolution*. IEEE TIP 33 (2024) 610-624,
arXiv:2305.15768. Official code: laoyangui/HSPAN (``src/model/attention.py`` ``NonLocalAttention``, ``HSPA``,
``SoftThresholdingOperation``; ``src/model/hspan.py``). The dense ``NonLocalAttention`` case comes from that
repository (softmax in place of soft thresholding).
"""

from __future__ import annotations

import torch

from srlib.attention.hspa import HSPA
from srlib.attention.nla import NonLocalAttention
from srlib.attention.softthreshold import soft_threshold
from srlib.models.hspan import HSPAN, config_from_official
from srlib.reference import load_state_dict_strict, register_case_runner

__all__ = ["run_hspa_case", "run_hspan_case", "run_nla_case"]


@register_case_runner("NonLocalAttention")
def run_nla_case(case: dict) -> dict[str, torch.Tensor]:
    """Runner for ``modules/nla_case*.pt``: rebuild the softmax NLA, load strictly, return
    ``{"output": (B, C, H, W)}``."""
    cfg = case["config"]
    m = NonLocalAttention(channel=cfg["channel"], reduction=cfg["reduction"], res_scale=cfg["res_scale"])
    load_state_dict_strict(m, case["state_dict"], "NonLocalAttention")
    m.eval()
    with torch.no_grad():
        return {"output": m(case["input"])}


@register_case_runner("HSPA")
def run_hspa_case(case: dict) -> dict:
    """Runner for ``modules/hspa_case*.pt`` (see :func:`srlib.reference.run_case`).

    Rebuilds :class:`~srlib.attention.hspa.HSPA` from ``case["config"]`` (``channel``, ``reduction``,
    ``res_scale``, ``topk``), loads ``state_dict`` strictly and returns ``output``; with ``grad_output`` also
    ``grad_input`` and ``grad_params`` (a dict keyed like ``state_dict``); with ``st_scores`` also ``st_output``
    and, with ``st_grad_output``, ``st_grad_scores`` (official ``softThresholdingOperation(st_scores, dim,
    topk)``).
    """
    cfg = case["config"]
    m = HSPA(
        channel=cfg.get("channel", 256),
        reduction=cfg.get("reduction", 2),
        res_scale=cfg.get("res_scale", 1.0),
        topk=cfg.get("topk", 128),
    )
    load_state_dict_strict(m, case["state_dict"], "HSPA")
    m.eval()
    result: dict = {}
    x = case["input"].clone().requires_grad_("grad_output" in case)
    with torch.set_grad_enabled("grad_output" in case):
        y = m(x)
    result["output"] = y.detach()
    if "grad_output" in case:
        names = [n for n, p in m.named_parameters()]
        grads = torch.autograd.grad(y, [x, *m.parameters()], case["grad_output"])
        result["grad_input"] = grads[0]
        result["grad_params"] = dict(zip(names, grads[1:]))
    if "st_scores" in case:
        st_cfg = case.get("st_config", {})
        dim, topk = st_cfg.get("dim", 2), st_cfg.get("topk", 128)
        s = case["st_scores"].clone().requires_grad_("st_grad_output" in case)
        with torch.set_grad_enabled("st_grad_output" in case):
            p = soft_threshold(s, dim=dim, topk=topk)
        result["st_output"] = p.detach()
        if "st_grad_output" in case:
            (result["st_grad_scores"],) = torch.autograd.grad(p, s, case["st_grad_output"])
    return result


@register_case_runner("hspan")
def run_hspan_case(case: dict) -> dict[str, torch.Tensor]:
    """Runner for ``networks/hspan_case*.pt``: rebuild, load ``state_dict`` strictly, return
    ``{"output": (B, 3, s·h, s·w)}``."""
    net = HSPAN(config_from_official(case["config"]))
    load_state_dict_strict(net, case["state_dict"], "HSPAN")
    net.eval()
    with torch.no_grad():
        return {"output": net(case["input"])}
