"""End to end: srlib.inference.evaluate on a benchmark lands on the papers' Bicubic rows.

This exercises the whole evaluation path (dataset -> model -> quantise -> Y -> crop -> PSNR/SSIM), including
the grayscale-stored Set14 image, which must be scored on intensity like the MATLAB scripts do.
"""

import pytest
import torch

from srlib.data import BenchmarkDataset, imresize
from srlib.inference import evaluate


class Bicubic(torch.nn.Module):
    """The bicubic baseline as a 'network': MATLAB-compatible imresize by the scale factor."""

    def __init__(self, scale: int) -> None:
        super().__init__()
        self.scale = scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return imresize(x, self.scale)


@pytest.mark.parametrize("name, scale, want_psnr, want_ssim", [("Set5", 2, 33.66, 0.9299), ("Set14", 2, 30.24, 0.8688)])
def test_bicubic_baseline_matches_the_papers(data_root, name, scale, want_psnr, want_ssim):
    result = evaluate(Bicubic(scale), BenchmarkDataset(name, scale), scale, progress=False)
    assert result["psnr"] == pytest.approx(want_psnr, abs=0.05)
    assert result["ssim"] == pytest.approx(want_ssim, abs=0.002)
