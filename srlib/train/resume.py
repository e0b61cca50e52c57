"""Resuming a run: the saved configuration must equal the new one (``--allow-config-change`` overrides)."""

from __future__ import annotations

import dataclasses
import warnings
from pathlib import Path
from typing import Any, Mapping

from torch import nn

from ..checkpoint import CheckpointError

from .config import TrainConfig
from .runlock import _note


_RESUME_FREE = ("iterations", "val_every", "ckpt_every", "log_every", "num_workers", "tensorboard", "val_chop", "amp")


class ResumeConfigError(CheckpointError):
    """``last.pt`` was written with another training or network configuration (lists the differing fields)."""


def _by_value(v: Any) -> Any:
    """Tuples, lists and dicts compared by value (a loaded checkpoint may hold lists where the config has tuples)."""
    if isinstance(v, (tuple, list)):
        return [_by_value(x) for x in v]
    if isinstance(v, Mapping):
        return {k: _by_value(x) for k, x in v.items()}
    return v


def _config_changes(ckpt: Mapping[str, Any], cfg: TrainConfig, model: nn.Module) -> list[str]:
    """``"field: saved -> now"`` for every setting that differs between ``ckpt`` and this run."""
    changes = []
    saved = ckpt.get("config") or {}
    for f in dataclasses.fields(cfg):
        if f.name in _RESUME_FREE or f.name not in saved:
            continue
        if _by_value(saved[f.name]) != _by_value(getattr(cfg, f.name)):
            changes.append(f"{f.name}: {saved[f.name]!r} -> {getattr(cfg, f.name)!r}")
    name = getattr(model, "model_name", type(model).__name__)
    if ckpt.get("model_name") is not None and ckpt["model_name"] != name:
        changes.append(f"model: {ckpt['model_name']!r} -> {name!r}")
    mcfg = getattr(model, "config", None)
    saved_m = ckpt.get("model_config")
    if isinstance(saved_m, Mapping) and dataclasses.is_dataclass(mcfg):
        now_m = dataclasses.asdict(mcfg)
        for k in sorted(set(saved_m) | set(now_m)):
            if _by_value(saved_m.get(k)) != _by_value(now_m.get(k)):
                changes.append(f"model {k}: {saved_m.get(k)!r} -> {now_m.get(k)!r}")
    return changes


def _check_resume_config(ckpt: Mapping[str, Any], cfg: TrainConfig, model: nn.Module, path: Path,
                         allow_change: bool) -> None:
    """Refuse to resume ``path`` with another configuration, unless ``allow_change`` (then say so, loudly).

    Raises:
        ResumeConfigError: naming every differing field with its saved and new value.
    """
    changes = _config_changes(ckpt, cfg, model)
    if not changes:
        return
    if not allow_change:
        raise ResumeConfigError(
            f"{path} was written with another configuration ({'; '.join(changes)}); resume with the saved "
            "settings, choose another --out / out_dir, or pass --allow-config-change (train(..., "
            "allow_config_change=True)) to continue anyway"
        )
    msg = (f"resuming {path} with a changed config because of --allow-config-change / allow_config_change=True "
           f"({'; '.join(changes)}); the run will not reproduce an uninterrupted one")
    _note(msg)
    warnings.warn(msg, stacklevel=5)
