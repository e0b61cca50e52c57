"""Cells that every paper notebook repeats, as one call each: the GPU training switch, the evaluation table and
the SR crop figure.

* :func:`paper_training`: print the paper's training command and run it when ``SRLIB_RUN_FULL=1`` on CUDA;
* :func:`evaluation_table`: the quality table of the tiny and shipped networks, printed, with what it must
  show asserted (shipped networks above bicubic and at their stored values, tiny runs inside their spread);
* :func:`sr_crops`: super-resolve one evaluation image with several networks (bicubic first) and show one
  region of each next to HR, with each method's PSNR on the whole image.
"""

from __future__ import annotations

import os
import shlex
import subprocess
from typing import Any, Mapping, Sequence

import torch

from srlib.course.recipe import Entry

__all__ = ["paper_training", "full_run_requested", "evaluation_table", "sr_crops", "SET5_X2_BICUBIC"]

#: Bicubic PSNR (dB, Y) on Set5 x2 under srlib's protocol (the papers print 33.66).
SET5_X2_BICUBIC = 33.68


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


def evaluation_table(entries: Mapping[str, Entry], eval_set: Any, eval_name: str, *, notebook: str,
                     stored: Mapping[str, float], tiny: Mapping[str, tuple[str, str]], title: str | None = None,
                     scale: int = 2) -> dict[str, dict[str, Any]]:
    """The evaluation cell of a paper notebook: :func:`quality_table` of ``entries`` (bicubic first), printed,
    and what it must show asserted, so that a notebook cannot print a table that contradicts its text.

    Args:
        entries: ``{"label": network or callable}`` (what :func:`quality_table` takes).
        eval_set, eval_name: what :func:`srlib.data.default_eval_set` returns.
        notebook: the notebook's key in ``srlib/spread/`` (e.g. ``"03"``).
        stored: ``{"label": PSNR in dB}`` of the shipped networks on Set5 x2 (the README's results table): each
            must beat bicubic in every data setting; with the benchmark data (:func:`data_setting`) the table
            must be Set5 x2, bicubic within 0.01 dB of :data:`SET5_X2_BICUBIC` and each shipped network within
            0.01 dB of its stored value (the README's two decimals: the measured values are within 0.005 dB).
        tiny: ``{"label": (case, metric)}``: the tiny runs, each inside its measured spread
            (:func:`assert_in_spread`, floor 0.05 dB); one printed line each.
        title: the table's title (default ``eval_name``).
        scale: SR factor.

    Returns:
        ``{"label": row}``: the rows of :func:`quality_table` by name, bicubic included.

    Raises:
        AssertionError: the table does not show what it must (the message names the row).
        KeyError: a label of ``stored`` or ``tiny`` that is not in ``entries``; what :func:`spread_band` raises.
    """
    from srlib.course.spread import assert_in_spread, data_setting
    from srlib.course.tables import format_quality_table, quality_table

    unknown = sorted(set(stored) - set(entries) | set(tiny) - set(entries))
    if unknown:
        raise KeyError(f"evaluation_table: {unknown} not among the entries {list(entries)}")
    rows = quality_table(entries, eval_set, scale)
    print(format_quality_table(rows, eval_name if title is None else title))
    by_name = {r["name"]: r for r in rows}
    for name in stored:
        assert by_name[name]["gain_db"] > 0, f"{name} does not beat bicubic: {by_name[name]}"
    if data_setting() == "data":  # Set5 x2: the README's results table
        assert eval_name == "Set5 x2", f"the benchmark data is there, but the table is on {eval_name}"
        assert abs(by_name["bicubic"]["psnr"] - SET5_X2_BICUBIC) < 0.01, by_name["bicubic"]
        for name, value in stored.items():
            assert abs(by_name[name]["psnr"] - value) <= 0.01, (name, by_name[name]["psnr"], value)
    for name, (case, metric) in tiny.items():
        lo, hi = assert_in_spread(notebook, case, metric, by_name[name]["psnr"], floor=0.05)
        print(f"{name}: {by_name[name]['psnr']:.2f} dB, inside the measured band [{lo:.2f}, {hi:.2f}] dB")
    return by_name


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
