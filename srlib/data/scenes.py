"""Demo scenes: small RGB crops with repeated structure, flat regions and edges, for looking at attention.

:func:`demo_scene` is the scene of notebook ``00b`` (also used by notebooks 02 and 03 and the attention
explorer, :mod:`srlib.viz.explorer`, which re-exports it): a facade from Urban100 when the benchmark data is
present, otherwise scikit-image's bundled brick wall.
"""

from __future__ import annotations

from pathlib import Path

from torch import Tensor

from .datasets import BenchmarkDataset, available_benchmarks
from .imresize import imresize
from .io import load_image

__all__ = ["demo_scene"]


def demo_scene(size: int = 64) -> tuple[Tensor, str]:
    """The scene of notebook ``00b``: repeated structure, flat regions and edges, ``size x size`` RGB in [0, 1].

    With the benchmark data present (``srlib.config.data_dir()``): Urban100 ``img_014``, x4 LR, crop
    ``[16:144, 64:192]`` (a facade with rows of windows); otherwise scikit-image's bundled ``brick.png``, crop
    ``[0:256, 0:256]`` (a brick wall; grey, replicated to RGB). Shrunk to ``size`` with MATLAB-compatible
    bicubic (:func:`srlib.data.imresize`).

    Returns:
        ``(image (3, size, size), description)``.
    Raises:
        ValueError: ``size < 8``.
    """
    if size < 8:
        raise ValueError(f"size must be >= 8, got {size}")
    if "Urban100" in available_benchmarks(scale=4):
        urban = BenchmarkDataset("Urban100", 4)
        crop = urban[urban.names.index("img_014")]["lr"][:, 16:144, 64:192]
        what = "Urban100 img_014, x4 LR, crop [16:144, 64:192]"
    else:
        import skimage.data

        crop = load_image(Path(skimage.data.__file__).parent / "brick.png", allow_gray=True)[:, :256, :256]
        what = "scikit-image brick (offline fallback), crop [0:256, 0:256]"
    return imresize(crop, output_size=(size, size)).clamp(0, 1), f"{what}, shrunk to {size} x {size}"
