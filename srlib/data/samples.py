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

from typing import Iterable, Sequence

import torch
from torch import Tensor
from torch.utils.data import Dataset

from .datasets import (
    BenchmarkDataset,
    HRImagesDataset,
    _FileLoader,
    available_benchmarks,
    default_train_folder,
    list_images,
)
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
        ValueError: unknown name, unsupported scale, bad options.
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
        names = list(DEFAULT_SAMPLE_NAMES if names is None else names)
        for n in names:
            if n not in SAMPLE_IMAGES:
                raise ValueError(f"unknown sample image {n!r}; available: {sorted(SAMPLE_IMAGES)}")
        super().__init__(
            [(n, SAMPLE_IMAGES[n]) for n in names], scale, degradation, patch_size, augment, repeat,
            generator, quantize_lr=quantize_lr, cache=True,
        )


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
        the folder path, or ``"skimage.data (offline fallback)"``.

    Raises:
        ValueError: unsupported scale, bad patch size or ``max_images < 1`` (and what the datasets raise).
    """
    if max_images is not None and max_images < 1:
        raise ValueError(f"max_images must be >= 1 or None, got {max_images}")
    folder = default_train_folder()
    if folder is None:
        names = tuple(fallback_names) if fallback_names is not None else None
        return (SampleImagesDataset(scale, names=names, patch_size=patch_size, augment=augment, generator=generator),
                "skimage.data (offline fallback)")
    files = list_images(folder)[:max_images]
    sources = [(p.stem, _FileLoader(p, False)) for p in files]
    dataset = HRImagesDataset(sources, scale, patch_size=patch_size, augment=augment, generator=generator, cache=cache)
    return dataset, str(folder)


def default_eval_set(scale: int, name: str = "Set5", fallback_names: Sequence[str] = FALLBACK_EVAL_NAMES
                     ) -> tuple[Dataset, str]:
    """A benchmark for evaluation when it is in the data root, else whole offline sample photographs.

    Args:
        scale: SR factor; name: benchmark (``"Set5"``, ``"Set14"``, ``"B100"``, ``"Urban100"``).
        fallback_names: scikit-image photographs used when the benchmark at this scale is absent.

    Returns:
        ``(dataset, label)``: whole LR/HR pairs (:class:`BenchmarkDataset` or
        :class:`srlib.data.SampleImagesDataset`); ``label`` is e.g. ``"Set5 x2"`` or
        ``"sample photographs x2 (offline fallback)"``.

    Raises:
        ValueError: unsupported scale or an unknown sample name.
    """
    if name in available_benchmarks(scale=scale):
        return BenchmarkDataset(name, scale), f"{name} x{scale}"
    return (SampleImagesDataset(scale, names=tuple(fallback_names)),
            f"sample photographs x{scale} (offline fallback)")
