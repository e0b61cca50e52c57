"""A small registry of networks: one dataclass config per network instead of a 60-flag argparse module.

Each network module registers a builder ``fn(cfg) -> nn.Module`` together with its config dataclass::

    @dataclass
    class NLSNConfig:
        scale: int = 2                  # every config has a ``scale`` field
        n_resblocks: int = 32           # defaults: the paper's / official README values
        ...

        @classmethod
        def small(cls) -> "NLSNConfig":  # a CPU-sized variant for notebooks and tests
            return cls(n_resblocks=4, n_feats=32)

    @register_model("nlsn", NLSNConfig)
    def build_nlsn(cfg: NLSNConfig) -> nn.Module:
        return NLSN(cfg)

and users write ``build_model("nlsn", scale=4, preset="small", n_feats=48)``.

Presets: ``"paper"`` is ``ConfigClass()``; ``"small"`` is ``ConfigClass.small()``; a config may name more
presets (each a classmethod returning a config) in a class attribute ``EXTRA_PRESETS = ("baseline",)``.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Callable

from torch import nn

__all__ = ["register_model", "build_model", "get_config", "list_models", "list_presets", "ModelSpec"]


@dataclass(frozen=True)
class ModelSpec:
    """A registered network: its name, builder ``fn(cfg) -> nn.Module`` and config dataclass."""

    name: str
    builder: Callable[[Any], nn.Module]
    config_cls: type


_REGISTRY: dict[str, ModelSpec] = {}


def register_model(name: str, config_cls: type) -> Callable[[Callable[[Any], nn.Module]], Callable[[Any], nn.Module]]:
    """Decorator registering ``builder(cfg) -> nn.Module`` under ``name`` (lower case).

    ``config_cls`` must be a dataclass with a ``scale`` field and a ``small()`` classmethod.
    Re-registering the same name with the same builder (module reload) is allowed.

    Raises:
        TypeError: if ``config_cls`` is not a dataclass or lacks a ``scale`` field.
        ValueError: if ``name`` is already registered to a different builder.
    """
    if not dataclasses.is_dataclass(config_cls) or not isinstance(config_cls, type):
        raise TypeError(f"config_cls for model {name!r} must be a dataclass type, got {config_cls!r}")
    if "scale" not in {f.name for f in dataclasses.fields(config_cls)}:
        raise TypeError(f"config class {config_cls.__name__} for model {name!r} needs a 'scale' field")
    key = name.lower()

    def decorator(builder: Callable[[Any], nn.Module]) -> Callable[[Any], nn.Module]:
        old = _REGISTRY.get(key)
        if old is not None and getattr(old.builder, "__qualname__", None) != getattr(builder, "__qualname__", None):
            raise ValueError(f"model name {key!r} is already registered by {old.builder!r}")
        _REGISTRY[key] = ModelSpec(key, builder, config_cls)
        return builder

    return decorator


def list_models() -> list[str]:
    """Names of all registered networks, sorted."""
    return sorted(_REGISTRY)


def _spec(name: str) -> ModelSpec:
    key = str(name).lower()
    if key not in _REGISTRY:
        raise ValueError(f"unknown model {name!r}; available: {', '.join(list_models()) or '(none registered)'}")
    return _REGISTRY[key]


def _presets(config_cls: type) -> dict[str, Callable[[], Any]]:
    presets: dict[str, Callable[[], Any]] = {"paper": config_cls}
    if hasattr(config_cls, "small"):
        presets["small"] = config_cls.small
    for extra in getattr(config_cls, "EXTRA_PRESETS", ()):
        presets[extra] = getattr(config_cls, extra)
    return presets


def list_presets(name: str) -> list[str]:
    """Preset names available for model ``name`` (``"paper"``, ``"small"``, ...)."""
    return list(_presets(_spec(name).config_cls))


def get_config(name: str, scale: int = 2, preset: str = "paper", **overrides: Any) -> Any:
    """The config dataclass instance :func:`build_model` would use.

    Raises:
        ValueError: unknown model name (lists the available ones) or unknown preset (lists the presets).
        TypeError: an override that is not a field of the config (names it and lists the fields).
    """
    spec = _spec(name)
    presets = _presets(spec.config_cls)
    if preset not in presets:
        raise ValueError(f"unknown preset {preset!r} for model {spec.name!r}; available: {', '.join(presets)}")
    cfg = presets[preset]()
    fields = {f.name for f in dataclasses.fields(cfg)}
    unknown = sorted(set(overrides) - fields)
    if unknown:
        raise TypeError(
            f"unknown config field(s) {', '.join(map(repr, unknown))} for model {spec.name!r} "
            f"({type(cfg).__name__}); fields: {', '.join(sorted(fields))}"
        )
    return dataclasses.replace(cfg, scale=scale, **overrides)


def build_model(name: str, scale: int = 2, preset: str = "paper", **overrides: Any) -> nn.Module:
    """Build a registered network.

    Args:
        name: registered name (case-insensitive), see :func:`list_models`.
        scale: upscaling factor (2, 3 or 4 for the papers).
        preset: ``"paper"`` (the paper's configuration), ``"small"`` (CPU-sized) or a config's extra preset.
        **overrides: config fields to change, e.g. ``n_feats=32``.

    Returns:
        The network, in train mode, taking LR ``(B, 3, h, w)`` in ``[0, rgb_range]`` and returning SR
        ``(B, 3, scale*h, scale*w)``. ``model.model_name`` and ``model.config`` record how it was built.

    Raises:
        ValueError: unknown name / preset, or a config value the network rejects (e.g. unsupported scale).
        TypeError: unknown override.
    """
    spec = _spec(name)
    cfg = get_config(name, scale=scale, preset=preset, **overrides)
    model = spec.builder(cfg)
    model.model_name = spec.name
    model.config = cfg
    return model
