"""Data for super-resolution: image I/O, MATLAB-compatible bicubic resizing, degradations,
datasets (benchmarks, DIV2K, folders, scikit-image samples) and downloads.

Images are ``(3, H, W)`` (or ``(B, 3, H, W)``) float tensors, RGB in ``[0, 1]``.
The data root is :func:`srlib.config.data_dir` (``$SRLIB_DATA``, default ``<repo>/data``).
``srlib.data.download`` is not imported here (it is a command-line tool:
``python -m srlib.data.download``).
"""

from .datasets import (
    BENCHMARK_NAMES,
    BenchmarkDataset,
    DIV2KDataset,
    HRFolderDataset,
    HRImagesDataset,
    PairedFolderDataset,
    PairedImagesDataset,
    available_benchmarks,
    benchmark_scales,
    default_train_folder,
    dihedral,
    list_images,
    seed_worker,
)
from .degradations import (
    SUPPORTED_SCALES,
    AddGaussianNoise,
    BicubicDownsample,
    Compose,
    Degradation,
    GaussianBlur,
    Quantize,
    check_scale,
    modcrop,
)
from .imresize import imresize
from .io import (
    IMAGE_EXTENSIONS,
    ImageError,
    ImageModeError,
    ImageReadError,
    from_uint8,
    load_image,
    quantize,
    save_image,
    to_uint8,
)
from .samples import (
    DEFAULT_SAMPLE_NAMES,
    FALLBACK_EVAL_NAMES,
    SAMPLE_IMAGES,
    SampleImagesDataset,
    default_eval_set,
    default_train_set,
    load_sample,
)
from .scenes import QueryScene, demo_scene, query_scene

__all__ = [
    # io
    "load_image", "save_image", "quantize", "from_uint8", "to_uint8", "IMAGE_EXTENSIONS",
    "ImageError", "ImageReadError", "ImageModeError",
    # resizing and degradations
    "imresize", "modcrop", "check_scale", "SUPPORTED_SCALES",
    "Degradation", "BicubicDownsample", "GaussianBlur", "AddGaussianNoise", "Quantize", "Compose",
    # datasets
    "BenchmarkDataset", "PairedFolderDataset", "PairedImagesDataset", "DIV2KDataset",
    "HRFolderDataset", "HRImagesDataset", "SampleImagesDataset",
    "available_benchmarks", "benchmark_scales", "default_train_folder", "default_train_set",
    "default_eval_set", "FALLBACK_EVAL_NAMES", "BENCHMARK_NAMES",
    "list_images", "dihedral", "seed_worker",
    "load_sample", "SAMPLE_IMAGES", "DEFAULT_SAMPLE_NAMES",
    # demo scenes
    "demo_scene", "query_scene", "QueryScene",
]
