"""Trained weights shipped with srlib: small ×2 networks trained on CPU, loaded with a checksum check.

The notebooks need *trained* networks for their most telling pictures (HSPAN Fig. 4: sparse attention
maps; DLSN Fig. 4: learned buckets; LCoAN Fig. 5: shallow/deep overlap; ENLCN Fig. 7), and nothing may be
downloaded in CI. So srlib ships its own weights, made by ``benchmarks/train_small.py``:

* six networks at the **same budget**: 32 features, 8 residual blocks (EDSR/NLSN/ENLCN: 8 blocks with an
  attention module before block 0 and after block 8 where the network has one; DLSN/HSPAN/LCoAN: 2 groups of
  4 blocks, one attention module per group), ×2;
* trained identically (:data:`SMALL_RECIPE`, :data:`SMALL_RECIPE_STAGE2`): batches of 8 48×48 HR patches
  (24×24 LR, made on the fly with MATLAB-compatible bicubic) from the 30 Sun–Hays images in
  ``data_dir()/"train"/SunHays80``, L1 loss, Adam; 400 iterations at learning rate 2e-4 (seed 0), then 250
  iterations from those weights with a fresh Adam at 1e-3, halved at 125 and 190 (seed 1); float32 on CPU,
  about an hour for all six on 2 heavily shared cores.

This is a small-scale reproduction, **not** the papers' protocol (DIV2K, 800 images, 1000 epochs of 1000
iterations of 16 × 96×96 patches, 64-256 features): absolute PSNRs are far below the papers' tables. See
the README section "Trained small networks" for the numbers and how they were made.

The files live in ``srlib/weights/<name>.safetensors`` (float32 tensors, safetensors format: no code runs
when a file is read) and are installed with the package (``[tool.setuptools.package-data]``). Each
registry entry records the SHA-256 of its file; :func:`pretrained` checks it before reading anything.

Example::

    >>> from srlib import pretrained
    >>> model = pretrained("hspan-small-x2")        # eval mode, on CPU
    >>> sr = model(lr)                                # lr: (B, 3, h, w) RGB in [0, 1] -> (B, 3, 2h, 2w)
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import torch
from torch import nn

from .checkpoint import CheckpointError, load_safetensors, load_weights, sha256_file

__all__ = [
    "PretrainedSpec",
    "SMALL_CONFIGS",
    "SMALL_RECIPE",
    "SMALL_RECIPE_STAGE2",
    "WEIGHTS_DIR",
    "build_small",
    "list_pretrained",
    "pretrained",
    "pretrained_spec",
    "weights_path",
]

#: Folder of the shipped weight files (inside the installed package).
WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"

#: The "small" configuration of each network used for the shipped weights: ``model -> (preset, overrides)``
#: for :func:`srlib.models.build_model`. Same budget for all: 32 features, 8 residual blocks. Attention
#: modules at CPU-friendly sizes for 24×24 LR training patches (576 positions): NLSN/DLSN buckets of 48,
#: HSPAN top-k 64, LCoAN 16 clusters and windows of 48; ENLCN 128 random features (its default).
SMALL_CONFIGS: dict[str, tuple[str, dict[str, Any]]] = {
    "edsr": ("baseline", dict(n_resblocks=8, n_feats=32)),
    "nlsn": ("small", dict(n_resblocks=8, n_feats=32, chunk_size=48, n_hashes=2)),
    "enlcn": ("small", dict(n_resblocks=8, n_feats=32)),
    "dlsn": ("small", dict(n_resgroups=2, n_resblocks=4, n_feats=32, chunk_size=48)),
    "hspan": ("small", dict(n_resgroups=2, n_resblocks=4, n_feats=32, topk=64)),
    "lcoan": ("small", dict(n_resgroups=2, n_resblocks=4, n_feats=32, n_clusters=16, window_size=48)),
}

#: The training recipe shared by every shipped network (fields of :class:`srlib.train.TrainConfig`), in two
#: stages: stage 2 starts from the stage-1 weights with a fresh Adam, a higher learning rate halved twice and
#: another sample order (seed 1). 400 iterations at 2e-4 alone left every network below bicubic on Set5.
SMALL_RECIPE: dict[str, Any] = dict(
    iterations=400, batch_size=8, patch_size=48, lr=2e-4, milestones=(), gamma=0.5, loss="l1", seed=0,
)
SMALL_RECIPE_STAGE2: dict[str, Any] = dict(
    iterations=250, batch_size=8, patch_size=48, lr=1e-3, milestones=(125, 190), gamma=0.5, loss="l1", seed=1,
)


@dataclass(frozen=True)
class PretrainedSpec:
    """One shipped weight file.

    Attributes:
        name: registry name, ``"<model>-small-x<scale>"``.
        model: registered network name (:func:`srlib.models.list_models`).
        scale: upscaling factor.
        preset, overrides: arguments of :func:`srlib.models.build_model` that rebuild the architecture.
        filename: file name under :data:`WEIGHTS_DIR`.
        sha256: expected SHA-256 hex digest of the file.
        description: one line for listings.
    """

    name: str
    model: str
    scale: int
    preset: str
    overrides: Mapping[str, Any] = field(default_factory=dict)
    filename: str = ""
    sha256: str = ""
    description: str = ""


# SHA-256 of each shipped file (written by `python benchmarks/train_small.py export`).
_SHA256 = {
    "edsr": "794f7ccd5e6c96bd9ddad8e86f11e0c0efbcc969f962f70828788620468eeb87",
    "nlsn": "cb9aae97e0e6b61293f12903b3935ed49d123aa067cf8784747622f89880aff1",
    "enlcn": "7d853a28a8d7f70c8a6312978c42c32a5e2e2b1c489f8a3cd8303129f8fd535a",
    "dlsn": "51bb965a92463aa7606f9b40dbc23de60a49f2b3aae9265271d14d54eb2e3efe",
    "hspan": "9d7529bf67d02cbb8ec120a410a6619bca8d938b8bc286040fd57e9d4ee41959",
    "lcoan": "771b875ec4102d683c5240f0d243555c11895cccfc982522bb487e263185f48b",
}

_DESCRIPTIONS = {
    "edsr": "EDSR baseline (no attention), the same-budget reference",
    "nlsn": "NLSN: non-local sparse attention (spherical LSH buckets)",
    "enlcn": "ENLCN: efficient non-local contrastive attention (kernel features)",
    "dlsn": "DLSN: global learnable attention (super-bit LSH buckets)",
    "hspan": "HSPAN: high-similarity-pass attention (soft thresholding)",
    "lcoan": "LCoAN: learnable collaborative attention (k-means windows, shared weights)",
}


def _make_registry() -> dict[str, PretrainedSpec]:
    reg = {}
    for model, (preset, overrides) in SMALL_CONFIGS.items():
        name = f"{model}-small-x2"
        reg[name] = PretrainedSpec(name=name, model=model, scale=2, preset=preset, overrides=dict(overrides),
                                   filename=f"{name}.safetensors", sha256=_SHA256[model],
                                   description=_DESCRIPTIONS[model])
    return reg


_REGISTRY: dict[str, PretrainedSpec] = _make_registry()


def list_pretrained() -> list[str]:
    """Names of the shipped weights, e.g. ``["dlsn-small-x2", "edsr-small-x2", ...]`` (sorted)."""
    return sorted(_REGISTRY)


def pretrained_spec(name: str) -> PretrainedSpec:
    """The registry entry of ``name``.

    Raises:
        ValueError: unknown name (lists the available ones).
    """
    key = str(name).lower()
    if key not in _REGISTRY:
        raise ValueError(f"unknown pretrained weights {name!r}; available: {', '.join(list_pretrained())}")
    return _REGISTRY[key]


def weights_path(name: str) -> Path:
    """Path of the shipped file of ``name`` (it may be missing in a broken install; see :func:`pretrained`)."""
    return WEIGHTS_DIR / pretrained_spec(name).filename


def build_small(model: str, scale: int = 2) -> nn.Module:
    """The untrained small architecture of ``model`` (:data:`SMALL_CONFIGS`), in train mode.

    Raises:
        ValueError: ``model`` has no small configuration (lists those that do).
    """
    from .models import build_model

    key = str(model).lower()
    if key not in SMALL_CONFIGS:
        raise ValueError(f"no small configuration for model {model!r}; available: {', '.join(SMALL_CONFIGS)}")
    preset, overrides = SMALL_CONFIGS[key]
    return build_model(key, scale=scale, preset=preset, **overrides)


def pretrained(name: str, *, map_location: str | torch.device = "cpu", path: str | Path | None = None) -> nn.Module:
    """Build the network of ``name`` and load its shipped, checksum-verified weights.

    The SHA-256 of the file is compared with the registry *before* the file is parsed; the header metadata
    (network name, scale) is checked against the registry as well.

    Args:
        name: see :func:`list_pretrained` (case-insensitive), e.g. ``"hspan-small-x2"``.
        map_location: device for the returned model (``"cpu"``, ``"cuda"``, a ``torch.device``).
        path: read this file instead of the shipped one (it must still have the registered checksum; used
            by tests and to load a copy kept elsewhere).

    Returns:
        The network in eval mode, taking LR ``(B, 3, h, w)`` RGB in ``[0, 1]`` and returning SR
        ``(B, 3, s*h, s*w)``; ``model.pretrained_name`` records ``name``.

    Raises:
        ValueError: unknown ``name``.
        FileNotFoundError: the weight file is missing (names it).
        CheckpointError: checksum mismatch (names the file, expected and actual digest), unreadable file,
            metadata of another network, or keys/shapes that do not fit.
    """
    spec = pretrained_spec(name)
    file = Path(path) if path is not None else WEIGHTS_DIR / spec.filename
    if not file.is_file():
        raise FileNotFoundError(
            f"weights for {spec.name!r} not found: {file} (the file ships with srlib in srlib/weights/; "
            "reinstall the package or restore the file from the repository)"
        )
    if not spec.sha256:
        raise CheckpointError(f"no checksum registered for {spec.name!r} ({file}); refusing to load it")
    state = load_safetensors(file, sha256=spec.sha256)  # raises CheckpointError naming the file on mismatch
    meta = _metadata(file)
    if meta.get("model", spec.model) != spec.model or meta.get("scale", str(spec.scale)) != str(spec.scale):
        raise CheckpointError(f"{file} holds weights of {meta.get('model')!r} x{meta.get('scale')}, "
                              f"expected {spec.model!r} x{spec.scale}")
    from .models import build_model

    model = build_model(spec.model, scale=spec.scale, preset=spec.preset, **dict(spec.overrides))
    load_weights(model, state, source=f"weights file {file}")
    model.pretrained_name = spec.name
    return model.to(map_location).eval()


def _metadata(file: Path) -> dict[str, str]:
    """The string metadata of a safetensors header (empty if none)."""
    from safetensors import safe_open

    try:
        with safe_open(str(file), framework="pt") as f:
            return dict(f.metadata() or {})
    except Exception as err:  # safetensors raises its own error type for a corrupt header
        raise CheckpointError(f"cannot read the header of {file}: {err}") from err


def training_info(name: str) -> dict[str, Any]:
    """The provenance stored in the file's header (recipe, iterations, wall time, hardware) as a dict.

    Raises:
        FileNotFoundError / CheckpointError: as :func:`pretrained` (the checksum is verified first).
    """
    spec = pretrained_spec(name)
    file = WEIGHTS_DIR / spec.filename
    if not file.is_file():
        raise FileNotFoundError(f"weights for {spec.name!r} not found: {file}")
    actual = sha256_file(file)
    if actual != spec.sha256:
        raise CheckpointError(f"SHA-256 mismatch for {file}: expected {spec.sha256}, got {actual}")
    meta = _metadata(file)
    return {k: (json.loads(v) if k in ("config", "recipe", "training") else v) for k, v in meta.items()}
