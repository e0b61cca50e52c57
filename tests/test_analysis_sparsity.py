"""Tests for srlib.analysis.sparsity (support sizes, mass coverage, HSPAN Fig. 1 / Eq. 14 / top-k experiments)."""

import math

import matplotlib

matplotlib.use("Agg")

import pytest
import torch

from srlib.attention.softthreshold import soft_threshold
from srlib.analysis.sparsity import (
    compare_normalizers,
    eq14_probabilities,
    mass_coverage,
    support_sizes,
    support_statistics,
    support_vs_length,
    truncation_error,
    attention_rows,
    chunked_support_statistics,
    topk_sweep,
)
from srlib.viz.maps import plot_map_grid, plot_weight_rows


def test_support_sizes_known_rows():
    w = torch.tensor([[0.5, 0.5, 0.0, 0.0], [1.0, 0.0, 0.0, 0.0], [0.25, 0.25, 0.25, 0.25]])
    assert support_sizes(w).tolist() == [2, 1, 4]
    assert support_sizes(w.view(1, 3, 4)).shape == (1, 3)


def test_mass_coverage_known_rows():
    w = torch.tensor([[0.7, 0.2, 0.1, 0.0], [0.25, 0.25, 0.25, 0.25], [0.0, 0.0, 1.0, 0.0]])
    assert mass_coverage(w, 0.9).tolist() == [2, 4, 1]  # 0.7 + 0.2 reaches 0.9 exactly
    assert mass_coverage(w, 0.5).tolist() == [1, 2, 1]
    assert mass_coverage(w, 1.0).tolist() == [3, 4, 1]
    # unnormalised rows: the fraction is of the row sum
    assert mass_coverage(3 * w, 0.9).tolist() == [2, 4, 1]
    # uniform over N: ceil(fraction * N)
    n = 100
    assert int(mass_coverage(torch.full((1, n), 1.0 / n), 0.9)) == math.ceil(0.9 * n)


def test_coverage_bounded_by_support_for_st():
    g = torch.Generator().manual_seed(1)
    s = torch.randn(64, 300, generator=g, dtype=torch.float64)
    p = soft_threshold(s)
    assert (mass_coverage(p, 0.9) <= support_sizes(p)).all()
    assert (support_sizes(torch.softmax(s, -1)) == 300).all()


def test_support_statistics_values():
    w = torch.tensor([[0.5, 0.5, 0.0, 0.0], [1.0, 0.0, 0.0, 0.0], [0.25, 0.25, 0.25, 0.25]])
    st = support_statistics(w, ks=(1, 3))
    assert st["rows"] == 3 and st["n"] == 4
    assert (st["support_min"], st["support_median"], st["support_max"]) == (1, 2, 4)
    assert st["support_mean"] == pytest.approx(7 / 3)
    assert st["frac_support_gt"] == {1: pytest.approx(2 / 3), 3: pytest.approx(1 / 3)}
    with pytest.raises(ValueError, match="ks"):
        support_statistics(w, ks=(0,))


def test_bad_weights():
    with pytest.raises(ValueError, match="non-negative"):
        support_sizes(torch.tensor([[0.5, -0.1]]))
    with pytest.raises(ValueError, match="floating"):
        mass_coverage(torch.tensor([[1, 0]]))
    with pytest.raises(ValueError, match="fraction"):
        mass_coverage(torch.tensor([[1.0, 0.0]]), 1.5)
    with pytest.raises(ValueError, match="torch.Tensor"):
        support_sizes([[1.0]])


def test_compare_normalizers_deterministic_and_consistent():
    ns = (16, 100, 400)
    a = compare_normalizers(ns, trials=50, generator=torch.Generator().manual_seed(3))
    b = compare_normalizers(ns, trials=50, generator=torch.Generator().manual_seed(3))
    assert a["softmax"]["max_weight"] == b["softmax"]["max_weight"]
    assert a["n"] == list(ns)
    # softmax: full support and a largest weight that shrinks with n (Fig. 1)
    assert a["softmax"]["support"] == [16.0, 100.0, 400.0]
    mw = a["softmax"]["max_weight"]
    assert mw[0] > mw[1] > mw[2]
    # ST: sparse, and much more concentrated on the same scores
    for i, n in enumerate(ns):
        assert a["ST"]["support"][i] < n / 2
        assert a["ST"]["max_weight"][i] > 2 * a["softmax"]["max_weight"][i]
    # the example rows are the first draws: reproduce them by hand
    g = torch.Generator().manual_seed(3)
    s16 = torch.randn(50, 16, generator=g, dtype=torch.float64)
    torch.testing.assert_close(a["softmax"]["example"][0], torch.softmax(s16[0], -1))
    torch.testing.assert_close(a["ST"]["example"][0], soft_threshold(s16[0]))
    with pytest.raises(ValueError):
        compare_normalizers((), trials=5)
    with pytest.raises(ValueError, match="scale"):
        compare_normalizers((4,), scale=0.0)


def test_support_vs_length_shapes_and_monotone_in_scale():
    r = support_vs_length((16, 256, 1024), trials=40, generator=torch.Generator().manual_seed(0), scales=(0.5, 2.0))
    assert r["mean"].shape == (2, 3)
    assert (r["q10"] <= r["mean"]).all() and (r["mean"] <= r["max"]).all()
    # smaller score spread = flatter projection = larger support
    assert (r["mean"][0] > r["mean"][1]).all()
    # support grows with N but stays a vanishing fraction of it
    assert r["mean"][0, 2] > r["mean"][0, 0]
    assert (r["mean"][:, 2] < 0.1 * 1024).all()
    with pytest.raises(ValueError, match="scales"):
        support_vs_length((16,), scales=(-1.0,))


def test_eq14_identity_and_bound_hold():
    r = eq14_probabilities(400, ks=(1, 2, 4, 8, 16, 32), trials=500, generator=torch.Generator().manual_seed(5))
    # the first line of Eq. (14) is an identity, the second an upper bound
    assert r["p_support_gt_k"] == r["p_sum_of_gaps_lt_1"]
    for p, bound in zip(r["p_support_gt_k"], r["p_gap_lt_1_over_k"]):
        assert p <= bound
    assert r["p_support_gt_k"][0] == 1.0 or r["p_support_gt_k"][0] > r["p_support_gt_k"][-1]
    with pytest.raises(ValueError, match="k"):
        eq14_probabilities(10, ks=(10,))


def test_truncation_error_exact_vs_truncated():
    g = torch.Generator().manual_seed(2)
    s = 0.3 * torch.randn(2, 50, 200, generator=g, dtype=torch.float64)  # small spread: supports of tens
    r = truncation_error(s, ks=(1, 4, 16, 200))
    assert r["rows"] == 100
    assert all(r["exact_equals_full"])  # official fallback: exact whatever k
    t = support_sizes(soft_threshold(s)).reshape(-1)
    for k, diff, changed, gt in zip(r["k"], r["max_abs_diff"], r["rows_changed"], r["rows_support_gt_k"]):
        assert gt == int((t > k).sum())
        assert changed == gt  # truncation changes exactly the rows whose support does not fit in k
        assert (diff > 0) == (gt > 0)
    assert r["max_abs_diff"][-1] == 0.0
    assert r["max_abs_diff"][0] > r["max_abs_diff"][1] > r["max_abs_diff"][2]


def test_plot_weight_rows():
    rows = [[torch.rand(4), torch.rand(9)], [torch.rand(4), torch.rand(9)]]
    fig = plot_weight_rows(rows, ["softmax", "ST"], ["n=4", "n=9"])
    assert len(fig.axes) == 4
    import matplotlib.pyplot as plt

    plt.close(fig)
    with pytest.raises(ValueError, match="row labels"):
        plot_weight_rows(rows, ["a"])
    with pytest.raises(ValueError, match="every row"):
        plot_weight_rows([[torch.rand(3)], []], ["a", "b"])


def test_topk_sweep_exact_flat_truncated_not():
    from srlib.models import build_model

    torch.manual_seed(0)
    net = build_model("hspan", scale=2, preset="small", topk=64).double()
    g = torch.Generator().manual_seed(0)
    lr = torch.rand(1, 3, 12, 12, generator=g, dtype=torch.float64)
    hr = torch.rand(1, 3, 24, 24, generator=g, dtype=torch.float64)
    net.train()
    r = topk_sweep(net, lr, [1, 4, 144, None], hr=hr)
    assert all(r["exact"]["equal_to_full"])  # official fallback: output independent of k
    assert r["exact"]["max_abs_diff"] == [0.0] * 4
    assert r["truncated"]["max_abs_diff"][0] > 0 and r["truncated"]["equal_to_full"][2:] == [True, True]
    assert r["exact"]["psnr"] == [r["full_psnr"]] * 4
    # settings and mode restored
    assert net.training and all(m.topk == 64 and m.mode == "exact" for _, m in net.attention_modules())
    with pytest.raises(ValueError, match="set_topk"):
        topk_sweep(torch.nn.Identity(), lr, [1])


def test_plot_map_grid():
    import matplotlib.pyplot as plt

    image = torch.rand(3, 6, 5)
    maps = torch.rand(2, 3, 6, 5)
    fig = plot_map_grid(image, maps, [(0, 0), (2, 3), (5, 4)], ["softmax", "ST"], ["a", "b", "c"])
    assert len(fig.axes) == 2 * 4 + 1  # grid + colour bar
    plt.close(fig)
    with pytest.raises(ValueError, match="queries"):
        plot_map_grid(image, maps, [(0, 0)], ["softmax", "ST"])
    with pytest.raises(ValueError, match="row labels"):
        plot_map_grid(image, maps, [(0, 0), (1, 1), (2, 2)], ["softmax"])
    with pytest.raises(ValueError, match="maps must be"):
        plot_map_grid(image, maps[0], [(0, 0), (1, 1), (2, 2)], ["a"])
    with pytest.raises(ValueError, match="non-negative"):
        plot_map_grid(image, -maps, [(0, 0), (1, 1), (2, 2)], ["a", "b"])


def test_chunked_statistics_and_attention_rows_equal_full_map():
    from srlib.attention.hspa import HSPA
    from srlib.attention.nla import NonLocalAttention

    torch.manual_seed(0)
    x = torch.randn(2, 8, 7, 9)
    for attn in (HSPA(channel=8, reduction=2, topk=4), HSPA(channel=8, topk=4, mode="truncated"),
                 NonLocalAttention(channel=8)):
        attn.eval().keep_map = True
        with torch.no_grad():
            attn(x)
        full = attn.last_map  # (2, 63, 63)
        torch.testing.assert_close(attention_rows(attn, x, slice(10, 30)), full[:, 10:30])
        torch.testing.assert_close(attention_rows(attn, x, [5, 0, 62]), full[:, [5, 0, 62]])
        torch.testing.assert_close(attention_rows(attn, x), full)
        a = support_statistics(full, ks=(2, 8))
        b = chunked_support_statistics(lambda i, j: attention_rows(attn, x, slice(i, j)), 63, ks=(2, 8), chunk=10)
        assert torch.equal(a["support"], b["support"]) and torch.equal(a["coverage"], b["coverage"])
        assert a["frac_support_gt"] == b["frac_support_gt"] and a["n"] == b["n"] == 63
    with pytest.raises(ValueError, match="rows"):
        attention_rows(attn, x, [5, 100])
    with pytest.raises(ValueError, match="embed"):
        attention_rows(torch.nn.Identity(), x)
    with pytest.raises(ValueError, match="must return"):
        chunked_support_statistics(lambda i, j: torch.ones(3, 3), 10, chunk=4)
