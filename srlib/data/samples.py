"""Colour photographs bundled with scikit-image: a training/demo set that needs no download.

``skimage.data`` ships a few natural RGB photographs inside the wheel (no network needed):
``astronaut`` (512x512), ``chelsea`` (300x451, a cat), ``coffee`` (400x600), ``rocket``
(427x640, JPEG), ``motorcycle`` (500x741, left view of ``stereo_motorcycle``), plus
non-photographic colour images (``hubble_deep_field``, ``immunohistochemistry``,
``retina``). Grayscale ones (``camera``, ``moon``, ...) and images whose files are only
downloaded on demand are left out.
"""

from __future__ import annotations

from typing import Iterable

import torch
from torch import Tensor

from .datasets import HRImagesDataset
from .degradations import Degradation
from .io import from_uint8

__all__ = ["SAMPLE_IMAGES", "DEFAULT_SAMPLE_NAMES", "load_sample", "SampleImagesDataset"]


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
