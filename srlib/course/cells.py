"""Cells that every paper notebook repeats, as one call each: the GPU training switch and the SR crop figure.

* :func:`paper_training`: print the paper's training command and run it when ``SRLIB_RUN_FULL=1`` on CUDA;
* :func:`sr_crops`: super-resolve one evaluation image with several networks (bicubic first) and show one
  region of each next to HR, with each method's PSNR on the whole image.
"""

from __future__ import annotations

import os
import shlex
import subprocess
from typing import Mapping, Sequence

import torch

from srlib.course.recipe import Entry

__all__ = ["paper_training", "full_run_requested", "sr_crops"]


def full_run_requested() -> bool:
    """``True`` when the environment asks for the paper-size training (``SRLIB_RUN_FULL=1``) and CUDA is there."""
    return os.environ.get("SRLIB_RUN_FULL") == "1" and torch.cuda.is_available()


def paper_training(model: str, scale: int = 2, *, also_print: Sequence[str] = ()) -> str:
    """The "real thing (GPU)" cell: print the paper-configuration training command of ``model``
    (:func:`srlib.train.paper_command`) and the commands of ``also_print`` (printed only, e.g. a variant), and
    run the first when :func:`full_run_requested`.

    Returns:
        the training command.

    Raises:
        KeyError: what :func:`srlib.train.paper_command` raises for an unknown model.
        subprocess.CalledProcessError: the training run failed (only when it runs).
    """
    from srlib.train import paper_command

    command = paper_command(model, scale=scale)  # the paper's schedule: srlib.train.PAPER_SCHEDULES
    print(command)
    for other in also_print:
        print(other)
    if full_run_requested():
        subprocess.run(shlex.split(command), check=True)
    return command


def sr_crops(lr: torch.Tensor, hr: torch.Tensor, entries: Mapping[str, Entry], *, scale: int = 2, size: int = 96,
             top: int | None = None, left: int | None = None, quantise: bool = True, seed: int | None = None):
    """Super-resolve ``lr`` with bicubic and each entry, and draw the same region of each next to ``hr``.

    Args:
        lr, hr: ``(3, h, w)`` and ``(3, scale*h, scale*w)`` RGB in ``[0, 1]`` (e.g. an evaluation item).
        entries: ``{"label": network or callable LR (1, 3, h, w) -> SR}`` (what :func:`quality_table` takes);
            each runs through :func:`srlib.inference.super_resolve` (eval mode, output clamped to ``[0, 1]``).
        scale: SR factor (bicubic upscaling and the PSNR border).
        size: side of the region in HR pixels; top, left: its corner (``None``: the centre of the image).
        quantise: draw every result rounded to 8 bits, as :func:`srlib.inference.evaluate` scores it (the PSNR
            is the same either way: :func:`srlib.metrics.psnr` rounds to 8 bits itself).
        seed: re-seed the global generator before each method (NLSA and GLA draw random projections in every
            forward call); ``None`` leaves it alone.

    Returns:
        ``(figure, psnr)``: the ``Figure`` (not shown yet) and ``{"label": PSNR on Y of the whole image, dB}``
        for bicubic and every entry.

    Raises:
        ValueError: what :func:`srlib.inference.super_resolve` or :func:`srlib.viz.compare.plot_sr_crops` raises
            (a malformed image, a region outside the image).
    """
    from srlib import data as sdata
    from srlib import metrics
    from srlib.inference import super_resolve
    from srlib.viz.compare import plot_sr_crops

    methods: dict[str, Entry] = {"bicubic": lambda x: sdata.imresize(x, scale).clamp(0, 1)}
    methods.update(entries)
    images: dict[str, torch.Tensor] = {}
    with torch.no_grad():
        for label, method in methods.items():
            if seed is not None:
                torch.manual_seed(seed)
            images[label] = method(lr) if label == "bicubic" else super_resolve(method, lr)
    if quantise:
        images = {label: (im.clamp(0, 1) * 255).round() / 255 for label, im in images.items()}
    psnr = {label: float(metrics.psnr(im, hr, scale)) for label, im in images.items()}
    top = hr.shape[1] // 2 - size // 2 if top is None else top
    left = hr.shape[2] // 2 - size // 2 if left is None else left
    fig = plot_sr_crops({**images, "HR": hr}, top=top, left=left, size=size, psnr=psnr)
    return fig, psnr
