"""srlib.lcoan_study (the measurements of notebook 05) and srlib.viz.lcoan_figures."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import pytest
import torch
import torch.nn.functional as F

from srlib.attention.lcoa import assign_clusters, init_centroids
from srlib.lcoan_study import (
    DenseCoAStack,
    LCoAStack,
    NLAStack,
    centre_crops,
    compare_bucketings,
    ema_run,
    first_pattern,
    layer_study,
    table1_stacks,
)
from srlib.models import build_model
from srlib.analysis.overlap import true_neighbours


def test_table1_stacks_keep_the_shape_and_share_weights_only_when_collaborative():
    stacks = table1_stacks(channels=8, modules=3, seed=0)
    assert list(stacks) == ["NLA", "LSP", "CoA", "LCoA"]
    x = torch.randn(1, 8, 24, 24, generator=torch.Generator().manual_seed(0))  # L = 576: windows of 384 fit
    for s in stacks.values():
        with torch.no_grad():
            assert s(x).shape == x.shape
    assert isinstance(stacks["NLA"], NLAStack) and isinstance(stacks["CoA"], DenseCoAStack)
    assert isinstance(stacks["LCoA"], LCoAStack) and stacks["LCoA"].collaborative
    assert not stacks["LSP"].collaborative


def test_dense_coa_with_one_module_is_one_dense_attention():
    torch.manual_seed(0)
    coa = DenseCoAStack(channels=4, modules=1).eval()
    x = torch.randn(1, 4, 5, 5, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        torch.testing.assert_close(coa(x), coa.first(x))  # NonLocalAttention: x + 0.1 * attention


def test_compare_bucketings_one_bucket_has_full_recall_and_share():
    x = F.normalize(torch.randn(1, 64, 6, generator=torch.Generator().manual_seed(0)), dim=-1)
    nb = true_neighbours(x, 4)
    rows = compare_bucketings(x, nb, n_buckets=(1,), window=64, methods=(("k-means", 1),), seeds=(0,))
    assert len(rows) == 1 and rows[0]["method"] == "k-means x1"
    assert rows[0]["recall"] == pytest.approx(1.0) and rows[0]["share"] == pytest.approx(1.0)
    assert rows[0]["window"] == pytest.approx(1.0)
    with pytest.raises(ValueError, match="'k-means' or 'LSH'"):
        compare_bucketings(x, nb, n_buckets=(2,), window=32, methods=(("random", 1),), seeds=(0,))


def test_ema_run_moves_towards_the_batch_and_reports_shares():
    x = F.normalize(torch.randn(1, 50, 4, generator=torch.Generator().manual_seed(2)), dim=-1)
    means = init_centroids(x, 3, 1, generator=torch.Generator().manual_seed(0))
    moved, largest = ema_run(means, x, 0.5, "centroid", steps=5)
    assert len(moved) == len(largest) == 5
    assert all(0 < s <= 1 for s in largest)
    assert moved == sorted(moved)  # decay 0.5 towards a fixed target: the distance from the start grows
    assert largest[0] == pytest.approx(float(torch.bincount(assign_clusters(x, means).flatten()).max()) / 50)


def test_centre_crops_and_first_pattern_and_layer_study():
    items = [{"lr": torch.rand(3, 20, 30)}, {"lr": torch.rand(3, 16, 16)}]
    crops = centre_crops(items, 16)
    assert [tuple(c.shape) for c in crops] == [(1, 3, 16, 16)] * 2
    torch.testing.assert_close(crops[0][0], items[0]["lr"][:, 2:18, 7:23])
    torch.manual_seed(0)
    net = build_model("lcoan", scale=2, preset="small").eval()
    net.body[0].lcoa.kmeans.generator = torch.Generator().manual_seed(0)
    pat = first_pattern(net, crops[0])
    L = 16 * 16
    assert pat["mask"].shape == (1, L, L) and pat["codes"].shape[-1] == L and pat["emb"].shape[:2] == (1, L)
    names = [n for n, _ in net.attention_modules()]
    overlaps, qmaps, uniform = layer_study(net, crops[0], names, (3, 4))
    assert overlaps["overlap"][0] == pytest.approx(1.0) and len(qmaps) == len(names)
    assert qmaps[0].shape == (16, 16) and 0 < uniform < 1


def test_lcoan_figures_draw():
    from srlib.viz import lcoan_figures as lf

    codes = [torch.randint(0, 4, (64,)) for _ in range(3)]
    figs = [lf.plot_kmeans_steps(torch.rand(3, 8, 8), codes, [0, 2], 4),
            lf.plot_ema_runs({"a": ([1.0, 2.0], [0.5, 0.6]), "literal": ([1.0, 3.0], [0.5, 0.9])}),
            lf.plot_bucket_recall([dict(K=4, method="k-means x1", rounds=1, recall=0.5, share=0.2, window=0.6)], 8, 64)]
    assert [len(f.axes) for f in figs] == [3, 2, 1]


def test_kmeans_trace_follows_the_history():
    from srlib.attention.lcoa import kmeans_step
    from srlib.lcoan_study import kmeans_trace

    x = F.normalize(torch.randn(1, 40, 5, generator=torch.Generator().manual_seed(3)), dim=-1)
    h = [init_centroids(x, 4, 1, generator=torch.Generator().manual_seed(0))]
    h.append(kmeans_step(x, h[0]))
    rows = kmeans_trace(x, h)
    assert [r["t"] for r in rows] == [0, 1] and rows[0]["changed"] is None and rows[0]["shift"] is None
    assert torch.equal(rows[1]["codes"], assign_clusters(x, h[1])[0, 0])
    assert rows[1]["changed"] == pytest.approx(float((rows[1]["codes"] != rows[0]["codes"]).float().mean()))
    assert all(r["largest"] <= 40 and 0 <= r["empty"] < 4 for r in rows)
    assert rows[1]["cos"] >= rows[0]["cos"] - 1e-6  # a Lloyd step does not lower the objective here


def test_plot_codes_counts_used_clusters():
    from srlib.viz.lcoan_figures import plot_codes

    fig = plot_codes(torch.rand(3, 4, 4), torch.tensor([0, 1] * 8), 5)
    assert fig.axes[1].get_title() == "k-means codes: 2 of 5 clusters used"
