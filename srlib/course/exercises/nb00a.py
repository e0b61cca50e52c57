"""Exercises of notebook 00a (super-resolution primer): PSNR, the EDSR residual block, the pixel shuffle."""

from __future__ import annotations

import math

import torch

from . import exercise


@exercise("00a.1", "PSNR of one grey level", "★ warm-up", points=1,
          solution="An error of one grey level everywhere gives MSE = 1, so PSNR = 10 log10(255^2) = 48.13 dB.",
          hint="PSNR = 10 log10(255^2 / MSE); what is the MSE when every pixel is off by one level?")
def _psnr_one_level(answer):
    # MSE = 1 (grey levels squared) -> 10 log10(255^2)
    expected = 10 * math.log10(255.0**2 / 1.0)
    ok = abs(float(answer) - expected) < 0.01
    return ok, f"{expected:.2f} dB" if ok else f"your answer {float(answer):.3f} dB is not it"


@exercise("00a.2", "Parameters of a residual block", "★★ practice", points=2,
          solution="Two 3x3 convolutions from 32 to 32 channels: 2 x (32 x 32 x 9 + 32) = 18,496 parameters.",
          hint="each 3x3 convolution from F to F channels has F*F*3*3 weights and F biases")
def _resblock_params(answer):
    from srlib.models.common import ResBlock, default_conv

    expected = sum(p.numel() for p in ResBlock(default_conv, 32, 3).parameters() if p.requires_grad)
    if int(answer) != answer:
        return False, f"a parameter count is an integer, got {answer!r}"
    ok = int(answer) == expected
    return ok, f"{expected:,} parameters" if ok else f"{int(answer):,} is not the count"


@exercise("00a.3", "The inverse of the pixel shuffle", "★★ practice", points=2,
          solution="view (B, F, h, s, w, s), permute to (B, F, s, s, h, w) (the two s axes in front), then reshape "
                   "to (B, F*s*s, h, w): the inverse of the shuffle's reshape and permute.",
          hint="view (B, F, h, s, w, s), then permute the two s axes in front of h and w")
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


exercise("00a.4", "The residual scale", "★★★ challenge", points=3,
         solution="With res_scale 0.1 each block starts as almost the identity, so early steps change the output "
                  "little and the loss falls more slowly; the papers use it because it keeps the training of wide "
                  "networks stable.")(None)
