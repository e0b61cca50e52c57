"""Distributed helpers: the rank context, device choice, process-group setup and gathering."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from torch import nn


# ----------------------------------------------------------------------------------------------------------
# Distributed helpers
# ----------------------------------------------------------------------------------------------------------
@dataclass
class _DistContext:
    rank: int = 0
    world_size: int = 1
    created_group: bool = False

    @property
    def main(self) -> bool:
        return self.rank == 0

    def barrier(self) -> None:
        if self.world_size > 1:
            dist.barrier()


def _check_device(device: str | torch.device) -> torch.device:
    """``torch.device(device)``, refusing a device this machine does not have.

    Raises:
        ValueError: not a device name, CUDA/MPS not available, or a CUDA index beyond the GPUs present.
    """
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as err:
        raise ValueError(f"device {device!r} is not a device name (cpu, cuda, cuda:1, mps): {err}") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"device {str(device)!r}: CUDA is not available on this machine (no GPU, or a "
                             "CPU-only PyTorch build); use device 'cpu' (--device cpu) or leave it unset")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise ValueError(f"device {str(device)!r}: this machine has {torch.cuda.device_count()} CUDA device(s)")
    elif dev.type == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise ValueError(f"device {str(device)!r}: MPS is not available on this machine; use 'cpu'")
    return dev


def _resolve_device(model: nn.Module, device: str | torch.device | None, local_rank: int | None) -> torch.device:
    if device is not None:
        dev = _check_device(device)
    else:
        p = next(model.parameters(), None)
        if p is not None and p.device.type != "cpu":
            dev = p.device
        elif torch.cuda.is_available():
            dev = torch.device("cuda")
        else:
            dev = torch.device("cpu")
    if dev.type == "cuda" and dev.index is None:
        dev = torch.device("cuda", local_rank if local_rank is not None else torch.cuda.current_device())
    return dev


def _setup_distributed(model: nn.Module, device: str | torch.device | None) -> tuple[_DistContext, torch.device]:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return _DistContext(), _resolve_device(model, device, None)
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", str(rank)))
    dev = _resolve_device(model, device, local_rank)
    created = False
    if not dist.is_initialized():
        if dev.type == "cuda":
            torch.cuda.set_device(dev)
        dist.init_process_group(backend="nccl" if dev.type == "cuda" else "gloo")
        created = True
    return _DistContext(dist.get_rank(), dist.get_world_size(), created), dev


def _gather(obj: Any, dist_ctx: _DistContext) -> list[Any]:
    if dist_ctx.world_size == 1:
        return [obj]
    out: list[Any] = [None] * dist_ctx.world_size
    dist.all_gather_object(out, obj)
    return out
