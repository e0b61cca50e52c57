"""LCoA: k-means sparse pattern (LSP) and collaborative attention (CoA) against the official cases, the
k-means initialisation and EMA update by hand, degenerate cases, gradients and errors."""

import pytest
import torch
import torch.nn.functional as F

from srlib.attention.lcoa import (
    Kmeans,
    LCoA,
    SharedAttention,
    assign_clusters,
    cluster_sizes,
    ema_centroids,
    init_centroids,
    kmeans_step,
    sample_init_indices,
)
from srlib.attention.nla import non_local_attention
from srlib.reference import load_case, run_case

TOL = dict(rtol=1e-10, atol=1e-10)


@pytest.fixture(scope="module")
def lcoa_case(reference_root):
    return load_case(reference_root / "modules" / "lcoa_case1.pt")


@pytest.fixture(scope="module")
def init_case(reference_root):
    return load_case(reference_root / "modules" / "lcoa_init_case1.pt")


def _module(case, key="state_dict"):
    torch.set_default_dtype(torch.float64)
    m = LCoA(**case["config"])
    m.load_state_dict(case[key])
    return m.eval()


# ---------------------------------------------------------------------------------------------- reference
def test_case_runner_reproduces_lsp_and_coa(lcoa_case):
    got = run_case(lcoa_case)
    torch.testing.assert_close(got["output"], lcoa_case["output"], **TOL)
    torch.testing.assert_close(got["coa_output"], lcoa_case["coa_output"], **TOL)


def test_shared_tensors_match_official_att_map_bucket_score_and_codes(lcoa_case):
    m = _module(lcoa_case)
    with torch.no_grad():
        _, shared = m(lcoa_case["input"])
    att_map, bucket_score, codes = shared.to_official()
    assert torch.equal(codes, lcoa_case["kmeans_codes"])
    torch.testing.assert_close(att_map, lcoa_case["att_map"], **TOL)
    torch.testing.assert_close(bucket_score, lcoa_case["bucket_score"], **TOL)
    assert shared.layout.padding == 10 and shared.layout.n_chunks == 11


def test_coa_from_official_shared_tensors(lcoa_case):
    shared = SharedAttention.from_official(
        lcoa_case["att_map"], lcoa_case["bucket_score"], lcoa_case["kmeans_codes"], n_clusters=8
    )
    coa = _module(lcoa_case, "coa_state_dict")
    with torch.no_grad():
        out, same = coa(lcoa_case["coa_input"], shared)
    assert same is shared
    torch.testing.assert_close(out, lcoa_case["coa_output"], **TOL)
    assert not torch.allclose(out, lcoa_case["coa_output_default_sort"], atol=1e-6)


def test_init_case_means_codes_and_output(init_case):
    got = run_case(init_case)
    torch.testing.assert_close(got["means_after_init"], init_case["means_after_init"], **TOL)
    torch.testing.assert_close(got["output"], init_case["output"], **TOL)
    m = _module(init_case)
    assert not bool(m.kmeans.initted)
    x = m.conv_match(init_case["input"]).flatten(2).transpose(1, 2).detach()
    assert torch.equal(sample_init_indices(x.shape[1], 16, indices=init_case["randperm"]), init_case["init_indices"])
    codes = m.kmeans(x, init_case["randperm"])
    assert bool(m.kmeans.initted)
    assert torch.equal(codes.flatten(1), init_case["kmeans_codes"])


def test_seeded_construction_draws_the_official_initial_weights(lcoa_case):
    torch.set_default_dtype(torch.float64)
    torch.manual_seed(lcoa_case["seed"])
    sd = LCoA(**lcoa_case["config"]).state_dict()
    for key, want in lcoa_case["state_dict"].items():
        if key != "kmeans.initted":  # set True by the case generator
            assert torch.equal(sd[key], want), key


# ------------------------------------------------------------------------------------------------ k-means
def test_init_by_hand_and_official_mode_freezes_the_centroids():
    g = torch.Generator().manual_seed(3)
    x = torch.randn(2, 30, 4, generator=g, dtype=torch.float64) + torch.tensor([2.0, 0, 0, 0], dtype=torch.float64)
    km = Kmeans(n_rounds=2, dim=4, n_clusters=3).double().train()
    perm = torch.randperm(60, generator=torch.Generator().manual_seed(5))
    km(x, perm)
    # by hand: seeds are samples b*L + p of the pooled raw vectors, then Lloyd steps on raw vectors
    pool = x.reshape(60, 4)
    means = pool[perm[:3]].clone()
    for _ in range(10):
        assign = (pool @ means.T).argmax(1)
        for k in range(3):
            if (assign == k).any():
                means[k] = F.normalize(pool[assign == k].sum(0), dim=0)
    torch.testing.assert_close(km.means, means.expand(2, -1, -1))  # every round identical (official)
    torch.testing.assert_close(init_centroids(x, 3, 2, indices=perm), km.means, rtol=0, atol=0)
    before = km.means.clone()
    km(torch.randn(2, 30, 4, generator=g, dtype=torch.float64))  # training, ema_update=False
    assert torch.equal(km.means, before)


def test_init_indices_generator_and_randint_fallback():
    a = sample_init_indices(50, 8, generator=torch.Generator().manual_seed(1))
    b = sample_init_indices(50, 8, indices=torch.randperm(50, generator=torch.Generator().manual_seed(1)))
    assert torch.equal(a, b) and a.unique().numel() == 8
    torch.manual_seed(4)
    c = sample_init_indices(50, 8)
    torch.manual_seed(4)
    assert torch.equal(c, torch.randperm(50)[:8])  # the global-RNG draw of the official code
    r = sample_init_indices(5, 8, generator=torch.Generator().manual_seed(0))  # fewer samples than clusters
    assert r.shape == (8,) and r.max() < 5
    with pytest.raises(ValueError, match="at least n_clusters"):
        sample_init_indices(50, 8, indices=torch.arange(4))
    with pytest.raises(ValueError, match=r"\[0, 50\)"):
        sample_init_indices(50, 3, indices=torch.tensor([0, 1, 50]))


def test_init_runs_in_eval_mode_once_and_is_reproducible_with_a_generator():
    x = torch.randn(1, 40, 6)
    km1, km2 = Kmeans(1, 6, 5).eval(), Kmeans(1, 6, 5).eval()
    km1.generator = torch.Generator().manual_seed(9)
    km2.generator = torch.Generator().manual_seed(9)
    assert torch.equal(km1(x), km2(x)) and bool(km1.initted)
    torch.testing.assert_close(km1.means, km2.means, rtol=0, atol=0)
    assert not km1.init_from_data(x)  # already initialised
    assert km1.init_from_data(x, force=True)


def test_ema_moves_means_toward_batch_centroids_by_one_minus_lambda():
    means = torch.tensor([[[1.0, 0.0, 0.0], [0.0, 2.0, 0.0], [0.0, 0.0, -1.0]]], dtype=torch.float64)
    x = torch.tensor([[[3.0, 0.0, 0.0], [0.0, 5.0, 0.0], [4.0, 3.0, 0.0], [0.0, -3.0, 4.0]]], dtype=torch.float64)
    km = Kmeans(1, 3, 3, ema_decay=0.9, ema_update=True).double().train()
    km.means.copy_(means)
    km.initted.fill_(True)
    codes = km(x)
    # unit vectors and their dot products with the centroids:
    # (1,0,0): (1, 0, 0) -> 0;  (0,1,0): (0, 2, 0) -> 1;  (.8,.6,0): (.8, 1.2, 0) -> 1;  (0,-.6,.8): (0, -1.2, -.8) -> 0
    assert codes.tolist() == [[[0, 1, 1, 0]]]
    c0 = torch.tensor([1.0, -0.6, 0.8], dtype=torch.float64) / (1 + 0.36 + 0.64) ** 0.5  # normalised sum
    c1 = torch.tensor([0.8, 1.6, 0.0], dtype=torch.float64) / (0.64 + 2.56) ** 0.5
    expected = torch.stack([0.9 * means[0, 0] + 0.1 * c0, 0.9 * means[0, 1] + 0.1 * c1, means[0, 2]])
    torch.testing.assert_close(km.means[0], expected, rtol=1e-12, atol=1e-12)
    assert km.means[0, 1].tolist() == pytest.approx([0.1 * 0.8 / 3.2**0.5, 1.8 + 0.1 * 1.6 / 3.2**0.5, 0.0])
    assert torch.equal(km.means[0, 2], means[0, 2])  # empty cluster untouched
    # eval mode: no update even with ema_update
    km.eval()
    before = km.means.clone()
    km(x)
    assert torch.equal(km.means, before)


def test_ema_literal_eq10_uses_plain_sums_and_shrinks_empty_clusters():
    means = torch.tensor([[[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0]]], dtype=torch.float64)
    xu = F.normalize(torch.tensor([[[1.0, 0.1], [1.0, -0.1], [0.1, 1.0]]], dtype=torch.float64), dim=-1)
    codes = assign_clusters(xu, means)
    assert codes.tolist() == [[[0, 0, 1]]]
    new = ema_centroids(means, xu, codes, 0.5, target="sum")
    torch.testing.assert_close(new[0, 0], 0.5 * means[0, 0] + 0.5 * (xu[0, 0] + xu[0, 1]))
    torch.testing.assert_close(new[0, 2], 0.5 * means[0, 2])  # empty cluster decays
    assert torch.equal(cluster_sizes(codes, 3), torch.tensor([[2, 1, 0]]))
    with pytest.raises(ValueError, match="ema target"):
        ema_centroids(means, xu, codes, 0.5, target="mean")


def test_kmeans_step_keeps_empty_clusters_and_sums_over_the_batch():
    means = torch.tensor([[[1.0, 0.0], [0.0, 1.0], [5.0, 5.0]]], dtype=torch.float64)
    x = torch.tensor([[[2.0, 0.5]], [[1.0, -0.5]], [[0.2, 3.0]]], dtype=torch.float64)  # B=3, L=1
    new = kmeans_step(x, means)
    # cluster 2 (5,5) wins every dot product -> clusters 0 and 1 are empty and keep their centroids
    torch.testing.assert_close(new[0, 2], F.normalize(x.sum((0, 1)), dim=0))
    torch.testing.assert_close(new[0, :2], means[0, :2])


# ------------------------------------------------------------------------------------ attention behaviour
@pytest.mark.parametrize("n_rounds", [1, 2])
def test_one_cluster_one_window_is_dense_attention(n_rounds):
    torch.manual_seed(0)
    m = LCoA(channels=8, reduction=2, n_clusters=1, window_size=30, res_scale=0.7, n_rounds=n_rounds).double().eval()
    x = torch.randn(2, 8, 5, 6, dtype=torch.float64)
    out, shared = m(x)
    assert shared.score.shape == (2, n_rounds, 1, 30, 90)
    q = m.conv_match(x).flatten(2).transpose(1, 2)
    v = m.conv_assembly(x).flatten(2).transpose(1, 2)
    dense = non_local_attention(q, F.normalize(q, dim=-1, eps=5e-5), v, return_map=True)[0]
    torch.testing.assert_close(out, 0.7 * dense.transpose(1, 2).reshape(2, 8, 5, 6) + x, rtol=1e-12, atol=1e-12)


def test_coa_with_the_computing_modules_values_reproduces_its_output():
    torch.manual_seed(1)
    lsp = LCoA(channels=8, reduction=2, n_clusters=4, window_size=10, res_scale=0.5, n_rounds=2).double().eval()
    coa = LCoA(channels=8, reduction=2, n_clusters=4, window_size=10, res_scale=0.5, n_rounds=2).double().eval()
    coa.conv_assembly.load_state_dict(lsp.conv_assembly.state_dict())
    x = torch.randn(1, 8, 7, 5, dtype=torch.float64)  # L=35: 4 windows, 5 padded rows
    out, shared = lsp(x)
    out2, _ = coa(x, shared)
    torch.testing.assert_close(out2, out, rtol=1e-12, atol=1e-12)
    # a CoA module's own conv_match and k-means play no part
    with torch.no_grad():
        coa.conv_match[0].weight.mul_(-3.0)
    coa.kmeans.means.normal_()
    torch.testing.assert_close(coa(x, shared)[0], out, rtol=1e-12, atol=1e-12)
    assert not bool(coa.kmeans.initted)


def test_coa_gradients_reach_the_computing_modules_match_conv():
    torch.manual_seed(2)
    lsp = LCoA(channels=8, reduction=2, n_clusters=3, window_size=8, res_scale=1.0).double()
    coa = LCoA(channels=8, reduction=2, n_clusters=3, window_size=8, res_scale=1.0).double()
    x = torch.randn(1, 8, 4, 6, dtype=torch.float64)
    _, shared = lsp(x)
    out, _ = coa(torch.randn_like(x), shared)
    out.square().sum().backward()
    assert lsp.conv_match[0].weight.grad.abs().sum() > 0  # att_map is shared with its graph, as officially
    assert coa.conv_match[0].weight.grad is None
    assert lsp.kmeans.means.grad is None and not lsp.kmeans.means.requires_grad


def test_details_and_official_code_layout():
    torch.manual_seed(3)
    m = LCoA(channels=8, reduction=1, n_clusters=5, window_size=12, n_rounds=2).eval()
    m.keep_details = True
    x = torch.randn(2, 8, 6, 5)
    _, shared = m(x)
    d = m.details
    assert d["codes"].shape == (2, 2, 30) and d["score"].shape == (2, 2, 3, 12, 36)
    assert d["bucket_score"].shape == (2, 2, 30) and d["embedding"].shape == (2, 30, 8) and not d["collaborative"]
    torch.testing.assert_close(d["score"].sum(-1), torch.ones(2, 2, 3, 12))
    codes = shared.to_official()[2]
    assert codes.shape == (2, 60) and codes[:, 30:].min() >= 5 and codes[:, :30].max() < 5
    again = SharedAttention.from_official(*shared.to_official(), n_clusters=5)
    assert torch.equal(again.codes, shared.codes) and torch.equal(again.layout.sort_idx, shared.layout.sort_idx)
    torch.testing.assert_close(again.position_bucket_score, d["bucket_score"])
    m(x, shared)  # a collaborative call
    assert m.details["collaborative"] and m.details["embedding"] is None


def test_errors_name_the_offending_value():
    with pytest.raises(ValueError, match="divisible"):
        LCoA(channels=10, reduction=4)
    with pytest.raises(ValueError, match="window_size"):
        LCoA(channels=8, window_size=0)
    with pytest.raises(ValueError, match="ema_decay"):
        Kmeans(1, 4, 3, ema_decay=1.5)
    with pytest.raises(ValueError, match="ema_target"):
        Kmeans(1, 4, 3, ema_target="mean")
    with pytest.raises(ValueError, match=r"\(B, L, 4\)"):
        Kmeans(1, 4, 3)(torch.randn(2, 10, 5))
    m = LCoA(channels=8, reduction=2, n_clusters=3, window_size=8).eval()
    with pytest.raises(ValueError, match="feature map"):
        m(torch.randn(8, 4, 6))
    assert m(torch.randn(1, 8, 1, 3))[0].shape == (1, 8, 1, 3)  # 3 positions repeat cyclically to fill 8
    _, shared = m(torch.randn(1, 8, 4, 6))
    with pytest.raises(ValueError, match="24 positions"):
        m(torch.randn(1, 8, 5, 6), shared)
    with pytest.raises(ValueError, match="window 8"):
        LCoA(channels=8, reduction=2, n_clusters=3, window_size=12)(torch.randn(1, 8, 4, 6), shared)
