"""Saving and loading weights and training checkpoints, safely.

* :func:`save_checkpoint` / :func:`load_checkpoint`: whole training states (model, optimizer, RNG, ...)
  with ``torch.save`` written atomically and ``torch.load(weights_only=True)`` (no arbitrary code runs
  when a downloaded file is opened).
* :func:`load_weights`: put a network's weights into a model. Accepts srlib checkpoints and the official
  EDSR-style files of the five repositories (a raw ``state_dict`` or ``{"model": ...}`` /
  ``{"state_dict": ...}``), strips a ``module.`` prefix left by ``DataParallel`` / ``DistributedDataParallel``,
  and checks *every* key and shape before copying anything, so a wrong file never leaves a model
  half-loaded.
* :func:`save_safetensors` / :func:`load_safetensors`: plain tensor files for shipping weights, with an
  optional SHA-256 check.
"""

from __future__ import annotations

import hashlib
import os
import pickle
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any, NamedTuple

import torch
from torch import nn

__all__ = [
    "CheckpointError",
    "LoadResult",
    "save_checkpoint",
    "load_checkpoint",
    "extract_state_dict",
    "check_state_dict",
    "load_weights",
    "save_safetensors",
    "load_safetensors",
    "sha256_file",
]

PathLike = str | os.PathLike
_N_SHOWN = 5  # how many offending keys an error message lists


class CheckpointError(ValueError):
    """A checkpoint cannot be read or does not fit the model (names the file and the offending keys)."""


class LoadResult(NamedTuple):
    """What :func:`load_weights` did: keys the model has but the file lacked, and keys it ignored."""

    missing_keys: list[str]
    unexpected_keys: list[str]


def _current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


_UMASK = _current_umask()


def _atomic_write(path: Path, write) -> None:
    """Call ``write(tmp_path)`` on a temporary file next to ``path``, then move it into place.

    The file gets the usual permissions (``0o666`` minus the umask), not ``mkstemp``'s private ``0o600``.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        write(tmp)
        os.chmod(tmp, 0o666 & ~_UMASK)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


def save_checkpoint(path: PathLike, state: Mapping[str, Any]) -> Path:
    """Save ``state`` (tensors and plain Python values) with ``torch.save``, atomically.

    The file is written to a temporary name in the same folder and moved over ``path`` with
    ``os.replace``, so an interrupted save leaves the previous checkpoint intact.
    Only values :func:`load_checkpoint` can read back with ``weights_only=True`` should be stored:
    tensors, numbers, strings, ``None``, lists/tuples/dicts of those (optimizer and scheduler
    ``state_dict()`` s qualify).

    Returns:
        ``path`` as a :class:`~pathlib.Path`.
    """
    path = Path(path)
    _atomic_write(path, lambda tmp: torch.save(dict(state), tmp))
    return path


def load_checkpoint(path: PathLike, *, map_location: str | torch.device | None = "cpu") -> dict[str, Any]:
    """Load a file written by :func:`save_checkpoint` (or any ``torch.save`` d dict) with ``weights_only=True``.

    Raises:
        FileNotFoundError: ``path`` does not exist (names it).
        CheckpointError: the file is not a readable torch checkpoint, contains objects other than tensors and
            plain values, or is not a dict.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    try:
        obj = torch.load(path, map_location=map_location, weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, ValueError, AttributeError, OSError) as err:
        raise CheckpointError(f"cannot read checkpoint {path}: {err}") from err
    if not isinstance(obj, dict):
        raise CheckpointError(f"checkpoint {path} holds a {type(obj).__name__}, expected a dict")
    return obj


def _strip_prefix(sd: Mapping[str, Any], prefix: str) -> dict[str, Any]:
    return {k[len(prefix):]: v for k, v in sd.items()}


def extract_state_dict(
    obj: Mapping[str, Any], expected_keys: set[str] | None = None, *, source: str = "state_dict"
) -> dict[str, torch.Tensor]:
    """Find the network ``state_dict`` inside a loaded checkpoint object.

    Accepts a raw ``state_dict`` (the official EDSR-style ``model_best.pt``), or a dict holding one under
    ``"model"`` or ``"state_dict"`` (srlib training checkpoints, many other trainers). If every key starts
    with ``module.`` (saved from ``DataParallel`` / ``DistributedDataParallel``) the prefix is removed; a
    ``model.`` prefix (the official ``Model`` wrapper) is removed too when ``expected_keys`` shows the model
    does not use it.

    Raises:
        CheckpointError: no tensor ``state_dict`` found (names ``source``).
    """
    if not isinstance(obj, Mapping):
        raise CheckpointError(f"{source}: expected a dict, got {type(obj).__name__}")
    sd: Any = obj
    for key in ("model", "state_dict"):
        if isinstance(obj.get(key), Mapping):
            sd = obj[key]
            break
    if not sd or not all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in sd.items()):
        raise CheckpointError(
            f"{source}: no state_dict of tensors found (top-level keys: {', '.join(map(str, list(obj)[:8]))})"
        )
    for prefix in ("module.", "model."):
        if all(k.startswith(prefix) for k in sd) and not (
            expected_keys and all(k.startswith(prefix) for k in expected_keys)
        ):
            sd = _strip_prefix(sd, prefix)
    return dict(sd)


def _shorten(keys: list[str]) -> str:
    shown = ", ".join(keys[:_N_SHOWN])
    return shown + (f", ... ({len(keys) - _N_SHOWN} more)" if len(keys) > _N_SHOWN else "")


def check_state_dict(
    model: nn.Module, state_dict: Mapping[str, torch.Tensor], *, strict: bool = True, source: str = "state_dict"
) -> LoadResult:
    """Compare ``state_dict`` with ``model.state_dict()`` without changing anything.

    Raises:
        CheckpointError: a shape mismatch, an integer tensor where the model has a floating point one (or the
            reverse), a floating point tensor holding NaN/Inf (always), or missing / unexpected keys when
            ``strict``. The message names ``source``, the model class and the first offending keys, shapes,
            dtypes or non-finite counts.
    """
    own = model.state_dict()
    missing = [k for k in own if k not in state_dict]
    unexpected = [k for k in state_dict if k not in own]
    shapes = [
        f"{k}: file {tuple(state_dict[k].shape)} vs model {tuple(v.shape)}"
        for k, v in own.items()
        if k in state_dict and tuple(state_dict[k].shape) != tuple(v.shape)
    ]
    dtypes = [
        f"{k}: file {state_dict[k].dtype} vs model {v.dtype}"
        for k, v in own.items()
        if k in state_dict and v.is_floating_point() != state_dict[k].is_floating_point()
    ]
    non_finite = [
        f"{k} ({int((~torch.isfinite(t)).sum())} of {t.numel()})"
        for k, t in state_dict.items()
        if isinstance(t, torch.Tensor) and t.is_floating_point() and t.device.type != "meta"
        and not bool(torch.isfinite(t).all())
    ]
    problems = []
    if shapes:
        problems.append(f"{len(shapes)} shape mismatch(es): {_shorten(shapes)}")
    if dtypes:
        problems.append(f"{len(dtypes)} tensor(s) of the wrong kind (integer where the model has floating "
                        f"point weights, or the reverse): {_shorten(dtypes)}")
    if non_finite:
        problems.append(f"{len(non_finite)} tensor(s) with NaN/Inf values: {_shorten(non_finite)}")
    if strict and missing:
        problems.append(f"{len(missing)} missing key(s): {_shorten(missing)}")
    if strict and unexpected:
        problems.append(f"{len(unexpected)} unexpected key(s): {_shorten(unexpected)}")
    if problems:
        raise CheckpointError(
            f"{source} does not fit {type(model).__name__} ({'; '.join(problems)}). "
            "Was it saved for another network, configuration or scale?"
        )
    return LoadResult(missing, unexpected)


def load_weights(
    model: nn.Module,
    path_or_state_dict: PathLike | Mapping[str, Any],
    strict: bool = True,
    *,
    sha256: str | None = None,
    source: str | None = None,
) -> LoadResult:
    """Load network weights into ``model`` (in place), all or nothing.

    Args:
        model: the network (unwrapped, or a DDP/DataParallel wrapper: its ``.module`` is used).
        path_or_state_dict: a file path (``.safetensors`` or anything ``torch.save`` wrote) or an already
            loaded object. Raw official ``state_dict`` s and dicts with ``"model"`` / ``"state_dict"`` work;
            see :func:`extract_state_dict`.
        strict: if True, missing or unexpected keys are errors; if False they are reported in the result
            (shape mismatches are always errors).
        sha256: for ``.safetensors`` files, the expected SHA-256 hex digest.
        source: how to name an in-memory ``state_dict`` in error messages (default ``"state_dict"``).

    Returns:
        :class:`LoadResult` with the missing and unexpected keys.

    Raises:
        FileNotFoundError: the file does not exist.
        CheckpointError: unreadable file, no state_dict in it, keys/shapes/dtypes that do not fit the model,
            or NaN/Inf weights (see :func:`check_state_dict`); the message names the file and the first
            offending tensors. The model is unchanged in that case.
    """
    target = model.module if isinstance(model, (nn.DataParallel, nn.parallel.DistributedDataParallel)) else model
    if isinstance(path_or_state_dict, Mapping):
        source, obj = source or "state_dict", path_or_state_dict
    else:
        path = Path(path_or_state_dict)
        source = f"checkpoint {path}"
        if path.suffix == ".safetensors":
            obj = load_safetensors(path, sha256=sha256)
        else:
            obj = load_checkpoint(path)
    sd = extract_state_dict(obj, set(target.state_dict()), source=source)
    result = check_state_dict(target, sd, strict=strict, source=source)
    target.load_state_dict(sd, strict=strict)
    return result


def sha256_file(path: PathLike, chunk_size: int = 1 << 20) -> str:
    """SHA-256 hex digest of a file, read in chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk_size):
            h.update(block)
    return h.hexdigest()


def save_safetensors(
    path: PathLike,
    model_or_state_dict: nn.Module | Mapping[str, torch.Tensor],
    metadata: Mapping[str, str] | None = None,
) -> str:
    """Write weights to a ``.safetensors`` file atomically and return its SHA-256 hex digest.

    Tensors are moved to CPU and made contiguous. ``metadata`` (str -> str) is stored in the header, e.g.
    ``{"model": "nlsn", "scale": "2"}``.

    Raises:
        ValueError: a metadata key or value is not a string.
    """
    from safetensors.torch import save_file

    if isinstance(model_or_state_dict, nn.Module):
        model = model_or_state_dict
        if isinstance(model, (nn.DataParallel, nn.parallel.DistributedDataParallel)):
            model = model.module
        sd = model.state_dict()
    else:
        sd = model_or_state_dict
    meta = dict(metadata or {})
    bad = [k for k, v in meta.items() if not (isinstance(k, str) and isinstance(v, str))]
    if bad:
        raise ValueError(f"safetensors metadata must map str to str; offending keys: {bad}")
    tensors = {k: v.detach().cpu().contiguous() for k, v in sd.items()}
    path = Path(path)
    _atomic_write(path, lambda tmp: save_file(tensors, tmp, metadata=meta or None))
    return sha256_file(path)


def load_safetensors(
    path: PathLike, *, sha256: str | None = None, device: str | torch.device = "cpu"
) -> dict[str, torch.Tensor]:
    """Read a ``.safetensors`` file into a ``state_dict``, optionally verifying its SHA-256 first.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        CheckpointError: digest mismatch (names file, expected and actual digest) or unreadable file.
    """
    from safetensors.torch import load_file

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"weights file not found: {path}")
    if sha256 is not None:
        actual = sha256_file(path)
        if actual.lower() != sha256.lower():
            raise CheckpointError(f"SHA-256 mismatch for {path}: expected {sha256}, got {actual}")
    try:
        return load_file(path, device=str(device))
    except Exception as err:  # safetensors raises its own SafetensorError for corrupt headers
        raise CheckpointError(f"cannot read safetensors file {path}: {err}") from err
