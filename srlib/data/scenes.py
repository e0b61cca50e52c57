"""Demo scenes: small RGB crops with repeated structure, flat regions and edges, for looking at attention.

:func:`demo_scene` is the scene of notebook ``00b`` (also used by notebooks 02 and 03 and the attention
explorer, :mod:`srlib.viz.explorer`, which re-exports it): a facade from Urban100 when the benchmark data is
present, otherwise scikit-image's bundled brick wall. :func:`query_scene` is the same facade (or wall) with the
query pixels the notebooks look at (``00b`` and ``04``: 56 x 56 and four queries; ``02``: 64 x 64 and three).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from torch import Tensor

from .datasets import BenchmarkDataset, available_benchmarks
from .imresize import imresize
from .io import load_image

__all__ = ["QueryScene", "demo_scene", "query_scene"]


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
    crop, what = _facade_crop((16, 144), (64, 192)) if _have_facade() else _brick_crop(256)
    return imresize(crop, output_size=(size, size)).clamp(0, 1), f"{what}, shrunk to {size} x {size}"


@dataclass(frozen=True)
class QueryScene:
    """A scene and its query pixels: ``image (3, size, size)`` RGB in [0, 1], ``queries`` as ``(row, col)``."""

    image: Tensor
    description: str
    queries: list[tuple[int, int]]
    query_names: list[str]


#: size -> (Urban100 img_014 crop rows, cols, queries, names; brick crop side, queries, names)
_QUERY_SCENES = {
    56: ((16, 128), (72, 184), [(33, 3), (36, 35), (4, 52), (22, 49)], ["window", "pillar", "flat sky", "roof edge"],
         224, [(14, 12), (32, 37), (26, 26), (50, 29)],
         ["horizontal joint", "joint crossing", "flat brick face", "vertical joint"]),
    64: ((16, 144), (64, 192), [(33, 7), (4, 56), (22, 53)], ["window", "flat sky", "roof edge"],
         256, [(14, 12), (26, 26), (50, 29)], ["horizontal joint", "flat brick face", "vertical joint"]),
}


def query_scene(size: int = 56) -> QueryScene:
    """The facade of notebook ``00b`` with its query pixels: two on repeated structure, a flat one, an edge.

    With the benchmark data (``srlib.config.data_dir()``): Urban100 ``img_014``, x4 LR, a crop of twice ``size``
    shrunk x0.5 with MATLAB-compatible bicubic; otherwise scikit-image's ``brick.png`` (a 4 ``size`` crop shrunk
    x0.25). ``size=56`` (notebooks 00b, 04; ``L = 3136``) has four queries (window, pillar, flat sky, roof
    edge), ``size=64`` (notebook 02) three (window, flat sky, roof edge).

    Returns:
        :class:`QueryScene` with ``image (3, size, size)`` in [0, 1].
    Raises:
        ValueError: ``size`` other than 56 or 64.
    """
    if size not in _QUERY_SCENES:
        raise ValueError(f"query_scene has sizes {sorted(_QUERY_SCENES)}, got {size}")
    (r0, r1), (c0, c1), queries, names, side, brick_queries, brick_names = _QUERY_SCENES[size]
    if _have_facade():
        crop, what = _facade_crop((r0, r1), (c0, c1))
        image = imresize(crop, 0.5).clamp(0, 1)
        return QueryScene(image, f"{what} shrunk x0.5", list(queries), list(names))
    crop, what = _brick_crop(side)
    image = imresize(crop, 0.25).clamp(0, 1)
    return QueryScene(image, f"{what} shrunk x0.25", list(brick_queries), list(brick_names))


def _have_facade() -> bool:
    """Whether Urban100 x4 is under the data root (the facade scenes need its ``img_014``)."""
    return "Urban100" in available_benchmarks(scale=4)


def _facade_crop(rows: tuple[int, int], cols: tuple[int, int]) -> tuple[Tensor, str]:
    """Crop ``[rows, cols]`` of Urban100 ``img_014``'s x4 LR image ``(3, 256, 256)`` and its description."""
    urban = BenchmarkDataset("Urban100", 4)
    lr = urban[urban.names.index("img_014")]["lr"]  # (3, 256, 256) RGB in [0, 1]
    (r0, r1), (c0, c1) = rows, cols
    return lr[:, r0:r1, c0:c1], f"Urban100 img_014, x4 LR, crop [{r0}:{r1}, {c0}:{c1}]"


def _brick_crop(side: int) -> tuple[Tensor, str]:
    """The top-left ``side x side`` of scikit-image's bundled ``brick.png`` (grey, as RGB) and its description."""
    import skimage.data

    brick = load_image(Path(skimage.data.__file__).parent / "brick.png", allow_gray=True)  # (3, 512, 512)
    return brick[:, :side, :side], f"scikit-image brick (offline fallback), crop [0:{side}, 0:{side}]"
