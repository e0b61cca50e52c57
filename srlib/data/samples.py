"""Colour photographs bundled with scikit-image: a training/demo set that needs no download.

``skimage.data`` ships a few natural RGB photographs inside the wheel (no network needed):
``astronaut`` (512x512), ``chelsea`` (300x451, a cat), ``coffee`` (400x600), ``rocket``
(427x640, JPEG), ``motorcycle`` (500x741, left view of ``stereo_motorcycle``), plus
non-photographic colour images (``hubble_deep_field``, ``immunohistochemistry``,
``retina``). Grayscale ones (``camera``, ``moon``, ...) and images whose files are only
downloaded on demand are left out.

:func:`default_train_set` and :func:`default_eval_set` choose the data to train and evaluate on: the data
root's photographs or benchmark when present, else these bundled photographs (so that notebooks run offline).
"""

from __future__ import annotations

import difflib
import sys
from typing import Iterable, Sequence

import torch
from torch import Tensor
from torch.utils.data import Dataset

from srlib.config import data_dir

from .datasets import (
    BENCHMARK_NAMES,
    BenchmarkDataset,
    HRImagesDataset,
    _benchmark_root,
    _FileLoader,
    available_benchmarks,
    default_train_folder,
    list_images,
)
from .degradations import check_scale
from .degradations import Degradation
from .io import from_uint8

__all__ = [
    "SAMPLE_IMAGES", "DEFAULT_SAMPLE_NAMES", "load_sample", "SampleImagesDataset",
    "FALLBACK_EVAL_NAMES", "default_train_set", "default_eval_set",
]


class _SkimageLoader:
    """Picklable loader of one ``skimage.data`` image (DataLoader workers pickle datasets)."""

    def __init__(self, name: str):
        self.name = name

    def __call__(self) -> Tensor:
        import skimage.data

        if self.name == "motorcycle":
            array = skimage.data.stereo_motorcycle()[0]
        else:
            array = getattr(skimage.data, self.name)()
        return from_uint8(array)

    def __repr__(self) -> str:
        return f"skimage.data.{self.name}"


#: Available names -> loader returning ``(3, H, W)`` float32 RGB in ``[0, 1]``.
SAMPLE_IMAGES = {
    name: _SkimageLoader(name)
    for name in (
        "astronaut", "chelsea", "coffee", "rocket", "motorcycle",
        "hubble_deep_field", "immunohistochemistry", "retina",
    )
}
#: The natural photographs (the default set).
DEFAULT_SAMPLE_NAMES = ("astronaut", "chelsea", "coffee", "rocket", "motorcycle")


def load_sample(name: str) -> Tensor:
    """One bundled photograph as ``(3, H, W)`` float32 RGB in ``[0, 1]``.

    Raises:
        ValueError: unknown name (the message lists the available ones).
    """
    if name not in SAMPLE_IMAGES:
        raise ValueError(f"unknown sample image {name!r}; available: {sorted(SAMPLE_IMAGES)}")
    return SAMPLE_IMAGES[name]()


class SampleImagesDataset(HRImagesDataset):
    """scikit-image's bundled colour photographs with LR made on the fly (offline default).

    Same behaviour and options as :class:`srlib.data.HRFolderDataset` (patches, dihedral
    augmentation, ``repeat``, injectable ``generator``, any degradation); images are cached.

    Args:
        scale: 2, 3 or 4.
        names: which images (default :data:`DEFAULT_SAMPLE_NAMES`).
        degradation, patch_size, augment, repeat, generator, quantize_lr: as in
            :class:`srlib.data.HRImagesDataset`.

    Items: ``{"lr": (3, h, w), "hr": (3, s*h, s*w), "name": str}``, float32 in ``[0, 1]``.

    Raises:
        ValueError: unknown name (the message lists the available ones), a single string instead of a
            sequence of names, no names, unsupported scale, bad options.
    """

    def __init__(
        self,
        scale: int,
        names: Iterable[str] | None = None,
        degradation: Degradation | None = None,
        patch_size: int | None = None,
        augment: bool = False,
        repeat: int = 1,
        generator: torch.Generator | None = None,
        *,
        quantize_lr: bool = True,
    ):
        if isinstance(names, str):
            raise ValueError(f"names must be a sequence of sample names, got the string {names!r}; "
                             f"write names=({names!r},)")
        names = list(DEFAULT_SAMPLE_NAMES if names is None else names)
        if not names:
            raise ValueError(f"names is empty: name at least one sample image of {sorted(SAMPLE_IMAGES)}")
        for n in names:
            if n not in SAMPLE_IMAGES:
                raise ValueError(f"unknown sample image {n!r}; available: {sorted(SAMPLE_IMAGES)}")
        super().__init__(
            [(n, SAMPLE_IMAGES[n]) for n in names], scale, degradation, patch_size, augment, repeat,
            generator, quantize_lr=quantize_lr, cache=True,
        )


def _announce_fallback(reason: str, names: Sequence[str]) -> None:
    """The one line every offline fallback prints (stderr), so that it never passes silently."""
    print(f"srlib: {reason}; using the bundled scikit-image photographs ({', '.join(names)}) instead "
          f"(offline fallback)",
          file=sys.stderr)


#: Offline evaluation photographs (scikit-image) used when a benchmark is not downloaded.
FALLBACK_EVAL_NAMES = ("chelsea", "coffee", "astronaut")


def default_train_set(
    scale: int,
    patch_size: int,
    *,
    generator: torch.Generator | None = None,
    max_images: int | None = None,
    fallback_names: Sequence[str] | None = None,
    augment: bool = True,
    cache: bool = True,
) -> tuple[Dataset, str]:
    """Random HR training patches with LR made on the fly: the data root's training photos, else offline samples.

    The images come from :func:`default_train_folder` (e.g. the shared ``train/SunHays80``), the first
    ``max_images`` of them in name order, read as :class:`HRImagesDataset` (MATLAB-compatible bicubic LR,
    quantised to 8 bits). Without a training folder, the bundled scikit-image photographs
    (:class:`srlib.data.SampleImagesDataset`) take their place, so notebooks and tests run offline.

    Args:
        scale: SR factor (2, 3 or 4); patch_size: HR patch side (multiple of ``scale``).
        generator: seeds the random crops and flips (reproducible runs).
        max_images: use only the first ``max_images`` photos of the folder (``None``: all).
        fallback_names: sample images for the offline fallback (default: the samples' default set).
        augment: random flips / rotations; cache: keep decoded folder images in memory.

    Returns:
        ``(dataset, source)``: items ``{"lr": (3, P/s, P/s), "hr": (3, P, P), "name", "gray"}``; ``source`` is
        the folder path, or ``"skimage.data (offline fallback)"``. The fallback announces itself in one line
        on stderr (never printed when the data root has training photos).

    Raises:
        ValueError: unsupported scale, bad patch size or ``max_images < 1`` (and what the datasets raise).
    """
    if max_images is not None and max_images < 1:
        raise ValueError(f"max_images must be >= 1 or None, got {max_images}")
    folder = default_train_folder()
    if folder is None:
        dataset = SampleImagesDataset(scale, names=fallback_names, patch_size=patch_size, augment=augment,
                                      generator=generator)
        root = data_dir()
        _announce_fallback(f"no training photos in {root / 'train'} or {root / 'DIV2K' / 'DIV2K_train_HR'}",
                           dataset.names)
        return dataset, "skimage.data (offline fallback)"
    files = list_images(folder)[:max_images]
    sources = [(p.stem, _FileLoader(p, False)) for p in files]
    dataset = HRImagesDataset(sources, scale, patch_size=patch_size, augment=augment, generator=generator, cache=cache)
    return dataset, str(folder)


def default_eval_set(scale: int, name: str = "Set5", fallback_names: Sequence[str] = FALLBACK_EVAL_NAMES
                     ) -> tuple[Dataset, str]:
    """A benchmark for evaluation when it is in the data root, else whole offline sample photographs.

    The offline fallback is taken only when the benchmark's folder is absent from the data root (not
    downloaded), and announces itself in one line on stderr. A folder that is there but lacks this scale
    raises instead of silently evaluating on other data.

    Args:
        scale: SR factor; name: benchmark, one of :data:`BENCHMARK_NAMES` (``"Set5"``, ``"Set14"``,
            ``"B100"``, ``"Urban100"``, ``"Manga109"``) or another set folder present in the data root.
        fallback_names: scikit-image photographs used when the benchmark is not downloaded.

    Returns:
        ``(dataset, label)``: whole LR/HR pairs (:class:`BenchmarkDataset` or
        :class:`srlib.data.SampleImagesDataset`); ``label`` is e.g. ``"Set5 x2"`` or
        ``"sample photographs x2 (offline fallback)"``.

    Raises:
        ValueError: unsupported scale, an unknown benchmark name (the message lists the valid names), an
            unknown or empty list of sample names.
        FileNotFoundError: the benchmark folder exists but has no data for ``scale`` (names the folders
            looked for and the scales present).
    """
    scale = check_scale(scale)
    base = _benchmark_root(None)
    valid = list(BENCHMARK_NAMES) + [n for n in available_benchmarks(base) if n not in BENCHMARK_NAMES]
    if name not in valid:
        close = difflib.get_close_matches(str(name), valid, n=1, cutoff=0.5)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise ValueError(f"unknown benchmark {name!r}{hint}; valid names: {', '.join(valid)}")
    if (base / name).is_dir():
        return BenchmarkDataset(name, scale, base), f"{name} x{scale}"
    dataset = SampleImagesDataset(scale, names=fallback_names)  # checks the names (a sequence, not a string)
    _announce_fallback(f"benchmark {name} not found (looked for {base / name})", dataset.names)
    return (dataset,
            f"sample photographs x{scale} (offline fallback)")
