"""Datasets of (LR, HR) pairs for training and evaluation.

Every dataset returns items ``{"lr": (3, h, w), "hr": (3, s*h, s*w), "name": str,
"gray": bool}``, float32 RGB in ``[0, 1]``, ready for ``torch.utils.data.DataLoader``.
``gray`` is ``True`` when the HR file is stored as grayscale (replicated to RGB); the
MATLAB evaluation protocol treats such images differently, see :func:`srlib.metrics.psnr`.

* :class:`BenchmarkDataset` -- Set5 / Set14 / B100 / Urban100 / Manga109, stored LR files;
* :class:`PairedFolderDataset` -- any folder of HR images with a folder of LR images;
* :class:`DIV2KDataset` -- DIV2K in its published layout (the papers' training set);
* :class:`HRFolderDataset` -- a folder of HR images; LR made on the fly by a
  :class:`~srlib.data.degradations.Degradation` (default MATLAB bicubic);
* :class:`srlib.data.SampleImagesDataset` (in ``samples.py``) -- scikit-image's photographs.

Training options shared by the last four: ``patch_size`` (HR patch side, a multiple of
the scale; the LR patch is the aligned ``patch_size / scale`` crop), ``augment`` (one of
the 8 flips/rotations of the square, the same for LR and HR, as the official EDSR code's
``common.augment``), ``repeat`` (the dataset is ``repeat`` times longer, like EDSR's
``test_every`` trick) and ``generator`` (a ``torch.Generator`` for crops, flips and
random degradations; ``None`` uses torch's global generator).

DataLoader workers: each worker gets a copy of ``generator`` in the same state, so the
workers would draw the same crops. Pass ``worker_init_fn=seed_worker`` (reseeds each
copy from the worker's own seed) or leave ``generator=None`` (torch reseeds its global
generator per worker).
"""

from __future__ import annotations

import math
import os
import re
from pathlib import Path
from typing import Callable, Iterable, Sequence

import torch
from PIL import Image
from torch import Tensor
from torch.utils.data import Dataset, get_worker_info

from srlib.config import data_dir

from .degradations import BicubicDownsample, Degradation, check_scale, modcrop
from .io import IMAGE_EXTENSIONS, ImageReadError, is_grayscale_file, load_image, quantize

__all__ = [
    "BENCHMARK_NAMES",
    "BenchmarkDataset",
    "PairedFolderDataset",
    "DIV2KDataset",
    "HRFolderDataset",
    "HRImagesDataset",
    "PairedImagesDataset",
    "available_benchmarks",
    "benchmark_scales",
    "default_train_folder",
    "list_images",
    "dihedral",
    "seed_worker",
]

#: Benchmark sets in the order papers list them (others found on disk come after, sorted).
BENCHMARK_NAMES = ("Set5", "Set14", "B100", "Urban100", "Manga109")

_SRF_DIR = re.compile(r"^image_SRF_(\d+)$")
_SRF_FILE = re.compile(r"^(?P<name>.+)_SRF_(?P<s>\d+)_(?P<kind>HR|LR)$")


# ----------------------------------------------------------------------------- helpers
def list_images(folder: str | os.PathLike) -> list[Path]:
    """Sorted image files (by :data:`srlib.data.io.IMAGE_EXTENSIONS`) directly inside ``folder``.

    Raises:
        FileNotFoundError: ``folder`` does not exist or is not a folder (named).
        ValueError: ``folder`` holds no image files (named).
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"image folder not found: {folder}")
    files = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)
    if not files:
        raise ValueError(f"no image files ({', '.join(IMAGE_EXTENSIONS)}) in folder {folder}")
    return files


def dihedral(x: Tensor, k: int) -> Tensor:
    """One of the 8 symmetries of the square applied to the last two dims.

    ``k`` in ``0..7``: rotate by ``k % 4`` quarter turns, then (``k >= 4``) flip left-right.
    ``k = 0`` is the identity. Works on ``(..., H, W)``; odd ``k % 4`` swaps H and W.
    """
    if not 0 <= k < 8:
        raise ValueError(f"dihedral index must be in 0..7, got {k}")
    if k % 4:
        x = torch.rot90(x, k % 4, dims=(-2, -1))
    if k >= 4:
        x = torch.flip(x, dims=(-1,))
    return x.contiguous()


def seed_worker(worker_id: int) -> None:
    """``DataLoader(worker_init_fn=seed_worker)``: give each worker's copy of the dataset's
    ``generator`` its own seed (torch's per-worker seed, itself derived from the loader's
    generator, so runs stay reproducible)."""
    info = get_worker_info()
    if info is None:
        return
    gen = getattr(info.dataset, "generator", None)
    if isinstance(gen, torch.Generator):
        gen.manual_seed(torch.initial_seed() % (2**63))


def _randint(high: int, generator: torch.Generator | None) -> int:
    """Uniform integer in ``[0, high)``."""
    return int(torch.randint(high, (1,), generator=generator).item())


def _image_size(path: Path) -> tuple[int, int]:
    """(H, W) from the file header (no decoding)."""
    if not path.is_file():
        raise FileNotFoundError(f"image file not found: {path}")
    try:
        with Image.open(path) as im:
            w, h = im.size
    except Exception as err:  # noqa: BLE001 - re-raised with the file name
        raise ImageReadError(f"{path}: not an image file Pillow can read") from err
    return h, w


def _check_pair_size(hr_path: Path, hr_size, lr_path: Path, lr_size, scale: int) -> None:
    """HR must be ``scale`` times LR after cropping HR to a multiple of ``scale``."""
    (H, W), (h, w) = hr_size, lr_size
    if (H - H % scale, W - W % scale) != (h * scale, w * scale):
        raise ValueError(
            f"HR/LR size mismatch for scale {scale}: {hr_path} is {H}x{W} but {lr_path} is {h}x{w} "
            f"(expected HR {h * scale}x{w * scale}, up to {scale - 1} extra rows/columns)"
        )


class _PatchOptions:
    """Validation of the shared training options."""

    def _init_options(self, scale, patch_size, augment, repeat, generator):
        self.scale = check_scale(scale)
        if patch_size is not None:
            patch_size = int(patch_size)
            if patch_size < self.scale or patch_size % self.scale:
                raise ValueError(f"patch_size must be a positive multiple of scale {self.scale}, got {patch_size}")
        self.patch_size = patch_size
        self.augment = bool(augment)
        repeat = int(repeat)
        if repeat < 1:
            raise ValueError(f"repeat must be >= 1, got {repeat}")
        self.repeat = repeat
        if generator is not None and not isinstance(generator, torch.Generator):
            raise ValueError(f"generator must be a torch.Generator or None, got {type(generator).__name__}")
        self.generator = generator

    def _augment_pair(self, lr: Tensor, hr: Tensor) -> tuple[Tensor, Tensor]:
        if not self.augment:
            return lr, hr
        k = _randint(8, self.generator)
        return dihedral(lr, k), dihedral(hr, k)


# ----------------------------------------------------------------------------- stored pairs
class PairedImagesDataset(_PatchOptions, Dataset):
    """Base class: a list of ``(name, hr_path, lr_path)`` pairs of stored images.

    Args:
        pairs: the pairs, in item order.
        scale: SR factor (one of ``SUPPORTED_SCALES``).
        patch_size, augment, repeat, generator: training options (module docstring).
        allow_gray: accept grayscale files (replicated to RGB).
        check_sizes: read every file header now and raise on the first HR/LR size mismatch.

    Raises:
        ValueError: unsupported scale, bad options, no pairs, HR/LR size mismatch
            (naming both files and sizes).
        FileNotFoundError: a listed file is missing.
    """

    def __init__(
        self,
        pairs: Sequence[tuple[str, Path, Path]],
        scale: int,
        *,
        patch_size: int | None = None,
        augment: bool = False,
        repeat: int = 1,
        generator: torch.Generator | None = None,
        allow_gray: bool = False,
        check_sizes: bool = True,
    ):
        self._init_options(scale, patch_size, augment, repeat, generator)
        self.pairs = [(str(n), Path(h), Path(l)) for n, h, l in pairs]
        if not self.pairs:
            raise ValueError("dataset has no image pairs")
        self.allow_gray = bool(allow_gray)
        if check_sizes:
            for _, hr_path, lr_path in self.pairs:
                _check_pair_size(hr_path, _image_size(hr_path), lr_path, _image_size(lr_path), self.scale)

    @property
    def names(self) -> list[str]:
        """Image names in item order (without repetition)."""
        return [n for n, _, _ in self.pairs]

    def __len__(self) -> int:
        return len(self.pairs) * self.repeat

    def load_pair(self, i: int) -> tuple[Tensor, Tensor]:
        """Full-size ``(lr, hr)`` of pair ``i`` (HR cropped to exactly ``scale`` times LR)."""
        name, hr_path, lr_path = self.pairs[i]
        hr = load_image(hr_path, allow_gray=self.allow_gray)
        lr = load_image(lr_path, allow_gray=self.allow_gray)
        _check_pair_size(hr_path, hr.shape[-2:], lr_path, lr.shape[-2:], self.scale)
        h, w = lr.shape[-2:]
        return lr, hr[:, : h * self.scale, : w * self.scale]

    def __getitem__(self, index: int) -> dict:
        if not -len(self) <= index < len(self):
            raise IndexError(f"index {index} out of range for a dataset of length {len(self)}")
        i = index % len(self.pairs)
        lr, hr = self.load_pair(i)
        if self.patch_size is not None:
            p = self.patch_size // self.scale
            h, w = lr.shape[-2:]
            if h < p or w < p:
                raise ValueError(
                    f"{self.pairs[i][2]}: LR image {h}x{w} is smaller than the LR patch {p}x{p}"
                )
            iy, ix = _randint(h - p + 1, self.generator), _randint(w - p + 1, self.generator)
            s = self.scale
            lr = lr[:, iy : iy + p, ix : ix + p]
            hr = hr[:, iy * s : (iy + p) * s, ix * s : (ix + p) * s]
        lr, hr = self._augment_pair(lr, hr)
        gray = self.allow_gray and is_grayscale_file(self.pairs[i][1])
        return {"lr": lr.contiguous(), "hr": hr.contiguous(), "name": self.pairs[i][0], "gray": gray}


def _match_lr(hr_path: Path, lr_dir: Path, scale: int) -> Path:
    """LR file for an HR file: same name, or EDSR/DIV2K style ``<stem>x<scale><ext>``."""
    candidates = [lr_dir / hr_path.name, lr_dir / f"{hr_path.stem}x{scale}{hr_path.suffix}"]
    for c in candidates:
        if c.is_file():
            return c
    raise FileNotFoundError(
        f"no LR image for {hr_path}: tried {candidates[0]} and {candidates[1]}"
    )


class PairedFolderDataset(PairedImagesDataset):
    """HR images in ``hr_dir`` paired with LR images in ``lr_dir``.

    The LR file of ``hr_dir/<stem>.<ext>`` is ``lr_dir/<stem>.<ext>`` or, as in the EDSR and
    DIV2K releases, ``lr_dir/<stem>x<scale>.<ext>``. The HR image may have up to
    ``scale - 1`` extra rows/columns (it is cropped, as the official EDSR code does).

    Args:
        hr_dir, lr_dir: folders.
        scale: SR factor in ``SUPPORTED_SCALES``.
        patch_size, augment, repeat, generator: training options (module docstring).
        allow_gray: accept grayscale files.
        names: keep only these HR stems (in this order).

    Items: ``{"lr": (3, h, w), "hr": (3, s*h, s*w), "name": HR stem, "gray": bool}``, float32 in
    ``[0, 1]``; ``gray`` tells whether the HR file is stored as grayscale (see :func:`srlib.metrics.psnr`).

    Raises:
        FileNotFoundError: a folder or a matching LR file is missing (named).
        ValueError: empty folder, unsupported scale, HR/LR size mismatch (both files named).
    """

    def __init__(
        self,
        hr_dir: str | os.PathLike,
        lr_dir: str | os.PathLike,
        scale: int,
        *,
        patch_size: int | None = None,
        augment: bool = False,
        repeat: int = 1,
        generator: torch.Generator | None = None,
        allow_gray: bool = False,
        names: Iterable[str] | None = None,
    ):
        scale = check_scale(scale)
        hr_dir, lr_dir = Path(hr_dir), Path(lr_dir)
        hr_files = list_images(hr_dir)
        if not lr_dir.is_dir():
            raise FileNotFoundError(f"LR folder not found: {lr_dir}")
        if names is not None:
            by_stem = {p.stem: p for p in hr_files}
            wanted = list(names)
            missing = [n for n in wanted if n not in by_stem]
            if missing:
                raise FileNotFoundError(f"images {missing[:5]} not found in {hr_dir}")
            hr_files = [by_stem[n] for n in wanted]
        pairs = [(p.stem, p, _match_lr(p, lr_dir, scale)) for p in hr_files]
        super().__init__(
            pairs, scale, patch_size=patch_size, augment=augment, repeat=repeat,
            generator=generator, allow_gray=allow_gray,
        )
        self.hr_dir, self.lr_dir = hr_dir, lr_dir


class DIV2KDataset(PairedFolderDataset):
    """DIV2K (Agustsson & Timofte 2017) with its bicubic LR images, as the papers train on.

    Layout (the published zip files extracted into ``root``)::

        root/DIV2K_train_HR/0001.png ... 0800.png
        root/DIV2K_train_LR_bicubic/X2/0001x2.png ...
        root/DIV2K_valid_HR/0801.png ... 0900.png
        root/DIV2K_valid_LR_bicubic/X2/0801x2.png ...

    Args:
        root: the DIV2K folder (or its parent); default ``data_dir() / "DIV2K"``.
        scale: 2, 3 or 4.
        split: ``"train"`` or ``"valid"``.
        image_range: optional ``(first, last)`` image numbers, inclusive, e.g. ``(1, 800)``
            or ``(801, 810)`` (the official code's ``--data_range``).
        patch_size, augment, repeat, generator: training options (module docstring).

    Raises:
        FileNotFoundError: the HR or LR folder is missing (named; run
            ``python -m srlib.data.download div2k``).
        ValueError: bad split / scale / range, size mismatch.
    """

    def __init__(
        self,
        root: str | os.PathLike | None = None,
        scale: int = 2,
        split: str = "train",
        *,
        image_range: tuple[int, int] | None = None,
        patch_size: int | None = None,
        augment: bool = False,
        repeat: int = 1,
        generator: torch.Generator | None = None,
    ):
        scale = check_scale(scale)
        if split not in ("train", "valid"):
            raise ValueError(f"DIV2K split must be 'train' or 'valid', got {split!r}")
        root = Path(root) if root is not None else data_dir() / "DIV2K"
        hr_name = f"DIV2K_{split}_HR"
        if not (root / hr_name).is_dir() and (root / "DIV2K" / hr_name).is_dir():
            root = root / "DIV2K"
        hr_dir = root / hr_name
        lr_dir = root / f"DIV2K_{split}_LR_bicubic" / f"X{scale}"
        for folder in (hr_dir, lr_dir):
            if not folder.is_dir():
                raise FileNotFoundError(
                    f"DIV2K folder not found: {folder} (python -m srlib.data.download div2k --root {root.parent})"
                )
        names = None
        if image_range is not None:
            first, last = (int(v) for v in image_range)
            if first > last:
                raise ValueError(f"image_range must be (first, last) with first <= last, got {image_range!r}")
            names = [p.stem for p in list_images(hr_dir) if p.stem.isdigit() and first <= int(p.stem) <= last]
            if not names:
                raise ValueError(f"no DIV2K images numbered {first}..{last} in {hr_dir}")
        super().__init__(
            hr_dir, lr_dir, scale, patch_size=patch_size, augment=augment, repeat=repeat,
            generator=generator, names=names,
        )
        self.root, self.split = root, split


# ----------------------------------------------------------------------------- benchmarks
def _benchmark_root(root) -> Path:
    return Path(root) if root is not None else data_dir() / "benchmark"


def benchmark_scales(name: str, root: str | os.PathLike | None = None) -> list[int]:
    """Scales (within ``SUPPORTED_SCALES``) for which benchmark ``name`` has LR images."""
    folder = _benchmark_root(root) / name
    scales = set()
    if folder.is_dir():
        for sub in folder.iterdir():
            m = _SRF_DIR.match(sub.name)
            if m and sub.is_dir():
                scales.add(int(m.group(1)))
        lr_root = folder / "LR_bicubic"
        if (folder / "HR").is_dir() and lr_root.is_dir():
            for sub in lr_root.iterdir():
                if sub.is_dir() and re.fullmatch(r"X\d+", sub.name):
                    scales.add(int(sub.name[1:]))
    return sorted(s for s in scales if s in (2, 3, 4))


def available_benchmarks(root: str | os.PathLike | None = None, scale: int | None = None) -> list[str]:
    """Benchmark sets present under ``root`` (default ``data_dir() / "benchmark"``).

    A set counts if it has LR images in either layout (for ``scale``, if given). Order:
    :data:`BENCHMARK_NAMES` first, then any other set alphabetically. A missing root gives ``[]``.
    """
    base = _benchmark_root(root)
    if not base.is_dir():
        return []
    if scale is not None:
        scale = check_scale(scale)
    found = []
    for sub in base.iterdir():
        if sub.is_dir():
            scales = benchmark_scales(sub.name, base)
            if scales and (scale is None or scale in scales):
                found.append(sub.name)
    order = {n: i for i, n in enumerate(BENCHMARK_NAMES)}
    return sorted(found, key=lambda n: (order.get(n, len(order)), n))


class BenchmarkDataset(PairedImagesDataset):
    """A benchmark test set (Set5, Set14, B100, Urban100, Manga109) with its stored LR images.

    Two layouts are understood, under ``root / name``:

    * SelfExSR (Huang et al. 2015; the shared copy): ``image_SRF_<s>/img_001_SRF_<s>_HR.png``
      and ``..._LR.png`` side by side; item names are ``img_001``, ...;
    * EDSR ``benchmark.tar``: ``HR/baby.png`` and ``LR_bicubic/X<s>/babyx<s>.png``; names are
      the HR stems. HR images with up to ``s - 1`` extra rows/columns are cropped.

    Grayscale-stored images are accepted and replicated to three channels (``allow_gray``):
    Set14's ``img_003`` ("bridge") is stored as 8-bit grayscale in the SelfExSR release.

    Args:
        name: folder name, e.g. ``"Set5"``.
        scale: 2, 3 or 4.
        root: benchmark root, default ``data_dir() / "benchmark"``.

    Items: ``{"lr": (3, h, w), "hr": (3, s*h, s*w), "name": str, "gray": bool}``, float32 RGB
    in ``[0, 1]``. ``gray`` is ``True`` for grayscale-stored HR files; pass it to
    :func:`srlib.metrics.psnr` / :func:`srlib.metrics.ssim` (``gray=item["gray"]``) to
    follow the MATLAB protocol behind the published tables.

    Raises:
        FileNotFoundError: missing set folder, no data for ``scale``, missing LR file (named).
        ValueError: unsupported scale, empty folder, HR size != ``scale`` x LR size (both files named).
    """

    def __init__(self, name: str, scale: int, root: str | os.PathLike | None = None):
        scale = check_scale(scale)
        base = _benchmark_root(root)
        folder = base / name
        if not folder.is_dir():
            have = available_benchmarks(base)
            raise FileNotFoundError(f"benchmark folder not found: {folder} (available: {have or 'none'})")
        srf = folder / f"image_SRF_{scale}"
        edsr_hr, edsr_lr = folder / "HR", folder / "LR_bicubic" / f"X{scale}"
        if srf.is_dir():
            pairs = self._selfexsr_pairs(srf, scale)
        elif edsr_hr.is_dir() and edsr_lr.is_dir():
            pairs = [(p.stem, p, _match_lr(p, edsr_lr, scale)) for p in list_images(edsr_hr)]
        else:
            raise FileNotFoundError(
                f"benchmark {name!r} has no data for scale {scale}: neither {srf} nor {edsr_lr} exists "
                f"(scales present: {benchmark_scales(name, base) or 'none'})"
            )
        super().__init__(pairs, scale, allow_gray=True)
        self.name, self.root, self.folder = name, base, folder

    @staticmethod
    def _selfexsr_pairs(folder: Path, scale: int) -> list[tuple[str, Path, Path]]:
        files = list_images(folder)
        pairs = []
        for p in files:
            m = _SRF_FILE.match(p.stem)
            if not m or m.group("kind") != "HR":
                continue
            if int(m.group("s")) != scale:
                raise ValueError(f"{p}: file name says scale {m.group('s')} inside the folder for scale {scale}")
            lr = p.with_name(f"{m.group('name')}_SRF_{scale}_LR{p.suffix}")
            if not lr.is_file():
                raise FileNotFoundError(f"LR image missing for {p}: expected {lr}")
            pairs.append((m.group("name"), p, lr))
        if not pairs:
            raise ValueError(f"no '*_SRF_{scale}_HR' images in folder {folder}")
        return pairs


# ----------------------------------------------------------------------------- LR on the fly
class HRImagesDataset(_PatchOptions, Dataset):
    """Base class: HR images from loader callables, LR made on the fly by a degradation.

    Each HR image is cropped to a multiple of ``scale`` (:func:`modcrop`). With
    ``patch_size``, a random HR patch (top-left on the ``scale`` grid) and its aligned LR
    patch are returned. The LR patch equals the same crop of the LR of the whole image:
    only the patch plus the degradation's ``margin`` is degraded (or the whole image when
    the margin is unknown).

    Args:
        sources: ``(name, load)`` pairs; ``load()`` returns ``(3, H, W)`` float in ``[0, 1]``.
        scale: SR factor in ``SUPPORTED_SCALES``.
        degradation: HR -> LR map with ``degradation.scale == scale``; default
            ``BicubicDownsample(scale)``.
        patch_size, augment, repeat, generator: training options (module docstring).
        quantize_lr: round the LR image to 8 bits (as stored LR files are). Default ``True``.
        cache: keep decoded HR images in memory (as uint8).

    Items: ``{"lr": (3, P/s, P/s) or (3, H/s, W/s), "hr": (3, P, P) or (3, H, W), "name": str,
    "gray": bool}`` (``gray``: the source file is stored as grayscale; see :class:`BenchmarkDataset`).

    Raises:
        ValueError: unsupported scale, degradation scale != scale, bad options, no sources,
            an image smaller than the patch (named).
    """

    def __init__(
        self,
        sources: Sequence[tuple[str, Callable[[], Tensor]]],
        scale: int,
        degradation: Degradation | None = None,
        patch_size: int | None = None,
        augment: bool = False,
        repeat: int = 1,
        generator: torch.Generator | None = None,
        *,
        quantize_lr: bool = True,
        cache: bool = False,
    ):
        self._init_options(scale, patch_size, augment, repeat, generator)
        self.sources = list(sources)
        if not self.sources:
            raise ValueError("dataset has no images")
        if degradation is None:
            degradation = BicubicDownsample(self.scale)
        deg_scale = getattr(degradation, "scale", None)
        if deg_scale != self.scale:
            raise ValueError(f"degradation {degradation!r} has scale {deg_scale}, dataset scale is {self.scale}")
        self.degradation = degradation
        self.quantize_lr = bool(quantize_lr)
        self.cache = bool(cache)
        self._cache: dict[int, Tensor] = {}

    @property
    def names(self) -> list[str]:
        return [n for n, _ in self.sources]

    def __len__(self) -> int:
        return len(self.sources) * self.repeat

    def load_hr(self, i: int) -> Tensor:
        """HR image ``i``, modcropped, ``(3, H, W)`` float32 in ``[0, 1]``."""
        if i in self._cache:
            return self._cache[i].float().div(255.0)
        hr = self.sources[i][1]()
        hr = modcrop(hr, self.scale)
        if self.cache:
            self._cache[i] = hr.mul(255.0).round().to(torch.uint8)
        return hr

    def _degrade(self, hr: Tensor) -> Tensor:
        if isinstance(self.degradation, Degradation):
            return self.degradation(hr, generator=self.generator)
        return self.degradation(hr)

    def __getitem__(self, index: int) -> dict:
        if not -len(self) <= index < len(self):
            raise IndexError(f"index {index} out of range for a dataset of length {len(self)}")
        i = index % len(self.sources)
        name = self.sources[i][0]
        hr = self.load_hr(i)
        s = self.scale
        if self.patch_size is None:
            lr = self._degrade(hr)
        else:
            P, p = self.patch_size, self.patch_size // s
            H, W = hr.shape[-2:]
            if H < P or W < P:
                raise ValueError(f"image {name!r} ({H}x{W}) is smaller than the patch {P}x{P}")
            iy, ix = _randint(H // s - p + 1, self.generator), _randint(W // s - p + 1, self.generator)
            y0, x0 = iy * s, ix * s
            margin = getattr(self.degradation, "margin", None)
            if margin is None:
                lr = self._degrade(hr)[:, iy : iy + p, ix : ix + p]
            else:
                m = math.ceil(margin / s) * s  # keep the region on the scale grid
                ry0, rx0 = max(0, y0 - m), max(0, x0 - m)
                ry1, rx1 = min(H, y0 + P + m), min(W, x0 + P + m)
                region = self._degrade(hr[:, ry0:ry1, rx0:rx1])
                oy, ox = (y0 - ry0) // s, (x0 - rx0) // s
                lr = region[:, oy : oy + p, ox : ox + p]
            hr = hr[:, y0 : y0 + P, x0 : x0 + P]
        expected = (hr.shape[-2] // s, hr.shape[-1] // s)
        if tuple(lr.shape[-2:]) != expected:
            raise ValueError(
                f"degradation {self.degradation!r} made LR of size {tuple(lr.shape[-2:])} from HR "
                f"{tuple(hr.shape[-2:])}; expected {expected}"
            )
        if self.quantize_lr:
            lr = quantize(lr)
        lr, hr = self._augment_pair(lr.float(), hr.float())
        loader = self.sources[i][1]
        gray = isinstance(loader, _FileLoader) and loader.allow_gray and is_grayscale_file(loader.path)
        return {"lr": lr.contiguous(), "hr": hr.contiguous(), "name": name, "gray": gray}


class HRFolderDataset(HRImagesDataset):
    """A folder of HR images (e.g. ``data_dir()/"train"/SunHays80``); LR made on the fly.

    Args:
        folder: folder of image files (PNG/JPEG/...; read with :func:`load_image`).
        scale: 2, 3 or 4.
        degradation: default ``BicubicDownsample(scale)`` (MATLAB bicubic, float, then
            quantised to 8 bits because ``quantize_lr=True``).
        patch_size: HR patch side (multiple of ``scale``), or ``None`` for whole images.
        augment: random flips/rotations (8 dihedral transforms), same for LR and HR.
        repeat: dataset length multiplier.
        generator: ``torch.Generator`` for crops, flips and random degradations.
        quantize_lr, cache: see :class:`HRImagesDataset`.
        allow_gray: accept grayscale files (replicated to RGB).

    Items: ``{"lr": (3, P/s, P/s), "hr": (3, P, P), "name": file stem}`` float32 in ``[0, 1]``.

    Raises:
        FileNotFoundError: missing folder. ValueError: empty folder, unsupported scale, bad options.
    """

    def __init__(
        self,
        folder: str | os.PathLike,
        scale: int,
        degradation: Degradation | None = None,
        patch_size: int | None = None,
        augment: bool = False,
        repeat: int = 1,
        generator: torch.Generator | None = None,
        *,
        quantize_lr: bool = True,
        cache: bool = False,
        allow_gray: bool = False,
    ):
        check_scale(scale)
        self.folder = Path(folder)
        files = list_images(self.folder)
        sources = [(p.stem, _FileLoader(p, allow_gray)) for p in files]
        super().__init__(
            sources, scale, degradation, patch_size, augment, repeat, generator,
            quantize_lr=quantize_lr, cache=cache,
        )


class _FileLoader:
    """Picklable ``load()`` for one file (DataLoader workers pickle the dataset)."""

    def __init__(self, path: Path, allow_gray: bool):
        self.path, self.allow_gray = path, allow_gray

    def __call__(self) -> Tensor:
        return load_image(self.path, allow_gray=self.allow_gray)


def default_train_folder() -> Path | None:
    """Folder of HR training images to use when none is given.

    Order: the first (alphabetically) subfolder of ``data_dir()/"train"`` holding images
    (the shared data has ``train/SunHays80``), else ``data_dir()/"DIV2K"/"DIV2K_train_HR"``,
    else ``None`` (callers then fall back to :class:`srlib.data.SampleImagesDataset`).
    """
    root = data_dir()
    train = root / "train"
    if train.is_dir():
        for sub in sorted(p for p in train.iterdir() if p.is_dir()):
            if any(f.is_file() and f.suffix.lower() in IMAGE_EXTENSIONS for f in sub.iterdir()):
                return sub
    div2k = root / "DIV2K" / "DIV2K_train_HR"
    if div2k.is_dir() and any(f.suffix.lower() in IMAGE_EXTENSIONS for f in div2k.iterdir()):
        return div2k
    return None
