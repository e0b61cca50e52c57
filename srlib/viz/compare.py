"""Side-by-side SR crops: the picture that goes with :func:`srlib.course.quality_table`."""

from __future__ import annotations

from typing import Mapping

import torch

__all__ = ["plot_sr_crops"]


def plot_sr_crops(images: Mapping[str, torch.Tensor], *, top: int, left: int, size: int = 96,
                  psnr: Mapping[str, float] | None = None, panel: float = 2.6):
    """One row of crops of the same region: e.g. bicubic / tiny / shipped / HR.

    Args:
        images: ``{"title": (3, H, W) RGB in [0, 1]}``, all the same size (the SR images and the HR image).
        top, left: corner of the crop in HR pixels; size: crop side in HR pixels.
        psnr: optional ``{"title": PSNR in dB}`` printed under the titles that have one.
        panel: inches per panel.

    Returns:
        The ``Figure`` (nothing is shown).

    Raises:
        ValueError: no images, images of different sizes, or a crop outside the image (names the title).
    """
    import matplotlib.pyplot as plt

    if not images:
        raise ValueError("plot_sr_crops: no images given")
    shapes = {title: tuple(im.shape) for title, im in images.items()}
    first = next(iter(shapes.values()))
    for title, shape in shapes.items():
        if len(shape) != 3 or shape[0] != 3:
            raise ValueError(f"plot_sr_crops: image {title!r} must be (3, H, W), got {shape}")
        if shape != first:
            raise ValueError(f"plot_sr_crops: image {title!r} has shape {shape}, the first one {first}")
        if not (0 <= top and 0 <= left and top + size <= shape[1] and left + size <= shape[2]):
            raise ValueError(f"plot_sr_crops: crop ({top}, {left}, size {size}) leaves image {title!r} of {shape}")
    fig, axes = plt.subplots(1, len(images), figsize=(panel * len(images), panel + 0.4), squeeze=False)
    for ax, (title, im) in zip(axes[0], images.items()):
        crop = im[:, top: top + size, left: left + size].clamp(0, 1).permute(1, 2, 0).detach().cpu().numpy()
        ax.imshow(crop, interpolation="nearest")
        label = title if psnr is None or title not in psnr else f"{title}\n{psnr[title]:.2f} dB"
        ax.set_title(label, fontsize=10)
        ax.axis("off")
    fig.tight_layout()
    return fig
