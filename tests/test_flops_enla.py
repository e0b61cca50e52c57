"""ENLA FLOPs (srlib.analysis.flops.enla_flops) against ENLCN Table 4 and against FlopCounterMode."""

from __future__ import annotations

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from srlib.analysis.flops import ENLCN_TABLE4_ENLCA_GFLOPS, ENLCN_TABLE4_GFLOPS, conv_flops, enla_flops, nla_flops
from srlib.attention.enla import ENLCA, enla, gaussian_orthogonal_matrix

H = W = 100
C = 64


@pytest.mark.parametrize("m", sorted(ENLCN_TABLE4_ENLCA_GFLOPS))
def test_enlcn_table4_enlca_within_5_percent(m):
    paper = ENLCN_TABLE4_ENLCA_GFLOPS[m]
    ours = enla_flops(H, W, C, m, reduction=1).gflops
    assert abs(ours - paper) / paper < 0.05
    assert round(ours, 2) == pytest.approx(paper, abs=0.011)  # printed with two decimals


def test_enla_terms_follow_the_papers_complexity_formula():
    # O(2mNc + 2mNc_out + mN) multiply-adds, 2 FLOPs each
    N, m, c, c_out = H * W, 128, 64, 64
    count = enla_flops(H, W, C, m, reduction=1)
    assert count.total == 2 * (2 * m * N * c + 2 * m * N * c_out + m * N)
    assert count.terms["features"] == 2 * count.terms["context"]
    # ENLCN's own module: 256 channels, reduction 4 -> 64-channel embeddings, 256-channel values
    net = enla_flops(H, W, 256, m)
    assert net.terms["features"] == 2 * 2 * N * m * 64 and net.terms["context"] == 2 * N * m * 256


def test_enla_is_linear_and_nla_quadratic_in_the_number_of_positions():
    small, big = enla_flops(50, 50, C, reduction=1), enla_flops(100, 100, C, reduction=1)
    assert big.total == 4 * small.total
    assert nla_flops(100, 100, C, reduction=1).total == 16 * nla_flops(50, 50, C, reduction=1).total
    # Table 4's ordering: ENLCA-m128 is cheaper than one 3x3 conv and ~39x cheaper than NLA
    assert enla_flops(H, W, C, 128, reduction=1).gflops < conv_flops(H, W, C, C, 3) / 1e9
    ratio = ENLCN_TABLE4_GFLOPS["NLA"] / enla_flops(H, W, C, 128, reduction=1).gflops
    assert 35 < ratio < 45


def test_matmul_terms_match_flop_counter_on_srlib_enla():
    h, w, d, dv, m = 12, 10, 16, 24, 32
    q, k = torch.randn(1, h * w, d), torch.randn(1, h * w, d)
    v = torch.randn(1, h * w, dv)
    proj = gaussian_orthogonal_matrix(m, d)
    with FlopCounterMode(display=False) as counter:
        enla(q, k, v, proj)
    count = enla_flops(h, w, d, m, embed_channels=d, value_channels=dv)
    assert counter.get_total_flops() == count.total - count.terms["normaliser"]


def test_embeddings_match_flop_counter_on_enlca_module():
    h, w, c, m = 9, 11, 32, 16
    block = ENLCA(c, reduction=4, n_features=m, loss_variant=None).eval()
    x = torch.randn(1, c, h, w)
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        block(x)
    count = enla_flops(h, w, c, m, reduction=4, include_embeddings=True)
    # FlopCounterMode counts convolutions without bias and the matmuls; not the normaliser
    assert counter.get_total_flops() == count.total - count.terms["normaliser"]


@pytest.mark.parametrize(
    "kwargs",
    [dict(h=0, w=10, c=64), dict(h=10, w=10, c=64, n_features=0), dict(h=10, w=10, c=30, reduction=4)],
)
def test_bad_sizes_raise(kwargs):
    with pytest.raises(ValueError):
        enla_flops(**kwargs)
