"""The quality table of the course notebooks: PSNR / SSIM of several super-resolvers on one data set, bicubic
first, and its text form. Every paper notebook prints one, so they all measure the same way.
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import torch

from srlib.course.recipe import Entry

__all__ = ["quality_table", "format_quality_table"]


def quality_table(entries: Mapping[str, Entry], dataset: Any, scale: int, *, bicubic: bool = True,
                  seed: int | None = 0) -> list[dict[str, Any]]:
    """PSNR / SSIM on Y of several super-resolvers on one data set, bicubic first.

    Args:
        entries: ``{"label": network or callable LR (3, h, w) -> SR (3, s*h, s*w)}``, RGB in ``[0, 1]``.
        dataset: items ``{"lr", "hr", "name"}`` (e.g. :func:`srlib.data.default_eval_set`).
        scale: SR factor (border crop).
        bicubic: put MATLAB-compatible bicubic first, as the baseline every trained network must beat.
        seed: re-seed the global generator before each entry (NLSA, GLA and ENLCA draw random projections in
            every forward call), so the table is the same on every run; ``None`` leaves it alone.

    Returns:
        one row per entry ``{"name", "psnr", "ssim", "gain_db"}`` (``gain_db``: PSNR above bicubic, ``None``
        without the bicubic row), in the order given.
    """
    from srlib import data as sdata
    from srlib.inference import evaluate

    items: list[tuple[str, Entry]] = []
    if bicubic:
        items.append(("bicubic", lambda lr: sdata.imresize(lr, scale)))
    items.extend(entries.items())
    rows: list[dict[str, Any]] = []
    for name, model in items:
        if seed is not None:
            torch.manual_seed(seed)
        r = evaluate(model, dataset, scale)
        rows.append({"name": name, "psnr": r["psnr"], "ssim": r["ssim"]})
    base = rows[0]["psnr"] if bicubic else None
    for row in rows:
        row["gain_db"] = None if base is None else row["psnr"] - base
    return rows


def format_quality_table(rows: Sequence[Mapping[str, Any]], title: str = "") -> str:
    """The rows of :func:`quality_table` as an aligned text table (PSNR in dB, two decimals; SSIM, four)."""
    width = max([len(str(r["name"])) for r in rows] + [len("network")])
    lines = [title] if title else []
    lines.append(f"{'network':<{width}}  {'PSNR (dB)':>9}  {'SSIM':>6}  {'vs bicubic':>10}")
    for r in rows:
        gain = "" if r.get("gain_db") is None else f"{r['gain_db']:+.2f} dB"
        ssim = "" if r.get("ssim") is None else f"{r['ssim']:.4f}"
        lines.append(f"{r['name']:<{width}}  {r['psnr']:9.2f}  {ssim:>6}  {gain:>10}")
    return "\n".join(lines)
