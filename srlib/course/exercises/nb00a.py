"""Exercises of notebook 00a (super-resolution primer): PSNR, the EDSR residual block, the pixel shuffle."""

from __future__ import annotations

import math

import torch

from ._texts import checks


@checks("00a.1")
def _psnr_one_level(answer):
    # MSE = 1 (grey levels squared) -> 10 log10(255^2)
    expected = 10 * math.log10(255.0**2 / 1.0)
    ok = abs(float(answer) - expected) < 0.01
    return ok, f"{expected:.2f} dB" if ok else f"your answer {float(answer):.3f} dB is not it"


@checks("00a.2")
def _resblock_params(answer):
    from srlib.models.common import ResBlock, default_conv

    expected = sum(p.numel() for p in ResBlock(default_conv, 32, 3).parameters() if p.requires_grad)
    if int(answer) != answer:
        return False, f"a parameter count is an integer, got {answer!r}"
    ok = int(answer) == expected
    return ok, f"{expected:,} parameters" if ok else f"{int(answer):,} is not the count"


@checks("00a.3")
def _pixel_unshuffle(answer):
    if not callable(answer):
        return False, f"expected a function (y, s) -> tensor, got {type(answer).__name__}"
    gen = torch.Generator().manual_seed(0)
    for s in (2, 3):
        y = torch.randn(2, 3, 4 * s, 5 * s, generator=gen)  # (B, F, s*h, s*w)
        got = answer(y, s)
        want = torch.nn.PixelUnshuffle(s)(y)
        if tuple(got.shape) != tuple(want.shape):
            return False, f"s = {s}: shape {tuple(got.shape)}, expected {tuple(want.shape)}"
        if not torch.equal(got, want):
            return False, f"s = {s}: right shape, but the channels are in another order than PixelUnshuffle's"
    return True, "matches torch.nn.PixelUnshuffle for s = 2 and 3"
