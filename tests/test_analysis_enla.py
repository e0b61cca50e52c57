"""ENLA approximation statistics (srlib.analysis.enla): Eq. 7 of the ENLCN paper, bias, errors."""

from __future__ import annotations

import math

import pytest
import torch

from srlib.attention.enla import enla, gaussian_orthogonal_matrix, linear_attention, positive_random_features
from srlib.analysis.enla import (
    amplified_pair,
    draw_projections,
    enla_attention_row,
    enla_relative_error,
    enla_weight_error,
    exact_attention_row,
    kernel_estimate_variance,
    kernel_estimates,
    kernel_variance_closed_form,
)

# |q + k|^2 = 2 a (1 + cos): 0.5, 1.0, 1.5, 2.0 -- light enough tails for the sample variance to be reliable
COS = [-0.5, 0.0, 0.5, 1.0]
AMPLIFICATION = 0.5
D, M, TRIALS = 8, 16, 20_000


@pytest.fixture(scope="module")
def iid_stats():
    g = torch.Generator().manual_seed(1234)
    q, k = amplified_pair(COS, AMPLIFICATION, D, generator=g)
    return q, k, kernel_estimate_variance(q, k, M, TRIALS, features="iid", generator=g)


def test_empirical_variance_agrees_with_eq7_within_sampling_error(iid_stats):
    """Eq. (7): Var = K^2 (exp|q+k|^2 - 1) / m. The sample variance over 20,000 draws of F must lie within
    4 standard errors of it (SE from the sample fourth moment) for every pair."""
    q, k, st = iid_stats
    closed = kernel_variance_closed_form(q, k, M)
    torch.testing.assert_close(st.closed_form, closed)
    assert (st.variance_se / st.variance < 0.2).all()  # the check has resolving power
    assert (st.variance_z.abs() < 4).all(), st.variance_z


def test_the_variance_check_rejects_a_wrong_formula(iid_stats):
    """Power: dropping the '- 1' of Eq. (7) (a 36-65% error here) is detected by the same criterion."""
    q, k, st = iid_stats
    z2 = (q + k).pow(2).sum(-1)
    wrong = st.exact.pow(2) * torch.exp(z2) / M
    assert ((st.variance - wrong) / st.variance_se < -4).all()
    # and so is forgetting the 1/m
    assert ((st.variance - st.closed_form * M) / st.variance_se < -4).all()


def test_iid_estimate_is_unbiased(iid_stats):
    _, _, st = iid_stats
    assert (st.mean_z.abs() < 4).all(), st.mean_z


def test_closed_form_known_values():
    q = torch.tensor([[1.0, 0.0]], dtype=torch.float64)
    k = torch.tensor([[0.0, 1.0]], dtype=torch.float64)
    # q.k = 0 -> K = 1, |q+k|^2 = 2 -> Var = (e^2 - 1)/m
    assert kernel_variance_closed_form(q, k, 4).item() == pytest.approx((math.e**2 - 1) / 4)
    a, b = amplified_pair([0.3, -1.0], 6.0, 16, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(a.pow(2).sum(-1), torch.full((2,), 6.0, dtype=torch.float64))
    torch.testing.assert_close((a * b).sum(-1), torch.tensor([1.8, -6.0], dtype=torch.float64))
    # relative std sqrt((exp(2a(1+cos)) - 1)/m) explodes with the amplification a (Fig. 6)
    rel = [
        (kernel_variance_closed_form(*amplified_pair(0.5, a, 16, generator=torch.Generator().manual_seed(0)), 128)
         .sqrt() / math.exp(a * 0.5)).item()
        for a in (1, 6)
    ]
    assert rel[0] == pytest.approx(math.sqrt(math.expm1(3) / 128))
    assert rel[1] == pytest.approx(math.sqrt(math.expm1(18) / 128))


def test_kernel_estimates_match_positive_random_features():
    g = torch.Generator().manual_seed(3)
    q, k = torch.randn(5, 6, generator=g, dtype=torch.float64), torch.randn(5, 6, generator=g, dtype=torch.float64)
    projs = draw_projections(3, 10, 6, features="orthogonal", generator=g)
    est = kernel_estimates(q, k, projs, eps=1e-4)
    assert est.shape == (3, 5)
    for t in range(3):
        want = (positive_random_features(q, projs[t], 1e-4) * positive_random_features(k, projs[t], 1e-4)).sum(-1)
        torch.testing.assert_close(est[t], want)


def test_official_orthogonal_features_are_biased_and_sign_flips_fix_it():
    """LAPACK's QR sign convention: row 0 of every official block has a negative first coordinate, so for
    q + k along e_1 the estimate is biased low whatever the number of draws; random row signs remove it."""
    g = torch.Generator().manual_seed(7)
    F = draw_projections(200, 8, 8, features="orthogonal", generator=g)
    assert (F[:, 0, 0] < 0).all()
    Fh = draw_projections(2000, 8, 8, features="orthogonal_haar", generator=g)
    assert 0.4 < (Fh[:, 0, 0] < 0).double().mean() < 0.6
    q = k = torch.tensor([0.5] + [0.0] * 7, dtype=torch.float64)  # q + k = e_1
    off = kernel_estimate_variance(q, k, 8, 5000, features="orthogonal", generator=g)
    haar = kernel_estimate_variance(q, k, 8, 5000, features="orthogonal_haar", generator=g)
    assert (off.mean / off.exact).item() < 0.95 and off.mean_z.item() < -10
    assert abs(haar.mean_z.item()) < 4


def test_orthogonal_haar_features_are_unbiased_with_less_variance(iid_stats):
    q, k, st = iid_stats
    g = torch.Generator().manual_seed(99)
    orth = kernel_estimate_variance(q, k, M, 8000, features="orthogonal_haar", generator=g)
    assert (orth.mean_z.abs() < 4).all(), orth.mean_z
    assert (orth.variance + 3 * orth.variance_se < st.closed_form).all()


@pytest.mark.parametrize("m, d", [(128, 64), (16, 8), (70, 32)])
def test_batched_orthogonal_draw_equals_the_library_matrix(m, d):
    """One trial of draw_projections("orthogonal") is gaussian_orthogonal_matrix's matrix, bit for bit."""
    ref = gaussian_orthogonal_matrix(m, d, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    got = draw_projections(1, m, d, features="orthogonal", generator=torch.Generator().manual_seed(5))
    assert torch.equal(got[0], ref)


def test_projection_kinds_and_errors():
    g = torch.Generator().manual_seed(0)
    F = draw_projections(4, 70, 32, features="iid", generator=g)
    assert F.shape == (4, 70, 32) and F.dtype == torch.float64
    Fo = draw_projections(2, 64, 32, features="orthogonal", generator=g)
    gram = Fo[0, :32] @ Fo[0, :32].T  # rows of one block are orthogonal
    torch.testing.assert_close(gram, torch.diag(torch.diagonal(gram)))
    with pytest.raises(ValueError, match="features"):
        draw_projections(1, 4, 4, features="gaussian")
    with pytest.raises(ValueError):
        kernel_estimate_variance(torch.ones(3), torch.ones(4), 4, 10)
    with pytest.raises(ValueError):
        kernel_estimate_variance(torch.ones(3), torch.ones(3), 4, 2)
    with pytest.raises(ValueError):
        amplified_pair(1.5, 6.0, 8)


def test_attention_rows_match_full_matrices():
    g = torch.Generator().manual_seed(5)
    q = torch.randn(2, 30, 8, generator=g, dtype=torch.float64)
    k = torch.randn(2, 30, 8, generator=g, dtype=torch.float64)
    proj = gaussian_orthogonal_matrix(16, 8, generator=g, dtype=torch.float64)
    eye = torch.eye(30, dtype=torch.float64).expand(2, 30, 30)
    full_enla = enla(q, k, eye, proj)  # rows of D^-1 phi(Q)^T phi(K)
    full_exact = torch.softmax(q @ k.transpose(1, 2), dim=-1)
    for i in (0, 17, 29):
        torch.testing.assert_close(enla_attention_row(q, k, i, proj), full_enla[:, i])
        torch.testing.assert_close(exact_attention_row(q, k, i), full_exact[:, i])
    with pytest.raises(ValueError, match="out of range"):
        exact_attention_row(q, k, 30)


def test_enla_error_shrinks_as_m_grows():
    g = torch.Generator().manual_seed(11)
    # unit-norm q, k (amplification 1/2): light tails, so the Monte-Carlo rate m^-1/2 is visible already
    q = torch.nn.functional.normalize(torch.randn(1, 64, 8, generator=g), dim=-1) * math.sqrt(0.5)
    k = torch.nn.functional.normalize(torch.randn(1, 64, 8, generator=g), dim=-1) * math.sqrt(0.5)
    v = torch.randn(1, 64, 4, generator=g)
    err = enla_relative_error(q, k, v, [16, 256, 4096], n_trials=10, features="iid", generator=g)
    assert err.shape == (3, 10)
    mean = err.mean(1)
    assert mean[0] > mean[1] > mean[2]
    # error ~ m^-1/2: 256x more features -> ~16x smaller error (allow a wide band)
    assert 8 < (mean[0] / mean[2]).item() < 32
    # the estimate with m features equals srlib's linear_attention on the same matrix (sanity of the helper)
    proj = draw_projections(1, 32, 8, generator=g)[0]
    phi_q, phi_k = positive_random_features(q.double(), proj, 0.0), positive_random_features(k.double(), proj, 0.0)
    out = linear_attention(phi_q, phi_k, v.double())
    torch.testing.assert_close(out, enla(q.double(), k.double(), v.double(), proj, eps=0.0))


def test_weight_error_is_total_variation_and_shrinks_with_m():
    g = torch.Generator().manual_seed(2)
    q = torch.nn.functional.normalize(torch.randn(1, 50, 8, generator=g), dim=-1)
    k = torch.nn.functional.normalize(torch.randn(1, 50, 8, generator=g), dim=-1)
    err = enla_weight_error(q, k, [8, 2048], n_trials=4, features="orthogonal_haar", generator=g)
    assert err.shape == (2, 4) and ((err >= 0) & (err <= 1)).all()
    assert err[1].mean() < err[0].mean() / 5
    # by hand for one draw and a subset of queries
    gen = torch.Generator().manual_seed(4)
    got = enla_weight_error(q, k, [16], 1, queries=torch.tensor([3, 7]), features="iid", generator=gen)
    proj = draw_projections(1, 16, 8, features="iid", generator=torch.Generator().manual_seed(4))[0]
    rows = [enla_attention_row(q.double(), k.double(), i, proj, eps=0.0) for i in (3, 7)]
    exact = [exact_attention_row(q.double(), k.double(), i) for i in (3, 7)]
    want = sum(0.5 * (a - b).abs().sum() for a, b in zip(rows, exact)) / 2
    assert got.item() == pytest.approx(want.item(), rel=1e-12)
